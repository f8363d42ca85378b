//! A local HTTP(S) server on 127.0.0.1 for outbound-request tests: it records
//! every request and answers by path.
//!
//! * `/flaky/N[/...]`: 503 for the first N requests to that path, then 200 `ok`.
//! * `/hang`: never answers (the connection stays open).
//! * `/big`: 200 with a 2 MiB body streamed in chunks, without a length.
//! * `/big-length`: 200 with a 2 MiB body and its `content-length`.
//! * anything else: 200 `ok`.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// One request as the origin saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

/// Size of the `/big` bodies: 2 MiB, twice the default cap.
pub const BIG: usize = 2 << 20;

pub struct Origin {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Origin {
    /// Plain HTTP.
    pub fn start() -> Origin {
        Self::serve(None)
    }

    /// HTTPS with the test CA's certificate for `localhost` and 127.0.0.1.
    pub fn start_tls() -> Origin {
        let dir = crate::support::workspace().join("tests/e2e/tls");
        let read = |f: &str| std::fs::read(dir.join(f)).expect("test TLS files");
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&read("server.pem"))
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate");
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(&read("server.key"))
            .expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server TLS config");
        Self::serve(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn serve(tls: Option<tokio_rustls::TlsAcceptor>) -> Origin {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("origin runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding the origin");
        let addr = listener.local_addr().expect("origin address");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        runtime.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (log, tls) = (log.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(req, log.clone()));
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        Origin {
            addr,
            seen,
            _runtime: runtime,
        }
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Reply = Response<BoxBody<Bytes, Infallible>>;

async fn answer(req: Request<Incoming>, log: Arc<Mutex<Vec<Seen>>>) -> Result<Reply, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let earlier = {
        let mut log = log.lock().unwrap();
        let earlier = log.iter().filter(|s| s.path == path).count();
        log.push(Seen {
            method,
            path: path.clone(),
            headers,
            body,
        });
        earlier
    };
    let full = |status: u16, text: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())).boxed());
        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
        r
    };
    if let Some(rest) = path.strip_prefix("/flaky/") {
        let n = rest.split('/').next().unwrap_or_default();
        let failures: usize = n.parse().unwrap_or(0);
        return Ok(if earlier < failures {
            full(503, "try later")
        } else {
            full(200, "ok")
        });
    }
    Ok(match path.as_str() {
        "/hang" => std::future::pending().await,
        "/big" => Response::new(Chunks { left: BIG }.boxed()),
        "/big-length" => Response::new(Full::new(Bytes::from(vec![b'x'; BIG])).boxed()),
        _ => full(200, "ok"),
    })
}

/// A body of `left` bytes in 64 KiB chunks, of unknown length (chunked).
struct Chunks {
    left: usize,
}

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 << 10);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n])))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
