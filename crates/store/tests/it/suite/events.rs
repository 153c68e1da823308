//! The cases about events: part of the suite (`super`), each with a fresh, empty store.

use super::routes::http;
use super::*;

pub async fn every_write_appends_one_event(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let mut seen = 0;
    let mut check = async |what: &str, expected: &[(ObjectType, EventOp)]| {
        let events = s
            .list_events(&EventFilter {
                since_id: Some(seen),
                ..Default::default()
            })
            .await
            .unwrap();
        let got: Vec<(ObjectType, EventOp)> =
            events.iter().map(|e| (e.object_type, e.op)).collect();
        assert_eq!(got, expected, "events of {what}");
        if let Some(last) = events.last() {
            seen = last.id;
        }
    };
    let a = app(s, "ev").await;
    check(
        "create app",
        &[
            (ObjectType::App, EventOp::Create),
            (ObjectType::Route, EventOp::Create),
        ],
    )
    .await;
    s.update_app(a.id, &AppUpdate::default()).await.unwrap();
    check("update app", &[(ObjectType::App, EventOp::Update)]).await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    check("create release", &[(ObjectType::Release, EventOp::Create)]).await;
    s.set_app_release(a.id, r.id).await.unwrap();
    check("set release", &[(ObjectType::AppRelease, EventOp::Update)]).await;
    s.put_formation(a.id, r.id, &FormationUpdate::default())
        .await
        .unwrap();
    check("put formation", &[(ObjectType::Formation, EventOp::Create)]).await;
    let job = Job {
        id: "host1-abc".into(),
        app_id: a.id,
        release_id: r.id,
        process_type: Some("web".into()),
        host_id: Some("host1".into()),
        state: JobState::Starting,
        args: vec![],
        exit_status: None,
        host_error: None,
        restarts: 0,
        meta: StringMap::new(),
        created_at: Timestamp::now(),
        updated_at: Timestamp::now(),
    };
    s.put_job(&job).await.unwrap();
    check("put job", &[(ObjectType::Job, EventOp::Create)]).await;
    let rt = s.create_route(a.id, &http("ev2.test", None)).await.unwrap();
    check("create route", &[(ObjectType::Route, EventOp::Create)]).await;
    s.delete_route(a.id, RouteType::Http, rt.id())
        .await
        .unwrap();
    check("delete route", &[(ObjectType::Route, EventOp::Delete)]).await;
    let r2 = s.create_release(a.id, &web_release()).await.unwrap();
    check(
        "create release 2",
        &[(ObjectType::Release, EventOp::Create)],
    )
    .await;
    let d = s.create_deployment(a.id, r2.id).await.unwrap();
    check(
        "create deployment",
        &[(ObjectType::Deployment, EventOp::Create)],
    )
    .await;
    s.update_deployment(d.id, DeploymentStatus::Complete, None)
        .await
        .unwrap();
    check(
        "complete deployment",
        &[
            (ObjectType::Deployment, EventOp::Update),
            (ObjectType::AppRelease, EventOp::Update),
        ],
    )
    .await;
    s.delete_app(a.id).await.unwrap();
    check(
        "delete app",
        &[
            (ObjectType::Route, EventOp::Delete),
            (ObjectType::App, EventOp::Delete),
        ],
    )
    .await;
    let last = s.get_event(seen).await.unwrap();
    assert_eq!(
        last.data["name"], "ev",
        "the deleted app's data is kept in its event"
    );
}

pub async fn failed_writes_append_nothing(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a = app(s, "fw").await;
    let r = s.create_release(a.id, &web_release()).await.unwrap();
    s.set_app_release(a.id, r.id).await.unwrap();
    s.create_route(a.id, &http("fw.example", None))
        .await
        .unwrap();
    let before = event_count(s).await;
    let _ = s
        .create_app("fw", &NewApp::default(), None)
        .await
        .unwrap_err();
    let _ = s.delete_release(a.id, r.id).await.unwrap_err();
    let _ = s
        .create_route(a.id, &http("fw.example", None))
        .await
        .unwrap_err();
    let mut f = FormationUpdate::default();
    f.processes.insert("nope".into(), 1);
    let _ = s.put_formation(a.id, r.id, &f).await.unwrap_err();
    assert_eq!(event_count(s).await, before);
    assert_eq!(s.list_routes(Some(a.id)).await.unwrap().len(), 2);
}

pub async fn event_filters(b: &Backend) {
    let s: &dyn Store = b.store.as_ref();
    let a1 = app(s, "fa").await;
    let a2 = app(s, "fb").await;
    s.create_release(a1.id, &NewRelease::default())
        .await
        .unwrap();
    s.create_release(a2.id, &NewRelease::default())
        .await
        .unwrap();
    let all = s.list_events(&EventFilter::default()).await.unwrap();
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "ids strictly increase"
    );
    let only_a1 = s
        .list_events(&EventFilter {
            app_id: Some(a1.id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only_a1.len(), 3);
    assert!(only_a1.iter().all(|e| e.app_id == Some(a1.id)));
    let releases = s
        .list_events(&EventFilter {
            object_types: vec![ObjectType::Release, ObjectType::Route],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(releases.len(), 4);
    let since = s
        .list_events(&EventFilter {
            since_id: Some(all[3].id),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since, all[4..]);
    let limited = s
        .list_events(&EventFilter {
            limit: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(limited, all[..2]);
    let by_object = s
        .list_events(&EventFilter {
            object_id: Some(a2.id.to_string()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_object.len(), 1);
    assert_eq!(s.get_event(all[0].id).await.unwrap(), all[0]);
    assert_not_found(s.get_event(999_999).await);
    for e in &all {
        assert!(
            EventFilter {
                app_id: e.app_id,
                ..Default::default()
            }
            .matches(e)
        );
    }
}
