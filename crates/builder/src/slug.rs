//! The file-tree work of a build on the host: copying the source into the build dir with
//! `.slugignore` applied and its size capped, and tarring the built `/app` into a slug.
//!
//! The trees are hostile: the source is whatever was pushed, and the built `/app` is whatever
//! the buildpacks (code from the app or the internet) left there. So nothing here follows a
//! symlink: entries are examined with `symlink_metadata`, symlinks are copied and tarred as
//! symlinks, and files the host reads or writes in `/app` are opened with `O_NOFOLLOW`.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::slugignore::{SlugIgnore, glob};
use crate::tree::{self, WalkError};

/// What [`copy_source`] did.
#[derive(Debug, Default)]
pub struct Copied {
    pub bytes: u64,
    pub files: u64,
    pub ignored: u64,
}

/// Why the source could not be copied.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the source tree is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The tree or its `.slugignore` is beyond what a build handles (user's words).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}

impl From<WalkError> for CopyError {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { .. } => CopyError::Io(e.to_string()),
            e => CopyError::Refused(format!("the source tree is {e}")),
        }
    }
}

/// Copies `src` into `dest` (created), skipping what `.slugignore` (read from `src`, never
/// through a symlink) ignores, recreating symlinks as symlinks and skipping special files.
/// Fails once the regular files copied pass `limit` bytes. Iterative (see [`crate::tree`]).
pub fn copy_source(src: &Path, dest: &Path, limit: u64) -> Result<Copied, CopyError> {
    let ignore = match read_nofollow(&src.join(".slugignore"), 64 << 10) {
        Ok(Some(text)) => {
            SlugIgnore::parse(&String::from_utf8_lossy(&text)).map_err(CopyError::Refused)?
        }
        _ => SlugIgnore::default(),
    };
    let mut c = Copied::default();
    fs::create_dir_all(dest).map_err(|e| io_err("creating", dest, e))?;
    tree::walk(src, |e| {
        let ft = e.file_type;
        if ignore
            .matches(&e.rel, ft.is_dir())
            .map_err(CopyError::Refused)?
        {
            c.ignored += 1;
            return Ok(false);
        }
        let (from, to) = (&e.path, dest.join(&e.rel));
        if ft.is_symlink() {
            let target = fs::read_link(from).map_err(|e| io_err("reading", from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_err("creating", &to, e))?;
        } else if ft.is_dir() {
            let md = fs::symlink_metadata(from).map_err(|e| io_err("reading", from, e))?;
            fs::create_dir(&to).map_err(|e| io_err("creating", &to, e))?;
            fs::set_permissions(&to, md.permissions()).map_err(|e| io_err("chmod", &to, e))?;
            return Ok(true);
        } else if ft.is_file() {
            let md = fs::symlink_metadata(from).map_err(|e| io_err("reading", from, e))?;
            c.bytes += md.len();
            c.files += 1;
            if c.bytes > limit {
                return Err(CopyError::TooLarge { limit });
            }
            copy_file_nofollow(from, &to, md.mode()).map_err(|e| io_err("copying", from, e))?;
        }
        // Sockets, fifos and devices have no place in a slug.
        Ok(false)
    })?;
    Ok(c)
}

fn io_err(what: &str, p: &Path, e: io::Error) -> CopyError {
    CopyError::Io(format!("{what} {}: {e}", p.display()))
}

fn copy_file_nofollow(from: &Path, to: &Path, mode: u32) -> io::Result<()> {
    let mut r = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(from)?;
    let mut w = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o7777)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)?;
    io::copy(&mut r, &mut w)?;
    Ok(())
}

/// Reads a regular file without following a symlink at its last component; `None` if it does
/// not exist, is not a regular file, or is larger than `max` bytes.
pub fn read_nofollow(p: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let md = f.metadata()?;
    if !md.is_file() || md.len() > max {
        return Ok(None);
    }
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

/// What [`read_capped`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadCapped {
    /// Nothing (or not a regular file) there.
    Missing,
    /// A regular file larger than the cap: not read.
    TooLarge(u64),
    Data(Vec<u8>),
}

/// Like [`read_nofollow`], but tells a file over `max` bytes from a missing one: a file the
/// user gave that is too big must fail loudly, not be taken as absent.
pub fn read_capped(p: &Path, max: u64) -> io::Result<ReadCapped> {
    let f = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ELOOP) => {
            return Ok(ReadCapped::Missing);
        }
        Err(e) => return Err(e),
    };
    let md = f.metadata()?;
    if !md.is_file() {
        return Ok(ReadCapped::Missing);
    }
    if md.len() > max {
        return Ok(ReadCapped::TooLarge(md.len()));
    }
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Ok(ReadCapped::TooLarge(buf.len() as u64));
    }
    Ok(ReadCapped::Data(buf))
}

/// Writes a new regular file `p` (fails if anything, a symlink included, is there already).
pub fn write_new_nofollow(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)?;
    f.write_all(data)
}

/// `lchown -R`: makes `dir` and everything below it owned by `uid:gid`, never following a
/// symlink (a symlink itself is re-owned, not its target). Iterative.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    if !fs::symlink_metadata(dir)?.is_dir() {
        return Ok(());
    }
    tree::walk(dir, |e| {
        std::os::unix::fs::lchown(&e.path, Some(uid), Some(gid))?;
        Ok::<_, io::Error>(true)
    })
}

impl From<WalkError> for io::Error {
    fn from(e: WalkError) -> Self {
        match e {
            WalkError::Io { err, .. } => err,
            e => io::Error::other(e.to_string()),
        }
    }
}

/// Why [`clear_if_over`] emptied a dir.
#[derive(Debug, PartialEq, Eq)]
pub enum Cleared {
    /// Its regular files added up to more than the limit.
    TooLarge,
    /// It is a tree no build could use: deeper than [`tree::MAX_DEPTH`], a path too long, or
    /// unreadable.
    Unusable(String),
}

/// Empties `dir` if the regular files below it (symlinks not followed) add up to more than
/// `limit` bytes, or if it is a tree no build could walk; says why it did. Keeps an app's build
/// cache from growing forever, and a cache a build filled with a hostile tree from failing
/// every later build.
pub fn clear_if_over(dir: &Path, limit: u64) -> io::Result<Option<Cleared>> {
    let mut total = 0u64;
    let walked = tree::walk(dir, |e| {
        if e.file_type.is_file() {
            let io = |err| WalkError::Io {
                what: "measuring",
                path: e.path.clone(),
                err,
            };
            total += fs::symlink_metadata(&e.path).map_err(io)?.len();
            if total > limit {
                // Stops the walk: the answer is known.
                return Err(io(io::Error::other("over the limit")));
            }
        }
        Ok(true)
    });
    let why = match walked {
        _ if total > limit => Cleared::TooLarge,
        Ok(()) => return Ok(None),
        Err(e) => Cleared::Unusable(e.to_string()),
    };
    for e in fs::read_dir(dir)? {
        tree::remove_tree(&e?.path())?;
    }
    Ok(Some(why))
}

/// Why a slug could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error("the compressed slug is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The built tree is deeper or has longer paths than a build handles.
    #[error("the built app is {0}")]
    Tree(String),
    #[error("making the slug: {0}")]
    Io(#[from] io::Error),
}

/// A writer that fails once more than `limit` bytes went through it.
struct Capped<W> {
    inner: W,
    written: u64,
    limit: u64,
}

impl<W: Write> Write for Capped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.written + buf.len() as u64 > self.limit {
            return Err(io::Error::other(CAP_HIT));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

const CAP_HIT: &str = "slug size limit hit";

/// Tars `app_dir` as `app/…` (gzip, fast level) into `out`; symlinks stay symlinks, special
/// files are left out. Returns the compressed size. Blocking: run it off the async runtime.
pub fn make_slug(app_dir: &Path, out: &Path, limit: u64) -> Result<u64, SlugError> {
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(out)?;
    let capped = Capped {
        inner: io::BufWriter::new(file),
        written: 0,
        limit,
    };
    let gz = flate2::write::GzEncoder::new(capped, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let mut too_deep = None;
    let res = (|| {
        tar.append_dir(PathBuf::from("app"), app_dir)?;
        append_tree(&mut tar, app_dir, Path::new("app")).map_err(|e| match e {
            WalkError::Io { err, .. } => err,
            e => {
                too_deep = Some(e.to_string());
                io::Error::other("the built tree is beyond the limits")
            }
        })?;
        let gz = tar.into_inner()?;
        let mut capped = gz.finish()?;
        capped.flush()?;
        Ok::<u64, io::Error>(capped.written)
    })();
    if let Some(why) = too_deep {
        let _ = fs::remove_file(out);
        return Err(SlugError::Tree(why));
    }
    match res {
        Ok(n) => Ok(n),
        Err(e) if e.to_string().contains(CAP_HIT) => {
            let _ = fs::remove_file(out);
            Err(SlugError::TooLarge { limit })
        }
        Err(e) => {
            let _ = fs::remove_file(out);
            Err(e.into())
        }
    }
}

/// Appends everything below `dir` as `name/…`, iteratively (the built `/app` is whatever the
/// buildpacks left there: it can be a tree of any depth).
fn append_tree<W: Write>(
    tar: &mut tar::Builder<W>,
    dir: &Path,
    name: &Path,
) -> Result<(), WalkError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |err| WalkError::Io {
            what: "adding to the slug",
            path,
            err,
        }
    };
    tree::walk(dir, |e| {
        let (p, n, ft) = (&e.path, name.join(&e.rel), e.file_type);
        if ft.is_dir() {
            tar.append_dir(&n, p).map_err(io(p))?;
            return Ok(true);
        }
        if ft.is_symlink() {
            let md = fs::symlink_metadata(p).map_err(io(p))?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&md);
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let target = fs::read_link(p).map_err(io(p))?;
            tar.append_link(&mut h, &n, target).map_err(io(p))?;
        } else if ft.is_file() {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p)
                .map_err(io(p))?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&f.metadata().map_err(io(p))?);
            tar.append_data(&mut h, &n, &mut f).map_err(io(p))?;
        }
        Ok(false)
    })
}

/// Process types from a Procfile (`name: command` lines; Heroku's names are `[A-Za-z0-9_-]+`).
pub fn parse_procfile(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut types = std::collections::BTreeMap::new();
    for line in text.lines() {
        // Heroku's rule: `^([A-Za-z0-9_-]+):\s*(.+)$` (the slug runner matches the same way).
        let Some((name, cmd)) = line.split_once(':') else {
            continue;
        };
        let cmd = cmd.trim();
        if name.is_empty()
            || cmd.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        types.insert(name.to_string(), cmd.to_string());
    }
    types
}

/// `default_process_types` from `bin/release`'s YAML: the indented `name: command` lines under
/// that key (the only part of the output Slipway uses; `addons` and `config_vars` are ignored).
pub fn parse_release_yaml(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut types = std::collections::BTreeMap::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        if !indented {
            inside = line.trim_end() == "default_process_types:";
            continue;
        }
        if !inside {
            continue;
        }
        let Some((name, cmd)) = line.trim().split_once(':') else {
            continue;
        };
        types.insert(name.trim().to_string(), unquote(cmd.trim()));
    }
    types
}

fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        return s[1..s.len() - 1].replace("''", "'");
    }
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        return s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\");
    }
    s.to_string()
}

/// e.g. `4.2M`, like `du -h` (Flynn's "Compiled slug size is 4.2M").
pub fn human_size(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v < 10.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.0}{}", UNITS[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procfile_and_release_yaml() {
        let p = parse_procfile(
            "web: httpd -f -p $PORT\r\nworker:sh -c 'a: b'\n bad: x\nodd name: x\n# c\n",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p["web"], "httpd -f -p $PORT");
        assert_eq!(p["worker"], "sh -c 'a: b'");
        let r = parse_release_yaml(
            "---\naddons: []\ndefault_process_types:\n  web: 'gunicorn app:app'\n  worker: \"a \\\"b\\\"\"\nconfig_vars:\n  X: y\n",
        );
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r["web"], "gunicorn app:app");
        assert_eq!(r["worker"], "a \"b\"");
        assert!(parse_release_yaml("---\ndefault_process_types: {}\n").is_empty());
        assert_eq!(human_size(4_404_019), "4.2M");
        assert_eq!(human_size(500), "500B");
        assert_eq!(human_size(100 << 20), "100M");
    }
}
