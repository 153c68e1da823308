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
use std::path::{Component, Path, PathBuf};

/// `.slugignore` patterns (Heroku's format, which is `.gitignore`'s without negation).
#[derive(Debug, Default)]
pub struct SlugIgnore {
    patterns: Vec<Pattern>,
}

#[derive(Debug)]
struct Pattern {
    /// Path components to match (globs each); anchored patterns match from the root.
    parts: Vec<String>,
    anchored: bool,
    dir_only: bool,
}

impl SlugIgnore {
    /// Parses the file's text: one pattern per line, `#` comments, blank lines ignored. Lines
    /// with `..` components are dropped: a pattern only ever matches paths inside the tree.
    pub fn parse(text: &str) -> SlugIgnore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let dir_only = line.ends_with('/');
            let body = line.trim_end_matches('/');
            let anchored = body.starts_with('/') || body.contains('/');
            let parts: Vec<String> = body
                .split('/')
                .filter(|p| !p.is_empty() && *p != ".")
                .map(str::to_string)
                .collect();
            if parts.is_empty() || parts.iter().any(|p| p == "..") {
                continue;
            }
            patterns.push(Pattern {
                parts,
                anchored,
                dir_only,
            });
        }
        SlugIgnore { patterns }
    }

    /// Whether `rel` (a path relative to the tree's root) is ignored.
    pub fn matches(&self, rel: &Path, is_dir: bool) -> bool {
        let parts: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        self.patterns.iter().any(|p| {
            if p.dir_only && !is_dir {
                return false;
            }
            if p.anchored {
                match_parts(&p.parts, &parts)
            } else {
                parts.last().is_some_and(|name| glob(&p.parts[0], name))
            }
        })
    }
}

/// Matches path components against pattern components; `**` matches any number of them.
fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| match_parts(rest, &path[i..])),
        Some((p, rest)) => !path.is_empty() && glob(p, path[0]) && match_parts(rest, &path[1..]),
    }
}

/// Shell-style glob of one path component: `*`, `?` and `[...]` classes.
pub fn glob(pat: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| rec(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && rec(rest, &n[1..]),
            Some(('[', rest)) => {
                let Some(end) = rest.iter().position(|c| *c == ']') else {
                    return !n.is_empty() && n[0] == '[' && rec(rest, &n[1..]);
                };
                let (class, after) = (&rest[..end], &rest[end + 1..]);
                let (neg, class) = match class.split_first() {
                    Some(('!' | '^', c)) => (true, c),
                    _ => (false, class),
                };
                let Some(&c) = n.first() else { return false };
                let mut hit = false;
                let mut i = 0;
                while i < class.len() {
                    if i + 2 < class.len() && class[i + 1] == '-' {
                        hit |= class[i] <= c && c <= class[i + 2];
                        i += 3;
                    } else {
                        hit |= class[i] == c;
                        i += 1;
                    }
                }
                hit != neg && rec(after, &n[1..])
            }
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

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
    #[error("{0}")]
    Io(String),
}

/// Copies `src` into `dest` (created), skipping what `.slugignore` (read from `src`, never
/// through a symlink) ignores, recreating symlinks as symlinks and skipping special files.
/// Fails once the regular files copied pass `limit` bytes.
pub fn copy_source(src: &Path, dest: &Path, limit: u64) -> Result<Copied, CopyError> {
    let ignore = match read_nofollow(&src.join(".slugignore"), 64 << 10) {
        Ok(Some(text)) => SlugIgnore::parse(&String::from_utf8_lossy(&text)),
        _ => SlugIgnore::default(),
    };
    let mut c = Copied::default();
    fs::create_dir_all(dest).map_err(|e| io_err("creating", dest, e))?;
    copy_dir(src, dest, Path::new(""), &ignore, limit, &mut c)?;
    Ok(c)
}

fn io_err(what: &str, p: &Path, e: io::Error) -> CopyError {
    CopyError::Io(format!("{what} {}: {e}", p.display()))
}

fn copy_dir(
    src: &Path,
    dest: &Path,
    rel: &Path,
    ignore: &SlugIgnore,
    limit: u64,
    c: &mut Copied,
) -> Result<(), CopyError> {
    let dir = src.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| io_err("reading", &dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| io_err("reading", &dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let rel = rel.join(e.file_name());
        let from = src.join(&rel);
        let to = dest.join(&rel);
        let md = fs::symlink_metadata(&from).map_err(|e| io_err("reading", &from, e))?;
        let ft = md.file_type();
        if ignore.matches(&rel, ft.is_dir()) {
            c.ignored += 1;
            continue;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_err("reading", &from, e))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_err("creating", &to, e))?;
        } else if ft.is_dir() {
            fs::create_dir(&to).map_err(|e| io_err("creating", &to, e))?;
            fs::set_permissions(&to, md.permissions()).map_err(|e| io_err("chmod", &to, e))?;
            copy_dir(src, dest, &rel, ignore, limit, c)?;
        } else if ft.is_file() {
            c.bytes += md.len();
            c.files += 1;
            if c.bytes > limit {
                return Err(CopyError::TooLarge { limit });
            }
            copy_file_nofollow(&from, &to, md.mode()).map_err(|e| io_err("copying", &from, e))?;
        }
        // Sockets, fifos and devices have no place in a slug.
    }
    Ok(())
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
/// symlink (a symlink itself is re-owned, not its target).
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(dir, Some(uid), Some(gid))?;
    let md = fs::symlink_metadata(dir)?;
    if !md.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            chown_tree(&p, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&p, Some(uid), Some(gid))?;
        }
    }
    Ok(())
}

/// Empties `dir` if the regular files below it (symlinks not followed) add up to more than
/// `limit` bytes; returns whether it did. Keeps an app's build cache from growing forever.
pub fn clear_if_over(dir: &Path, limit: u64) -> io::Result<bool> {
    fn size(dir: &Path, total: &mut u64, limit: u64) -> io::Result<()> {
        for e in fs::read_dir(dir)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                size(&e.path(), total, limit)?;
            } else if ft.is_file() {
                *total += e.metadata()?.len();
            }
            if *total > limit {
                return Ok(());
            }
        }
        Ok(())
    }
    let mut total = 0;
    size(dir, &mut total, limit)?;
    if total <= limit {
        return Ok(false);
    }
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            fs::remove_dir_all(e.path())?;
        } else {
            fs::remove_file(e.path())?;
        }
    }
    Ok(true)
}

/// Why a slug could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SlugError {
    #[error("the compressed slug is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
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
    let res = (|| {
        tar.append_dir(PathBuf::from("app"), app_dir)?;
        append_tree(&mut tar, app_dir, Path::new("app"))?;
        let gz = tar.into_inner()?;
        let mut capped = gz.finish()?;
        capped.flush()?;
        Ok::<u64, io::Error>(capped.written)
    })();
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

fn append_tree<W: Write>(tar: &mut tar::Builder<W>, dir: &Path, name: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let n = name.join(e.file_name());
        let ft = e.file_type()?;
        if ft.is_dir() {
            tar.append_dir(&n, &p)?;
            append_tree(tar, &p, &n)?;
        } else if ft.is_symlink() {
            let md = fs::symlink_metadata(&p)?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&md);
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            tar.append_link(&mut h, &n, fs::read_link(&p)?)?;
        } else if ft.is_file() {
            let mut f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p)?;
            let mut h = tar::Header::new_gnu();
            h.set_metadata(&f.metadata()?);
            tar.append_data(&mut h, &n, &mut f)?;
        }
    }
    Ok(())
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
    fn slugignore_patterns() {
        let ig =
            SlugIgnore::parse("# c\n*.psd\n/docs\ntmp/*.log\nspec/\n../x\n/a/../b\n**/cache\n");
        let m = |p: &str, dir: bool| ig.matches(Path::new(p), dir);
        assert!(m("a.psd", false) && m("x/y/b.psd", false));
        assert!(m("docs", true) && !m("lib/docs", true));
        assert!(m("tmp/a.log", false) && !m("tmp/sub/a.log", false) && !m("a.log", false));
        assert!(m("spec", true) && !m("spec", false));
        assert!(m("cache", true) && m("x/y/cache", false));
        assert!(
            !m("x", false) && !m("b", false),
            "patterns with .. match nothing"
        );
        assert!(glob("[a-c]?.txt", "b1.txt") && !glob("[!a-c]?.txt", "b1.txt"));
    }

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
