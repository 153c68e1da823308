//! App repositories shared through the blob store: a push to one receiver, the next push to
//! another (own data dir, same PostgreSQL store and `PgBlobStore`), and what a hostile stored
//! repository cannot do. The pre-receive hook here accepts every push without a build
//! (`hook_exe` = `/bin/true`), so these tests need git but no job.

use crate::receiver::NoJobs;
use slipway_blobstore::{BlobStore, PgBlobStore};
use slipway_builder::BuildContext;
use slipway_builder::push::Pusher;
use slipway_builder::receiver::{Receiver, ReceiverConfig};
use slipway_store::Store;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

/// A receiver with its own data dir on the shared store and blob store; its URL.
async fn receiver(store: Arc<dyn Store>, blobs: Arc<dyn BlobStore>, dir: &Path) -> String {
    receiver_with_hook(store, blobs, dir, Path::new("/bin/true")).await
}

/// [`receiver`] whose pushes' hook runs `hook_exe` (which accepts a push by exiting 0).
async fn receiver_with_hook(
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    dir: &Path,
    hook_exe: &Path,
) -> String {
    let pusher = Arc::new(Pusher {
        store: store.clone(),
        build: BuildContext {
            blobs,
            jobs: Arc::new(NoJobs),
            data_dir: dir.join("build"),
            buildpacks_dir: dir.join("buildpacks"),
            limits: Default::default(),
            caches: None,
            owner: None,
        },
        default_stack: "busybox".into(),
    });
    let receiver = Receiver::new(
        ReceiverConfig {
            repos_dir: dir.join("repos"),
            hook_exe: hook_exe.to_path_buf(),
            server_url: "http://unused".into(),
            api_key: "k".into(),
        },
        store,
        pusher,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, receiver.router()).into_future());
    url
}

/// Runs git (blocking, off the runtime's threads) in `dir`; its stdout, or a panic with stderr.
async fn git(dir: &Path, args: &[&str]) -> String {
    let (dir, args): (std::path::PathBuf, Vec<String>) = (
        dir.to_path_buf(),
        args.iter().map(|a| a.to_string()).collect(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=master",
            ])
            .args(&args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

async fn commit(work: &Path, file: &str) -> String {
    std::fs::write(work.join(file), file).unwrap();
    git(work, &["add", file]).await;
    git(work, &["commit", "-q", "-m", file]).await;
    git(work, &["rev-parse", "HEAD"]).await.trim().to_string()
}

struct Shared {
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    _db: slipway_testkit::TestDatabase,
}

async fn shared() -> Option<Shared> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    if slipway_testkit::skip_unless_program(&slipway_testkit::current_test(), "git", "git") {
        return None;
    }
    let db = slipway_testkit::postgres_database().await?;
    let store: Arc<dyn Store> = Arc::new(slipway_store::open(&db.url).await.unwrap());
    let blobs: Arc<dyn BlobStore> = Arc::new(PgBlobStore::connect(&db.url).await.unwrap());
    Some(Shared {
        store,
        blobs,
        _db: db,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_to_one_receiver_then_a_fast_forward_push_to_another() {
    let Some(s) = shared().await else {
        return;
    };
    let app = s
        .store
        .create_app("shop", &Default::default(), None)
        .await
        .unwrap();
    let (dir_a, dir_b, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = receiver(s.store.clone(), s.blobs.clone(), dir_a.path()).await;
    let b = receiver(s.store.clone(), s.blobs.clone(), dir_b.path()).await;
    let work = work.path();
    git(work, &["init", "-q"]).await;
    let c1 = commit(work, "one").await;
    git(work, &["push", "-q", &format!("{a}/shop.git"), "master"]).await;
    let stored = s.store.git_repo_digest(app.id).await.unwrap();
    let stored = stored.expect("the push stored the repository");
    assert!(
        s.blobs
            .head(&stored.parse().unwrap())
            .await
            .unwrap()
            .is_some(),
        "the recorded repository is in the blob store"
    );

    // B, which never saw a push, serves A's: restored from the blob store.
    let remote = git(work, &["ls-remote", &format!("{b}/shop.git")]).await;
    assert!(remote.contains(&c1), "{remote}");
    // So an unrelated history is not a fast-forward there.
    let stranger = tempfile::tempdir().unwrap();
    git(stranger.path(), &["init", "-q"]).await;
    commit(stranger.path(), "unrelated").await;
    let refused = Command::new("git")
        .args(["push", "-q", &format!("{b}/shop.git"), "master"])
        .current_dir(stranger.path())
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a non-fast-forward push to B was accepted"
    );

    let c2 = commit(work, "two").await;
    git(work, &["push", "-q", &format!("{b}/shop.git"), "master"]).await;
    let repo_b = dir_b.path().join(format!("repos/{}.git", app.id));
    let log = git(&repo_b, &["--git-dir", ".", "log", "--format=%H", "master"]).await;
    assert_eq!(log.lines().collect::<Vec<_>>(), [c2.as_str(), c1.as_str()]);
    // B's repo is a configured Slipway repo, not whatever the tar held.
    let fsck = git(
        &repo_b,
        &["--git-dir", ".", "config", "receive.fsckObjects"],
    )
    .await;
    assert_eq!(fsck.trim(), "true");
    assert!(repo_b.join("hooks/pre-receive").is_file());
    let newer = s.store.git_repo_digest(app.id).await.unwrap().unwrap();
    assert_ne!(newer, stored, "B's push stored the repository again");

    // A, stale now, restores B's push before serving a fetch; a third push there works.
    let remote = git(work, &["ls-remote", &format!("{a}/shop.git")]).await;
    assert!(remote.contains(&c2), "{remote}");
    let c3 = commit(work, "three").await;
    git(work, &["push", "-q", &format!("{a}/shop.git"), "master"]).await;
    let remote = git(work, &["ls-remote", &format!("{b}/shop.git")]).await;
    assert!(remote.contains(&c3), "{remote}");
    // No restore leftovers in either repos dir.
    for dir in [&dir_a, &dir_b] {
        for e in std::fs::read_dir(dir.path().join("repos")).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert_eq!(name, format!("{}.git", app.id), "leftover {name}");
        }
    }
}

/// Writes a tar with `entries` (path, content; a path may be hostile) and stores it as `app`'s
/// repository.
async fn store_tar(s: &Shared, app: slipway_types::Id, entries: &[(&str, &[u8])]) {
    let mut tar = Vec::new();
    for (path, content) in entries {
        let mut h = [0u8; 512];
        h[..path.len()].copy_from_slice(path.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", content.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| *b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        tar.extend_from_slice(&h);
        tar.extend_from_slice(content);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let info = s
        .blobs
        .put(Box::new(std::io::Cursor::new(tar)), None)
        .await
        .unwrap();
    s.store
        .set_git_repo_digest(app, info.digest.as_str())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_stored_repository_is_refused_or_defused() {
    let Some(s) = shared().await else {
        return;
    };
    let app = s
        .store
        .create_app("shop", &Default::default(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = receiver(s.store.clone(), s.blobs.clone(), &dir.path().join("data")).await;
    let http = reqwest::Client::new();
    let refs = || {
        http.get(format!("{url}/shop.git/info/refs?service=git-upload-pack"))
            .send()
    };

    // A path out of the repo: refused, nothing written outside, nothing left behind.
    store_tar(
        &s,
        app.id,
        &[
            ("HEAD", b"ref: refs/heads/master\n"),
            ("../../escaped", b"x"),
        ],
    )
    .await;
    let r = refs().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("cannot restore the app's repository"),
        "{text}"
    );
    assert!(!dir.path().join("escaped").exists());
    assert!(!dir.path().join("data/escaped").exists());
    let repos = dir.path().join("data/repos");
    assert_eq!(std::fs::read_dir(&repos).unwrap().count(), 0);

    // A config naming a program and a hook: dropped; the repo is configured as a new one.
    store_tar(
        &s,
        app.id,
        &[
            ("HEAD", b"ref: refs/heads/master\n"),
            (
                "config",
                b"[core]\n\thooksPath = /tmp/evil\n\tbare = true\n",
            ),
            ("hooks/pre-receive", b"#!/bin/sh\ntouch /tmp/evil-ran\n"),
            ("refs/heads/.keep", b""),
        ],
    )
    .await;
    let r = refs().await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let repo = repos.join(format!("{}.git", app.id));
    let config = std::fs::read_to_string(repo.join("config")).unwrap();
    assert!(!config.contains("hooksPath"), "{config}");
    assert!(config.contains("fsckObjects"), "{config}");
    let hook = std::fs::read_to_string(repo.join("hooks/pre-receive")).unwrap();
    assert!(hook.contains("SLIPWAY_HOOK_EXE"), "{hook}");

    // A stored repository over the blob store's record but gone from it: a clear error.
    let gone = slipway_blobstore::Digest::of_bytes(b"never stored");
    s.store
        .set_git_repo_digest(app.id, gone.as_str())
        .await
        .unwrap();
    let r = refs().await.unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("missing from the blob store"), "{text}");
}

/// A tar entry: a path and either a file's content or, with `Err`, a symlink's target.
type Extra<'a> = (&'a str, Result<&'a [u8], &'a Path>);

/// Stores a tar as `app`'s repository: `HEAD`, `refs/heads/`, then `extra`.
async fn store_repo_tar(s: &Shared, app: slipway_types::Id, extra: &[Extra<'_>]) {
    let mut b = tar::Builder::new(Vec::new());
    let file = |b: &mut tar::Builder<Vec<u8>>, path: &str, content: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, content).unwrap();
    };
    file(&mut b, "HEAD", b"ref: refs/heads/master\n");
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    b.append_data(&mut h, "refs/heads/", std::io::empty())
        .unwrap();
    for (path, what) in extra {
        match what {
            Ok(content) => file(&mut b, path, content),
            Err(target) => {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                h.set_mode(0o777);
                b.append_link(&mut h, path, target).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let info = s
        .blobs
        .put(Box::new(std::io::Cursor::new(tar)), None)
        .await
        .unwrap();
    s.store
        .set_git_repo_digest(app, info.digest.as_str())
        .await
        .unwrap();
}

/// git follows a repository's symlinks and its `objects/info/alternates`: a stored repository
/// with either would have this app's pushes write into, and its fetches read from, another
/// app's repository. Such a repository is refused, and nothing of it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_repository_reaching_outside_itself_is_refused() {
    let Some(s) = shared().await else {
        return;
    };
    let app = s
        .store
        .create_app("shop", &Default::default(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Another app's repository, which the hostile one points at.
    let victim = dir.path().join("victim.git");
    git(dir.path(), &["init", "-q", "--bare", "victim.git"]).await;
    let victim_objects = victim.join("objects");
    let victim_refs = victim.join("refs");
    let alternates = format!("{}\n", victim_objects.display());
    let url = receiver(s.store.clone(), s.blobs.clone(), &dir.path().join("data")).await;
    let repos = dir.path().join("data/repos");
    let http = reqwest::Client::new();
    let cases: [(&str, &[Extra<'_>]); 3] = [
        ("symlink", &[("objects", Err(victim_objects.as_path()))]),
        (
            "symlink",
            &[
                ("objects/pack/.keep", Ok(&b""[..])),
                ("refs/tags", Err(victim_refs.as_path())),
            ],
        ),
        (
            "alternates",
            &[("objects/info/alternates", Ok(alternates.as_bytes()))],
        ),
    ];
    for (why, extra) in cases {
        store_repo_tar(&s, app.id, extra).await;
        let r = http
            .get(format!("{url}/shop.git/info/refs?service=git-upload-pack"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert_eq!(
            status, 503,
            "a repository with a {why} was restored: {text}"
        );
        assert!(
            text.contains("cannot restore the app's repository") && text.contains(why),
            "{text}"
        );
        let left: Vec<_> = std::fs::read_dir(&repos)
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{why}: left {left:?}");
        assert!(
            victim_objects.join("info").is_dir(),
            "the victim was touched"
        );
    }
}

/// A controller must not swap in a restored repository while a git process works in its copy:
/// a push on A still in its hook (building) when another controller stores a newer push, and
/// a request on A that would restore that one, must not pull the repository from under A's
/// push (its objects went into a directory that was then deleted, and the push failed after
/// its hook had accepted it). The request is served from A's copy instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_never_swaps_a_repository_a_push_is_using() {
    let Some(s) = shared().await else {
        return;
    };
    let app = s
        .store
        .create_app("shop", &Default::default(), None)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A's hook accepts each push after 3 s (the time a build takes).
    let hook = dir.path().join("slow-hook");
    std::fs::write(&hook, "#!/bin/sh\nsleep 3\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let a = receiver_with_hook(
        s.store.clone(),
        s.blobs.clone(),
        &dir.path().join("a"),
        &hook,
    )
    .await;
    let b = receiver(s.store.clone(), s.blobs.clone(), &dir.path().join("b")).await;
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    std::fs::create_dir_all(&one).unwrap();
    git(&one, &["init", "-q"]).await;
    commit(&one, "base").await;
    git(&one, &["push", "-q", &format!("{b}/shop.git"), "master"]).await;
    git(
        dir.path(),
        &["clone", "-q", &format!("{b}/shop.git"), "two"],
    )
    .await;

    // A push to A (restoring B's first), in its hook for 3 s.
    let pushed = commit(&one, "on-a").await;
    let url = format!("{a}/shop.git");
    let one_dir = one.clone();
    let push = tokio::task::spawn_blocking(move || {
        Command::new("git")
            .args(["push", "-q", &url, "master"])
            .current_dir(&one_dir)
            .output()
            .unwrap()
    });
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    // Meanwhile another push lands on B, and a request on A sees A's copy is stale.
    commit(&two, "on-b").await;
    git(&two, &["push", "-q", "origin", "master"]).await;
    git(&two, &["ls-remote", &format!("{a}/shop.git")]).await;

    let out = push.await.unwrap();
    assert!(
        out.status.success(),
        "the push to A failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo_a = dir.path().join(format!("a/repos/{}.git", app.id));
    let head = git(&repo_a, &["--git-dir", ".", "rev-parse", "master"]).await;
    assert_eq!(head.trim(), pushed, "A's copy lost the push it accepted");
}
