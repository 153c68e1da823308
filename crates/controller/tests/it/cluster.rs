//! Two controllers on one PostgreSQL: an event stream on one sees what is written through the
//! other at once (LISTEN/NOTIFY), not at a poll.

use crate::Server;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::json;
use slipway_types::{EventFilter, ObjectType};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_stream_on_one_controller_sees_an_app_created_through_another() {
    let Some((a, b)) = Server::postgres_pair().await else {
        return;
    };
    let client = slipway_client::Client::new(&b.url, crate::KEY).unwrap();
    let filter = EventFilter {
        object_types: vec![ObjectType::App],
        ..Default::default()
    };
    let mut stream = Box::pin(client.events_stream(&filter, None).await.unwrap());
    for i in 0..3 {
        let name = format!("across-{i}");
        let t0 = Instant::now();
        let (status, app) = a
            .call(Method::POST, "/apps", Some(json!({"name": name})))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{app}");
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("no event on B within 5 s")
            .expect("the stream ended")
            .unwrap();
        assert_eq!(event.object_id, app["id"].as_str().unwrap());
        // Streams on PostgreSQL no longer poll: only the notification can have woken it.
        eprintln!(
            "{name}: {:?} from the write on A to the event on B",
            t0.elapsed()
        );
    }
}
