//! The archive format on its own: what is written reads back whole; what changed while being
//! written, was cut, altered or reordered is refused with what is wrong.

use slipway_backup::Error;
use slipway_backup::archive::{self, Entry, Kind};
use slipway_blobstore::{BlobStore, Digest, FsBlobStore};
use std::sync::Arc;

async fn store(dir: &std::path::Path) -> Arc<FsBlobStore> {
    Arc::new(FsBlobStore::open(dir).unwrap())
}

async fn put(s: &FsBlobStore, data: &[u8]) -> Digest {
    s.put(Box::new(std::io::Cursor::new(data.to_vec())), None)
        .await
        .unwrap()
        .digest
}

/// An app archive of `app.json` and two blobs from `src`.
async fn written(src: &FsBlobStore) -> (Vec<u8>, Vec<Digest>) {
    let a = put(src, b"first blob").await;
    let b = put(src, &vec![7u8; 70_000]).await;
    let entries = vec![
        Entry::bytes("app.json", b"{\"x\":1}".to_vec()),
        Entry::blob(a.clone(), 10),
        Entry::blob(b.clone(), 70_000),
    ];
    let manifest = archive::manifest(Kind::App, 0, false, &entries);
    let mut out = Vec::new();
    let mut last = 0;
    archive::write(&mut out, &manifest, &entries, Some(src), |n| last = n)
        .await
        .unwrap();
    assert_eq!(out.len() as u64, archive::archive_len(&manifest));
    assert_eq!(last, out.len() as u64, "progress ends at the length");
    (out, vec![a, b])
}

async fn read(bytes: &[u8], dir: &std::path::Path) -> Result<archive::Read, Error> {
    std::fs::create_dir_all(dir.join("files")).unwrap();
    let dest = store(&dir.join("blobs")).await;
    archive::read(
        &mut std::io::Cursor::new(bytes.to_vec()),
        Kind::App,
        &dir.join("files"),
        dest,
    )
    .await
}

#[tokio::test]
async fn what_is_written_reads_back_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let src = store(&tmp.path().join("src")).await;
    let (bytes, digests) = written(&src).await;
    let got = read(&bytes, &tmp.path().join("dst")).await.unwrap();
    assert_eq!(got.manifest.members.len(), 3);
    assert_eq!(std::fs::read(&got.files[0].1).unwrap(), b"{\"x\":1}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&got.files[0].1)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "a file member is its owner's only");
    let dst = FsBlobStore::open(tmp.path().join("dst/blobs")).unwrap();
    for d in &digests {
        assert!(dst.head(d).await.unwrap().is_some(), "{d}");
    }
    // A platform reader refuses an app export, naming both.
    let err = archive::read(
        &mut std::io::Cursor::new(bytes),
        Kind::Platform,
        &tmp.path().join("dst/files"),
        store(&tmp.path().join("dst2")).await,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("an app export") && err.contains("not a platform backup"),
        "{err}"
    );
}

#[tokio::test]
async fn every_cut_and_every_altered_byte_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let src = store(&tmp.path().join("src")).await;
    let (bytes, _) = written(&src).await;
    // Cuts at block boundaries and inside members, down to nothing.
    let cuts = (0..bytes.len())
        .step_by(2039)
        .chain([bytes.len() - 1, bytes.len() - 512]);
    for (i, cut) in cuts.enumerate() {
        let err = read(&bytes[..cut], &tmp.path().join(format!("cut{i}")))
            .await
            .err()
            .unwrap_or_else(|| panic!("a cut at {cut} of {} was read", bytes.len()));
        assert!(matches!(err, Error::Refused(_)), "{err}");
    }
    // A flipped bit anywhere that is not padding is caught (header checksums, JSON, SHA-256).
    let mut caught = 0;
    for (i, at) in (0..bytes.len()).step_by(997).enumerate() {
        let mut altered = bytes.clone();
        altered[at] ^= 0x01;
        if read(&altered, &tmp.path().join(format!("bit{i}")))
            .await
            .is_err()
        {
            caught += 1;
        }
    }
    let checked = bytes.len().div_ceil(997);
    // Only padding and the unused bytes of headers may change unseen.
    eprintln!("{caught} of {checked} alterations caught");
    assert!(
        caught * 100 >= checked * 95,
        "{caught} of {checked} alterations caught"
    );
}

#[tokio::test]
async fn a_blob_that_changed_since_it_was_listed_stops_the_write() {
    let tmp = tempfile::tempdir().unwrap();
    let src = store(&tmp.path().join("src")).await;
    let d = put(&src, b"content").await;
    // Listed with the wrong size: the stream stops rather than write a wrong archive.
    let entries = vec![Entry::blob(d.clone(), 3)];
    let manifest = archive::manifest(Kind::App, 0, false, &entries);
    let mut out = Vec::new();
    let err = archive::write(&mut out, &manifest, &entries, Some(src.as_ref()), |_| {})
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("changed while it was being archived"), "{err}");
    // Gone from the store.
    src.delete(&d).await.unwrap();
    let entries = vec![Entry::blob(d, 7)];
    let err = archive::write(
        &mut Vec::new(),
        &manifest,
        &entries,
        Some(src.as_ref()),
        |_| {},
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("went from the blob store"), "{err}");
}

#[test]
fn member_names_are_plain_and_versions_compare() {
    for bad in [
        "",
        "../x",
        "/etc/passwd",
        "a/../b",
        "./a",
        "a/",
        "a\\b",
        &"x".repeat(101),
    ] {
        assert!(archive::check_member_name(bad).is_err(), "{bad:?}");
    }
    for good in ["store.db", "app.json", "blobs/sha256/ab"] {
        archive::check_member_name(good).unwrap();
    }
    assert!(archive::newer("0.2.0", "0.1.9"));
    assert!(archive::newer("1.0.0", "0.99.99"));
    assert!(!archive::newer("0.1.0", "0.1.0"));
    assert!(!archive::newer("0.1.0-rc1", "0.1.0"));
}
