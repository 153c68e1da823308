//! The roles a `slipway server` process runs (`--roles`), and which sets of them can work today.
//!
//! Every role can be named, but not every split works yet: the controller's `run`, `kill` and
//! attach go to the scheduler in its process, and the controller's satellites (logs, builder,
//! registry, blob store) share its store and its port. [`check`] refuses those splits before
//! anything starts, saying why and what to run instead; the cluster work lifts them one by one.
//! What does work apart: the router (following a controller and a discovery over HTTP),
//! discovery, and host agents (`--host-listen`: registered in discovery, followed there by the
//! scheduler, the discovery bridge and the log aggregator).

use std::collections::BTreeSet;
use std::fmt;

/// One daemon role. The order is the order they start in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Controller,
    Scheduler,
    Discovery,
    Host,
    Router,
    Logs,
    Blobstore,
    Builder,
    Registry,
    Housekeeping,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Controller,
        Role::Scheduler,
        Role::Discovery,
        Role::Host,
        Role::Router,
        Role::Logs,
        Role::Blobstore,
        Role::Builder,
        Role::Registry,
        Role::Housekeeping,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Scheduler => "scheduler",
            Role::Discovery => "discovery",
            Role::Host => "host",
            Role::Router => "router",
            Role::Logs => "logs",
            Role::Blobstore => "blobstore",
            Role::Builder => "builder",
            Role::Registry => "registry",
            Role::Housekeeping => "housekeeping",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of roles (`--roles`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roles(BTreeSet<Role>);

impl Roles {
    pub fn all() -> Roles {
        Roles(Role::ALL.into_iter().collect())
    }

    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// `--no-host` and `--no-router` are older spellings of leaving a role out.
    pub fn remove(&mut self, role: Role) {
        self.0.remove(&role);
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::name).collect();
        f.write_str(&names.join(","))
    }
}

/// `--roles`: names separated by commas (spaces allowed), or `all`. clap shows the message.
pub(crate) fn parse(s: &str) -> Result<Roles, String> {
    let mut set = BTreeSet::new();
    for name in s.split(',').map(str::trim) {
        if name == "all" {
            set.extend(Role::ALL);
            continue;
        }
        let Some(role) = Role::ALL.into_iter().find(|r| r.name() == name) else {
            let known: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
            return Err(format!(
                "unknown role {name:?}: the roles are {} (or `all`)",
                known.join(", ")
            ));
        };
        set.insert(role);
    }
    Ok(Roles(set))
}

/// A set of roles that cannot run as asked, and why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--roles {roles}: {reason}")]
pub struct RefusedSplit {
    pub roles: String,
    pub reason: String,
}

/// What a process's roles need from outside it: the URLs and key it was given.
#[derive(Clone, Copy, Default)]
pub struct Remote<'a> {
    pub controller_url: Option<&'a str>,
    pub discovery_url: Option<&'a str>,
    pub api_key: Option<&'a str>,
    /// `--host-listen`: where the host agent serves its API for other processes.
    pub host_listen: Option<std::net::SocketAddr>,
    /// `--etcd`: discovery's instances are read there directly.
    pub etcd: Option<&'a str>,
}

/// Refuses the splits that cannot work yet (see the module doc), before anything starts.
pub fn check(roles: &Roles, remote: &Remote) -> Result<(), RefusedSplit> {
    use Role::*;
    let refuse = |reason: String| {
        Err(RefusedSplit {
            roles: roles.to_string(),
            reason,
        })
    };
    if roles.0.is_empty() {
        return refuse("no role to run: name at least one, or `all`".into());
    }
    if roles.has(Controller) != roles.has(Scheduler) {
        return refuse(
            "the controller and the scheduler run in the same process for now (the controller's \
             `run`, `kill` and attach go straight to the scheduler): name both or neither"
                .into(),
        );
    }
    if roles.has(Host) && !roles.has(Scheduler) {
        match remote.host_listen {
            None => {
                return refuse(
                    "a host agent without the scheduler in the same process serves its API for \
                     a scheduler elsewhere: give --host-listen ADDR (an address that scheduler \
                     reaches), or add `scheduler` (and `controller`)"
                        .into(),
                );
            }
            Some(a) if a.ip().is_unspecified() => {
                return refuse(format!(
                    "--host-listen {a}: the host registers this address in discovery for the \
                     scheduler to reach, so it must be a concrete one (e.g. 10.0.0.5:1113)"
                ));
            }
            Some(_) => {}
        }
    }
    if roles.has(Host) && !roles.has(Discovery) {
        if remote.discovery_url.is_none() && remote.etcd.is_none() {
            return refuse(
                "a host agent registers itself and its jobs in discovery: add `discovery`, \
                 give --etcd, or give --discovery-url (and the key: SLIPWAY_API_KEY or \
                 --api-key-file)"
                    .into(),
            );
        }
        if remote.host_listen.is_none() {
            return refuse(
                "a host agent without discovery in the same process is followed over HTTP by \
                 the process that runs discovery: give --host-listen ADDR"
                    .into(),
            );
        }
        // On etcd there is no discovery API to present a key to.
        if remote.api_key.is_none() && !roles.has(Controller) && remote.etcd.is_none() {
            return refuse(
                "discovery wants the API key: give --api-key-file (the controller's \
                 `<data dir>/api-key`) or put the key in SLIPWAY_API_KEY"
                    .into(),
            );
        }
    }
    for needs_controller in [Logs, Builder, Registry, Blobstore, Housekeeping] {
        if roles.has(needs_controller) && !roles.has(Controller) {
            return refuse(format!(
                "`{needs_controller}` is served on the controller's port and reads its store: \
                 add `controller` (and `scheduler`), or leave `{needs_controller}` out"
            ));
        }
    }
    for needs_blobs in [Builder, Registry] {
        if roles.has(needs_blobs) && !roles.has(Blobstore) {
            return refuse(format!(
                "`{needs_blobs}` writes slugs or layers into the blob store: add `blobstore`"
            ));
        }
    }
    if roles.has(Router) {
        if !roles.has(Controller) && remote.controller_url.is_none() {
            return refuse(
                "a router without the controller in the same process follows one over HTTP: \
                 give --controller-url (and the key: SLIPWAY_API_KEY or --api-key-file)"
                    .into(),
            );
        }
        if !roles.has(Discovery) && remote.discovery_url.is_none() && remote.etcd.is_none() {
            return refuse(
                "a router without discovery in the same process takes its backends from \
                 discovery's HTTP API or from etcd: give --discovery-url (and the key: \
                 SLIPWAY_API_KEY or --api-key-file) or --etcd"
                    .into(),
            );
        }
        let remote_used = !roles.has(Controller) || !roles.has(Discovery);
        if remote_used && !roles.has(Controller) && remote.api_key.is_none() {
            return refuse(
                "the controller and discovery want the API key: give --api-key-file (the \
                 controller's `<data dir>/api-key`) or put the key in SLIPWAY_API_KEY"
                    .into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(s: &str) -> Roles {
        parse(s).unwrap()
    }

    #[test]
    fn all_is_every_role_and_names_combine() {
        assert_eq!(roles("all"), Roles::all());
        assert_eq!(roles("all").iter().count(), 10);
        let r = roles("router, discovery,router");
        assert!(r.has(Role::Router) && r.has(Role::Discovery) && !r.has(Role::Host));
        assert_eq!(r.to_string(), "discovery,router");
    }

    #[test]
    fn an_unknown_role_is_named_with_the_known_ones() {
        let e = parse("controller,routr").unwrap_err();
        assert!(e.contains("\"routr\""), "{e}");
        assert!(e.contains("housekeeping"), "{e}");
    }

    #[test]
    fn the_default_and_the_first_process_of_the_split_pass() {
        check(&Roles::all(), &Remote::default()).unwrap();
        check(
            &roles("controller,scheduler,host,discovery"),
            &Remote::default(),
        )
        .unwrap();
    }

    #[test]
    fn a_router_alone_needs_urls_and_the_key() {
        let r = roles("router");
        let e = check(&r, &Remote::default()).unwrap_err();
        assert!(e.reason.contains("--controller-url"), "{e}");
        let e = check(
            &r,
            &Remote {
                controller_url: Some("http://c"),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("--discovery-url"), "{e}");
        let e = check(
            &r,
            &Remote {
                controller_url: Some("http://c"),
                discovery_url: Some("http://d"),
                api_key: None,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("--api-key"), "{e}");
        check(
            &r,
            &Remote {
                controller_url: Some("http://c"),
                discovery_url: Some("http://d"),
                api_key: Some("k"),
                ..Default::default()
            },
        )
        .unwrap();
        // etcd instead of discovery's HTTP API.
        check(
            &r,
            &Remote {
                controller_url: Some("http://c"),
                api_key: Some("k"),
                etcd: Some("http://e:2379"),
                ..Default::default()
            },
        )
        .unwrap();
    }

    #[test]
    fn a_host_alone_serves_its_api_and_registers_in_a_remote_discovery() {
        let r = roles("host,router");
        let listen = "127.0.0.1:1113".parse().ok();
        let all = Remote {
            controller_url: Some("http://c"),
            discovery_url: Some("http://d"),
            api_key: Some("k"),
            host_listen: listen,
            etcd: None,
        };
        check(&r, &all).unwrap();
        let e = check(
            &r,
            &Remote {
                host_listen: None,
                ..all
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("--host-listen"), "{e}");
        let e = check(
            &r,
            &Remote {
                host_listen: "0.0.0.0:1113".parse().ok(),
                ..all
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("concrete"), "{e}");
        let e = check(
            &roles("host"),
            &Remote {
                api_key: None,
                ..all
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("API key"), "{e}");
    }

    #[test]
    fn with_etcd_the_cluster_splits_need_no_discovery_url() {
        let etcd = Remote {
            etcd: Some("http://e:2379"),
            host_listen: "127.0.0.1:1113".parse().ok(),
            ..Default::default()
        };
        // The controllers: everything but discovery's HTTP API, which no one needs.
        check(&roles("controller,scheduler,host,router"), &etcd).unwrap();
        check(&roles("controller,scheduler"), &etcd).unwrap();
        // A host (and router) process: etcd instead of --discovery-url, and no API key for
        // discovery (the router still follows a controller, with the key).
        check(&roles("host"), &etcd).unwrap();
        check(
            &roles("host,router"),
            &Remote {
                controller_url: Some("http://c"),
                api_key: Some("k"),
                ..etcd
            },
        )
        .unwrap();
        // etcd does not replace what it does not serve: the host API's address.
        let e = check(
            &roles("host"),
            &Remote {
                host_listen: None,
                ..etcd
            },
        )
        .unwrap_err();
        assert!(e.reason.contains("--host-listen"), "{e}");
        let e = check(&roles("host"), &Remote { etcd: None, ..etcd }).unwrap_err();
        assert!(e.reason.contains("--etcd"), "{e}");
    }

    #[test]
    fn splits_that_cannot_work_yet_are_refused_with_the_fix() {
        let cases = [
            ("controller", "name both or neither"),
            ("scheduler", "name both or neither"),
            ("host,discovery", "--host-listen"),
            ("controller,scheduler,host", "add `discovery`"),
            ("host", "--host-listen"),
            ("logs", "add `controller`"),
            ("housekeeping,discovery", "add `controller`"),
            ("controller,scheduler,builder", "add `blobstore`"),
            ("controller,scheduler,registry", "add `blobstore`"),
        ];
        for (set, fix) in cases {
            let e = check(&roles(set), &Remote::default()).unwrap_err();
            assert!(e.reason.contains(fix), "{set}: {e}");
            assert!(e.to_string().starts_with("--roles "), "{e}");
        }
    }
}
