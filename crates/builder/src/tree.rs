//! Walking the trees users make (the pushed source, the built `/app`, the build cache) without
//! recursion: a walk is a loop over an explicit list, so a tree 100,000 levels deep cannot
//! overflow the server's stack (a stack overflow aborts the whole process: API, router,
//! scheduler, every app). Depth and path length are bounded with errors in the user's words,
//! and removal ([`remove_tree`]) works at any depth.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub use slipway_host::layers::{MAX_DEPTH, remove_tree};

/// Longest path (bytes, relative to the tree's root) a build handles: the host reads the tree
/// at `<data>/build/builds/<id>/app/<path>`, and the kernel refuses paths over 4096 bytes.
pub const MAX_PATH_BYTES: usize = 3072;

/// Why a walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("deeper than {MAX_DEPTH} levels (at {})", short(.0))]
    TooDeep(PathBuf),
    #[error("a path longer than {MAX_PATH_BYTES} bytes (at {})", short(.0))]
    TooLong(PathBuf),
    #[error("{what} {}: {err}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
}

/// The start of a (possibly very long) path, for messages: `d/d/d/…`.
pub fn short(p: &Path) -> String {
    let s = p.to_string_lossy();
    match s.char_indices().nth(60) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.into_owned(),
    }
}

/// Whether `rel` (relative to a tree's root) is within the depth and length a build handles.
pub fn check_path(rel: &Path) -> Result<(), WalkError> {
    if rel.components().count() > MAX_DEPTH {
        return Err(WalkError::TooDeep(rel.to_path_buf()));
    }
    if rel.as_os_str().len() > MAX_PATH_BYTES {
        return Err(WalkError::TooLong(rel.to_path_buf()));
    }
    Ok(())
}

/// One entry of a walk.
pub struct Entry {
    /// `root` joined with `rel`.
    pub path: PathBuf,
    /// Relative to the walk's root.
    pub rel: PathBuf,
    /// Of the entry itself (a symlink is a symlink, never its target).
    pub file_type: fs::FileType,
}

/// Visits every entry below `root` (not `root` itself) depth-first, a directory before what is
/// in it, entries of a directory in name order; never follows a symlink. `visit` returns
/// whether to go into a directory. Stops at the first entry deeper than [`MAX_DEPTH`] or with a
/// path longer than [`MAX_PATH_BYTES`], before touching it.
pub fn walk<E: From<WalkError>>(
    root: &Path,
    mut visit: impl FnMut(&Entry) -> Result<bool, E>,
) -> Result<(), E> {
    // Entries listed but not visited yet; the next one is last.
    let mut todo: Vec<(PathBuf, fs::FileType)> = Vec::new();
    list(root, Path::new(""), &mut todo)?;
    while let Some((rel, file_type)) = todo.pop() {
        let entry = Entry {
            path: root.join(&rel),
            rel,
            file_type,
        };
        if visit(&entry)? && entry.file_type.is_dir() {
            list(root, &entry.rel, &mut todo)?;
        }
    }
    Ok(())
}

/// Pushes the entries of `root/dir` onto `todo`, the first by name last.
fn list(root: &Path, dir: &Path, todo: &mut Vec<(PathBuf, fs::FileType)>) -> Result<(), WalkError> {
    let path = root.join(dir);
    let io = |err| WalkError::Io {
        what: "reading",
        path: path.clone(),
        err,
    };
    let mut found: Vec<(PathBuf, fs::FileType)> = Vec::new();
    for e in fs::read_dir(&path).map_err(io)? {
        let e = e.map_err(io)?;
        let rel = dir.join(e.file_name());
        check_path(&rel)?;
        found.push((rel, e.file_type().map_err(io)?));
    }
    found.sort_by(|a, b| b.0.cmp(&a.0));
    todo.extend(found);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_in_order_without_following_symlinks_and_stops_at_the_depth_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["b/c", "a"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(root.join("b/c/f"), "x").unwrap();
        fs::write(root.join("b/z"), "x").unwrap();
        std::os::unix::fs::symlink("/", root.join("a/root")).unwrap();
        let mut seen = Vec::new();
        walk::<WalkError>(root, |e| {
            seen.push(e.rel.display().to_string());
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, ["a", "a/root", "b", "b/c", "b/c/f", "b/z"]);

        let deep = root.join(["d"; MAX_DEPTH].join("/"));
        fs::create_dir_all(&deep).unwrap();
        fs::write(deep.join("f"), "x").unwrap();
        // On a small stack: a walk holds nothing per level on it.
        let r = root.to_path_buf();
        let res = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || walk::<WalkError>(&r, |_| Ok(true)))
            .unwrap()
            .join()
            .unwrap();
        let e = res.unwrap_err().to_string();
        assert!(e.starts_with("deeper than 1000 levels (at d/d/d/"), "{e}");
        assert!(e.len() < 120, "{e}");
        remove_tree(&root.join("d")).unwrap();
        assert!(!root.join("d").exists());
    }
}
