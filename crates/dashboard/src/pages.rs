//! The pages and the forms' actions. Each action calls the API, and on an error puts the
//! API's message in the session's flash for the form it came from, then redirects back
//! (303: the browser's back/reload does not send the form again).

use crate::session;
use crate::views::{self, short};
use crate::{Authed, Dashboard};
use askama::Template;
use axum::Extension;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use slipway_client::Client;
use slipway_types::{FormationUpdate, NewRelease};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

type Form = axum::Form<HashMap<String, String>>;

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An API error as a page (the API's own message).
fn api_error(e: slipway_client::ClientError) -> Response {
    let status = match &e {
        slipway_client::ClientError::Api { status, .. } => {
            StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    (status, format!("{e}\n")).into_response()
}

pub async fn login_page() -> Response {
    render(&views::Login { error: None })
}

/// Checks the key by asking the API with it (the API is the one judge of keys). Failures are
/// counted per client address (the connection's peer, put there by the server; not
/// `X-Forwarded-For`, which a client sets as it likes) and for all clients together.
pub async fn login(
    State(dash): State<Arc<Dashboard>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Form,
) -> Response {
    let ip = peer.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |p| p.0.0.ip());
    let page = |status: StatusCode, msg: &str| {
        let mut r = render(&views::Login {
            error: Some(msg.to_string()),
        });
        *r.status_mut() = status;
        r
    };
    if !dash.sessions.may_try(ip) {
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed logins: wait a minute and try again.",
        );
    }
    let key = form.get("key").map(|k| k.trim()).unwrap_or_default();
    if key.is_empty() || key.len() > 1024 {
        dash.sessions.failed(ip);
        return page(StatusCode::UNAUTHORIZED, "Wrong API key.");
    }
    let checked = match Client::new(&dash.api_url, key) {
        Ok(c) => c.apps().await,
        Err(e) => return page(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    match checked {
        Ok(_) => {}
        Err(slipway_client::ClientError::Api { status: 401, .. }) => {
            dash.sessions.failed(ip);
            return page(StatusCode::UNAUTHORIZED, "Wrong API key.");
        }
        Err(e) => return page(StatusCode::BAD_GATEWAY, &e.to_string()),
    }
    let id = dash.sessions.create(key.to_string());
    (
        [(
            header::SET_COOKIE,
            session::set_cookie(&id, crate::over_https(&headers)),
        )],
        Redirect::to("/dashboard/apps"),
    )
        .into_response()
}

pub async fn logout(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    headers: HeaderMap,
) -> Response {
    dash.sessions.remove(&a.id);
    (
        [(
            header::SET_COOKIE,
            session::set_cookie("", crate::over_https(&headers)),
        )],
        Redirect::to("/dashboard/login"),
    )
        .into_response()
}

pub async fn apps(Extension(a): Extension<Authed>) -> Response {
    let list = match a.client.apps().await {
        Ok(l) => l,
        Err(e) => return api_error(e),
    };
    let mut rows = Vec::new();
    for app in list {
        rows.push(app_row(&a.client, app).await);
    }
    render(&views::Apps {
        csrf: a.session.csrf,
        apps: rows,
    })
}

async fn app_row(c: &Client, app: slipway_types::App) -> views::AppRow {
    let name = app.name.clone();
    let (mut up, mut desired) = (0, 0);
    if let Some(rel) = app.release {
        if let Ok(f) = c.formation(&name, rel).await {
            desired = f.processes.values().sum();
        }
        if let Ok(jobs) = c.jobs(&name).await {
            up = jobs
                .iter()
                .filter(|j| j.release_id == rel && j.state == slipway_types::JobState::Up)
                .count() as u32;
        }
    }
    let last = c
        .deployments(&name)
        .await
        .ok()
        .and_then(|d| d.into_iter().next());
    let failed = last
        .as_ref()
        .is_some_and(|d| d.status == slipway_types::DeploymentStatus::Failed);
    views::AppRow {
        release: app
            .release
            .map(|r| short(&r.to_string()))
            .unwrap_or_default(),
        up,
        desired,
        last_deploy: last
            .as_ref()
            .map(|d| format!("{} {}", d.status.as_str(), views::age(&d.created_at)))
            .unwrap_or_else(|| "never".into()),
        health: match (failed, up >= desired) {
            (false, true) => "ok",
            (true, _) => "deploy failed",
            (false, false) => "degraded",
        },
        name,
    }
}

pub async fn app(Extension(a): Extension<Authed>, Path(name): Path<String>) -> Response {
    let c = &a.client;
    let app = match c.app(&name).await {
        Ok(app) => app,
        Err(e) => return api_error(e),
    };
    let mut releases = c.releases(&name).await.unwrap_or_default();
    releases.sort_by_key(|r| r.created_at);
    let current = app
        .release
        .and_then(|id| releases.iter().find(|r| r.id == id));
    let mut formation: Vec<(String, u32)> = Vec::new();
    if let Some(rel) = current {
        let counts = c
            .formation(&name, rel.id)
            .await
            .map(|f| f.processes)
            .unwrap_or_default();
        for t in rel.processes.keys() {
            formation.push((t.clone(), counts.get(t).copied().unwrap_or(0)));
        }
    }
    let env = current
        .map(|r| r.env.clone().into_iter().collect())
        .unwrap_or_default();
    let rows = releases
        .iter()
        .enumerate()
        .rev()
        .take(50)
        .map(|(i, r)| views::ReleaseRow {
            id: r.id.to_string(),
            short: short(&r.id.to_string()),
            created: views::when(&r.created_at),
            current: Some(r.id) == app.release,
            diff: views::diff(i.checked_sub(1).map(|p| &releases[p]), r),
        })
        .collect();
    let deployments = c
        .deployments(&name)
        .await
        .unwrap_or_default()
        .iter()
        .take(20)
        .map(views::deploy_row)
        .collect();
    let jobs = match jobs_view(&a, &name).await {
        Ok(j) => j,
        Err(e) => return api_error(e),
    };
    let routes = c
        .routes(&name)
        .await
        .unwrap_or_default()
        .iter()
        .map(views::route_row)
        .collect();
    let builds = c
        .builds(&name)
        .await
        .unwrap_or_default()
        .iter()
        .take(20)
        .map(|b| views::BuildRow {
            id: b.id.to_string(),
            short: short(&b.id.to_string()),
            commit: short(&b.commit),
            status: b.status.as_str().to_string(),
            created: views::when(&b.created_at),
            error: b.error.clone().unwrap_or_default(),
        })
        .collect();
    render(&views::App {
        builds,
        routes,
        csrf: a.session.csrf.clone(),
        release: app
            .release
            .map(|r| short(&r.to_string()))
            .unwrap_or_default(),
        name,
        flash: a.session.flash.clone(),
        formation,
        jobs,
        releases: rows,
        deployments,
        env,
    })
}

async fn jobs_view(a: &Authed, name: &str) -> Result<views::Jobs, slipway_client::ClientError> {
    let mut jobs = a.client.jobs(name).await?;
    jobs.sort_by(|x, y| (&x.process_type, &x.created_at).cmp(&(&y.process_type, &y.created_at)));
    Ok(views::Jobs {
        csrf: a.session.csrf.clone(),
        app: name.to_string(),
        rows: jobs.iter().map(views::job_row).filter(|j| j.live).collect(),
    })
}

/// The jobs table alone: what the app page's htmx asks for to refresh it.
pub async fn jobs_fragment(Extension(a): Extension<Authed>, Path(name): Path<String>) -> Response {
    match jobs_view(&a, &name).await {
        Ok(j) => render(&j),
        Err(e) => api_error(e),
    }
}

/// Where an action returns: the app page, at the form's section.
fn back(dash: &Dashboard, session: &str, app: &str, form: &str, r: Result<(), String>) -> Response {
    if let Err(msg) = r {
        dash.sessions.flash(session, form, msg);
    }
    Redirect::to(&format!("/dashboard/apps/{}#{form}", encode(app))).into_response()
}

/// App names are `[a-z0-9-]` (the API checks), but a path is built from user input here.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn scale(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    Path(name): Path<String>,
    form: Form,
) -> Response {
    let r = async {
        let c = &a.client;
        let rel = c
            .app(&name)
            .await
            .map_err(|e| e.to_string())?
            .release
            .ok_or("the app has no release yet: push one first")?;
        let mut update = match c.formation(&name, rel).await {
            Ok(f) => FormationUpdate {
                processes: f.processes,
                tags: f.tags,
            },
            Err(e) if e.is_not_found() => FormationUpdate::default(),
            Err(e) => return Err(e.to_string()),
        };
        for (k, v) in form.iter() {
            let Some(kind) = k.strip_prefix("p.") else {
                continue;
            };
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("{kind}: {v:?} is not a count (a whole number, 0 or more)"))?;
            update.processes.insert(kind.to_string(), n);
        }
        c.put_formation(&name, rel, &update)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    back(&dash, &a.id, &name, "formation", r)
}

pub async fn rollback(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    Path(name): Path<String>,
    form: Form,
) -> Response {
    let r = async {
        let id = form
            .get("release")
            .and_then(|r| r.parse().ok())
            .ok_or("no release chosen")?;
        a.client
            .deploy(&name, id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    back(&dash, &a.id, &name, "releases", r)
}

/// Sets (`value` given) or unsets (`unset` given) one env var: a new release from the current
/// one, deployed (the CLI's `env set` / `env unset`).
pub async fn env(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    Path(name): Path<String>,
    form: Form,
) -> Response {
    let r = async {
        let c = &a.client;
        let key = form.get("key").map(|k| k.trim()).unwrap_or_default();
        if key.is_empty() {
            return Err("the variable needs a name".to_string());
        }
        let mut next = match c.current_release(&name).await.map_err(|e| e.to_string())? {
            Some(r) => NewRelease::from_release(&r),
            None => NewRelease::default(),
        };
        if form.contains_key("unset") {
            if next.env.remove(key).is_none() {
                return Err(format!("{key} is not set"));
            }
        } else {
            let value = form.get("value").cloned().unwrap_or_default();
            next.env.insert(key.to_string(), value);
        }
        let release = c
            .create_release(&name, &next)
            .await
            .map_err(|e| e.to_string())?;
        c.deploy(&name, release.id)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    back(&dash, &a.id, &name, "env", r)
}

pub async fn kill(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    Path((name, job)): Path<(String, String)>,
) -> Response {
    let r = a
        .client
        .kill_job(&name, &job)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    back(&dash, &a.id, &name, "jobs", r)
}

/// The hosts (`GET /hosts`) and, under each, the live jobs of every app placed on it.
pub async fn cluster(Extension(a): Extension<Authed>) -> Response {
    let c = &a.client;
    let hosts = match c.hosts().await {
        Ok(h) => h,
        Err(e) => return api_error(e),
    };
    let apps = match c.apps().await {
        Ok(l) => l,
        Err(e) => return api_error(e),
    };
    let mut placed: HashMap<String, Vec<(String, views::JobRow)>> = HashMap::new();
    for app in apps {
        for j in c.jobs(&app.name).await.unwrap_or_default() {
            let row = views::job_row(&j);
            if let (Some(host), true) = (j.host_id, row.live) {
                placed
                    .entry(host)
                    .or_default()
                    .push((app.name.clone(), row));
            }
        }
    }
    let hosts = hosts
        .into_iter()
        .map(|h| views::HostRow {
            jobs: placed.remove(&h.id).unwrap_or_default(),
            state: h.state.as_str(),
            since: format!("since {}", views::when(&h.since)),
            addr: h.addr.unwrap_or_default(),
            tags: h
                .tags
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            id: h.id,
        })
        .collect();
    render(&views::Cluster {
        csrf: a.session.csrf,
        hosts,
    })
}

/// The app's log as Server-Sent Events for the page's live tail (htmx's SSE extension): the
/// last 100 lines, then each new one, every event one escaped HTML line (`event: line`).
pub async fn log_stream(Extension(a): Extension<Authed>, Path(name): Path<String>) -> Response {
    use futures_util::StreamExt;
    let query = slipway_client::LogQuery {
        lines: Some(100),
        follow: true,
        ..Default::default()
    };
    let lines = match a.client.log(&name, &query).await {
        Ok(l) => l,
        Err(e) => return api_error(e),
    };
    let events = lines.map(|l| {
        let html = match l {
            Ok(e) => format!(
                "<div>{} {}[{}]: {}</div>",
                escape(views::when(&e.ts).get(11..).unwrap_or_default()),
                escape(&e.app),
                escape(&format!(
                    "{}.{}",
                    if e.process_type.is_empty() {
                        "run"
                    } else {
                        &e.process_type
                    },
                    e.job_id
                        .get(e.job_id.len().saturating_sub(6)..)
                        .unwrap_or(&e.job_id)
                )),
                escape(&e.msg)
            ),
            Err(e) => format!("<div class=\"error\">{}</div>", escape(&e.to_string())),
        };
        Ok::<_, std::convert::Infallible>(
            axum::response::sse::Event::default()
                .event("line")
                .data(html),
        )
    });
    axum::response::sse::Sse::new(events)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}

/// HTML-escapes text put into an SSE event by hand (the templates escape on their own);
/// newlines become spaces (one event, one line).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Adds an HTTP route (`domain`, optional `path`) to the app's web service, or removes one
/// (`remove` = `http/ID` or `tcp/ID`), like `slipway route add http` / `route remove`.
pub async fn routes(
    State(dash): State<Arc<Dashboard>>,
    Extension(a): Extension<Authed>,
    Path(name): Path<String>,
    form: Form,
) -> Response {
    let r = async {
        let c = &a.client;
        if let Some(target) = form.get("remove") {
            let (kind, id) = target.split_once('/').ok_or("no route chosen")?;
            let kind = match kind {
                "http" => slipway_types::RouteType::Http,
                "tcp" => slipway_types::RouteType::Tcp,
                _ => return Err(format!("{kind:?} is not a route type")),
            };
            let id = id
                .parse()
                .map_err(|_| format!("{id:?} is not a route id"))?;
            return c
                .delete_route(&name, kind, id)
                .await
                .map_err(|e| e.to_string());
        }
        let path = form.get("path").map(|p| p.trim()).filter(|p| !p.is_empty());
        let route = slipway_types::NewRoute::Http {
            domain: form.get("domain").cloned().unwrap_or_default(),
            path: path.map(str::to_string),
            service: None,
            sticky: false,
            leader: false,
            certificate: None,
        };
        c.create_route(&name, &route)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    .await;
    back(&dash, &a.id, &name, "routes", r)
}

/// One build's log (`GET /apps/NAME/builds/ID/log`), as text in a `<pre>`.
pub async fn build_log(
    Extension(a): Extension<Authed>,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let Ok(id) = id.parse() else {
        return (StatusCode::NOT_FOUND, "no such build\n").into_response();
    };
    let build = match a.client.build(&name, id).await {
        Ok(b) => b,
        Err(e) => return api_error(e),
    };
    let log = match a.client.build_log(&name, id).await {
        Ok(l) => l,
        Err(e) => return api_error(e),
    };
    render(&views::BuildLog {
        csrf: a.session.csrf.clone(),
        short: short(&build.id.to_string()),
        status: build.status.as_str().to_string(),
        app: name,
        log,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_lines_are_escaped_into_one_line() {
        assert_eq!(
            super::escape("<script>\"x\" & 'y'\n"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39; "
        );
    }
}
