//! Leader fencing in the store: an epoch only rises, and a fenced write goes through only
//! while the stored epoch is the writer's (docs/scheduler.md).

use crate::Backend;
use crate::suite::{app, web_release};
use slipway_store::Store;
use slipway_types::{Job, JobState, StringMap, Timestamp};

pub async fn a_stale_epoch_cannot_write_job_rows(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "fenced").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    let mut job = Job {
        id: "h1-fenced".into(),
        app_id: a.id,
        release_id: r.id,
        process_type: Some("web".into()),
        host_id: Some("h1".into()),
        state: JobState::Starting,
        args: vec![],
        exit_status: None,
        host_error: None,
        restarts: 0,
        meta: StringMap::new(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    // No epoch announced yet: nobody may write fenced.
    assert!(
        s.put_jobs_fenced("scheduler", 1, &[job.clone()])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.announce_epoch("scheduler", 7).await.unwrap(), 7);
    let written = s
        .put_jobs_fenced("scheduler", 7, &[job.clone()])
        .await
        .unwrap();
    assert_eq!(written.map(|w| w.len()), Some(1));
    // A newer leader announces itself; an older announcement never lowers the epoch.
    assert_eq!(s.announce_epoch("scheduler", 9).await.unwrap(), 9);
    assert_eq!(s.announce_epoch("scheduler", 8).await.unwrap(), 9);
    // Roles are fenced apart.
    assert_eq!(s.announce_epoch("housekeeping", 3).await.unwrap(), 3);
    job.state = JobState::Down;
    assert!(
        s.put_jobs_fenced("scheduler", 7, &[job.clone()])
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_job(a.id, "h1-fenced").await.unwrap().state,
        JobState::Starting
    );
    s.put_jobs_fenced("scheduler", 9, &[job.clone()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.get_job(a.id, "h1-fenced").await.unwrap().state,
        JobState::Down
    );
}
