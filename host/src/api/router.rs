//! Routing: path → [`Route`], method check (405 with `Allow`), auth, then the
//! resource's handler. Every outcome is a response; nothing here panics on
//! input.

use super::auth::Role;
use super::body::{Format, Reply};
use super::error::ApiError;
use super::server::State;
use super::ApiBody;
use super::{health, leases, messages, plugins, streams, subscriptions, topics, Ctx};
use hyper::{Method, Request};

/// A resource of the API, with its path parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    Health,
    Ready,
    Metrics,
    OpenApi,
    Host,
    Ui(&'a str),
    Topics,
    Topic(&'a str),
    Publish(&'a str),
    Partition(&'a str, &'a str),
    Plugins,
    Plugin(&'a str),
    Subscriptions,
    Subscription(&'a str),
    DeadLetters(&'a str),
    Pause(&'a str),
    Resume(&'a str),
    DeadLetter(&'a str, &'a str),
    Redrive(&'a str),
    Ledger(&'a str, &'a str),
    Kv(&'a str),
    Lease(&'a str),
    Settle(&'a str),
    Tail(&'a str),
    Events(&'a str),
}

impl<'a> Route<'a> {
    /// The route for `path`, or `None` (404).
    pub fn parse(path: &'a str) -> Option<Self> {
        let rest = path.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        if segments.iter().any(|s| s.is_empty()) {
            return None;
        }
        Some(match segments.as_slice() {
            ["healthz"] => Route::Health,
            ["readyz"] => Route::Ready,
            ["metrics"] => Route::Metrics,
            ["v1", "openapi.json"] => Route::OpenApi,
            ["v1", "host"] => Route::Host,
            ["ui"] => Route::Ui("index.html"),
            ["ui", asset] => Route::Ui(asset),
            ["v1", "topics"] => Route::Topics,
            ["v1", "topics", t] => Route::Topic(t),
            ["v1", "topics", t, "messages"] => Route::Publish(t),
            ["v1", "topics", t, "tail"] => Route::Tail(t),
            ["v1", "topics", t, "partitions", p, "messages"] => Route::Partition(t, p),
            ["v1", "plugins"] => Route::Plugins,
            ["v1", "plugins", n] => Route::Plugin(n),
            ["v1", "subscriptions"] => Route::Subscriptions,
            ["v1", "subscriptions", n] => Route::Subscription(n),
            ["v1", "subscriptions", n, "dead-letters"] => Route::DeadLetters(n),
            ["v1", "subscriptions", n, "dead-letters", "redrive"] => Route::Redrive(n),
            ["v1", "subscriptions", n, "dead-letters", id] => Route::DeadLetter(n, id),
            ["v1", "subscriptions", n, "messages", id] => Route::Ledger(n, id),
            ["v1", "subscriptions", n, "kv"] => Route::Kv(n),
            ["v1", "subscriptions", n, "lease"] => Route::Lease(n),
            ["v1", "subscriptions", n, "settle"] => Route::Settle(n),
            ["v1", "subscriptions", n, "events"] => Route::Events(n),
            ["v1", "subscriptions", n, "pause"] => Route::Pause(n),
            ["v1", "subscriptions", n, "resume"] => Route::Resume(n),
            _ => return None,
        })
    }

    /// Every route's path template, as the OpenAPI document names them.
    #[cfg(test)]
    pub const TEMPLATES: [&'static str; 26] = [
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
        "/v1/host",
        "/ui",
        "/ui/{asset}",
        "/v1/topics",
        "/v1/topics/{topic}",
        "/v1/topics/{topic}/messages",
        "/v1/topics/{topic}/partitions/{partition}/messages",
        "/v1/plugins",
        "/v1/plugins/{name}",
        "/v1/subscriptions",
        "/v1/subscriptions/{name}",
        "/v1/subscriptions/{name}/dead-letters",
        "/v1/subscriptions/{name}/pause",
        "/v1/subscriptions/{name}/resume",
        "/v1/subscriptions/{name}/dead-letters/{id}",
        "/v1/subscriptions/{name}/dead-letters/redrive",
        "/v1/subscriptions/{name}/messages/{id}",
        "/v1/subscriptions/{name}/kv",
        "/v1/subscriptions/{name}/lease",
        "/v1/subscriptions/{name}/settle",
        "/v1/topics/{topic}/tail",
        "/v1/subscriptions/{name}/events",
    ];

    /// The path template of this route (one of [`Route::TEMPLATES`]).
    pub fn template(self) -> &'static str {
        match self {
            Route::Health => "/healthz",
            Route::Ready => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/v1/openapi.json",
            Route::Host => "/v1/host",
            Route::Ui("index.html") => "/ui",
            Route::Ui(_) => "/ui/{asset}",
            Route::Topics => "/v1/topics",
            Route::Topic(_) => "/v1/topics/{topic}",
            Route::Publish(_) => "/v1/topics/{topic}/messages",
            Route::Partition(..) => "/v1/topics/{topic}/partitions/{partition}/messages",
            Route::Plugins => "/v1/plugins",
            Route::Plugin(_) => "/v1/plugins/{name}",
            Route::Subscriptions => "/v1/subscriptions",
            Route::Subscription(_) => "/v1/subscriptions/{name}",
            Route::DeadLetters(_) => "/v1/subscriptions/{name}/dead-letters",
            Route::Pause(_) => "/v1/subscriptions/{name}/pause",
            Route::Resume(_) => "/v1/subscriptions/{name}/resume",
            Route::DeadLetter(..) => "/v1/subscriptions/{name}/dead-letters/{id}",
            Route::Redrive(_) => "/v1/subscriptions/{name}/dead-letters/redrive",
            Route::Ledger(..) => "/v1/subscriptions/{name}/messages/{id}",
            Route::Kv(_) => "/v1/subscriptions/{name}/kv",
            Route::Lease(_) => "/v1/subscriptions/{name}/lease",
            Route::Settle(_) => "/v1/subscriptions/{name}/settle",
            Route::Tail(_) => "/v1/topics/{topic}/tail",
            Route::Events(_) => "/v1/subscriptions/{name}/events",
        }
    }

    /// The methods the resource accepts, as sent in `Allow`.
    pub fn allow(self) -> &'static str {
        match self {
            Route::Topic(_) | Route::Subscription(_) | Route::Plugin(_) => "GET, PUT, DELETE",
            Route::Publish(_)
            | Route::Pause(_)
            | Route::Resume(_)
            | Route::Redrive(_)
            | Route::Lease(_)
            | Route::Settle(_) => "POST",
            Route::DeadLetters(_) | Route::DeadLetter(..) => "GET, DELETE",
            _ => "GET",
        }
    }

    fn accepts(self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }

    /// Health endpoints answer without a token.
    fn is_public(self) -> bool {
        matches!(
            self,
            Route::Health | Route::Ready | Route::Metrics | Route::OpenApi | Route::Ui(_)
        )
    }
}

/// Answer one request, counted by route, method and status.
pub async fn handle(state: &State, req: Request<ApiBody>) -> Reply {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let reply = answer(state, req, &method, &path).await;
    let template = Route::parse(&path).map_or("unmatched", Route::template);
    state.requests.observe(
        template,
        &method,
        reply.status().as_u16(),
        started.elapsed(),
    );
    reply
}

async fn answer(state: &State, req: Request<ApiBody>, method: &Method, path: &str) -> Reply {
    match route(state, req).await {
        Ok(reply) => reply,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::error!(
                    status = e.status.as_u16(),
                    code = e.code,
                    error = %e.message,
                    %method,
                    %path,
                    "request failed"
                );
            }
            e.into_response()
        }
    }
}

async fn route(state: &State, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let query = query.as_deref();
    let route =
        Route::parse(&path).ok_or_else(|| ApiError::not_found(format!("no such route: {path}")))?;
    if !route.accepts(req.method()) {
        return Err(ApiError::method_not_allowed(route.allow()));
    }
    let mut role = None;
    if !route.is_public() {
        let special = match route {
            Route::Publish(_) => Some(Role::Publish),
            Route::Lease(_) | Route::Settle(_) => Some(Role::Consume),
            _ => None,
        };
        let needed = Role::required(req.method(), special);
        role = Some(state.auth.check(req.headers(), needed)?);
    }
    let is_put = req.method() == Method::PUT;
    let is_delete = req.method() == Method::DELETE;
    let ctx = match route {
        Route::Health => return health::healthz(),
        Route::Metrics => {
            return super::metrics::render(&state.broker().await?, &state.requests).await
        }
        Route::Ready => return health::readyz(state),
        Route::OpenApi => return super::openapi::document(),
        Route::Ui("index.html") => return super::ui::index(),
        Route::Ui(asset) => return super::ui::asset(asset),
        _ => Ctx {
            broker: state.broker().await?,
            format: Format::for_response(req.headers()),
            events: super::cloudevents::wanted(req.headers()),
            closing: state.closing.clone(),
        },
    };
    let req = match super::forward::elsewhere(&ctx, route, req).await? {
        super::forward::Handled::Answered(reply) => return Ok(reply),
        super::forward::Handled::Here(req) => req,
    };
    match route {
        Route::Host => health::host(&ctx, state, role.unwrap_or(Role::Admin)),
        Route::Topics => topics::list(&ctx).await,
        Route::Topic(name) if is_put => topics::put(&ctx, name, req).await,
        Route::Topic(name) if is_delete => topics::delete(&ctx, name, query).await,
        Route::Topic(name) => topics::get(&ctx, name).await,
        Route::Publish(topic) => messages::publish(&ctx, topic, req).await,
        Route::Partition(topic, p) => messages::read(&ctx, topic, p, query).await,
        Route::Plugins => plugins::list(&ctx).await,
        Route::Plugin(name) if is_put => plugins::put(&ctx, name, req).await,
        Route::Plugin(name) if is_delete => plugins::delete(&ctx, name).await,
        Route::Plugin(name) => plugins::get(&ctx, name).await,
        Route::Subscriptions => subscriptions::list(&ctx, req.headers()).await,
        Route::Subscription(name) if is_put => subscriptions::put(&ctx, name, req).await,
        Route::Subscription(name) if is_delete => subscriptions::delete(&ctx, name).await,
        Route::Subscription(name) => subscriptions::get(&ctx, name).await,
        Route::DeadLetters(name) if is_delete => subscriptions::purge_all(&ctx, name).await,
        Route::DeadLetters(name) => subscriptions::dead_letters(&ctx, name, query).await,
        Route::DeadLetter(name, id) if is_delete => subscriptions::purge_one(&ctx, name, id).await,
        Route::DeadLetter(name, id) => subscriptions::dead_letter(&ctx, name, id).await,
        Route::Redrive(name) => subscriptions::redrive(&ctx, name, req).await,
        Route::Ledger(name, id) => subscriptions::ledger(&ctx, name, id).await,
        Route::Kv(name) => subscriptions::kv(&ctx, name, query).await,
        Route::Pause(name) => subscriptions::pause(&ctx, name).await,
        Route::Resume(name) => subscriptions::resume(&ctx, name).await,
        Route::Lease(name) => leases::lease(&ctx, name, req).await,
        Route::Tail(topic) => streams::tail(&ctx, topic, query, req.headers()).await,
        Route::Events(name) => streams::events(&ctx, name).await,
        Route::Settle(name) => leases::settle(&ctx, name, req).await,
        Route::Health | Route::Ready | Route::Metrics | Route::OpenApi | Route::Ui(_) => {
            Err(ApiError::internal("public routes are answered above"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, expected: Option<Route<'_>>) {
        assert_eq!(Route::parse(path), expected, "{path}");
    }

    #[test]
    fn paths_map_to_routes() {
        check("/healthz", Some(Route::Health));
        check("/metrics", Some(Route::Metrics));
        check("/readyz", Some(Route::Ready));
        check("/v1/topics", Some(Route::Topics));
        check("/v1/topics/orders", Some(Route::Topic("orders")));
        check("/v1/topics/orders/messages", Some(Route::Publish("orders")));
        check(
            "/v1/topics/o/partitions/3/messages",
            Some(Route::Partition("o", "3")),
        );
        check("/v1/plugins", Some(Route::Plugins));
        check("/v1/plugins/billing", Some(Route::Plugin("billing")));
        check("/v1/subscriptions", Some(Route::Subscriptions));
        check("/v1/subscriptions/s", Some(Route::Subscription("s")));
        check("/v1/subscriptions/s/pause", Some(Route::Pause("s")));
        check("/v1/subscriptions/s/kv", Some(Route::Kv("s")));
        check(
            "/v1/subscriptions/s/messages/m-1",
            Some(Route::Ledger("s", "m-1")),
        );
        check(
            "/v1/subscriptions/s/dead-letters/redrive",
            Some(Route::Redrive("s")),
        );
        check(
            "/v1/subscriptions/s/dead-letters/m-1",
            Some(Route::DeadLetter("s", "m-1")),
        );
        check("/v1/subscriptions/s/resume", Some(Route::Resume("s")));
        check("/v1/subscriptions/s/lease", Some(Route::Lease("s")));
        check("/v1/subscriptions/s/settle", Some(Route::Settle("s")));
        check("/v1/subscriptions/s/events", Some(Route::Events("s")));
        check("/v1/topics/t/tail", Some(Route::Tail("t")));
        check(
            "/v1/subscriptions/s/dead-letters",
            Some(Route::DeadLetters("s")),
        );
    }

    #[test]
    fn unknown_paths_are_none() {
        for path in [
            "",
            "/",
            "/v1",
            "/v1/topics/",
            "//v1/topics",
            "/v1/topics/a//messages",
            "/v2/topics",
            "/v1/topics/a/partitions/0",
        ] {
            check(path, None);
        }
    }

    #[test]
    fn methods_are_checked_per_route() {
        let accepts = |route: Route<'_>, m: Method| route.accepts(&m);
        assert!(accepts(Route::Topic("t"), Method::PUT));
        assert!(accepts(Route::Topic("t"), Method::GET));
        assert!(!accepts(Route::Topic("t"), Method::POST));
        assert!(accepts(Route::Publish("t"), Method::POST));
        assert!(!accepts(Route::Publish("t"), Method::GET));
        assert!(!accepts(Route::Topics, Method::PUT));
        assert!(!accepts(Route::Health, Method::HEAD));
        assert_eq!(Route::Plugin("p").allow(), "GET, PUT, DELETE");
        assert!(accepts(Route::Kv("s"), Method::GET));
        assert!(!accepts(Route::Kv("s"), Method::PUT));
        assert!(accepts(Route::Subscription("s"), Method::DELETE));
        assert!(accepts(Route::Topic("t"), Method::DELETE));
        assert!(!accepts(Route::Topics, Method::DELETE));
    }
}
