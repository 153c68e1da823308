//! The pages' data as the templates (`templates/`) show it: strings ready to print, so the
//! templates hold no logic beyond loops and ifs. askama escapes every value.

use askama::Template;
use slipway_types::{Deployment, Job, Release, Timestamp};
use std::collections::BTreeMap;

#[derive(Template)]
#[template(path = "login.html")]
pub struct Login {
    pub error: Option<String>,
}

#[derive(Template)]
#[template(path = "apps.html")]
pub struct Apps {
    pub csrf: String,
    pub apps: Vec<AppRow>,
}

pub struct AppRow {
    pub name: String,
    pub release: String,
    pub up: u32,
    pub desired: u32,
    pub last_deploy: String,
    pub health: &'static str,
}

#[derive(Template)]
#[template(path = "app.html")]
pub struct App {
    pub csrf: String,
    pub name: String,
    pub release: String,
    /// (form, message): the API's answer to the last form sent, shown next to that form.
    pub flash: Option<(String, String)>,
    pub formation: Vec<(String, u32)>,
    pub jobs: Jobs,
    pub releases: Vec<ReleaseRow>,
    pub deployments: Vec<DeployRow>,
    pub env: Vec<(String, String)>,
    pub routes: Vec<RouteRow>,
    pub builds: Vec<BuildRow>,
}

pub struct BuildRow {
    pub id: String,
    pub short: String,
    pub commit: String,
    pub status: String,
    pub created: String,
    pub error: String,
}

#[derive(Template)]
#[template(path = "build.html")]
pub struct BuildLog {
    pub csrf: String,
    pub app: String,
    pub short: String,
    pub status: String,
    pub log: String,
}

pub struct RouteRow {
    /// `http` or `tcp` (the API's path segment).
    pub kind: &'static str,
    pub id: String,
    /// `domain/path` or `:port`.
    pub what: String,
    pub service: String,
}

pub fn route_row(r: &slipway_types::Route) -> RouteRow {
    RouteRow {
        kind: r.kind().as_str(),
        id: r.id().to_string(),
        what: match r {
            slipway_types::Route::Http(h) => format!("{}{}", h.domain, h.path),
            slipway_types::Route::Tcp(t) => format!(":{}", t.port),
        },
        service: r.service().to_string(),
    }
}

impl App {
    /// The message for `form`, if the last action was that form's.
    pub fn flash_for(&self, form: &str) -> Option<&str> {
        self.flash
            .as_ref()
            .filter(|(f, _)| f == form)
            .map(|(_, m)| m.as_str())
    }
}

#[derive(Template)]
#[template(path = "jobs.html")]
pub struct Jobs {
    pub csrf: String,
    pub app: String,
    pub rows: Vec<JobRow>,
}

pub struct JobRow {
    pub id: String,
    pub short: String,
    pub kind: String,
    pub state: &'static str,
    pub host: String,
    pub restarts: u32,
    pub age: String,
    pub live: bool,
}

pub struct ReleaseRow {
    pub id: String,
    pub short: String,
    pub created: String,
    pub current: bool,
    /// What changed from the release before it (env names only: values stay hidden).
    pub diff: Vec<String>,
}

pub struct DeployRow {
    pub release: String,
    pub status: &'static str,
    pub created: String,
    pub error: String,
}

pub fn short(id: &str) -> String {
    id.get(..8).unwrap_or(id).to_string()
}

/// `3s`, `5m`, `2h`, `4d` since `t`.
pub fn age(t: &Timestamp) -> String {
    let s = ((Timestamp::now().unix_millis() - t.unix_millis()) / 1000).max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// `2026-12-07 00:20:46` of an RFC 3339 timestamp.
pub fn when(t: &Timestamp) -> String {
    let s = t.to_string();
    s.get(..19).unwrap_or(&s).replace('T', " ")
}

pub fn job_row(j: &Job) -> JobRow {
    JobRow {
        id: j.id.clone(),
        // The last six characters, as the log's `app[web.8f3a2c]` names the job.
        short: j
            .id
            .get(j.id.len().saturating_sub(6)..)
            .unwrap_or(&j.id)
            .to_string(),
        kind: j.process_type.clone().unwrap_or_else(|| "run".into()),
        state: j.state.as_str(),
        host: j.host_id.clone().unwrap_or_default(),
        restarts: j.restarts,
        age: age(&j.created_at),
        live: !matches!(
            j.state,
            slipway_types::JobState::Down
                | slipway_types::JobState::Crashed
                | slipway_types::JobState::Failed
        ),
    }
}

/// What `new` changes from `old`: env vars and process types added, changed, removed.
pub fn diff(old: Option<&Release>, new: &Release) -> Vec<String> {
    let Some(old) = old else {
        return vec!["first release".into()];
    };
    let mut out = Vec::new();
    changes(&mut out, "env", &old.env, &new.env);
    let op: BTreeMap<_, _> = old.processes.iter().map(|(k, v)| (k, &v.args)).collect();
    let np: BTreeMap<_, _> = new.processes.iter().map(|(k, v)| (k, &v.args)).collect();
    changes(&mut out, "process", &op, &np);
    if old.artifacts != new.artifacts {
        out.push("~ new build".into());
    }
    if out.is_empty() {
        out.push("no change".into());
    }
    out
}

fn changes<K: Ord + std::fmt::Display, V: PartialEq>(
    out: &mut Vec<String>,
    what: &str,
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("+ {what} {k}")),
            Some(o) if o != v => out.push(format!("~ {what} {k}")),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        out.push(format!("- {what} {k}"));
    }
}

pub fn deploy_row(d: &Deployment) -> DeployRow {
    DeployRow {
        release: short(&d.new_release_id.to_string()),
        status: d.status.as_str(),
        created: when(&d.created_at),
        error: d.error.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "cluster.html")]
pub struct Cluster {
    pub csrf: String,
    pub hosts: Vec<HostRow>,
}

pub struct HostRow {
    pub id: String,
    pub state: &'static str,
    pub since: String,
    pub addr: String,
    pub tags: String,
    /// (app name, job) of the jobs placed on it.
    pub jobs: Vec<(String, JobRow)>,
}
