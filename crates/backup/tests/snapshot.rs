//! The store snapshot of an embedded server: without `--include-secrets` the API key is not in
//! the bytes that leave the server (not in a row, not in a free page, not in a WAL beside it),
//! and with it, it is (so the search below would find it).

use slipway_backup::platform;
use slipway_blobstore::FsBlobStore;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_snapshot_without_secrets_holds_no_api_key_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("slipway.db");
    let store = slipway_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let key = format!("sk-{}", uuid_like());
    store.secret_or_insert("api_key", &key).await.unwrap();
    let blobs = FsBlobStore::open(dir.path().join("blobs")).unwrap();
    let work = dir.path().join("work");

    for secrets in [false, true] {
        let snap = platform::snapshot(&db, &work, &blobs, secrets)
            .await
            .unwrap();
        let entry = &snap.entries[0];
        assert_eq!(entry.member.name, platform::STORE_DB);
        let slipway_backup::archive::Source::File(path) = &entry.source else {
            panic!("the store is a file member");
        };
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(bytes.len() as u64, entry.member.size);
        assert_eq!(
            contains(&bytes, key.as_bytes()),
            secrets,
            "secrets={secrets}"
        );
        // Nothing else of the copy is left beside it to be streamed or to be missed.
        let beside: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(beside, vec![platform::STORE_DB.to_string()]);
        drop(snap);
    }
    assert_eq!(
        std::fs::read_dir(&work).unwrap().count(),
        0,
        "a dropped snapshot removes its copy"
    );
    drop(store);
}

fn uuid_like() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{t:032x}secretsecret")
}

/// A data dir with a store's WAL but no store is not fresh: restoring a `slipway.db` beside it
/// would have SQLite replay the old WAL into the restored store.
#[test]
fn a_leftover_wal_is_state_a_restore_refuses_to_join() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("host")).unwrap();
    assert_eq!(platform::existing_state(dir.path()).unwrap(), None);
    std::fs::write(dir.path().join("slipway.db-wal"), b"old frames").unwrap();
    assert_eq!(
        platform::existing_state(dir.path()).unwrap().as_deref(),
        Some("slipway.db-wal")
    );
}

/// `--restore-force` does not move the data dir from under a server that has its store open.
#[tokio::test]
async fn a_forced_restore_refuses_a_store_a_server_has_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("slipway.db");
    let missing = dir.path().join("no-such-backup.tar");
    let store = slipway_store::open(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.secret_or_insert("api_key", "k").await.unwrap();
    let err = platform::restore(&missing, &data, true, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("open in another process"), "{err}");
    assert!(db.exists(), "nothing was moved");
    drop(store);
    // Closed: the restore goes on (and refuses the missing file, moving nothing).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let err = loop {
        let err = platform::restore(&missing, &data, true, None)
            .await
            .unwrap_err()
            .to_string();
        if !err.contains("open in another process") || std::time::Instant::now() > deadline {
            break err;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(err.contains("cannot open the backup"), "{err}");
    assert!(db.exists(), "a refused archive moves nothing");
}
