//! The layer cache: hostile tarballs write nothing outside the layer dir; compression is
//! detected; a digest is fetched once however many jobs start at once; failures are clear job
//! errors; whiteouts hide lower files in a real overlay mount and a real runc container; `user`
//! is resolved in the rootfs; an empty stack runs layers alone.

use crate::harness::*;
use slipway_blobstore::{BlobStore, Digest, FsBlobStore};
use slipway_host::layers::{LayerCache, unpack, unpack_file};
use slipway_host::{Agent, AgentConfig, HostApi, JobStatus, LayerRef};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// A tar stream built entry by entry with raw names, so it can say what a hostile tool would
/// (`tar::Builder` refuses `..` and absolute paths).
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(mut self, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) -> Self {
        let mut h = tar::Header::new_ustar();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        self.0
            .extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
        self
    }
    fn file(self, name: &str, data: &[u8]) -> Self {
        self.entry(name, tar::EntryType::Regular, "", data)
    }
    fn dir(self, name: &str) -> Self {
        self.entry(name, tar::EntryType::Directory, "", b"")
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Symlink, target, b"")
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.entry(name, tar::EntryType::Link, target, b"")
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// Every path under `dir`, relative, sorted (to show that nothing else appeared).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A sandbox: `outside/` holds a victim file the hostile layers aim at, `layer` is the target.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("outside")).unwrap();
        std::fs::write(dir.path().join("outside/victim"), b"original").unwrap();
        Sandbox { dir }
    }
    fn outside(&self) -> std::path::PathBuf {
        self.dir.path().join("outside")
    }
    fn layer(&self) -> std::path::PathBuf {
        self.dir.path().join("layer")
    }
    /// The outside dir still holds only the untouched victim.
    fn assert_outside_untouched(&self) {
        assert_eq!(tree(&self.outside()), ["victim"]);
        assert_eq!(
            std::fs::read(self.outside().join("victim")).unwrap(),
            b"original"
        );
        assert_eq!(
            tree(self.dir.path())
                .iter()
                .filter(|p| !p.contains('/'))
                .count(),
            2
        );
    }
}

#[test]
fn traversal_is_refused() {
    let s = Sandbox::new();
    let t = Tar::default()
        .file("ok", b"fine")
        .file("../outside/victim", b"pwned")
        .finish();
    let e = unpack(&t[..], &s.layer()).unwrap_err();
    assert!(format!("{e:#}").contains("contains '..'"), "{e:#}");
    s.assert_outside_untouched();
}

#[test]
fn absolute_paths_are_made_relative_to_the_layer() {
    let s = Sandbox::new();
    let abs = s.outside().join("victim");
    let t = Tar::default()
        .file(abs.to_str().unwrap(), b"inside the layer")
        .finish();
    unpack(&t[..], &s.layer()).unwrap();
    s.assert_outside_untouched();
    let inside = s.layer().join(abs.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside).unwrap(), b"inside the layer");
}

#[test]
fn nothing_is_written_through_an_absolute_symlink() {
    let s = Sandbox::new();
    let t = Tar::default()
        .symlink("etc", s.outside().to_str().unwrap())
        .file("etc/victim", b"pwned")
        .finish();
    let e = unpack(&t[..], &s.layer()).unwrap_err();
    assert!(format!("{e:#}").contains("through a symlink"), "{e:#}");
    s.assert_outside_untouched();
    // Also through a relative symlink that climbs out.
    let s = Sandbox::new();
    let t = Tar::default()
        .symlink("up", "../outside")
        .file("up/victim", b"pwned")
        .finish();
    assert!(unpack(&t[..], &s.layer()).is_err());
    s.assert_outside_untouched();
}

#[test]
fn a_file_over_a_symlink_replaces_the_symlink() {
    let s = Sandbox::new();
    let victim = s.outside().join("victim");
    let t = Tar::default()
        .symlink("f", victim.to_str().unwrap())
        .file("f", b"new content")
        .finish();
    unpack(&t[..], &s.layer()).unwrap();
    s.assert_outside_untouched();
    let meta = std::fs::symlink_metadata(s.layer().join("f")).unwrap();
    assert!(meta.is_file());
    assert_eq!(std::fs::read(s.layer().join("f")).unwrap(), b"new content");
}

#[test]
fn hard_links_only_to_earlier_files_of_the_layer() {
    for (what, t) in [
        (
            "outside by ..",
            Tar::default().hardlink("h", "../outside/victim"),
        ),
        (
            "outside by an absolute path",
            Tar::default().hardlink("h", "/etc/passwd"),
        ),
        (
            "through a symlink",
            Tar::default()
                .symlink("s", "/etc/passwd")
                .hardlink("h", "s"),
        ),
        ("a later entry", Tar::default().hardlink("h", "later")),
    ] {
        let s = Sandbox::new();
        let t = t.file("later", b"x").finish();
        let e = unpack(&t[..], &s.layer());
        assert!(e.is_err(), "{what}: accepted");
        s.assert_outside_untouched();
    }
    // A hard link to an earlier file works.
    let s = Sandbox::new();
    let t = Tar::default()
        .dir("bin")
        .file("bin/busybox", b"ELF")
        .hardlink("bin/sh", "bin/busybox")
        .finish();
    unpack(&t[..], &s.layer()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(s.layer().join("bin/busybox")).unwrap();
    let b = std::fs::metadata(s.layer().join("bin/sh")).unwrap();
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn device_nodes_and_fifos_are_skipped_with_a_warning() {
    let s = Sandbox::new();
    let t = Tar::default()
        .entry("dev/sda", tar::EntryType::Block, "", b"")
        .entry("dev/null", tar::EntryType::Char, "", b"")
        .entry("pipe", tar::EntryType::Fifo, "", b"")
        .file("app/ok", b"ok")
        .finish();
    let warnings = unpack(&t[..], &s.layer()).unwrap();
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(warnings[0].contains("dev/sda"), "{warnings:?}");
    assert_eq!(tree(&s.layer()), ["app", "app/ok", "dev"]);
}

#[test]
fn compression_is_detected_by_magic() {
    let plain = Tar::default()
        .dir("app")
        .file("app/hello", b"hello")
        .finish();
    for (name, blob) in [
        ("plain", plain.clone()),
        ("gzip", gzip(&plain)),
        ("zstd", zstd::encode_all(&plain[..], 3).unwrap()),
    ] {
        let s = Sandbox::new();
        let f = s.dir.path().join("blob");
        std::fs::write(&f, &blob).unwrap();
        unpack_file(&f, &s.layer()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(
            std::fs::read(s.layer().join("app/hello")).unwrap(),
            b"hello",
            "{name}"
        );
    }
}

#[test]
fn setuid_root_files_keep_their_mode() {
    if skip_unless_root("setuid_root_files_keep_their_mode") {
        return;
    }
    let s = Sandbox::new();
    let mut h = tar::Header::new_ustar();
    h.set_path("bin/su").unwrap();
    h.set_size(3);
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"ELF"[..]).unwrap();
    let t = b.into_inner().unwrap();
    unpack(&t[..], &s.layer()).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(s.layer().join("bin/su")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.uid(), m.gid()), (0, 0));
}

async fn cache_with_store() -> (tempfile::TempDir, Arc<FsBlobStore>, LayerCache) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let cache = LayerCache::open(dir.path().join("layers"), Some(store.clone())).unwrap();
    (dir, store, cache)
}

#[tokio::test]
async fn a_layer_is_fetched_once_however_many_jobs_ask_at_once() {
    let (_dir, store, cache) = cache_with_store().await;
    let cache = Arc::new(cache);
    let blob = gzip(
        &Tar::default()
            .dir("app")
            .file("app/big", &vec![7u8; 4 << 20])
            .finish(),
    );
    let d = store
        .put(Box::new(std::io::Cursor::new(blob)), None)
        .await
        .unwrap()
        .digest;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (cache, d) = (cache.clone(), d.clone());
        tasks.push(tokio::spawn(async move { cache.resolve(d.as_str()).await }));
    }
    for t in tasks {
        let p = t.await.unwrap().unwrap();
        assert_eq!(p, cache.path(&d));
    }
    let st = cache.stats();
    assert_eq!((st.misses, st.hits, st.failures), (1, 7, 0));
    assert_eq!(
        std::fs::metadata(cache.path(&d).join("app/big"))
            .unwrap()
            .len(),
        4 << 20
    );
    // Nothing left in the cache's temp dir.
    let tmp = cache.path(&d).parent().unwrap().join("tmp");
    assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0);
}

#[tokio::test]
async fn fetch_failures_are_clear_and_leave_nothing() {
    let (dir, store, cache) = cache_with_store().await;
    // Absent.
    let absent = Digest::of_bytes(b"never uploaded");
    let e = format!("{:#}", cache.resolve(absent.as_str()).await.unwrap_err());
    assert_eq!(
        e,
        format!("cannot fetch layer {absent}: not in the blob store")
    );
    // Not a digest.
    let e = format!("{:#}", cache.resolve("sha256:nope").await.unwrap_err());
    assert!(e.contains("invalid digest"), "{e}");
    // Corrupted in the store (content no longer matches its name): never unpacked.
    let good = Tar::default().file("x", b"x").finish();
    let d = store
        .put(Box::new(std::io::Cursor::new(good)), None)
        .await
        .unwrap()
        .digest;
    let on_disk = store.path(&d);
    std::fs::set_permissions(
        &on_disk,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(&on_disk, Tar::default().file("evil", b"y").finish()).unwrap();
    let e = format!("{:#}", cache.resolve(d.as_str()).await.unwrap_err());
    assert!(e.contains("sent content with digest"), "{e}");
    assert!(!cache.path(&d).exists());
    // Truncated gzip: verified blob, broken stream.
    let full = gzip(&Tar::default().file("app/a", &vec![1u8; 200_000]).finish());
    let truncated = full[..full.len() / 2].to_vec();
    let d = store
        .put(Box::new(std::io::Cursor::new(truncated)), None)
        .await
        .unwrap()
        .digest;
    let e = format!("{:#}", cache.resolve(d.as_str()).await.unwrap_err());
    assert!(e.contains(&format!("cannot unpack layer {d}")), "{e}");
    assert!(!cache.path(&d).exists());
    // Absent, corrupted, truncated (a malformed digest is refused before any fetch).
    assert_eq!(cache.stats().failures, 3);
    let layers = dir.path().join("layers");
    assert_eq!(tree(&layers), ["tmp"], "a failed unpack left files behind");
    // No blob store at all.
    let none = LayerCache::open(dir.path().join("layers2"), None).unwrap();
    let e = format!("{:#}", none.resolve(d.as_str()).await.unwrap_err());
    assert!(e.contains("no blob store"), "{e}");
}

/// An overlay mount of `layer` over `lower` at `target`; unmounted on drop.
struct Overlay(std::path::PathBuf);

impl Overlay {
    fn mount(lower: &[&Path], scratch: &Path) -> Overlay {
        let (upper, work, target) = (
            scratch.join("upper"),
            scratch.join("work"),
            scratch.join("merged"),
        );
        for d in [&upper, &work, &target] {
            std::fs::create_dir_all(d).unwrap();
        }
        let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
        let st = std::process::Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                lower.join(":"),
                upper.display(),
                work.display()
            ))
            .arg(&target)
            .status()
            .unwrap();
        assert!(st.success(), "mount overlay failed");
        Overlay(target)
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn whiteout_layer() -> Vec<u8> {
    Tar::default()
        .file("app/.wh.secret", b"")
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/new", b"from the layer")
        .finish()
}

#[test]
fn whiteouts_hide_lower_files_in_a_real_overlay_mount() {
    if skip_unless_root("whiteouts_hide_lower_files_in_a_real_overlay_mount") {
        return;
    }
    let s = Sandbox::new();
    let lower = s.dir.path().join("lower");
    for (p, c) in [
        ("app/secret", "lower secret"),
        ("app/kept", "lower kept"),
        ("opaque/old", "lower old"),
    ] {
        std::fs::create_dir_all(lower.join(p).parent().unwrap()).unwrap();
        std::fs::write(lower.join(p), c).unwrap();
    }
    unpack(&whiteout_layer()[..], &s.layer()).unwrap();
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let wh = std::fs::symlink_metadata(s.layer().join("app/secret")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let m = Overlay::mount(&[&s.layer(), &lower], &s.dir.path().join("ovl"));
    assert!(
        !m.0.join("app/secret").exists(),
        "the whiteout did not hide it"
    );
    assert_eq!(
        std::fs::read_to_string(m.0.join("app/kept")).unwrap(),
        "lower kept"
    );
    assert!(
        !m.0.join("opaque/old").exists(),
        "opaque dir shows lower files"
    );
    assert_eq!(
        std::fs::read_to_string(m.0.join("opaque/new")).unwrap(),
        "from the layer"
    );
}

/// A runc test host whose agent fetches layers from `store`.
async fn host_with_blobs(store: Arc<dyn BlobStore>) -> TestHost {
    busybox();
    let dir = tempfile::Builder::new()
        .prefix("slipway-host-test")
        .tempdir()
        .unwrap();
    let names = Names::new();
    let rc = names.runc_config(dir.path());
    let rt = tokio::task::spawn_blocking(move || slipway_host::runc::RuncRuntime::new(rc))
        .await
        .unwrap()
        .expect("starting the runc runtime");
    let mut cfg = AgentConfig::new(dir.path());
    cfg.blobs = Some(store);
    let agent = Agent::start(cfg, Arc::new(rt)).await.unwrap();
    TestHost { agent, names, dir }
}

async fn put(store: &FsBlobStore, blob: Vec<u8>) -> Digest {
    store
        .put(Box::new(std::io::Cursor::new(blob)), None)
        .await
        .unwrap()
        .digest
}

async fn output_of(h: &TestHost, j: slipway_host::HostJob) -> (slipway_host::JobInfo, String) {
    let id = j.id.clone();
    let info = h.agent.add_job(j).await.unwrap();
    if info.status == JobStatus::Failed {
        return (info, String::new());
    }
    let done = h.agent.wait_job(&id).await.unwrap();
    let out: String = log_lines(&h.agent, &id)
        .await
        .into_iter()
        .map(|l| format!("{}\n", l.msg))
        .collect();
    (done, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_jobs_see_layers_above_the_stack_with_whiteouts_and_users() {
    if skip_unless_root("runc_jobs_see_layers_above_the_stack_with_whiteouts_and_users") {
        return;
    }
    let blobs = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(blobs.path()).unwrap());
    // Bottom layer: a file, a user; top layer: hides the file (whiteout), adds another.
    let bottom = put(
        &store,
        gzip(
            &Tar::default()
                .dir("app")
                .file("app/hidden", b"should be whited out")
                .file("app/greeting", b"hello from a layer")
                .dir("etc")
                .file(
                    "etc/passwd",
                    b"root:x:0:0:root:/root:/bin/sh\nweb:x:1234:2345::/app:/bin/sh\n",
                )
                .file("etc/group", b"root:x:0:\nweb:x:2345:\nextra:x:3456:\n")
                .finish(),
        ),
    )
    .await;
    let top = put(
        &store,
        zstd::encode_all(
            &Tar::default()
                .file("app/.wh.hidden", b"")
                .file("app/top", b"top layer")
                .finish()[..],
            3,
        )
        .unwrap(),
    )
    .await;
    let h = host_with_blobs(store.clone()).await;
    let mut j = job(
        "layers",
        &[
            "sh",
            "-c",
            "cat /app/greeting; echo; cat /app/top; echo; ls /app; id -u; id -g",
        ],
    );
    j.config.layer_refs = vec![
        LayerRef {
            digest: bottom.to_string(),
        },
        LayerRef {
            digest: top.to_string(),
        },
    ];
    j.config.user = Some("web:extra".into());
    let (done, out) = output_of(&h, j.clone()).await;
    assert_eq!(done.status, JobStatus::Done, "{done:?}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "hello from a layer",
            "top layer",
            "greeting",
            "top",
            "1234",
            "3456"
        ],
        "{out}"
    );
    // A second job reuses both layers; explicit uid wins over `user`.
    let mut j2 = job("layers2", &["sh", "-c", "id -u; id -g"]);
    j2.config.layer_refs = j.config.layer_refs.clone();
    j2.config.user = Some("web".into());
    j2.config.uid = Some(77);
    let (done, out) = output_of(&h, j2).await;
    assert_eq!(done.status, JobStatus::Done, "{done:?}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["77", "2345"]);
    let st = h.agent.status().await.unwrap().layer_cache;
    assert_eq!((st.misses, st.hits), (2, 2), "{st:?}");

    // A missing user and a missing layer are clear job errors.
    let mut j3 = job("nouser", &["true"]);
    j3.config.layer_refs = j.config.layer_refs.clone();
    j3.config.user = Some("nobody-here".into());
    let info = h.agent.add_job(j3).await.unwrap();
    assert_eq!(info.status, JobStatus::Failed);
    let e = info.error.unwrap();
    assert!(e.contains("user \"nobody-here\" does not exist"), "{e}");
    let absent = Digest::of_bytes(b"absent layer");
    let mut j4 = job("nolayer", &["true"]);
    j4.config.layer_refs = vec![LayerRef {
        digest: absent.to_string(),
    }];
    let info = h.agent.add_job(j4).await.unwrap();
    assert_eq!(info.status, JobStatus::Failed);
    assert_eq!(
        info.error.unwrap(),
        format!("the job could not start: cannot fetch layer {absent}: not in the blob store")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_stack_runs_the_layers_alone() {
    if skip_unless_root("an_empty_stack_runs_the_layers_alone") {
        return;
    }
    let blobs = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(blobs.path()).unwrap());
    // An "image": busybox itself as a layer, with a file only this rootfs has.
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", busybox()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_path("only-in-image").unwrap();
    h.set_size(2);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"ok"[..]).unwrap();
    let d = put(&store, gzip(&b.into_inner().unwrap())).await;
    let host = host_with_blobs(store.clone()).await;
    let mut j = job("image", &["cat", "/only-in-image"]);
    j.config.stack = String::new();
    j.config.layer_refs = vec![LayerRef {
        digest: d.to_string(),
    }];
    let (done, out) = output_of(&host, j).await;
    assert_eq!(done.status, JobStatus::Done, "{done:?}");
    assert_eq!(out.trim(), "ok");
    // No stack and no layer: refused with a reason.
    let mut j = job("nothing", &["true"]);
    j.config.stack = String::new();
    let info = host.agent.add_job(j).await.unwrap();
    assert_eq!(info.status, JobStatus::Failed);
    assert!(
        info.error
            .as_deref()
            .unwrap()
            .contains("no stack and no layers"),
        "{info:?}"
    );
}

/// A blob server that demands `Bearer k`, as `slipway server` does with its API key.
async fn blob_server(store: Arc<FsBlobStore>) -> String {
    use axum::http::{StatusCode, header};
    async fn key(
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        if req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            != Some(b"Bearer k")
        {
            return axum::response::IntoResponse::into_response(StatusCode::UNAUTHORIZED);
        }
        next.run(req).await
    }
    let app = slipway_blobstore::http::router(store).layer(axum::middleware::from_fn(key));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_host_daemon_fetches_layers_over_http_with_the_key() {
    if skip_unless_root("a_remote_host_daemon_fetches_layers_over_http_with_the_key") {
        return;
    }
    busybox();
    let blobs = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(blobs.path()).unwrap());
    let d = put(
        &store,
        gzip(
            &Tar::default()
                .file("app/hello", b"fetched over HTTP")
                .finish(),
        ),
    )
    .await;
    let url = blob_server(store).await;
    let dir = tempfile::Builder::new()
        .prefix("slipway-remote")
        .tempdir()
        .unwrap();
    let names = Names::new();
    let mut child = std::process::Command::new(agent_exe())
        .arg("daemon")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--bridge", &names.net.bridge])
        .args([
            "--subnet",
            &names.net.cidr(),
            "--nft-table",
            &names.net.nft_table,
        ])
        .args(["--cgroup-parent", &names.cgroup_parent])
        .arg("--stacks-dir")
        .arg(stacks_dir())
        .args(["--blob-store", &url, "--blob-store-key", "k"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _cleanup = crate::restart::Cleanup(names, dir.path().to_path_buf(), Some(child));
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_string();
    let token = std::fs::read_to_string(dir.path().join("cluster-token")).unwrap();
    let api = slipway_host::client::HttpHost::new(&format!("http://{addr}"), token.trim());
    let mut j = job("remote", &["cat", "/app/hello"]);
    j.config.layer_refs = vec![LayerRef {
        digest: d.to_string(),
    }];
    let id = j.id.clone();
    let info = api.add_job(j).await.unwrap();
    assert_ne!(info.status, JobStatus::Failed, "{info:?}");
    let done = api.wait_job(&id).await.unwrap();
    assert_eq!(done.status, JobStatus::Done, "{done:?}");
    let out: Vec<String> = log_lines(&api, &id)
        .await
        .into_iter()
        .map(|l| l.msg)
        .collect();
    assert_eq!(out, ["fetched over HTTP"]);
    assert_eq!(api.status().await.unwrap().layer_cache.misses, 1);
}

#[tokio::test]
async fn unused_layers_are_pruned_and_used_ones_kept() {
    let (dir, store, cache) = cache_with_store().await;
    let a = put(&store, Tar::default().file("a", b"a").finish()).await;
    let b = put(&store, Tar::default().file("b", b"b").finish()).await;
    cache.resolve(a.as_str()).await.unwrap();
    cache.resolve(b.as_str()).await.unwrap();
    let in_use: std::collections::HashSet<String> = [a.to_string()].into();
    // Both were just used: an hour of idleness is not reached.
    let removed = cache
        .prune(&in_use, std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    // With no idle time required, the unused one goes, the used one stays.
    let removed = cache
        .prune(&in_use, std::time::Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(removed, [b.to_string()]);
    assert!(cache.path(&a).is_dir());
    assert!(!cache.path(&b).exists());
    assert_eq!(
        tree(&dir.path().join("layers")),
        [a.hex(), &format!("{}/a", a.hex()), "tmp"],
        "the pruned layer left nothing behind"
    );
    // A job needing it again fetches it again.
    cache.resolve(b.as_str()).await.unwrap();
    assert_eq!(cache.stats().misses, 3);
}

#[tokio::test]
async fn the_agent_prunes_only_layers_no_live_job_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let d = put(&store, Tar::default().file("x", b"x").finish()).await;
    let rt = Arc::new(slipway_host::fake::FakeRuntime::new());
    let mut cfg = AgentConfig::new(dir.path().join("host"));
    cfg.blobs = Some(store);
    let agent = Agent::start(cfg, rt.clone()).await.unwrap();
    let mut j = job("fake", &["sleep", "1000"]);
    j.config.layer_refs = vec![LayerRef {
        digest: d.to_string(),
    }];
    let id = j.id.clone();
    let info = agent.add_job(j).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let layer = dir.path().join("host/layers").join(d.hex());
    assert!(layer.is_dir());
    assert!(
        agent
            .prune_layers(std::time::Duration::ZERO)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(layer.is_dir(), "a running job's layer was removed");
    rt.exit(&id, 0);
    agent.wait_job(&id).await.unwrap();
    assert_eq!(
        agent.prune_layers(std::time::Duration::ZERO).await.unwrap(),
        [d.to_string()]
    );
    assert!(!layer.exists());
}
