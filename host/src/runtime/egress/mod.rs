//! Outbound HTTP from plugins (`wasi:http/outgoing-handler`).
//!
//! Every plugin is linked with `wasi:http`, and every request goes through one
//! gate, [`CallEgress`], wasmtime-wasi-http's `send_request` hook: it is the
//! only thing that governs these connections (WASI socket settings do not).
//! The gate denies everything by default; a subscription's `egress` settings
//! ([`EgressRules`]) allow destinations by scheme, host and port, the
//! operator's [`EgressConfig`] decides which non-public address ranges exist
//! at all, and each request is bounded by the attempt's deadline (epoch
//! interruption cannot fire while the guest waits in a host poll), the
//! subscription's request timeout, and a response-size cap.
//!
//! Each request is recorded ([`HttpCall`]) for the attempt's ledger entry and
//! counted in the subscription's [`EgressStats`]. Under the harness a
//! scripted [`HttpMock`] answers instead of the network.

mod body;
mod mock;
mod net;

pub(crate) use net::tls_config;
mod rules;

pub use mock::{HttpMock, MockResponse, MockRule};
pub use rules::{
    AllowRule, EgressRules, Target, DEFAULT_MAX_REQUESTS, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT_MS, MAX_REQUESTS, MAX_RESPONSE_BYTES,
};

use crate::histogram::{Histogram, HistogramSnapshot, Tally};
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// The header every outbound request carries unless the plugin set it.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// How long an idle pooled connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(30);

/// The operator's egress settings, fixed for the life of the process.
#[derive(Debug, Clone, Default)]
pub struct EgressConfig {
    /// Address ranges outbound requests may reach although they are not
    /// public (`--egress-allow-cidr`): loopback, private networks, ...
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Extra trusted root certificates (PEM), besides the webpki roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Answer every request from this script instead of the network (the
    /// harness).
    pub mock: Option<Arc<HttpMock>>,
}

/// What the runtime built from [`EgressConfig`]: shared by every subscription.
pub(crate) struct Network {
    policy: Arc<net::AddressPolicy>,
    tls: Arc<rustls::ClientConfig>,
    mock: Option<Arc<HttpMock>>,
}

impl Network {
    pub(crate) fn new(config: &EgressConfig) -> Result<Self, String> {
        Ok(Self {
            policy: Arc::new(net::AddressPolicy::new(config.allow_cidrs.clone())),
            tls: Arc::new(net::tls_config(config.ca_pem.as_deref())?),
            mock: config.mock.clone(),
        })
    }
}

enum Transport {
    // Boxed: the client is large beside the mock's pointer.
    Network(Box<Client<net::Connector, WasiBody>>),
    Mock(Arc<HttpMock>),
}

/// A subscription's way out: its rules, its connection pool and its
/// statistics. Shared by every attempt of the subscription.
pub struct Egress {
    subscription: String,
    rules: Option<EgressRules>,
    transport: Transport,
    stats: Arc<EgressStats>,
}

impl Egress {
    pub(crate) fn new(
        network: &Network,
        subscription: &str,
        rules: Option<EgressRules>,
        stats: Arc<EgressStats>,
        pool_size: usize,
    ) -> Self {
        let transport = match &network.mock {
            Some(mock) => Transport::Mock(mock.clone()),
            None => {
                let connector = net::Connector {
                    policy: network.policy.clone(),
                    tls: network.tls.clone(),
                    connect_timeout: rules
                        .as_ref()
                        .map_or(Duration::from_millis(DEFAULT_TIMEOUT_MS), |r| r.timeout),
                };
                let client = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(POOL_IDLE)
                    .pool_max_idle_per_host(pool_size.max(1))
                    .build(connector);
                Transport::Network(Box::new(client))
            }
        };
        Self {
            subscription: subscription.to_string(),
            rules,
            transport,
            stats,
        }
    }

    /// Decide whether a request may go out. `Err` is the refusal and its reason.
    fn admit(&self, target: &Target) -> Result<(), (HttpError, String)> {
        if let Transport::Mock(_) = self.transport {
            // Under a mock the script is the allow-list.
            return Ok(());
        }
        let Some(rules) = &self.rules else {
            return Err((
                HttpError::HttpRequestDenied,
                format!(
                    "the subscription has no egress settings: add {target} to egress.allow to reach it"
                ),
            ));
        };
        if !rules.allows(target.scheme, &target.host, target.port) {
            return Err((
                HttpError::HttpRequestDenied,
                format!("{target} is not in the subscription's egress.allow"),
            ));
        }
        Ok(())
    }

    /// Requests one attempt may make (refused ones count too).
    fn max_requests(&self) -> u32 {
        self.rules
            .as_ref()
            .map_or(DEFAULT_MAX_REQUESTS, |r| r.max_requests)
    }

    fn max_response_bytes(&self) -> u64 {
        self.rules
            .as_ref()
            .map_or(DEFAULT_MAX_RESPONSE_BYTES, |r| r.max_response_bytes)
    }

    fn timeout(&self) -> Duration {
        self.rules
            .as_ref()
            .map_or(Duration::from_millis(DEFAULT_TIMEOUT_MS), |r| r.timeout)
    }
}

/// One outbound request of an attempt, as its ledger entry shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpCall {
    pub method: String,
    /// `scheme://host:port` (never the path, which may hold secrets).
    pub target: String,
    /// The response status, if one came.
    pub status: Option<u16>,
    /// The `wasi:http` error code and why, if the request failed.
    pub error: Option<String>,
    /// From the request to the response headers (or the failure).
    pub duration: Duration,
    /// Response body bytes the plugin read.
    pub response_bytes: u64,
}

type Calls = Arc<Mutex<Vec<HttpCall>>>;

/// Latency buckets of outbound requests, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Outcome labels of outbound requests.
pub const OUTCOMES: [&str; 9] = [
    "1xx",
    "2xx",
    "3xx",
    "4xx",
    "5xx",
    "denied",
    "prohibited",
    "timeout",
    "error",
];

/// A subscription's outbound-request counters, for `/metrics`.
#[derive(Debug)]
pub struct EgressStats {
    outcomes: Tally,
    latency: Histogram,
}

impl Default for EgressStats {
    fn default() -> Self {
        Self {
            outcomes: Tally::new(&OUTCOMES),
            latency: Histogram::new(&LATENCY_BUCKETS),
        }
    }
}

/// A reading of [`EgressStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EgressSnapshot {
    /// Requests by outcome label (only those seen).
    pub outcomes: Vec<(&'static str, u64)>,
    /// Time to response headers (or failure), in seconds.
    pub latency: HistogramSnapshot,
}

impl EgressStats {
    fn observe(&self, outcome: &'static str, latency: Duration) {
        self.outcomes.add(outcome);
        self.latency.observe_duration(latency);
    }

    pub fn snapshot(&self) -> EgressSnapshot {
        EgressSnapshot {
            outcomes: self.outcomes.snapshot(),
            latency: self.latency.snapshot(),
        }
    }
}

/// The `wasi:http` gate of one plugin call: which subscription's egress it
/// uses, its deadline, the message it handles (whose id is its idempotency
/// key), its trace context, and the requests it made. A call that makes no
/// request costs no more than filling in these fields: the headers are made
/// for each request, and the record of requests on the first.
#[derive(Default)]
pub(crate) struct CallEgress {
    egress: Option<Arc<Egress>>,
    deadline: Option<Instant>,
    message: Option<Arc<dyn crate::runtime::Letter>>,
    /// The call's trace context, for requests that carry none of their own.
    context: Option<crate::telemetry::TraceContext>,
    made: u32,
    /// Requests over the limit: refused and not recorded one by one.
    over: u32,
    calls: Option<Calls>,
}

impl CallEgress {
    /// The gate of a call handling `message` in trace context `context`
    /// that must end by `deadline`.
    pub(crate) fn begin(
        egress: Option<Arc<Egress>>,
        deadline: Instant,
        message: &Arc<dyn crate::runtime::Letter>,
        context: Option<crate::telemetry::TraceContext>,
    ) -> Self {
        Self {
            message: egress.is_some().then(|| message.clone()),
            egress,
            deadline: Some(deadline),
            context,
            made: 0,
            over: 0,
            calls: None,
        }
    }

    /// The idempotency key of the call's requests: `{subscription}/{message id}`.
    fn idempotency_key(&self) -> Option<HeaderValue> {
        let (egress, message) = (self.egress.as_ref()?, self.message.as_ref()?);
        HeaderValue::from_str(&format!("{}/{}", egress.subscription, message.id())).ok()
    }

    /// The requests made so far, after one entry counting those over the
    /// limit (if any).
    pub(crate) fn calls(&self) -> Vec<HttpCall> {
        let recorded = match &self.calls {
            Some(calls) => calls.lock().expect("egress calls lock").clone(),
            None if self.over == 0 => return Vec::new(),
            None => Vec::new(),
        };
        let mut calls = Vec::with_capacity(recorded.len() + 1);
        // First, so that the ledger's cap on entries never hides it.
        if self.over > 0 {
            calls.push(HttpCall {
                method: String::new(),
                target: String::new(),
                status: None,
                error: Some(format!(
                    "HTTP-request-denied: {} more requests over egress.max_requests, not recorded",
                    self.over
                )),
                duration: Duration::ZERO,
                response_bytes: 0,
            });
        }
        calls.extend(recorded);
        calls
    }

    /// Record a request; gives back where its record is.
    fn record(&mut self, call: HttpCall, started: Instant) -> Slot {
        let calls = self.calls.get_or_insert_with(Calls::default).clone();
        let index = {
            let mut recorded = calls.lock().expect("egress calls lock");
            recorded.push(call);
            recorded.len() - 1
        };
        Slot {
            calls,
            index,
            started,
        }
    }
}

type SendResult = Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for CallEgress {
    /// The client derives `Host` from the parsed URI, not the raw authority
    /// (which may carry userinfo).
    fn set_host_header(&mut self) -> bool {
        false
    }

    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let started = Instant::now();
        self.made += 1;
        let limit = self
            .egress
            .as_ref()
            .map_or(DEFAULT_MAX_REQUESTS, |e| e.max_requests());
        if self.made > limit {
            // Refused without a record each: a plugin looping on refused
            // requests must not grow the host's memory or its ledger entry.
            self.over += 1;
            if let Some(egress) = &self.egress {
                egress
                    .stats
                    .observe(failure_label(&HttpError::HttpRequestDenied), Duration::ZERO);
            }
            return Box::new(std::future::ready(Err(HttpError::HttpRequestDenied)));
        }
        let method = request.method().to_string();
        let target = Target::of(request.uri());
        let shown = target
            .as_ref()
            .map_or_else(|| "(invalid URI)".to_string(), Target::to_string);
        let refusal = match (&self.egress, &target) {
            (_, None) => Some((
                HttpError::HttpRequestUriInvalid,
                "the URI needs an http or https scheme and a host".to_string(),
            )),
            (None, Some(target)) => Some((
                HttpError::HttpRequestDenied,
                format!("outbound requests are off here: {target} is not allowed"),
            )),
            (Some(egress), Some(target)) => egress.admit(target).err(),
        };
        let slot = self.record(
            HttpCall {
                method,
                target: shown,
                status: None,
                error: None,
                duration: Duration::ZERO,
                response_bytes: 0,
            },
            started,
        );
        let egress = match (refusal, &self.egress) {
            (Some((code, reason)), egress) => {
                if let Some(egress) = egress {
                    egress.stats.observe(failure_label(&code), Duration::ZERO);
                }
                slot.fail(&code, &reason);
                return Box::new(std::future::ready(Err(code)));
            }
            (None, Some(egress)) => egress.clone(),
            (None, None) => unreachable!("no egress means a refusal"),
        };
        if !request.headers().contains_key(IDEMPOTENCY_HEADER) {
            if let Some(key) = self.idempotency_key() {
                request.headers_mut().insert(IDEMPOTENCY_HEADER, key);
            }
        }
        if !request
            .headers()
            .contains_key(crate::telemetry::TRACEPARENT)
        {
            if let Some(value) = self
                .context
                .and_then(|c| HeaderValue::from_str(&c.header()).ok())
            {
                request
                    .headers_mut()
                    .insert(crate::telemetry::TRACEPARENT, value);
            }
        }
        // Requests are made only during a call, which sets a deadline.
        let deadline = self
            .deadline
            .unwrap_or(started)
            .min(started + egress.timeout());
        Box::new(send(egress, request, options, deadline, slot))
    }
}

/// Where a request's record is, to fill in as it goes.
#[derive(Clone)]
struct Slot {
    calls: Calls,
    index: usize,
    started: Instant,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut HttpCall)) {
        if let Some(call) = self
            .calls
            .lock()
            .expect("egress calls lock")
            .get_mut(self.index)
        {
            f(call);
        }
    }

    fn fail(&self, code: &HttpError, reason: &str) {
        let elapsed = self.started.elapsed();
        let text = format!("{}: {reason}", code_name(code));
        self.update(|c| {
            c.error = Some(text);
            c.duration = elapsed;
        });
    }
}

async fn send(
    egress: Arc<Egress>,
    request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    deadline: Instant,
    slot: Slot,
) -> SendResult {
    // A guest's own timeouts only ever shorten the wait: connecting and the
    // first byte together bound the wait for the headers (an unset one does
    // not bound it).
    let headers_by = options
        .and_then(|o| Some(slot.started + o.connect_timeout? + o.first_byte_timeout?))
        .map_or(deadline, |t| t.min(deadline));
    let between_bytes = options.and_then(|o| o.between_bytes_timeout);
    let response = match &egress.transport {
        Transport::Mock(mock) => {
            // Take the whole request, as a server would, before answering.
            let (parts, body) = request.into_parts();
            if tokio::time::timeout_at(deadline.into(), body.collect())
                .await
                .is_err()
            {
                Err((
                    HttpError::HttpResponseTimeout,
                    "the request body did not end before the deadline".to_string(),
                ))
            } else {
                mock.answer(&http::Request::from_parts(parts, ()))
            }
        }
        Transport::Network(client) => {
            let request = request.map(|b| body::Upload::new(b, deadline).boxed_unsync());
            match tokio::time::timeout_at(headers_by.into(), client.request(request)).await {
                Err(_) => Err((
                    HttpError::HttpResponseTimeout,
                    "no response before the deadline".to_string(),
                )),
                Ok(Err(e)) => Err(client_error(&e)),
                Ok(Ok(response)) => Ok(response.map(|b| b.map_err(HttpError::from).boxed_unsync())),
            }
        }
    };
    let max = egress.max_response_bytes();
    let response = response.and_then(|r| {
        match r
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        {
            Some(len) if len > max => Err((
                HttpError::HttpResponseBodySize(Some(len)),
                format!("a body of {len} bytes is over egress.max_response_bytes ({max})"),
            )),
            _ => Ok(r),
        }
    });
    let elapsed = slot.started.elapsed();
    match response {
        Ok(response) => {
            let status = response.status().as_u16();
            egress.stats.observe(status_class(status), elapsed);
            slot.update(|c| {
                c.status = Some(status);
                c.duration = elapsed;
            });
            let response = response
                .map(|b| body::Limited::new(b, max, deadline, between_bytes, slot).boxed_unsync());
            Ok((response, Box::new(async { Ok(()) })))
        }
        Err((code, reason)) => {
            egress.stats.observe(failure_label(&code), elapsed);
            slot.fail(&code, &reason);
            Err(code)
        }
    }
}

/// The metrics' outcome label of a failed request.
fn failure_label(code: &HttpError) -> &'static str {
    match code {
        HttpError::DestinationIpProhibited => "prohibited",
        HttpError::HttpRequestDenied => "denied",
        HttpError::HttpResponseTimeout | HttpError::ConnectionTimeout => "timeout",
        _ => "error",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// The error code and reason of a failed client request.
fn client_error(err: &hyper_util::client::legacy::Error) -> (HttpError, String) {
    use std::error::Error as _;
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(connect) = e.downcast_ref::<net::ConnectError>() {
            return (connect.code(), connect.to_string());
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
            let code = if hyper.is_timeout() {
                HttpError::HttpResponseTimeout
            } else if hyper.is_incomplete_message() {
                HttpError::HttpResponseIncomplete
            } else {
                HttpError::HttpProtocolError
            };
            return (code, hyper.to_string());
        }
        source = e.source();
    }
    let code = if err.is_connect() {
        HttpError::ConnectionRefused
    } else {
        HttpError::HttpProtocolError
    };
    (code, err.to_string())
}

/// The WIT name of an error code, as plugins see it.
pub(crate) fn code_name(code: &HttpError) -> &'static str {
    match code {
        HttpError::HttpRequestDenied => "HTTP-request-denied",
        HttpError::HttpRequestUriInvalid => "HTTP-request-URI-invalid",
        HttpError::DestinationIpProhibited => "destination-IP-prohibited",
        HttpError::DnsError { .. } => "DNS-error",
        HttpError::ConnectionRefused => "connection-refused",
        HttpError::ConnectionTimeout => "connection-timeout",
        HttpError::ConnectionReadTimeout => "connection-read-timeout",
        HttpError::HttpResponseTimeout => "HTTP-response-timeout",
        HttpError::HttpResponseBodySize(_) => "HTTP-response-body-size",
        HttpError::HttpResponseIncomplete => "HTTP-response-incomplete",
        HttpError::TlsCertificateError => "TLS-certificate-error",
        HttpError::HttpProtocolError => "HTTP-protocol-error",
        _ => "internal-error",
    }
}

/// A response built by the host (the mock), as the guest receives it.
fn host_response(
    status: u16,
    headers: &[(String, String)],
    body: Bytes,
) -> http::Response<WasiBody> {
    let mut response = http::Response::new(
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
