//! The HTTP/1 server: accepts connections, runs each request in its own task,
//! and shuts down gracefully — stop accepting, let in-flight requests finish.
//!
//! Shutdown is a type: [`Server::shutdown`] consumes the handle, and returns
//! once every connection is closed (or [`DRAIN_TIMEOUT`] has passed).

use super::auth::Auth;
use super::body::Reply;
use super::error::ApiError;
use super::router;
use crate::broker::Broker;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinHandle;

/// Bounds on what clients may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most open connections at once; further clients wait in the accept
    /// backlog rather than exhausting file descriptors.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers, counted from
    /// when the server waits for them (an idle keep-alive connection is
    /// closed after it too), and how long a request body may go without a
    /// byte (then 408). A TLS handshake must finish within it too.
    pub timeout: Duration,
}

/// The time a request's body may go without a byte, as the server put it
/// into the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);
/// How long shutdown waits for in-flight requests: long enough for a publish
/// or a plugin compile to finish, short enough that a stuck client cannot
/// hold the host up.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed `accept` (e.g. out of file descriptors) before trying
/// again, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every request handler shares.
pub struct State {
    pub auth: Auth,
    broker: watch::Receiver<Option<Broker>>,
    /// Turns true when shutdown starts, so that endless responses (event
    /// streams) end and connections can drain.
    pub closing: watch::Receiver<bool>,
    /// Requests answered, for `/metrics`.
    pub requests: super::metrics::Requests,
    /// When the host started serving.
    pub started: std::time::Instant,
}

impl State {
    /// The broker, if it is open.
    pub fn opened(&self) -> Option<Broker> {
        self.broker.borrow().clone()
    }

    /// The broker, waiting for it if it is still opening.
    pub async fn broker(&self) -> Result<Broker, ApiError> {
        let mut rx = self.broker.clone();
        let opened = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|b| b.clone());
        opened.ok_or_else(|| ApiError::unavailable("the broker is not available"))
    }
}

/// A running server. Dropping it without [`Server::shutdown`] leaves the
/// accept loop running until the runtime stops.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Start serving on `listener`. `/v1` requests wait until `broker` holds an
    /// open broker; health endpoints answer at once.
    pub fn start(
        listener: TcpListener,
        auth: Auth,
        broker: watch::Receiver<Option<Broker>>,
        limits: HttpLimits,
        tls: Option<Arc<super::tls::ServerTls>>,
    ) -> Self {
        let (closing_tx, closing) = watch::channel(false);
        let state = Arc::new(State {
            auth,
            broker,
            closing,
            requests: super::metrics::Requests::default(),
            started: std::time::Instant::now(),
        });
        tokio::spawn(answer_other_hosts(state.clone()));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener, state, stopped, closing_tx, limits, tls,
        ));
        Self { stop, task }
    }

    /// Stop accepting, let in-flight requests finish (at most
    /// [`DRAIN_TIMEOUT`]), then return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the HTTP accept loop failed");
        }
    }
}

/// Cluster mode: once the broker is open, answer the requests other
/// hosts hand this one ([`super::forward`]).
async fn answer_other_hosts(state: Arc<State>) {
    let Ok(broker) = state.broker().await else {
        return;
    };
    if !broker.clustered() {
        return;
    }
    if let Err(e) = broker
        .answer_hosts(super::forward::answerer(state.clone()))
        .await
    {
        tracing::error!(error = %e, "cannot answer other hosts: requests about subscriptions running here fail through them");
    }
    if let Err(e) = broker
        .answer_host_streams(super::forward::stream_answerer(state))
        .await
    {
        tracing::error!(error = %e, "cannot stream answers to other hosts: event streams of subscriptions running here fail through them");
    }
}

async fn accept_loop(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: oneshot::Receiver<()>,
    closing: watch::Sender<bool>,
    limits: HttpLimits,
    tls: Option<Arc<super::tls::ServerTls>>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = accept(&listener, &slots) => accepted,
        };
        let Some((stream, permit)) = accepted else {
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
            }
        };
        let _ = stream.set_nodelay(true);
        match &tls {
            None => connect(stream, &state, limits, &graceful, permit),
            Some(tls) => {
                // The handshake in the connection's own task, bounded.
                let (acceptor, state) = (tls.acceptor().clone(), state.clone());
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(limits.timeout, acceptor.accept(stream)).await;
                    match handshake {
                        Ok(Ok(stream)) => {
                            let connection = serve_connection(stream, &state, limits);
                            if let Err(e) = watcher.watch(connection).await {
                                tracing::debug!(error = %e, "HTTPS connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    closing.send_replace(true);
    tracing::debug!(connections = graceful.count(), "draining HTTP connections");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            timeout_s = DRAIN_TIMEOUT.as_secs(),
            "gave up waiting for HTTP requests to finish"
        );
    }
}

/// Serve one plain connection in a task of its own.
fn connect(
    stream: tokio::net::TcpStream,
    state: &Arc<State>,
    limits: HttpLimits,
    graceful: &GracefulShutdown,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let connection = graceful.watch(serve_connection(stream, state, limits));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP connection ended with an error");
        }
        drop(permit);
    });
}

/// HTTP/1 over `io`, each request answered by [`serve`].
fn serve_connection<IO>(
    io: IO,
    state: &Arc<State>,
    limits: HttpLimits,
) -> impl hyper_util::server::graceful::GracefulConnection<Error = hyper::Error> + Send + 'static
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let state = state.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let state = state.clone();
        req.extensions_mut().insert(BodyTimeout(limits.timeout));
        let req = req.map(http_body_util::BodyExt::boxed);
        async move { Ok::<_, Infallible>(serve(state, req).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.timeout)
        .serve_connection(TokioIo::new(io), service)
}

/// Wait for a connection slot, then a connection. `None` on an accept error
/// (logged), after which the caller backs off.
async fn accept(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> Option<(tokio::net::TcpStream, tokio::sync::OwnedSemaphorePermit)> {
    // The semaphore is never closed, so acquiring only waits.
    let permit = slots.clone().acquire_owned().await.ok()?;
    match listener.accept().await {
        Ok((stream, _peer)) => Some((stream, permit)),
        Err(e) => {
            tracing::warn!(error = %e, "accepting a connection failed");
            None
        }
    }
}

/// Run the request in its own task, so that a bug that panics costs one 500,
/// not the connection, and a client that disconnects mid-publish does not
/// cancel the publish half-way.
async fn serve(state: Arc<State>, req: Request<super::ApiBody>) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let task = tokio::spawn(async move { router::handle(&state, req).await });
    match task.await {
        Ok(reply) => reply,
        Err(e) => {
            tracing::error!(status = 500, error = %e, %method, %path, "request handler panicked");
            ApiError::internal("internal error").into_response()
        }
    }
}
