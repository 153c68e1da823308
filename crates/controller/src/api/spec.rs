//! The API's OpenAPI 3.1 description, generated from the handlers' `#[utoipa::path]`
//! annotations and the types' `ToSchema` derives, and built with the router from the same list
//! (`api/mod.rs`: each route is added through `utoipa_axum::routes!`), so a route cannot be
//! served without being described, nor described without being served. `GET /openapi.json`
//! serves it without the API key; docs/api.md says how to read it.

use slipway_types::ApiError;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Slipway controller API",
        description = "Apps, artifacts, releases, formations, jobs, deployments, routes, events and builds. \
            Every endpoint but `GET /ping` and `GET /openapi.json` takes the API key, as \
            `Authorization: Bearer KEY` (or Basic with an empty user and the key as password). \
            Every error answers `{\"code\", \"message\", \"field\"?}` with the status its code maps to.",
        license(name = "BSD-3-Clause")
    ),
    modifiers(&Security),
    security(("api_key" = []), ("basic" = [])),
    components(schemas(ApiError, slipway_types::ErrorCode)),
    tags(
        (name = "meta", description = "The API itself and the cluster"),
        (name = "apps"), (name = "artifacts"), (name = "releases"), (name = "formations"),
        (name = "jobs"), (name = "deployments"), (name = "routes"), (name = "events"),
        (name = "builds")
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

/// The errors of an endpoint that reads: a malformed path or query (400), no key (401),
/// nothing there (404), no scheduler or database to ask (503).
#[allow(dead_code)] // only described, never built
#[derive(utoipa::IntoResponses)]
pub(crate) enum ReadErrors {
    #[response(
        status = 400,
        description = "Malformed request (path, query or header)"
    )]
    BadRequest(ApiError),
    #[response(status = 401, description = "Missing or invalid API key")]
    Unauthorized(ApiError),
    #[response(status = 404, description = "No such object (or a malformed id)")]
    NotFound(ApiError),
    #[response(
        status = 503,
        description = "The database or the scheduler cannot be reached"
    )]
    Unavailable(ApiError),
}

/// The errors of an endpoint that changes something: those of [`ReadErrors`], and a body that
/// is too large (413), not JSON (415), of the wrong shape or against a rule (422), or that
/// clashes with what is there (409).
#[allow(dead_code)] // only described, never built
#[derive(utoipa::IntoResponses)]
pub(crate) enum WriteErrors {
    #[response(
        status = 400,
        description = "Malformed request (JSON that does not parse)"
    )]
    BadRequest(ApiError),
    #[response(status = 401, description = "Missing or invalid API key")]
    Unauthorized(ApiError),
    #[response(status = 404, description = "No such object (or a malformed id)")]
    NotFound(ApiError),
    #[response(status = 409, description = "Conflicts with what is there")]
    Conflict(ApiError),
    #[response(status = 413, description = "The body is larger than 1 MiB")]
    PayloadTooLarge(ApiError),
    #[response(status = 415, description = "The body is not JSON")]
    UnsupportedMediaType(ApiError),
    #[response(
        status = 422,
        description = "Invalid request: wrong shape or a rule broken (`field` names it)"
    )]
    ValidationError(ApiError),
    #[response(
        status = 503,
        description = "The database or the scheduler cannot be reached, or no scheduler leads"
    )]
    Unavailable(ApiError),
}

/// `{app}`: an app's id or name.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppPath {
    /// The app's id or name.
    app: String,
}

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppIdPath {
    /// The app's id or name.
    app: String,
    /// The object's id (a UUID).
    id: String,
}

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppJobPath {
    /// The app's id or name.
    app: String,
    /// The job's id.
    job: String,
}

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppReleasePath {
    /// The app's id or name.
    app: String,
    /// The release's id (a UUID).
    release: String,
}

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct RoutePath {
    /// The app's id or name.
    app: String,
    /// `http` or `tcp`.
    kind: String,
    /// The route's id (a UUID).
    id: String,
}

#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct IdPath {
    /// The object's id.
    id: String,
}

/// `GET /events`'s query.
#[allow(dead_code)]
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Only this app's events (its id or name).
    app_id: Option<String>,
    /// Comma-separated object types (`app,release,…`).
    object_types: Option<String>,
    /// Only events about this object.
    object_id: Option<String>,
    /// Only events after this id.
    since_id: Option<i64>,
    /// At most this many events.
    count: Option<u32>,
}

/// `{}`: what a delete answers.
#[derive(utoipa::ToSchema)]
pub(crate) struct Empty {}

/// `GET /ping`'s answer.
#[allow(dead_code)]
#[derive(utoipa::ToSchema)]
pub(crate) struct Status {
    /// `ok`.
    status: String,
}

/// Gives every unsigned integer its real bounds: utoipa names their formats `u-int16` and the
/// like (and no maximum), so a client or fuzzer would not know that `65536` is no port. They
/// become `uint16` etc. with `maximum` 2^N-1 (`u-int64` keeps no maximum: JSON numbers past
/// 2^53 are not exact anyway).
pub(crate) fn unsigned_bounds(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            let bits = match map.get("format").and_then(|f| f.as_str()) {
                Some("u-int8") => Some(8),
                Some("u-int16") => Some(16),
                Some("u-int32") => Some(32),
                Some("u-int64") => Some(64),
                _ => None,
            };
            if let Some(bits) = bits {
                map.insert("format".into(), format!("uint{bits}").into());
                if bits < 64 && !map.contains_key("maximum") {
                    map.insert("maximum".into(), ((1u64 << bits) - 1).into());
                }
            }
            map.values_mut().for_each(unsigned_bounds);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(unsigned_bounds),
        _ => {}
    }
}

/// Spells response links as OpenAPI does: utoipa 5 writes their fields in snake case
/// (`operation_id`), which validators refuse and fuzzers cannot follow.
pub(crate) fn link_field_names(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
                    for (from, to) in [
                        ("operation_id", "operationId"),
                        ("operation_ref", "operationRef"),
                        ("request_body", "requestBody"),
                    ] {
                        if let Some(x) = link.remove(from) {
                            link.insert(to.into(), x);
                        }
                    }
                }
            }
            map.values_mut().for_each(link_field_names);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(link_field_names),
        _ => {}
    }
}
