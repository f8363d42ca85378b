//! `GET /ui`: the web dashboard, a page and its script and style, embedded in
//! the binary (no build step, no CDN). The page holds no data: it calls the
//! API with the token the operator gives it, kept in `sessionStorage`.

use super::body::{self, Reply};
use super::error::ApiError;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/style.css");

/// Only this origin's script, style and API; never framed.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

#[utoipa::path(get, path = "/ui", tag = "ui",
    responses((status = 200, description = "The dashboard's page", body = String, content_type = "text/html")))]
pub fn index() -> Result<Reply, ApiError> {
    asset("index.html")
}

#[utoipa::path(get, path = "/ui/{asset}", tag = "ui",
    params(("asset" = String, Path, description = "`app.js` or `style.css`")),
    responses(
        (status = 200, description = "The asset", body = String, content_type = "text/javascript"),
        (status = 404, description = "No such asset", body = super::error::ErrorBody)))]
pub fn asset(name: &str) -> Result<Reply, ApiError> {
    let (content, kind) = match name {
        "index.html" => (INDEX, "text/html; charset=utf-8"),
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return Err(ApiError::not_found(format!("no dashboard asset {name:?}"))),
    };
    let mut response = Response::new(body::full(content));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    // Small, and changed with the binary: always revalidated.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("content-security-policy", HeaderValue::from_static(POLICY));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Ok(response)
}
