//! Bodies of outbound requests: a response body as the plugin reads it
//! (counted against the cap, bounded by the request's deadline and the
//! guest's between-bytes timeout), and the plugin's request body, dropped at
//! the deadline so that a plugin writing to a server that stopped reading is
//! released.

use super::Slot;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::time::Sleep;
use wasmtime_wasi_http::{Error as HttpError, WasiBody};

pub(super) struct Limited {
    inner: WasiBody,
    read: u64,
    max: u64,
    deadline: Pin<Box<Sleep>>,
    between_bytes: Option<(Duration, Pin<Box<Sleep>>)>,
    slot: Slot,
    done: bool,
}

impl Limited {
    pub(super) fn new(
        inner: WasiBody,
        max: u64,
        deadline: Instant,
        between_bytes: Option<Duration>,
        slot: Slot,
    ) -> Self {
        Self {
            inner,
            read: 0,
            max,
            deadline: Box::pin(tokio::time::sleep_until(deadline.into())),
            between_bytes: between_bytes.map(|d| (d, Box::pin(tokio::time::sleep(d)))),
            slot,
            done: false,
        }
    }

    fn fail(
        &mut self,
        code: HttpError,
        reason: String,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        self.done = true;
        self.slot.fail(&code, &reason);
        Poll::Ready(Some(Err(code)))
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                    let read = self.read;
                    self.slot.update(|c| c.response_bytes = read);
                    if read > self.max {
                        let max = self.max;
                        return self.fail(
                            HttpError::HttpResponseBodySize(Some(read)),
                            format!("the body is over egress.max_response_bytes ({max})"),
                        );
                    }
                }
                if let Some((d, sleep)) = &mut self.between_bytes {
                    let next = tokio::time::Instant::now() + *d;
                    sleep.as_mut().reset(next);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => {
                let reason = e.to_string();
                return self.fail(e, reason);
            }
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return self.fail(
                HttpError::ConnectionReadTimeout,
                "the body did not end before the deadline".into(),
            );
        }
        if let Some((_, sleep)) = &mut self.between_bytes {
            if sleep.as_mut().poll(cx).is_ready() {
                return self.fail(
                    HttpError::ConnectionReadTimeout,
                    "no body bytes within the between-bytes timeout".into(),
                );
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body (what the plugin writes) that ends at the deadline: then
/// it is dropped — whether or not the client is polling it — so the plugin's
/// blocked write fails instead of outliving its attempt.
pub(super) struct Upload {
    inner: std::sync::Arc<std::sync::Mutex<UploadState>>,
}

struct UploadState {
    body: Option<WasiBody>,
    /// Who polled last, woken when the deadline drops the body.
    waker: Option<std::task::Waker>,
}

impl Upload {
    pub(super) fn new(inner: WasiBody, deadline: Instant) -> Self {
        let inner = std::sync::Arc::new(std::sync::Mutex::new(UploadState {
            body: Some(inner),
            waker: None,
        }));
        let held = std::sync::Arc::downgrade(&inner);
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            if let Some(held) = held.upgrade() {
                let mut state = held.lock().expect("upload lock");
                state.body.take();
                if let Some(waker) = state.waker.take() {
                    waker.wake();
                }
            }
        });
        Self { inner }
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let mut state = self.inner.lock().expect("upload lock");
        let polled = match state.body.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => return Poll::Ready(Some(Err(HttpError::ConnectionWriteTimeout))),
        };
        if polled.is_pending() {
            state.waker = Some(cx.waker().clone());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let state = self.inner.lock().expect("upload lock");
        state.body.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.inner.lock().expect("upload lock");
        state
            .body
            .as_ref()
            .map_or_else(SizeHint::default, |b| b.size_hint())
    }
}
