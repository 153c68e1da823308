//! The pushed commit as a directory: `git archive` of the commit (its objects are still in the
//! push's quarantine, which the hook names) unpacked with checks, so a hostile tree writes
//! nothing outside the directory: no absolute paths, no `..`, nothing written through a symlink,
//! only files, directories and symlinks, and a size cap with a clear error. Submodules are
//! fetched at their pinned commits and unpacked the same way (see [`checkout`]).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

/// Most entries (files, directories and symlinks) a pushed tree may unpack to, submodules
/// included. The size limit counts file content only, so without this cap a few tree objects
/// that name each other (a "git bomb": 8 trees of 8 entries each nest to 16 million empty files)
/// would fill the server's disk with inodes and directory blocks. 100,000 is more than the
/// Linux kernel's tree.
pub const MAX_SOURCE_ENTRIES: u64 = 100_000;

/// Why the source could not be unpacked, in the pusher's words.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Refused(String),
    #[error("cannot read the pushed commit: {0}")]
    Internal(String),
}

/// The quarantine dir git made for this push, if `path` is one: a direct child of the repo's
/// `objects` dir named `tmp_objdir-incoming-*`. Anything else is refused, so a request cannot
/// point git at another directory.
pub fn quarantine_dir(repo: &Path, path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    let name = p.file_name()?.to_str()?;
    if !name.starts_with("tmp_objdir-incoming-") {
        return None;
    }
    let objects = repo.join("objects").canonicalize().ok()?;
    let p = p.canonicalize().ok()?;
    (p.parent()? == objects).then_some(p)
}

/// Unpacks `commit` of `repo` into `dest` (an empty dir), reading objects from `quarantine`
/// too, then its submodules, recursively: each is fetched at the commit the tree pins from the
/// URL `.gitmodules` gives it (http, https or git only; a relative URL only inside another
/// submodule, against that one's URL) and unpacked at its path with the same checks. At most
/// `max_bytes` of file content in all. `say` gets a line per submodule. Blocking.
pub fn checkout(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    dest: &Path,
    max_bytes: u64,
    say: &mut dyn FnMut(String),
) -> Result<u64, SourceError> {
    if !is_commit_id(commit) {
        return Err(SourceError::Refused(format!(
            "{commit:?} is not a commit id"
        )));
    }
    let total = archive_into(
        repo,
        quarantine,
        commit,
        "",
        dest,
        max_bytes,
        Tally::default(),
    )?;
    super::submodules::unpack_all(repo, quarantine, commit, dest, max_bytes, total, say)
        .map(|t| t.bytes)
}

pub(super) fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `git --git-dir REPO …`, objects from `quarantine` too.
pub(super) fn git_in(repo: &Path, quarantine: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(repo).stdin(Stdio::null());
    if let Some(q) = quarantine {
        cmd.env("GIT_OBJECT_DIRECTORY", q)
            .env("GIT_ALTERNATE_OBJECT_DIRECTORIES", repo.join("objects"));
    }
    cmd
}

/// What a checkout has unpacked so far (the commit's own tree and its submodules together).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Tally {
    /// Bytes of file content.
    pub bytes: u64,
    /// Files, directories and symlinks (bounded by [`MAX_SOURCE_ENTRIES`]).
    pub entries: u64,
}

/// `git archive` of `commit` with every path under `prefix`, unpacked into `dest`, which
/// already holds `total`. Returns the new total.
pub(super) fn archive_into(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    prefix: &str,
    dest: &Path,
    max_bytes: u64,
    total: Tally,
) -> Result<Tally, SourceError> {
    // Counted first (milliseconds for 100,000 entries, where `git archive` of them takes
    // seconds and unpacking them writes 100,000 inodes): a tree over the cap writes nothing.
    let budget = MAX_SOURCE_ENTRIES.saturating_sub(total.entries);
    if count_entries(repo, quarantine, commit, budget)? > budget {
        return Err(too_many_entries());
    }
    let mut cmd = git_in(repo, quarantine);
    cmd.args(["archive", "--format=tar"])
        .arg(format!("--prefix={prefix}"))
        .arg(commit)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| SourceError::Internal(format!("cannot run git archive: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let res = unpack_from(&mut stdout, dest, max_bytes, total);
    if res.is_err() {
        let _ = child.kill();
    } else {
        // The reader stops at the archive's end marker; git may still be writing the record's
        // zero padding (up to 10 KiB). Closing the pipe then would kill it by SIGPIPE and fail
        // a good push ("git archive failed:" with nothing said): read the rest (bounded).
        let _ = std::io::copy(&mut (&mut stdout).take(1 << 20), &mut std::io::sink());
    }
    drop(stdout);
    let out = child
        .wait_with_output()
        .map_err(|e| SourceError::Internal(e.to_string()))?;
    let size = res?;
    if !out.status.success() {
        return Err(SourceError::Internal(format!(
            "git archive failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(size)
}

/// The entries (files, directories, symlinks, submodules) of `commit`'s tree, counted up to
/// just past `limit` (git is stopped there: a "git bomb" lists millions).
fn count_entries(
    repo: &Path,
    quarantine: Option<&Path>,
    commit: &str,
    limit: u64,
) -> Result<u64, SourceError> {
    let mut child = git_in(repo, quarantine)
        .args(["ls-tree", "-r", "-t", "-z", "--name-only", commit])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| SourceError::Internal(format!("cannot run git ls-tree: {e}")))?;
    let mut stdout = child.stdout.take().expect("piped");
    let (mut n, mut buf) = (0u64, vec![0u8; 64 << 10]);
    while n <= limit {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += buf[..k].iter().filter(|b| **b == 0).count() as u64,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(SourceError::Internal(format!("git ls-tree: {e}"))),
        }
    }
    if n > limit {
        let _ = child.kill();
    }
    let _ = child.wait();
    Ok(n)
}

fn too_many_entries() -> SourceError {
    SourceError::Refused(format!(
        "the pushed tree has more than {MAX_SOURCE_ENTRIES} files, directories and symlinks \
         (submodules included): keep generated or vendored trees out of git"
    ))
}

/// Unpacks a tar stream into `dest` with the checks above; returns the bytes of file content.
pub fn unpack(input: impl Read, dest: &Path, max_bytes: u64) -> Result<u64, SourceError> {
    unpack_from(input, dest, max_bytes, Tally::default()).map(|t| t.bytes)
}

/// [`unpack`] into a `dest` that already holds `total`; returns the new total.
fn unpack_from(
    input: impl Read,
    dest: &Path,
    max_bytes: u64,
    mut total: Tally,
) -> Result<Tally, SourceError> {
    let io = |e: std::io::Error| SourceError::Internal(e.to_string());
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        let kind = entry.header().entry_type();
        // git archive adds a pax header with the commit id: metadata, not a file.
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        let raw = entry.path().map_err(io)?.into_owned();
        let rel = safe_relative(&raw).ok_or_else(|| {
            SourceError::Refused(format!(
                "the pushed tree has a path that leaves the app's directory ({}): remove it from the repo",
                raw.display()
            ))
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        total.entries += 1;
        if total.entries > MAX_SOURCE_ENTRIES {
            return Err(too_many_entries());
        }
        // Bounded before anything is written: every later walk (copy, chown, slug, removal)
        // costs in proportion to the depth, and the kernel refuses paths over 4096 bytes.
        crate::tree::check_path(&rel).map_err(|e| {
            SourceError::Refused(format!(
                "the pushed tree is {e}: flatten it, or keep what is that deep out of git"
            ))
        })?;
        let target = dest.join(&rel);
        check_parents(dest, &rel)?;
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io)?;
        } else if kind.is_file() {
            let size = entry.header().size().map_err(io)?;
            total.bytes += size;
            if total.bytes > max_bytes {
                return Err(SourceError::Refused(format!(
                    "the pushed source is over the {} limit ({} is {}): keep large files out of \
                     git (remove them with `git rm --cached` and push again)",
                    human(max_bytes),
                    rel.display(),
                    human(size)
                )));
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(|e| {
                    SourceError::Refused(format!("cannot write {}: {e}", rel.display()))
                })?;
            std::io::copy(&mut (&mut entry).take(size), &mut file).map_err(io)?;
            let mode = entry.header().mode().map_err(io)?;
            use std::os::unix::fs::PermissionsExt;
            let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
            file.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(io)?;
        } else if kind.is_symlink() {
            // The link itself is fine wherever it points: it is created, never followed here.
            let to = entry.link_name().map_err(io)?.ok_or_else(|| {
                SourceError::Refused(format!("symlink {} has no target", rel.display()))
            })?;
            std::os::unix::fs::symlink(&to, &target).map_err(|e| {
                SourceError::Refused(format!("cannot create symlink {}: {e}", rel.display()))
            })?;
        } else {
            return Err(SourceError::Refused(format!(
                "the pushed tree has {} of an unsupported type: only files, directories and symlinks are built",
                rel.display()
            )));
        }
    }
    Ok(total)
}

/// `p` as a relative path of normal components only (`./` dropped); None if it is absolute or
/// has `..`.
fn safe_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Every existing parent of `rel` under `dest` must be a real directory, so nothing is written
/// through a symlink the tree made earlier (`link -> /etc`, then `link/passwd`).
fn check_parents(dest: &Path, rel: &Path) -> Result<(), SourceError> {
    let mut at = dest.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Refused(format!(
                    "the pushed tree writes {} through {}, which is not a directory (a symlink?)",
                    rel.display(),
                    at.strip_prefix(dest).unwrap_or(&at).display()
                )));
            }
            Err(_) => std::fs::create_dir(&at)
                .map_err(|e| SourceError::Internal(format!("{}: {e}", at.display())))?,
        }
    }
    Ok(())
}

/// `104857600` → `100.0 MiB`.
pub fn human(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_old();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // Bypass the builder's own path checks: hostile archives are the point.
            let name = path.as_bytes();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn unpacks_files_dirs_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_of(&[
            ("app/", tar::EntryType::Directory, b"", None),
            ("app/Procfile", tar::EntryType::Regular, b"web: x\n", None),
            ("link", tar::EntryType::Symlink, b"", Some("/etc/passwd")),
        ]);
        let n = unpack(&t[..], dir.path(), 1000).unwrap();
        assert_eq!(n, 7);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("app/Procfile")).unwrap(),
            "web: x\n"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("link")).unwrap(),
            PathBuf::from("/etc/passwd")
        );
    }

    #[test]
    fn refuses_escapes() {
        let outside = tempfile::tempdir().unwrap();
        for entries in [
            vec![("../evil", tar::EntryType::Regular, &b"x"[..], None)],
            vec![("/tmp/evil", tar::EntryType::Regular, &b"x"[..], None)],
            vec![
                (
                    "l",
                    tar::EntryType::Symlink,
                    &b""[..],
                    outside.path().to_str(),
                ),
                ("l/evil", tar::EntryType::Regular, &b"x"[..], None),
            ],
            vec![("h", tar::EntryType::Link, &b""[..], Some("/etc/passwd"))],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let t = tar_of(&entries);
            let e = unpack(&t[..], dir.path(), 1000).unwrap_err();
            assert!(matches!(e, SourceError::Refused(_)), "{e}");
            assert!(!outside.path().join("evil").exists());
            assert!(!dir.path().parent().unwrap().join("evil").exists());
        }
    }

    #[test]
    fn trees_deeper_than_1000_levels_or_with_long_paths_are_refused() {
        let ok = format!("{}f", "d/".repeat(999));
        let deep = format!("{}f", "d/".repeat(1000));
        let long = format!("{}/f", "x".repeat(200)).repeat(16);
        let tar_of = |path: &str| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(1);
            h.set_mode(0o644);
            b.append_data(&mut h, path, &b"x"[..]).unwrap();
            b.into_inner().unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(unpack(&tar_of(&ok)[..], dir.path(), 10).unwrap(), 1);
        let e = unpack(&tar_of(&deep)[..], dir.path(), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the pushed tree is deeper than 1000 levels (at d/d/d/"),
            "{e}"
        );
        assert!(e.len() < 250, "{e}");
        let e = unpack(&tar_of(&long)[..], dir.path(), 10)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("the pushed tree is a path longer than 3072 bytes (at xxx"),
            "{e}"
        );
    }

    #[test]
    fn size_cap_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let big = vec![0u8; 3000];
        let t = tar_of(&[("big.bin", tar::EntryType::Regular, &big, None)]);
        let e = unpack(&t[..], dir.path(), 2048).unwrap_err().to_string();
        assert!(e.contains("2.0 KiB limit"), "{e}");
        assert!(e.contains("big.bin is 2.9 KiB"), "{e}");
    }

    #[test]
    fn checkout_unpacks_a_commit_and_refuses_names_that_are_not_commit_ids() {
        let work = tempfile::tempdir().unwrap();
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .args(["-c", "user.email=a@b", "-c", "user.name=a"])
                .args(args)
                .current_dir(work.path())
                .output()
                .unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(work.path().join("Procfile"), "web: x\n").unwrap();
        git(&["add", "Procfile"]);
        git(&["commit", "-qm", "one file"]);
        let head = git(&["rev-parse", "HEAD"]);
        let repo = work.path().join(".git");
        let dest = tempfile::tempdir().unwrap();
        let mut lines = Vec::new();
        let mut say = |l: String| lines.push(l);
        assert_eq!(
            checkout(&repo, None, head.trim(), dest.path(), 1000, &mut say).unwrap(),
            7
        );
        assert!(dest.path().join("Procfile").is_file());
        let e = checkout(&repo, None, "HEAD", dest.path(), 1000, &mut say).unwrap_err();
        assert!(e.to_string().contains("not a commit id"), "{e}");
        assert!(lines.is_empty(), "{lines:?}");
    }

    /// A "git bomb": a few tree objects that name each other many times unpack to a tree of
    /// 8^6 empty files (a push of a few KB). Empty files and directories count nothing towards
    /// the source size limit, so before the entry cap the checkout wrote all 299,593 entries
    /// into the server's own disk (`<data>/build/sources`, no quota) and returned `Ok(0)`;
    /// with 8^8 it is 19 million inodes.
    #[test]
    fn a_tree_of_more_entries_than_the_limit_is_refused_before_it_fills_the_disk() {
        let work = tempfile::tempdir().unwrap();
        let git = |args: &[&str], input: &str| {
            use std::io::Write;
            let mut child = Command::new("git")
                .args(["-c", "user.email=a@b", "-c", "user.name=a"])
                .args(args)
                .current_dir(work.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        git(&["init", "-q", "--bare", "repo.git"], "");
        let gd = ["--git-dir", "repo.git"];
        let blob = git(&[&gd[..], &["hash-object", "-w", "--stdin"]].concat(), "");
        let mut tree = git(
            &[&gd[..], &["mktree"]].concat(),
            &(0..8)
                .map(|i| format!("100644 blob {blob}\tf{i}\n"))
                .collect::<String>(),
        );
        for _ in 0..5 {
            let entries: String = (0..8)
                .map(|i| format!("040000 tree {tree}\td{i}\n"))
                .collect();
            tree = git(&[&gd[..], &["mktree"]].concat(), &entries);
        }
        let commit = git(
            &[&gd[..], &["commit-tree", &tree, "-m", "bomb"]].concat(),
            "",
        );
        let dest = tempfile::tempdir().unwrap();
        let repo = work.path().join("repo.git");
        let e = checkout(&repo, None, &commit, dest.path(), 1 << 20, &mut |_| {})
            .expect_err("a tree of 299,593 entries was unpacked");
        let e = e.to_string();
        assert!(
            e.contains("more than 100000 files, directories and symlinks"),
            "{e}"
        );
        let mut written = 0u64;
        crate::tree::walk::<crate::tree::WalkError>(dest.path(), |_| {
            written += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(written, 0, "entries written for a tree that is refused");
    }

    #[test]
    fn quarantine_must_be_in_the_repo() {
        let repo = tempfile::tempdir().unwrap();
        let q = repo.path().join("objects/tmp_objdir-incoming-abc");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::create_dir_all(repo.path().join("objects/other")).unwrap();
        assert!(quarantine_dir(repo.path(), q.to_str().unwrap()).is_some());
        let other = repo.path().join("objects/other");
        assert!(quarantine_dir(repo.path(), other.to_str().unwrap()).is_none());
        assert!(quarantine_dir(repo.path(), "/tmp/tmp_objdir-incoming-x").is_none());
    }
}
