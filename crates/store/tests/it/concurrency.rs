//! Cases about racing writers and what readers see: the event stream, and rows no writer may
//! change.

use crate::Backend;
use slipway_store::Store;
use slipway_types::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Writers race while a reader follows the stream the way the controller's event stream does
/// (`list_events` after the last id it saw, again and again). Events must become visible in id
/// order: on PostgreSQL a sequence value is taken at insert but becomes visible at commit, so
/// without the store's advisory lock a reader that saw id N+1 and resumes after it misses N when
/// N's writer commits later. The reader's ids must be exactly all the ids, in order.
pub async fn concurrent_writes(b: &Backend) {
    let s = &b.store;
    let mut rx = Store::event_notifier(s.as_ref());
    let start = *rx.borrow_and_update();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (s, done) = (s.clone(), done.clone());
        tokio::spawn(async move {
            let (mut seen, mut last, mut reads) = (Vec::new(), start, 0u32);
            loop {
                // Read `done` before the page: the pass after the writers finished sees it all.
                let finished = done.load(Ordering::SeqCst);
                let page = s
                    .list_events(&EventFilter {
                        since_id: Some(last),
                        limit: Some(1000),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                reads += 1;
                for e in page {
                    seen.push(e.id);
                    last = e.id;
                }
                if finished {
                    return (seen, reads);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    const WRITERS: usize = 8;
    const EACH: usize = 15;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    s.create_app(&format!("c{w}-{i}"), &NewApp::default(), Some("test.local"))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let (seen, reads) = reader.await.unwrap();
    assert_eq!(s.list_apps().await.unwrap().len(), WRITERS * EACH);
    let events = s
        .list_events(&EventFilter {
            limit: Some(10_000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 2 * WRITERS * EACH, "an app and its route");
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    let all: Vec<i64> = events.iter().map(|e| e.id).collect();
    let missed: Vec<i64> = all
        .iter()
        .filter(|id| !seen.contains(id))
        .copied()
        .collect();
    assert!(
        missed.is_empty(),
        "a stream reading while writers raced ({reads} reads) missed events {missed:?}: they \
         became visible after a later id had been read"
    );
    assert_eq!(seen, all, "the stream saw every event once, in id order");
    assert!(
        reads > 2,
        "the reader ran while the writers did ({reads} reads)"
    );
    assert!(rx.has_changed().unwrap());
    assert_eq!(*rx.borrow(), events.last().unwrap().id);
    assert!(*rx.borrow() > start);
}

/// No API modifies an artifact (a release names it by id: changing it would change what a
/// deployed release runs); a trigger refuses it even from a raw connection.
pub async fn artifacts_are_immutable(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let art = s
        .create_artifact(&NewArtifact {
            kind: ArtifactType::Slug,
            uri: "blob://slugs/imm.tgz".into(),
            manifest: None,
            meta: StringMap::new(),
            size: Some(10),
            digest: None,
        })
        .await
        .unwrap();
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&b.url)
        .await
        .unwrap();
    for set in ["uri = 'blob://slugs/other.tgz'", "size = 99", "meta = '{}'"] {
        let res = sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!(
                "UPDATE artifacts SET {set} WHERE id = '{}'",
                art.id
            )),
        )
        .await;
        let err = res.expect_err("the update is refused").to_string();
        assert!(err.contains("immutable"), "{set}: {err}");
    }
    assert_eq!(s.get_artifact(art.id).await.unwrap(), art);
}
