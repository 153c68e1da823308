//! The hold after a reconnect ([`super::HOLD_AFTER_RECONNECT`]) against a scripted registry.

use super::*;
use slipway_discovery::{Event, Instance, NewInstance, Result, Watch};
use std::collections::VecDeque;

/// A registry whose watches play a script: events after delays, then the watch ends
/// (discovery went away) or stays open.
/// One watch: its events, each after a delay in ms, and whether it stays open after them.
type Script = (Vec<(u64, Event)>, bool);

struct Scripted {
    watches: Mutex<VecDeque<Script>>,
}

#[async_trait::async_trait]
impl Registry for Scripted {
    async fn register(&self, _: &str, _: &str, _: &NewInstance) -> Result<Instance> {
        unimplemented!()
    }
    async fn deregister(&self, _: &str, _: &str) -> Result<()> {
        unimplemented!()
    }
    async fn instances(&self, _: &str) -> Result<Vec<Instance>> {
        unimplemented!()
    }
    async fn watch(&self, _: Option<&str>) -> Result<Watch> {
        let next = self.watches.lock().unwrap().pop_front();
        let Some((script, stay_open)) = next else {
            return Err(slipway_discovery::Error::Unavailable("gone".into()));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for (ms, ev) in script {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = tx.send(ev).await;
            }
            if stay_open {
                std::future::pending::<()>().await;
            }
        });
        Ok(rx)
    }
}

fn up(id: &str, addr: &str) -> Event {
    Event {
        kind: EventKind::Up,
        service: "web".into(),
        instance: Some(Instance {
            id: id.into(),
            service: "web".into(),
            addr: addr.into(),
            proto: "tcp".into(),
            meta: Default::default(),
            index: 0,
        }),
    }
}

fn current() -> Event {
    Event {
        kind: EventKind::Current,
        service: String::new(),
        instance: None,
    }
}

fn routable(b: &Backends) -> Vec<String> {
    let mut ids: Vec<String> = b.up_ids().into_iter().collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn backends_a_restarted_discovery_lacks_are_kept_until_they_register_again_or_the_hold_ends()
{
    // Discovery has a, b, d and f, then goes away; back (500 ms later: the follower's
    // retry), its snapshot has only x, at f's address; 100 ms later a registers again, and
    // e at d's address. b never does.
    let registry = Scripted {
        watches: Mutex::new(VecDeque::from([
            (
                vec![
                    (0, up("a", "10.0.0.1:80")),
                    (0, up("b", "10.0.0.2:80")),
                    (0, up("d", "10.0.0.4:80")),
                    (0, up("f", "10.0.0.6:80")),
                    (0, current()),
                ],
                false,
            ),
            (
                vec![
                    (0, up("x", "10.0.0.6:80")),
                    (0, current()),
                    (100, up("a", "10.0.0.1:80")),
                    (0, up("e", "10.0.0.4:80")),
                ],
                true,
            ),
        ])),
    };
    let backends = Arc::new(Backends::default());
    let (events, mut rx) = broadcast::channel(64);
    let hold = Duration::from_millis(400);
    tokio::spawn(
        backends
            .clone()
            .follow_holding(Arc::new(registry), events, hold),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(*backends.loaded.borrow());
    assert_eq!(routable(&backends), ["a", "b", "d", "f"]);
    let a = backends.get("web").unwrap().all[0].clone();
    // Back with x at f's address (f is gone), then a again and e at d's address (d is
    // gone): b is held.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(routable(&backends), ["a", "b", "e", "x"], "within the hold");
    // The hold is over: b (never registered again) is retired, a is kept, as it was.
    tokio::time::sleep(Duration::from_millis(550)).await;
    assert_eq!(routable(&backends), ["a", "e", "x"]);
    let web = backends.get("web").unwrap();
    assert!(web.all.iter().any(|b| Arc::ptr_eq(b, &a)));
    let mut seen = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        seen.push(format!("{} {}", ev.kind, ev.instance));
    }
    assert_eq!(
        seen,
        [
            "backend-up a",
            "backend-up b",
            "backend-up d",
            "backend-up f",
            "backend-up x",
            "backend-down f",
            "backend-drained f",
            "backend-down d",
            "backend-drained d",
            "backend-up e",
            "backend-down b",
            "backend-drained b",
        ]
    );
}
