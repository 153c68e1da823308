//! Per-app syslog sinks: an app with `log_sink=syslog://HOST:PORT` in its metadata gets its new
//! lines as RFC 5424 messages over TCP; other apps' lines are not sent; lines written while the
//! syslog server is down arrive once it is back.

use crate::{open, src};
use slipway_store::Store;
use slipway_types::{AppUpdate, NewApp, Timestamp};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Reads octet-counted messages until `n` have arrived (10 s at most).
async fn read_messages(conn: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        let mut chunk = [0u8; 4096];
        let got = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("messages within 10 s")
            .unwrap();
        assert!(got > 0, "the sink closed the connection; got {out:?}");
        buf.extend_from_slice(&chunk[..got]);
        while let Some(sp) = buf.iter().position(|b| *b == b' ') {
            let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
            if buf.len() < sp + 1 + len {
                break;
            }
            out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
            buf.drain(..sp + 1 + len);
        }
    }
    out
}

#[tokio::test]
async fn an_apps_lines_go_to_its_syslog_sink() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        slipway_store::open(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap(),
    );
    let app = store
        .create_app("demo", &NewApp::default(), None)
        .await
        .unwrap();
    let other = store
        .create_app("other", &NewApp::default(), None)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut meta = app.meta.clone();
    meta.insert("log_sink".into(), format!("syslog://{addr}"));
    store
        .update_app(
            app.id,
            &AppUpdate {
                meta: Some(meta),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let agg = open(&dir.path().join("logs"), 1000);
    slipway_logs::sink::run_sinks(agg.clone(), store.clone());
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("the sink connects")
        .unwrap();
    let (id, other_id) = (app.id.to_string(), other.id.to_string());
    agg.append(
        &src(&other_id, "web", "j9"),
        Timestamp::now(),
        "stdout",
        "not for the sink",
    )
    .unwrap();
    agg.append(
        &src(&id, "web", "host-1-abc"),
        Timestamp::now(),
        "stdout",
        "hello",
    )
    .unwrap();
    agg.append(
        &src(&id, "web", "host-1-abc"),
        Timestamp::now(),
        "stderr",
        "oops",
    )
    .unwrap();
    let got = read_messages(&mut conn, 2).await;
    assert!(got[0].starts_with("<14>1 "), "{got:?}");
    assert!(
        got[0].ends_with(" host-1 demo web.host-1-abc stdout - hello"),
        "{got:?}"
    );
    assert!(
        got[1].starts_with("<11>1 ") && got[1].ends_with(" - oops"),
        "{got:?}"
    );

    // The syslog server goes away; lines written while it is down arrive after it is back.
    // (TCP syslog has no acknowledgements: a line written in the very instant the server
    // closes can be lost; the sink notices a closed connection before its next write.)
    drop(conn);
    drop(listener);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        agg.append(
            &src(&id, "web", "host-1-abc"),
            Timestamp::now(),
            "stdout",
            &format!("while down {i}"),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let (mut conn, _) = tokio::time::timeout(Duration::from_secs(15), listener.accept())
        .await
        .expect("the sink reconnects")
        .unwrap();
    let got = read_messages(&mut conn, 3).await;
    let tails: Vec<&str> = got
        .iter()
        .map(|m| m.rsplit(" - ").next().unwrap())
        .collect();
    assert_eq!(tails, ["while down 0", "while down 1", "while down 2"]);
}
