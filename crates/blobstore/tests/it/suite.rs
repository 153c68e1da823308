//! The cases every [`BlobStore`] must pass.

use crate::Backend;
pub use crate::gc::*;
use slipway_blobstore::{BlobError, BlobStore, Body, Digest};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

fn body(bytes: &[u8]) -> Body {
    Box::new(std::io::Cursor::new(bytes.to_vec()))
}

async fn read_all(store: &dyn BlobStore, d: &Digest) -> Vec<u8> {
    let (_, mut r) = store.get(d).await.unwrap().expect("blob present");
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.unwrap();
    out
}

/// Nothing of a put left behind (temp files, orphaned chunk rows) after an operation finished.
async fn no_temp_files(b: &Backend) {
    let n = b.leftovers().await;
    assert_eq!(n, 0, "{}: partial uploads left behind", b.name);
}

pub async fn round_trip(b: &Backend) {
    let content = b"a slug, or a layer".to_vec();
    let d = Digest::of_bytes(&content);
    let info = b.store.put(body(&content), Some(&d)).await.unwrap();
    assert_eq!(info.digest, d);
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(read_all(&*b.store, &d).await, content);
    let head = b.store.head(&d).await.unwrap().unwrap();
    assert_eq!((head.digest, head.size), (d.clone(), content.len() as u64));
    let (info, _) = b.store.get(&d).await.unwrap().unwrap();
    assert_eq!(info.size, content.len() as u64);
    // Empty blobs are blobs too.
    let empty = Digest::of_bytes(b"");
    let info = b.store.put(body(b""), Some(&empty)).await.unwrap();
    assert_eq!(info.size, 0);
    assert_eq!(read_all(&*b.store, &empty).await, b"");
    no_temp_files(b).await;
}

pub async fn idempotent_put(b: &Backend) {
    let content = b"same content twice".to_vec();
    let d = Digest::of_bytes(&content);
    let first = b.store.put(body(&content), Some(&d)).await.unwrap();
    let second = b.store.put(body(&content), Some(&d)).await.unwrap();
    let third = b.store.put(body(&content), None).await.unwrap();
    assert_eq!(first.digest, second.digest);
    assert_eq!(third.digest, d);
    assert_eq!(b.store.list().await.unwrap().len(), 1);
    assert_eq!(read_all(&*b.store, &d).await, content);
    no_temp_files(b).await;
}

pub async fn put_without_expected_digest(b: &Backend) {
    let content = b"the store computes the digest".to_vec();
    let info = b.store.put(body(&content), None).await.unwrap();
    assert_eq!(info.digest, Digest::of_bytes(&content));
    assert_eq!(info.size, content.len() as u64);
    assert_eq!(read_all(&*b.store, &info.digest).await, content);
}

pub async fn mismatch_stores_nothing(b: &Backend) {
    let content = b"what was sent".to_vec();
    let claimed = Digest::of_bytes(b"what was promised");
    let err = b
        .store
        .put(body(&content), Some(&claimed))
        .await
        .unwrap_err();
    match err {
        BlobError::DigestMismatch { expected, actual } => {
            assert_eq!(expected, claimed);
            assert_eq!(actual, Digest::of_bytes(&content));
        }
        e => panic!("{}: expected DigestMismatch, got {e:?}", b.name),
    }
    assert!(b.store.head(&claimed).await.unwrap().is_none());
    assert!(
        b.store
            .head(&Digest::of_bytes(&content))
            .await
            .unwrap()
            .is_none()
    );
    assert!(b.store.list().await.unwrap().is_empty());
    no_temp_files(b).await;
}

pub async fn concurrent_puts_of_the_same_blob(b: &Backend) {
    let content: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let d = Digest::of_bytes(&content);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = b.store.clone();
        let content = content.clone();
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let expected = if i % 2 == 0 { Some(&d) } else { None };
            store.put(body(&content), expected).await
        }));
    }
    for t in tasks {
        let info = t.await.unwrap().unwrap();
        assert_eq!(info.digest, d);
        assert_eq!(info.size, content.len() as u64);
    }
    assert_eq!(read_all(&*b.store, &d).await, content);
    assert_eq!(b.store.list().await.unwrap().len(), 1);
    no_temp_files(b).await;
}

/// A deterministic body of `len` bytes generated on the fly, so the test itself holds no copy.
struct Generated {
    left: u64,
    state: u64,
}

impl AsyncRead for Generated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = (buf.remaining() as u64).min(self.left) as usize;
        let mut chunk = vec![0u8; n];
        for byte in chunk.iter_mut() {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            *byte = (self.state >> 56) as u8;
        }
        buf.put_slice(&chunk);
        self.left -= n as u64;
        Poll::Ready(Ok(()))
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

pub async fn large_blob_streams(b: &Backend) {
    const LEN: u64 = 64 * 1024 * 1024;
    let gen_ = || Generated {
        left: LEN,
        state: 42,
    };
    // The digest, computed by streaming once.
    let mut h = slipway_blobstore::Hasher::new();
    let mut g = gen_();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = g.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    let d = h.finish();

    let before = rss_kib();
    let info = b.store.put(Box::new(gen_()), Some(&d)).await.unwrap();
    assert_eq!(info.size, LEN);
    let (info, mut r) = b.store.get(&d).await.unwrap().unwrap();
    assert_eq!(info.size, LEN);
    let mut h = slipway_blobstore::Hasher::new();
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    assert_eq!(total, LEN);
    assert_eq!(h.finish(), d);
    let grown = rss_kib().saturating_sub(before);
    // Buffering the body whole would grow RSS by ≥64 MiB; streaming stays at a few buffers.
    // (Other cases run in parallel in this process, so leave room.)
    assert!(
        grown < 40 * 1024,
        "{}: RSS grew by {grown} KiB while streaming 64 MiB",
        b.name
    );
    no_temp_files(b).await;
}

pub async fn delete(b: &Backend) {
    let d = b
        .store
        .put(body(b"short-lived"), None)
        .await
        .unwrap()
        .digest;
    assert!(b.store.delete(&d).await.unwrap());
    assert!(b.store.head(&d).await.unwrap().is_none());
    assert!(b.store.get(&d).await.unwrap().is_none());
    assert!(!b.store.delete(&d).await.unwrap());
}

pub async fn list(b: &Backend) {
    assert!(b.store.list().await.unwrap().is_empty());
    let mut want = Vec::new();
    for i in 0..5 {
        let content = format!("blob number {i}").repeat(i + 1);
        let info = b.store.put(body(content.as_bytes()), None).await.unwrap();
        want.push((info.digest, content.len() as u64));
    }
    want.sort();
    let got: Vec<_> = b
        .store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            assert!(i.modified.is_some(), "{}: list reports when", b.name);
            (i.digest, i.size)
        })
        .collect();
    assert_eq!(got, want);
}

pub async fn absent_blob(b: &Backend) {
    let d = Digest::of_bytes(b"never stored");
    assert!(b.store.get(&d).await.unwrap().is_none());
    assert!(b.store.head(&d).await.unwrap().is_none());
    assert!(!b.store.delete(&d).await.unwrap());
}

/// A body that fails after `ok` bytes, like a client that disconnects mid-upload.
struct Broken {
    ok: usize,
}

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.ok == 0 {
            return Poll::Ready(Err(std::io::Error::other("connection reset")));
        }
        let n = buf.remaining().min(self.ok);
        buf.put_slice(&vec![b'x'; n]);
        self.ok -= n;
        Poll::Ready(Ok(()))
    }
}

pub async fn interrupted_upload_stores_nothing(b: &Backend) {
    let expected = Digest::of_bytes(&vec![b'x'; 2 << 20]);
    for want in [Some(&expected), None] {
        let err = b
            .store
            .put(Box::new(Broken { ok: 1 << 20 }), want)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BlobError::Io(_) | BlobError::Http(_)),
            "{}: {err:?}",
            b.name
        );
    }
    assert!(b.store.list().await.unwrap().is_empty(), "{}", b.name);
    // The server notices the broken body a moment after the client gives up.
    for _ in 0..50 {
        if b.leftovers().await == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    no_temp_files(b).await;
}
