//! Plugins: `PUT /v1/plugins/{name}` (the raw `.wasm` component as the body),
//! `GET /v1/plugins`, `GET /v1/plugins/{name}`, `DELETE /v1/plugins/{name}`
//! (every version) and `DELETE /v1/plugins/{name}@{N}` (one version).

use super::body::{self, Reply};
use super::error::{ApiError, ErrorBody};
use super::ApiBody;
use super::Ctx;
use crate::broker::{validate_resource_name, PluginInfo, MAX_PLUGIN_BYTES};
use hyper::{Request, StatusCode};
use serde::Serialize;

/// Validate, compile and store the upload as the next version. 201 with the
/// plugin if a version was created, 200 if the bytes equal the latest
/// version, 400 `plugin_rejected` if they are not a consumer component.
#[utoipa::path(put, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path, description = "Plugin name")),
    request_body(content = Vec<u8>, content_type = "application/wasm", description = "The consumer component (at most 32 MiB)"),
    responses(
        (status = 200, description = "Identical to the latest version: nothing stored", body = PluginInfo),
        (status = 201, description = "Validated, compiled and stored as the next version", body = PluginInfo)))]
pub async fn put(ctx: &Ctx, name: &str, req: Request<ApiBody>) -> Result<Reply, ApiError> {
    // Refuse a bad name before receiving up to 32 MiB for nothing.
    validate_resource_name("plugin", name)?;
    let (parts, incoming) = req.into_parts();
    let timeout = body::body_timeout(&parts);
    let wasm = body::read(
        incoming,
        &parts.headers,
        MAX_PLUGIN_BYTES,
        "the plugin",
        timeout,
    )
    .await?;
    if wasm.is_empty() {
        return Err(ApiError::invalid(
            "the body must be the plugin's .wasm component",
        ));
    }
    let (info, created) = ctx.broker.put_plugin(name, Vec::from(wasm)).await?;
    body::reply(body::created_or_ok(created), ctx.format, &info)
}

#[derive(Serialize, utoipa::ToSchema)]
struct PluginList {
    plugins: Vec<PluginInfo>,
}

/// `{"plugins": [...]}`.
#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    responses((status = 200, description = "Every plugin", body = PluginList)))]
pub async fn list(ctx: &Ctx) -> Result<Reply, ApiError> {
    let plugins = ctx.broker.plugins().await?;
    body::reply(StatusCode::OK, ctx.format, &PluginList { plugins })
}

/// 409 while a subscription pins the version, or follows the plugin and the
/// latest version would go.
#[utoipa::path(delete, path = "/v1/plugins/{name}", tag = "plugins",
    params(("name" = String, Path, description = "`name` (every version) or `name@N` (one version)")),
    responses(
        (status = 200, description = "Deleted", body = body::Deleted),
        (status = 409, description = "A subscription uses it", body = ErrorBody)))]
pub async fn delete(ctx: &Ctx, reference: &str) -> Result<Reply, ApiError> {
    ctx.broker.delete_plugin(reference).await?;
    body::reply(
        StatusCode::OK,
        ctx.format,
        &body::Deleted { deleted: reference },
    )
}

#[utoipa::path(get, path = "/v1/plugins/{name}", tag = "plugins", params(("name" = String, Path, description = "Plugin name")),
    responses((status = 200, description = "The plugin and its versions", body = PluginInfo)))]
pub async fn get(ctx: &Ctx, name: &str) -> Result<Reply, ApiError> {
    let info = ctx.broker.plugin(name).await?;
    body::reply(StatusCode::OK, ctx.format, &info)
}
