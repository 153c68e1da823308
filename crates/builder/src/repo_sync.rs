//! App repositories shared through the blob store, as Flynn's gitreceiver kept no state: after
//! a push that changed refs, the bare repo is stored as a tar blob and its digest recorded per
//! app in the store (`Store::set_git_repo_digest`); before serving a push or fetch, a
//! controller whose local copy is missing or stored under another digest restores it first.
//! So a push to controller A and the next (fast-forward) push to controller B both work, and
//! B's repo has A's history.
//!
//! Only the repository's data travels: `HEAD`, `packed-refs`, `refs/`, `objects/`. Its
//! `config` and hooks are never taken from a tar (a config can name programs git runs): a
//! restored repo is re-initialised and configured here as a new one is. The tar is ours, but it
//! is unpacked with the hostile-source rules anyway ([`crate::push::source::unpack`]: no `..`,
//! nothing written through a symlink, only files, directories and symlinks), bounded by
//! [`MAX_REPO_BYTES`], and verified against its digest while it is copied in; a restored repo
//! with a symlink or `objects/info/alternates` (which git would follow into another app's
//! repository) is refused.

use crate::receiver::Receiver;
use slipway_blobstore::{Digest, Hasher};
use slipway_types::App;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest repository stored or restored (its tar).
pub const MAX_REPO_BYTES: u64 = 4 << 30;

/// What a repo tar holds: the repository's data, never its config or hooks.
const KEPT: [&str; 4] = ["HEAD", "packed-refs", "refs", "objects"];

/// The digest this copy was stored or restored as (not part of the tar).
const MARKER: &str = "slipway-stored-digest";

fn other(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

fn marker(repo: &Path) -> Option<String> {
    std::fs::read_to_string(repo.join(MARKER))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The digest this copy of a repo was last stored or restored as, if any.
pub(crate) fn copy_digest(repo: &Path) -> Option<String> {
    marker(repo)
}

/// The refs of `repo` (`git for-each-ref`), to tell whether a push changed anything.
pub(crate) async fn refs(repo: &Path) -> Option<Vec<u8>> {
    let out = tokio::process::Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["for-each-ref", "--format=%(objectname) %(refname)"])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    out.status.success().then_some(out.stdout)
}

/// Removes a temp file or directory when dropped.
struct Temp(PathBuf);

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = crate::tree::remove_tree(&self.0);
    }
}

impl Receiver {
    /// Restores `app`'s repo at `repo` from the blob store if the store records one this copy
    /// does not have (missing, or stored under another digest).
    pub(crate) async fn restore_repo(&self, app: &App, repo: &Path) -> std::io::Result<()> {
        let recorded = self
            .store
            .git_repo_digest(app.id)
            .await
            .map_err(|e| other("cannot read the repository's digest from the store", e))?;
        let Some(recorded) = recorded else {
            return Ok(());
        };
        if marker(repo).as_deref() == Some(recorded.as_str()) {
            return Ok(());
        }
        let _one = self.restore_lock.lock().await;
        if marker(repo).as_deref() == Some(recorded.as_str()) {
            return Ok(());
        }
        let digest: Digest = recorded
            .parse()
            .map_err(|e| other("the store records a bad repository digest", e))?;
        let blobs = &self.pusher.build.blobs;
        let (info, mut body) = blobs
            .get(&digest)
            .await
            .map_err(|e| other("cannot read the stored repository", e))?
            .ok_or_else(|| {
                other(
                    "the stored repository is missing from the blob store",
                    &digest,
                )
            })?;
        if info.size > MAX_REPO_BYTES {
            return Err(other(
                "the stored repository is too large to restore",
                format!("{} bytes, the limit is {MAX_REPO_BYTES}", info.size),
            ));
        }
        let parent = repo.parent().expect("repo path has a parent");
        tokio::fs::create_dir_all(parent).await?;
        let id = uuid::Uuid::new_v4();
        let tar = Temp(parent.join(format!(".restore-{id}.tar")));
        let dir = Temp(parent.join(format!(".restore-{id}")));
        // Copied to a file while hashed and counted: nothing unverified is unpacked.
        let mut file = tokio::fs::File::create(&tar.0).await?;
        let mut hasher = Hasher::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = body.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > MAX_REPO_BYTES {
                return Err(other(
                    "the stored repository is too large to restore",
                    format!("over {MAX_REPO_BYTES} bytes"),
                ));
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).await?;
        }
        file.flush().await?;
        drop(file);
        let actual = hasher.finish();
        if actual != digest {
            return Err(other(
                "the stored repository does not match its digest",
                format!("expected {digest}, read {actual}"),
            ));
        }
        let (tar_path, dir_path) = (tar.0.clone(), dir.0.clone());
        let unpacked = tokio::task::spawn_blocking(move || unpack(&tar_path, &dir_path))
            .await
            .map_err(|e| other("restoring the repository failed", e))?;
        unpacked?;
        std::fs::write(dir.0.join(MARKER), recorded.as_bytes())?;
        // Never under a git process working in the copy (a push still in its hook, a fetch):
        // it would go on in a directory that is then deleted, and a push accepted by its hook
        // would fail to store its objects. The copy is served as it is; a later request
        // restores once none uses it.
        let Ok(_alone) = self.repo_use(app.id).try_write_owned() else {
            tracing::info!(app = %app.name, %digest, "the app's repository is stale here but in use: served as it is until no git process uses it");
            return Ok(());
        };
        // Swap: the old copy (if any) moves aside, the restored one into place.
        let old = Temp(parent.join(format!(".old-{id}")));
        match std::fs::rename(repo, &old.0) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::rename(&dir.0, repo)?;
        tracing::info!(app = %app.name, %digest, size = total, "restored the app's repository from the blob store");
        Ok(())
    }

    /// Stores `app`'s repo in the blob store and records its digest (after a push that
    /// changed refs).
    pub(crate) async fn store_repo(&self, app: &App, repo: &Path) -> std::io::Result<()> {
        let parent = repo.parent().expect("repo path has a parent");
        let tar = Temp(parent.join(format!(".save-{}.tar", uuid::Uuid::new_v4())));
        let (repo_path, tar_path) = (repo.to_path_buf(), tar.0.clone());
        tokio::task::spawn_blocking(move || pack(&repo_path, &tar_path))
            .await
            .map_err(|e| other("storing the repository failed", e))??;
        let size = tokio::fs::metadata(&tar.0).await?.len();
        if size > MAX_REPO_BYTES {
            return Err(other(
                "the repository is too large to store",
                format!("{size} bytes, the limit is {MAX_REPO_BYTES}"),
            ));
        }
        let file = tokio::fs::File::open(&tar.0).await?;
        let info = self
            .pusher
            .build
            .blobs
            .put(Box::new(file), None)
            .await
            .map_err(|e| other("cannot store the repository in the blob store", e))?;
        self.store
            .set_git_repo_digest(app.id, info.digest.as_str())
            .await
            .map_err(|e| other("cannot record the repository's digest", e))?;
        std::fs::write(repo.join(MARKER), info.digest.as_str())?;
        tracing::info!(app = %app.name, digest = %info.digest, size, "stored the app's repository");
        Ok(())
    }
}

/// Writes the tar of `repo`'s data ([`KEPT`]) to `to`.
fn pack(repo: &Path, to: &Path) -> std::io::Result<()> {
    let file = std::fs::File::create(to)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    b.follow_symlinks(false);
    for name in KEPT {
        let path = repo.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => b.append_dir_all(name, &path)?,
            Ok(m) if m.is_file() => b.append_path_with_name(&path, name)?,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    b.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
}

/// Unpacks a repo tar into a new `dir` with the hostile-source rules, drops anything but the
/// repository's data, and makes it a configured bare repo.
fn unpack(tar: &Path, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::File::open(tar)?;
    crate::push::source::unpack(std::io::BufReader::new(file), dir, MAX_REPO_BYTES)
        .map_err(|e| other("the stored repository was refused", e))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if !KEPT.iter().any(|k| name.as_os_str() == *k) {
            crate::tree::remove_tree(&entry.path())?;
        }
    }
    if !dir.join("HEAD").is_file() {
        return Err(other("the stored repository was refused", "it has no HEAD"));
    }
    check_self_contained(dir)?;
    crate::receiver::init_repo(dir, true)
}

/// Refuses a restored repository that reaches outside itself. git follows symlinks in a
/// repository (`objects -> /…/<other app>.git/objects` would have a push write its objects
/// into another app's repository, and a fetch serve that one's), and `objects/info/alternates`
/// names object directories git reads as its own. A repository git made has neither, so
/// either one means the tar was not stored by a receiver.
fn check_self_contained(dir: &Path) -> std::io::Result<()> {
    let refused = |what: String| other("the stored repository was refused", what);
    for name in ["objects/info/alternates", "objects/info/http-alternates"] {
        if std::fs::symlink_metadata(dir.join(name)).is_ok() {
            return Err(refused(format!(
                "it has {name}, which would make git read another repository's objects"
            )));
        }
    }
    crate::tree::walk(dir, |e| {
        if e.file_type.is_symlink() {
            return Err(refused(format!(
                "it has a symlink ({}), which git would follow out of the repository",
                e.rel.display()
            )));
        }
        Ok::<_, std::io::Error>(true)
    })
}
