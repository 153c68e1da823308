//! The pure half of the scheduler: given what should run and what runs, decide what to start and
//! what to stop. No I/O, so it is tested exhaustively and benchmarked on its own (10,000 jobs over
//! 100 hosts must plan in well under a second).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::time::Duration;
use uuid::Uuid;

/// One formation's process type: what the scheduler converges per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub app: Uuid,
    pub release: Uuid,
    pub process_type: String,
}

/// Desired state of one key.
#[derive(Clone, Debug)]
pub struct Want {
    pub key: Key,
    pub count: u32,
    /// Host tags the jobs must run on (every pair must match).
    pub tags: BTreeMap<String, String>,
    /// A specific host, when the formation names one (`host` tag in its tags).
    pub host: Option<String>,
    /// Missing jobs held back by restart backoff: not started yet, not replaced either.
    pub deferred: u32,
    /// Flynn's omni process type: `count` jobs on *every* eligible host (a monitoring agent),
    /// not `count` in all. Omni jobs never move: on a host that leaves or drains they stop.
    pub omni: bool,
}

#[derive(Clone, Debug)]
pub struct HostView {
    pub id: String,
    pub tags: BTreeMap<String, String>,
    /// Shutting down (its process stops): no new jobs; its jobs are replaced elsewhere.
    pub shutting_down: bool,
    /// Drained by the operator (`slipway host drain`): no new jobs; its jobs are moved
    /// elsewhere, each stopped only once enough replacements serve (see [`plan`]).
    pub drained: bool,
    /// Its last two health checks failed: no new jobs until one passes (a start there would fail,
    /// and every failure counts as a crash towards the backoff); its jobs stay counted until
    /// it is lost.
    pub unreachable: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No host matched: waits for one.
    Blocked,
    /// Asked of a host, not running yet.
    Pending,
    Running,
}

/// A live job of a formation (finished and stopping jobs are not passed in).
#[derive(Clone, Debug)]
pub struct JobView {
    pub id: String,
    pub key: Key,
    pub host: Option<String>,
    pub phase: Phase,
    /// Creation order; larger is newer.
    pub seq: u64,
    /// Up and taking traffic (the routers have it): what a drain waits for before it stops
    /// the job a replacement stands in for.
    pub serving: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a new job of `key` on `host` (None: no host matches, record it as blocked).
    Start {
        key: Key,
        host: Option<String>,
    },
    /// A blocked job found a host.
    Place {
        job_id: String,
        host: String,
    },
    Stop {
        job_id: String,
    },
}

pub fn tags_match(want: &BTreeMap<String, String>, host: &HostView) -> bool {
    want.iter().all(|(k, v)| host.tags.get(k) == Some(v))
}

impl HostView {
    /// Its jobs go elsewhere: it shuts down or is drained.
    pub fn leaving(&self) -> bool {
        self.shutting_down || self.drained
    }
}

fn eligible<'a>(want: &'a Want, hosts: &'a [HostView]) -> impl Iterator<Item = &'a HostView> + 'a {
    hosts.iter().filter(move |h| {
        !h.leaving()
            && !h.unreachable
            && tags_match(&want.tags, h)
            && want.host.as_ref().is_none_or(|named| *named == h.id)
    })
}

/// Plans one round. Rules (Flynn's, see DESIGN.md §6):
/// - jobs on hosts that no longer match their formation's tags, or that shut down, are stopped
///   (and so replaced on a matching host);
/// - surplus jobs are stopped blocked first, then pending, then the newest;
/// - missing jobs go to the matching host with the fewest jobs of the same key (ties: host id
///   order, so placement is deterministic); no matching host → blocked;
/// - blocked jobs are placed as soon as a matching host exists;
/// - jobs on a drained host do not count and are replaced elsewhere, but each is stopped only
///   once the jobs that serve elsewhere make the count without it (start new, gate, drain old);
/// - an omni key wants `count` jobs on every eligible host ([`plan_omni`]).
pub fn plan(wants: &[Want], hosts: &[HostView], jobs: &[JobView]) -> Vec<Action> {
    let mut by_key: HashMap<&Key, Vec<&JobView>> = HashMap::new();
    for j in jobs {
        by_key.entry(&j.key).or_default().push(j);
    }
    let host_idx: HashMap<&str, &HostView> = hosts.iter().map(|h| (h.id.as_str(), h)).collect();
    let mut actions = Vec::new();
    let no_jobs = Vec::new();
    let mut wanted_keys = std::collections::HashSet::new();
    for want in wants {
        wanted_keys.insert(&want.key);
        let current = by_key.get(&want.key).unwrap_or(&no_jobs);
        if want.omni {
            plan_omni(want, hosts, &host_idx, current, &mut actions);
            continue;
        }
        // Jobs on a host that does not fit any more are stopped and do not count; jobs on a
        // drained host do not count either, but each is stopped only once a replacement serves.
        let mut live: Vec<&JobView> = Vec::with_capacity(current.len());
        let mut moving: Vec<&JobView> = Vec::new();
        for j in current {
            let hv = j.host.as_deref().map(|h| host_idx.get(h));
            let misplaced = hv.is_some_and(|hv| {
                hv.is_none_or(|hv| {
                    hv.shutting_down
                        || !tags_match(&want.tags, hv)
                        || want.host.as_ref().is_some_and(|n| *n != hv.id)
                })
            });
            let drained = hv.flatten().is_some_and(|hv| hv.drained);
            if misplaced {
                actions.push(Action::Stop {
                    job_id: j.id.clone(),
                });
            } else if drained {
                moving.push(j);
            } else {
                live.push(j);
            }
        }
        let want_n = want.count as usize;
        // Start new, gate, drain old: a moving job that serves stops only while the others
        // that serve are still `count` without it (a job not serving yet loses nothing).
        let serving = live.iter().filter(|j| j.serving).count();
        let mut may_stop =
            (serving + moving.iter().filter(|j| j.serving).count()).saturating_sub(want_n);
        moving.sort_by_key(|j| j.seq);
        for j in moving {
            let stop = if j.serving && may_stop > 0 {
                may_stop -= 1;
                true
            } else {
                !j.serving
            };
            if stop {
                actions.push(Action::Stop {
                    job_id: j.id.clone(),
                });
            }
        }
        if live.len() > want_n {
            // Scale down: blocked, then pending, then newest.
            live.sort_by_key(|j| {
                let rank = match j.phase {
                    Phase::Blocked => 0,
                    Phase::Pending => 1,
                    Phase::Running => 2,
                };
                (rank, Reverse(j.seq))
            });
            let surplus = live.len() - want_n;
            for j in live.drain(..surplus) {
                actions.push(Action::Stop {
                    job_id: j.id.clone(),
                });
            }
        }
        // Placement: a min-heap of (jobs of this key, host id) over matching hosts.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for j in &live {
            if let Some(h) = &j.host {
                *counts.entry(h.as_str()).or_default() += 1;
            }
        }
        let mut heap: BinaryHeap<Reverse<(usize, &str)>> = eligible(want, hosts)
            .map(|h| {
                Reverse((
                    counts.get(h.id.as_str()).copied().unwrap_or(0),
                    h.id.as_str(),
                ))
            })
            .collect();
        let place = |heap: &mut BinaryHeap<Reverse<(usize, &str)>>| -> Option<String> {
            let Reverse((n, id)) = heap.pop()?;
            heap.push(Reverse((n + 1, id)));
            Some(id.to_string())
        };
        for j in live.iter().filter(|j| j.phase == Phase::Blocked) {
            if let Some(host) = place(&mut heap) {
                actions.push(Action::Place {
                    job_id: j.id.clone(),
                    host,
                });
            }
        }
        let missing = want_n.saturating_sub(live.len() + want.deferred as usize);
        for _ in 0..missing {
            let host = place(&mut heap);
            actions.push(Action::Start {
                key: want.key.clone(),
                host,
            });
        }
    }
    // Keys nobody wants any more (formation scaled to zero or deleted): stop everything.
    for (key, js) in &by_key {
        if !wanted_keys.contains(key) {
            for j in js {
                actions.push(Action::Stop {
                    job_id: j.id.clone(),
                });
            }
        }
    }
    actions
}

/// An omni key: `count` jobs on every eligible host. Jobs on a host that is gone, leaving or
/// no longer matching stop (they are not moved: the host that needs them is the one they run
/// on); an unreachable host keeps its jobs until it is lost, like any. Blocked jobs (from
/// before the type was omni) stop.
fn plan_omni(
    want: &Want,
    hosts: &[HostView],
    host_idx: &HashMap<&str, &HostView>,
    current: &[&JobView],
    actions: &mut Vec<Action>,
) {
    let per_host = want.count as usize;
    let mut on: HashMap<&str, Vec<&JobView>> = HashMap::new();
    for j in current {
        let keep = j
            .host
            .as_deref()
            .and_then(|h| host_idx.get(h))
            .is_some_and(|hv| {
                !hv.leaving()
                    && tags_match(&want.tags, hv)
                    && want.host.as_ref().is_none_or(|n| *n == hv.id)
            });
        match (keep, j.host.as_deref()) {
            (true, Some(h)) => on.entry(h).or_default().push(j),
            _ => actions.push(Action::Stop {
                job_id: j.id.clone(),
            }),
        }
    }
    for js in on.values_mut() {
        if js.len() > per_host {
            js.sort_by_key(|j| (j.phase == Phase::Running, Reverse(j.seq)));
            for j in js.drain(..js.len() - per_host) {
                actions.push(Action::Stop {
                    job_id: j.id.clone(),
                });
            }
        }
    }
    let mut eligible: Vec<&HostView> = eligible(want, hosts).collect();
    eligible.sort_by(|a, b| a.id.cmp(&b.id));
    let mut deferred = want.deferred as usize;
    for h in eligible {
        let have = on.get(h.id.as_str()).map_or(0, Vec::len);
        for _ in have..per_host {
            // Restart backoff holds slots back, as for any key.
            if deferred > 0 {
                deferred -= 1;
                continue;
            }
            actions.push(Action::Start {
                key: want.key.clone(),
                host: Some(h.id.clone()),
            });
        }
    }
}

/// Delay before the `n`th restart of a crashing job (1-based): Flynn's 0 s for the first 5
/// restarts, 10 s up to the 15th, 30 s after that.
pub fn backoff(n: u32) -> Duration {
    match n {
        0..=5 => Duration::ZERO,
        6..=15 => Duration::from_secs(10),
        _ => Duration::from_secs(30),
    }
}

/// A job up this long has "worked": its next crash starts the restart count over.
pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(5 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str) -> Key {
        Key {
            app: Uuid::nil(),
            release: Uuid::nil(),
            process_type: t.into(),
        }
    }
    fn host(id: &str, tags: &[(&str, &str)]) -> HostView {
        HostView {
            id: id.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            shutting_down: false,
            drained: false,
            unreachable: false,
        }
    }
    fn want(t: &str, n: u32) -> Want {
        Want {
            key: key(t),
            count: n,
            tags: Default::default(),
            host: None,
            deferred: 0,
            omni: false,
        }
    }
    fn job(id: &str, t: &str, h: Option<&str>, phase: Phase, seq: u64) -> JobView {
        JobView {
            id: id.into(),
            key: key(t),
            host: h.map(Into::into),
            phase,
            seq,
            serving: phase == Phase::Running,
        }
    }
    fn stops(a: &[Action]) -> Vec<String> {
        a.iter()
            .filter_map(|a| match a {
                Action::Stop { job_id } => Some(job_id.clone()),
                _ => None,
            })
            .collect()
    }

    /// `host drain`: replacements start at once elsewhere, and each job on the drained host
    /// stops only once the ones that serve elsewhere make the count without it.
    #[test]
    fn a_drained_host_keeps_its_jobs_until_replacements_serve() {
        let mut drained = host("a", &[]);
        drained.drained = true;
        let hosts = [drained, host("b", &[])];
        let on_a = [
            job("a1", "web", Some("a"), Phase::Running, 1),
            job("a2", "web", Some("a"), Phase::Running, 2),
        ];
        // Nothing elsewhere yet: two starts on b, no stop.
        let a = plan(&[want("web", 2)], &hosts, &on_a);
        assert_eq!(starts(&a), vec![Some("b".to_string()); 2]);
        assert!(stops(&a).is_empty(), "{a:?}");
        // One replacement serves, the other starts: one old job (the oldest) stops.
        let mut jobs = on_a.to_vec();
        jobs.push(job("b1", "web", Some("b"), Phase::Running, 3));
        let mut starting = job("b2", "web", Some("b"), Phase::Running, 4);
        starting.serving = false;
        jobs.push(starting);
        let a = plan(&[want("web", 2)], &hosts, &jobs);
        assert_eq!(stops(&a), ["a1"]);
        assert!(starts(&a).is_empty());
        // Both serve: the rest stops.
        jobs[3].serving = true;
        let a = plan(&[want("web", 2)], &hosts[..], &jobs[1..]);
        assert_eq!(stops(&a), ["a2"]);
        // Nowhere to go: blocked replacements, and the drained host keeps serving.
        let a = plan(&[want("web", 2)], &hosts[..1], &on_a);
        assert_eq!(starts(&a), vec![None, None]);
        assert!(stops(&a).is_empty());
        // A job there that does not serve yet stops at once.
        let mut pending = job("a3", "web", Some("a"), Phase::Pending, 5);
        pending.serving = false;
        let a = plan(&[want("web", 1)], &hosts, &[pending]);
        assert_eq!(stops(&a), ["a3"]);
    }

    #[test]
    fn omni_keeps_count_jobs_on_every_eligible_host() {
        let mut w = want("agent", 1);
        w.omni = true;
        let hosts = [host("a", &[]), host("b", &[]), host("c", &[("gpu", "1")])];
        let mut got: Vec<String> = starts(&plan(&[w.clone()], &hosts, &[]))
            .into_iter()
            .map(Option::unwrap)
            .collect();
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        // Two per host, one there already.
        w.count = 2;
        let jobs = [job("a1", "agent", Some("a"), Phase::Running, 1)];
        assert_eq!(starts(&plan(&[w.clone()], &hosts, &jobs)).len(), 5);
        // A host that left, one that drains, one that no longer matches: their jobs stop
        // and are not moved; a host that came is given its own.
        w.count = 1;
        w.tags.insert("gpu".into(), "1".into());
        let mut drained = host("c", &[("gpu", "1")]);
        drained.drained = true;
        let hosts = [host("a", &[]), drained, host("d", &[("gpu", "1")])];
        let jobs = [
            job("a1", "agent", Some("a"), Phase::Running, 1),
            job("c1", "agent", Some("c"), Phase::Running, 2),
            job("gone", "agent", Some("x"), Phase::Running, 3),
            job("blk", "agent", None, Phase::Blocked, 4),
        ];
        let a = plan(&[w.clone()], &hosts, &jobs);
        let mut stopped = stops(&a);
        stopped.sort();
        assert_eq!(stopped, ["a1", "blk", "c1", "gone"]);
        assert_eq!(starts(&a), vec![Some("d".to_string())]);
        // Surplus on one host: the newest goes; an unreachable host keeps its job.
        w.tags.clear();
        let mut dead = host("b", &[]);
        dead.unreachable = true;
        let hosts = [host("a", &[]), dead];
        let jobs = [
            job("a1", "agent", Some("a"), Phase::Running, 1),
            job("a2", "agent", Some("a"), Phase::Running, 2),
            job("b1", "agent", Some("b"), Phase::Running, 3),
        ];
        let a = plan(&[w], &hosts, &jobs);
        assert_eq!(
            a,
            vec![Action::Stop {
                job_id: "a2".into()
            }]
        );
    }
    fn starts(a: &[Action]) -> Vec<Option<String>> {
        a.iter()
            .filter_map(|a| match a {
                Action::Start { host, .. } => Some(host.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn spreads_over_the_hosts_with_fewest_jobs_of_the_type() {
        let hosts = [host("a", &[]), host("b", &[]), host("c", &[])];
        let jobs = [job("j1", "web", Some("a"), Phase::Running, 1)];
        let a = plan(&[want("web", 4)], &hosts, &jobs);
        let mut got: Vec<String> = starts(&a).into_iter().map(Option::unwrap).collect();
        got.sort();
        assert_eq!(got, ["a", "b", "c"].map(String::from).to_vec());
        // Another type does not count against web.
        let jobs = [job("w1", "worker", Some("a"), Phase::Running, 1)];
        let a = plan(&[want("web", 1), want("worker", 1)], &hosts, &jobs);
        assert_eq!(starts(&a), vec![Some("a".to_string())]);
    }

    /// A host whose health check fails gets no new job (it would fail at once, and it looks
    /// the emptiest), but its jobs stay counted until it is lost.
    #[test]
    fn an_unreachable_host_gets_no_new_job_and_keeps_its_own() {
        let mut dead = host("a", &[]);
        dead.unreachable = true;
        let hosts = [dead, host("b", &[])];
        let jobs = [
            job("j1", "web", Some("a"), Phase::Running, 1),
            job("j2", "web", Some("b"), Phase::Running, 2),
        ];
        let a = plan(&[want("web", 4)], &hosts, &jobs);
        assert!(!a.iter().any(|a| matches!(a, Action::Stop { .. })), "{a:?}");
        assert_eq!(starts(&a), vec![Some("b".to_string()); 2]);
        // Nowhere else to go: blocked, not started there.
        let a = plan(&[want("web", 3)], &hosts[..1], &jobs[..1]);
        assert_eq!(starts(&a), vec![None; 2]);
    }

    #[test]
    fn scale_down_stops_blocked_then_pending_then_newest() {
        let hosts = [host("a", &[])];
        let jobs = [
            job("old", "web", Some("a"), Phase::Running, 1),
            job("new", "web", Some("a"), Phase::Running, 5),
            job("pend", "web", Some("a"), Phase::Pending, 3),
            job("blk", "web", None, Phase::Blocked, 2),
        ];
        let a = plan(&[want("web", 1)], &hosts, &jobs);
        let stops: Vec<&Action> = a.iter().collect();
        assert_eq!(
            stops,
            [
                &Action::Stop {
                    job_id: "blk".into()
                },
                &Action::Stop {
                    job_id: "pend".into()
                },
                &Action::Stop {
                    job_id: "new".into()
                },
            ]
        );
        let a = plan(&[], &hosts, &jobs);
        assert_eq!(a.len(), 4, "an unwanted key loses every job: {a:?}");
    }

    #[test]
    fn tags_pin_and_blocked_jobs_wait_for_a_host() {
        let hosts = [host("a", &[("disk", "hdd")]), host("b", &[("disk", "ssd")])];
        let mut w = want("db", 2);
        w.tags.insert("disk".into(), "ssd".into());
        assert_eq!(
            starts(&plan(&[w.clone()], &hosts, &[])),
            vec![Some("b".into()); 2]
        );
        w.tags.insert("disk".into(), "nvme".into());
        assert_eq!(starts(&plan(&[w.clone()], &hosts, &[])), vec![None, None]);
        // A running job on a host whose tags no longer match is stopped and replaced.
        let jobs = [
            job("j", "db", Some("b"), Phase::Running, 1),
            job("k", "db", None, Phase::Blocked, 2),
        ];
        let hosts2 = [host("a", &[]), host("c", &[("disk", "nvme")])];
        let a = plan(&[w], &hosts2, &jobs);
        assert_eq!(
            a,
            vec![
                Action::Stop { job_id: "j".into() },
                Action::Place {
                    job_id: "k".into(),
                    host: "c".into()
                },
                Action::Start {
                    key: key("db"),
                    host: Some("c".into())
                },
            ]
        );
    }

    #[test]
    fn deferred_restarts_hold_their_slot_and_named_hosts_pin() {
        let hosts = [host("a", &[]), host("b", &[])];
        let mut w = want("web", 3);
        w.deferred = 2;
        assert_eq!(starts(&plan(&[w.clone()], &hosts, &[])).len(), 1);
        w.deferred = 0;
        w.host = Some("b".into());
        assert_eq!(starts(&plan(&[w], &hosts, &[])), vec![Some("b".into()); 3]);
        let mut down = hosts.clone();
        down[1].shutting_down = true;
        let jobs = [job("j", "web", Some("b"), Phase::Running, 1)];
        assert_eq!(
            plan(&[want("web", 1)], &down, &jobs),
            vec![
                Action::Stop { job_id: "j".into() },
                Action::Start {
                    key: key("web"),
                    host: Some("a".into())
                }
            ]
        );
    }

    #[test]
    fn backoff_is_flynns() {
        let secs: Vec<u64> = (1..=17).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(
            secs,
            [
                0, 0, 0, 0, 0, 10, 10, 10, 10, 10, 10, 10, 10, 10, 10, 30, 30
            ]
        );
    }
}
