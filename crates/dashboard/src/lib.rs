//! The web dashboard, served by the controller role under `/dashboard` (docs/dashboard.md).
//!
//! Server-rendered HTML (askama templates, escaped by default) that reads without JavaScript;
//! vendored htmx refreshes the live parts. Every page and action goes through the controller's
//! HTTP API with the logged-in user's key ([`slipway_client::Client`]): the same API and
//! validation as the CLI, and the API's error message is what the page shows next to the form.
//!
//! Security: nothing but the login page and the static assets without a session
//! ([`session`]); every POST carries the session's CSRF token and, when the browser says where
//! it comes from (`Origin`, `Sec-Fetch-Site`), must come from this site; otherwise 403. Every
//! answer has a Content-Security-Policy (`script-src 'self'`) and `X-Frame-Options: DENY`.

mod pages;
pub mod session;
mod views;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

/// Form bodies larger than this are refused (the largest form is an env value).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// The vendored htmx and its SSE extension, and the style sheet: served with a version in the
/// path and cached for a year (a new version is a new path).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx-2.0.11.min.js",
        "text/javascript",
        include_bytes!("../assets/htmx-2.0.11.min.js"),
    ),
    (
        "sse-2.2.4.min.js",
        "text/javascript",
        include_bytes!("../assets/sse-2.2.4.min.js"),
    ),
    (
        "dashboard-2.css",
        "text/css",
        include_bytes!("../assets/dashboard-2.css"),
    ),
];

pub(crate) struct Dashboard {
    /// The controller API this dashboard calls (loopback).
    api_url: String,
    sessions: session::Sessions,
}

/// The logged-in request's session, put in the request's extensions by [`require_session`].
#[derive(Clone)]
pub(crate) struct Authed {
    pub id: String,
    pub session: session::Session,
    pub client: slipway_client::Client,
}

/// The dashboard's routes, all under `/dashboard`, calling the controller API at `api_url`.
pub fn router(api_url: String) -> Router {
    let state = Arc::new(Dashboard {
        api_url,
        sessions: session::Sessions::default(),
    });
    let private = Router::new()
        .route("/dashboard", get(root))
        .route("/dashboard/", get(root))
        .route("/dashboard/logout", post(pages::logout))
        .route("/dashboard/apps", get(pages::apps))
        .route("/dashboard/cluster", get(pages::cluster))
        .route("/dashboard/apps/{app}", get(pages::app))
        .route("/dashboard/apps/{app}/jobs", get(pages::jobs_fragment))
        .route("/dashboard/apps/{app}/log/stream", get(pages::log_stream))
        .route("/dashboard/apps/{app}/scale", post(pages::scale))
        .route("/dashboard/apps/{app}/rollback", post(pages::rollback))
        .route("/dashboard/apps/{app}/env", post(pages::env))
        .route("/dashboard/apps/{app}/routes", post(pages::routes))
        .route("/dashboard/apps/{app}/builds/{id}", get(pages::build_log))
        .route("/dashboard/apps/{app}/jobs/{job}/kill", post(pages::kill))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_session,
        ));
    Router::new()
        .route(
            "/dashboard/login",
            get(pages::login_page).post(pages::login),
        )
        .route("/dashboard/assets/{file}", get(asset))
        .merge(private)
        .layer(axum::middleware::from_fn(same_site_only))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

async fn root() -> Redirect {
    Redirect::to("/dashboard/apps")
}

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// Without a session: GET goes to the login page, anything else is 403. With one, a POST must
/// carry the session's CSRF token in its `csrf` field (403 otherwise).
async fn require_session(State(dash): State<Arc<Dashboard>>, req: Request, next: Next) -> Response {
    let found =
        session::cookie_id(req.headers()).and_then(|id| Some((dash.sessions.get(&id)?, id)));
    let Some((session, id)) = found else {
        return match *req.method() {
            Method::GET | Method::HEAD => Redirect::to("/dashboard/login").into_response(),
            _ => forbidden("not logged in"),
        };
    };
    let client = match slipway_client::Client::new(&dash.api_url, &session.key) {
        Ok(c) => c,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let (parts, body) = req.into_parts();
    let mut req = if parts.method == Method::POST {
        let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
            return (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response();
        };
        let token = form_field(&bytes, "csrf");
        if !token.is_some_and(|t| session::same(&t, &session.csrf)) {
            return forbidden("missing or wrong CSRF token: reload the page and try again");
        }
        Request::from_parts(parts, axum::body::Body::from(bytes))
    } else {
        Request::from_parts(parts, body)
    };
    req.extensions_mut().insert(Authed {
        id,
        session,
        client,
    });
    next.run(req).await
}

/// A field of a `application/x-www-form-urlencoded` body.
pub(crate) fn form_field(body: &[u8], name: &str) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    pairs.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

pub(crate) fn forbidden(why: &str) -> Response {
    (StatusCode::FORBIDDEN, format!("403 Forbidden: {why}\n")).into_response()
}

/// A POST whose browser says it comes from another site is refused (CSRF, second line).
async fn same_site_only(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        return forbidden("this form was sent from another site");
    }
    next.run(req).await
}

fn same_origin(h: &HeaderMap) -> bool {
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (h.get(header::ORIGIN), h.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or_default();
            let host = host.to_str().unwrap_or_default();
            origin
                .split_once("://")
                .is_some_and(|(_, authority)| authority == host)
        }
        _ => true,
    }
}

async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    harden(resp.headers_mut());
    resp
}

/// The headers every answer gets. Pages hold env values (secrets) and the CSRF token: unless the
/// answer says otherwise (the versioned assets), nothing is stored by the browser or a proxy, so
/// the back button after logout or a shared machine's disk cache shows nothing.
fn harden(h: &mut HeaderMap) {
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
}

/// Whether the browser reached us over HTTPS (directly or through the router): the cookie is
/// then `Secure`.
pub(crate) fn over_https(h: &HeaderMap) -> bool {
    h.get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_parsed_and_cross_site_posts_spotted() {
        assert_eq!(
            form_field(b"a=1&csrf=x%20y", "csrf").as_deref(),
            Some("x y")
        );
        assert_eq!(form_field(b"a=1", "csrf"), None);
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "c:1".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://c:1".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil".parse().unwrap());
        assert!(!same_origin(&h));
        h.remove(header::ORIGIN);
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!same_origin(&h));
    }

    #[test]
    fn pages_are_not_stored_but_assets_keep_their_caching() {
        let mut page = HeaderMap::new();
        harden(&mut page);
        assert_eq!(page[header::CACHE_CONTROL], "no-store");
        assert!(
            page[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let mut asset = HeaderMap::new();
        asset.insert(header::CACHE_CONTROL, HeaderValue::from_static("public"));
        harden(&mut asset);
        assert_eq!(asset[header::CACHE_CONTROL], "public");
    }
}
