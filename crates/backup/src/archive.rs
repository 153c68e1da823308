//! The archive format shared by platform backups and app exports: a plain (uncompressed) ustar
//! stream whose first member is `manifest.json`, then every member the manifest lists, in its
//! order, then the tar end (two zero blocks).
//!
//! Uncompressed on purpose: the bulk is slugs and image layers, gzip already; the length of
//! the whole archive is known before the first byte is written (so a download has a
//! `Content-Length` and a cut one is seen as cut), and it streams both ways without a
//! temporary copy.
//!
//! Reading is a whitelist, stricter than the push and registry checks it stands beside
//! (`slipway_registry::verify`, the builder's `push/source.rs`): every member must be a regular
//! file whose name is exactly the next one the manifest lists, its size the listed size and its
//! SHA-256 the listed one. So a symlink, a hard link, a device, a directory, a name with `..` or
//! a leading `/`, a member the manifest does not list, one larger than listed, a second
//! manifest or anything after the end are refused by construction; and nothing is ever written
//! at a path taken from the archive: files go to fixed names under the caller's directory and
//! blobs into a blob store by digest.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use slipway_blobstore::{BlobStore, Digest};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The archive format this Slipway writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The first member of every archive.
pub const MANIFEST: &str = "manifest.json";
/// Bound on the manifest (a million blobs is about 150 MB of JSON; far beyond any install).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Bound on the members one archive lists.
pub const MAX_MEMBERS: usize = 1_000_000;
/// Bound on one file member of a platform backup (the store); blobs are bounded by the disk.
pub const MAX_FILE_BYTES: u64 = 64 << 30;
/// Bound on one file member of an app export (`app.json`), checked before it is read.
pub const MAX_APP_FILE_BYTES: u64 = 16 << 20;
/// Blob members are named `blobs/sha256/<hex>`.
pub const BLOB_PREFIX: &str = "blobs/sha256/";
const BLOCK: u64 = 512;

/// What an archive holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The whole platform (`slipway cluster backup`): `store.db` and every blob it names.
    Platform,
    /// One app (`slipway export`): `app.json` and the blobs of its release.
    App,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Platform => "a platform backup (slipway cluster backup)",
            Kind::App => "an app export (slipway export)",
        })
    }
}

/// `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the Slipway that wrote it.
    pub format: u32,
    pub kind: Kind,
    /// The writer's version (`slipway version`).
    pub slipway_version: String,
    /// The store's schema version (its newest migration) when written.
    pub schema_version: i64,
    /// RFC 3339.
    pub created_at: String,
    /// Whether the store snapshot kept the API key and the cluster token.
    #[serde(default)]
    pub secrets_included: bool,
    pub members: Vec<Member>,
}

/// One member after the manifest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Where a member's bytes come from when an archive is written.
#[derive(Clone, Debug)]
pub enum Source {
    Bytes(Vec<u8>),
    File(PathBuf),
    /// From the blob store given to [`write`].
    Blob(Digest),
}

/// A member to write: what the manifest says and where its bytes are.
#[derive(Clone, Debug)]
pub struct Entry {
    pub member: Member,
    pub source: Source,
}

impl Entry {
    pub fn bytes(name: &str, bytes: Vec<u8>) -> Entry {
        Entry {
            member: Member {
                name: name.to_string(),
                size: bytes.len() as u64,
                sha256: hex::encode(Sha256::digest(&bytes)),
            },
            source: Source::Bytes(bytes),
        }
    }

    /// Hashes the file now; [`write`] hashes it again and fails if it changed.
    pub async fn file(name: &str, path: &Path) -> Result<Entry> {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Entry {
            member: Member {
                name: name.to_string(),
                size,
                sha256: hex::encode(hasher.finalize()),
            },
            source: Source::File(path.to_path_buf()),
        })
    }

    pub fn blob(digest: Digest, size: u64) -> Entry {
        Entry {
            member: Member {
                name: blob_member_name(&digest),
                size,
                sha256: digest.hex().to_string(),
            },
            source: Source::Blob(digest),
        }
    }
}

pub fn blob_member_name(d: &Digest) -> String {
    format!("{BLOB_PREFIX}{}", d.hex())
}

/// A manifest for `entries`, written now by this Slipway.
pub fn manifest(
    kind: Kind,
    schema_version: i64,
    secrets_included: bool,
    entries: &[Entry],
) -> Manifest {
    Manifest {
        format: FORMAT_VERSION,
        kind,
        slipway_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version,
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        secrets_included,
        members: entries.iter().map(|e| e.member.clone()).collect(),
    }
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK) * BLOCK
}

/// The exact length in bytes of the archive [`write`] makes of `manifest`.
pub fn archive_len(manifest: &Manifest) -> u64 {
    let json = manifest_json(manifest).len() as u64;
    let members: u64 = manifest
        .members
        .iter()
        .map(|m| BLOCK + padded(m.size))
        .sum();
    BLOCK + padded(json) + members + 2 * BLOCK
}

fn manifest_json(manifest: &Manifest) -> Vec<u8> {
    serde_json::to_vec_pretty(manifest).expect("a manifest serializes")
}

fn header(name: &str, size: u64) -> Result<[u8; 512]> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name)
        .map_err(|e| Error::Failed(format!("member name {name:?}: {e}")))?;
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}

/// Writes the archive: `manifest`, then each entry (in the manifest's order), each checked
/// against the manifest while it streams (a blob or file that changed since fails the write, so
/// a reader sees a cut archive, never a wrong one). `progress` gets the bytes written so far.
pub async fn write<W: AsyncWrite + Unpin>(
    out: &mut W,
    manifest: &Manifest,
    entries: &[Entry],
    blobs: Option<&dyn BlobStore>,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let wio = |e| Error::io("cannot write the archive".to_string(), e);
    let json = manifest_json(manifest);
    let mut written = 0u64;
    out.write_all(&header(MANIFEST, json.len() as u64)?)
        .await
        .map_err(wio)?;
    out.write_all(&json).await.map_err(wio)?;
    pad(out, json.len() as u64).await.map_err(wio)?;
    written += BLOCK + padded(json.len() as u64);
    progress(written);
    let mut buf = vec![0u8; 256 << 10];
    for entry in entries {
        let m = &entry.member;
        out.write_all(&header(&m.name, m.size)?)
            .await
            .map_err(wio)?;
        let mut reader: Box<dyn AsyncRead + Send + Unpin> = match &entry.source {
            Source::Bytes(b) => Box::new(std::io::Cursor::new(b.clone())),
            Source::File(p) => Box::new(
                tokio::fs::File::open(p)
                    .await
                    .map_err(|e| Error::io(format!("cannot open {}", p.display()), e))?,
            ),
            Source::Blob(d) => {
                let store = blobs.ok_or_else(|| Error::Failed("no blob store".into()))?;
                match store
                    .get(d)
                    .await
                    .map_err(|e| Error::Failed(e.to_string()))?
                {
                    Some((_, body)) => body,
                    None => {
                        return Err(Error::Failed(format!(
                            "blob {d} went from the blob store while it was being archived; run the backup again"
                        )));
                    }
                }
            }
        };
        let mut hasher = Sha256::new();
        let mut n_total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| Error::io(format!("cannot read {}", m.name), e))?;
            if n == 0 {
                break;
            }
            n_total += n as u64;
            if n_total > m.size {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await.map_err(wio)?;
            written += n as u64;
            progress(written);
        }
        if n_total != m.size || hex::encode(hasher.finalize()) != m.sha256 {
            return Err(Error::Failed(format!(
                "{} changed while it was being archived; run the backup again",
                m.name
            )));
        }
        pad(out, m.size).await.map_err(wio)?;
        written += padded(m.size) - m.size + BLOCK;
        progress(written);
    }
    out.write_all(&[0u8; 1024]).await.map_err(wio)?;
    out.flush().await.map_err(wio)?;
    progress(written + 2 * BLOCK);
    Ok(())
}

async fn pad<W: AsyncWrite + Unpin>(out: &mut W, size: u64) -> std::io::Result<()> {
    let rest = (padded(size) - size) as usize;
    out.write_all(&[0u8; 512][..rest]).await
}

/// A member name of normal components only (`..`, `/…`, `./` refused), short enough for ustar.
pub fn check_member_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 100 {
        return Err(format!("member name {name:?} is empty or too long"));
    }
    let path = Path::new(name);
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    if !normal || name.contains('\\') || name.ends_with('/') {
        return Err(format!(
            "member {name:?} is not a plain relative path (absolute, or with `..` or `.`)"
        ));
    }
    Ok(())
}

/// What a manifest may list: file members under a plain lowercase name, or blobs named by
/// their own digest.
fn check_manifest(m: &Manifest, expect: Kind) -> Result<()> {
    let ours = env!("CARGO_PKG_VERSION");
    if m.format > FORMAT_VERSION || newer(&m.slipway_version, ours) {
        return Err(Error::Refused(format!(
            "the archive was written by Slipway {} (archive format {}); this is Slipway {ours}, which reads format {FORMAT_VERSION} and older: upgrade Slipway first",
            m.slipway_version, m.format
        )));
    }
    if m.kind != expect {
        return Err(Error::Refused(format!(
            "the archive is {}, not {expect}",
            m.kind
        )));
    }
    if m.members.len() > MAX_MEMBERS {
        return Err(Error::Refused(format!(
            "the manifest lists {} members, more than {MAX_MEMBERS}",
            m.members.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for member in &m.members {
        check_member_name(&member.name).map_err(Error::Refused)?;
        if !seen.insert(member.name.as_str()) || member.name == MANIFEST {
            return Err(Error::Refused(format!(
                "the manifest lists {:?} twice",
                member.name
            )));
        }
        match member.name.strip_prefix(BLOB_PREFIX) {
            Some(hex) => {
                if hex != member.sha256 || format!("sha256:{hex}").parse::<Digest>().is_err() {
                    return Err(Error::Refused(format!(
                        "blob member {:?} is not named by its own digest",
                        member.name
                    )));
                }
            }
            None => {
                let plain = !member.name.contains('/')
                    && member.name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_'
                    });
                let max = match m.kind {
                    Kind::Platform => MAX_FILE_BYTES,
                    Kind::App => MAX_APP_FILE_BYTES,
                };
                if !plain || member.size > max {
                    return Err(Error::Refused(format!(
                        "member {:?} ({} bytes) is neither a blob nor a file this format has (at most {max} bytes)",
                        member.name, member.size
                    )));
                }
                if member.sha256.len() != 64
                    || !member.sha256.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    return Err(Error::Refused(format!(
                        "member {:?} has no valid sha256",
                        member.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether version `a` (`X.Y.Z`) is newer than `b`. Unparsable parts count as 0.
pub fn newer(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-', '+'])
            .take(3)
            .map(|p| p.parse().unwrap_or(0))
            .collect()
    };
    parts(a) > parts(b)
}

/// What [`read`] took out of an archive.
pub struct Read {
    pub manifest: Manifest,
    /// The file members, by name, under the directory given to [`read`].
    pub files: Vec<(String, PathBuf)>,
}

/// Reads an archive of kind `expect` from `input`, verifying everything on the way (see the
/// module doc): file members are written to `files_dir/<name>` (which must exist and hold none
/// of them), blobs are put into `blobs` (verified again by the store). Any error leaves what
/// was already put there for the caller to throw away; nothing is written elsewhere.
pub async fn read<R: AsyncRead + Unpin>(
    input: &mut R,
    expect: Kind,
    files_dir: &Path,
    blobs: Arc<dyn BlobStore>,
) -> Result<Read> {
    let (name, size) = next_header(input, "the manifest").await?;
    if name != MANIFEST {
        return Err(Error::Refused(format!(
            "the first member is {name:?}, not {MANIFEST}: this is not a Slipway archive"
        )));
    }
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::Refused(format!(
            "{MANIFEST} is {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed"
        )));
    }
    let mut json = vec![0u8; size as usize];
    read_exact(input, &mut json, MANIFEST).await?;
    skip_padding(input, size, MANIFEST).await?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| Error::Refused(format!("{MANIFEST} is not a valid manifest: {e}")))?;
    check_manifest(&manifest, expect)?;
    let mut files = Vec::new();
    let mut buf = vec![0u8; 256 << 10];
    for m in &manifest.members {
        let (name, size) = next_header(input, &m.name).await?;
        if name != m.name || size != m.size {
            return Err(Error::Refused(format!(
                "member {name:?} ({size} bytes) is not the {:?} ({} bytes) the manifest lists next",
                m.name, m.size
            )));
        }
        let mut hasher = Sha256::new();
        if m.name.starts_with(BLOB_PREFIX) {
            let digest: Digest = format!("sha256:{}", m.sha256)
                .parse()
                .map_err(|_| Error::Refused(format!("bad digest in {:?}", m.name)))?;
            let (mut tx, rx) = tokio::io::duplex(256 << 10);
            let store = blobs.clone();
            let expected = digest.clone();
            let put = tokio::spawn(async move { store.put(Box::new(rx), Some(&expected)).await });
            let copied = copy_hashed(input, &mut tx, m, &mut hasher, &mut buf).await;
            drop(tx);
            let stored = put.await;
            copied?;
            check_sum(m, hasher)?;
            match stored {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::Failed(format!("blob {digest}: {e}"))),
                Err(e) => return Err(Error::Failed(format!("blob {digest}: {e}"))),
            }
        } else {
            let path = files_dir.join(&m.name);
            // Owner only: a store or an app's env holds secrets, whatever the umask says.
            let mut f = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
            copy_hashed(input, &mut f, m, &mut hasher, &mut buf).await?;
            f.sync_all()
                .await
                .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
            check_sum(m, hasher)?;
            files.push((m.name.clone(), path));
        }
        skip_padding(input, m.size, &m.name).await?;
    }
    let mut end = [0u8; 512];
    for _ in 0..2 {
        read_exact(input, &mut end, "the end of the archive").await?;
        if end.iter().any(|b| *b != 0) {
            return Err(Error::Refused(
                "the archive has members its manifest does not list".into(),
            ));
        }
    }
    Ok(Read { manifest, files })
}

fn check_sum(m: &Member, hasher: Sha256) -> Result<()> {
    let got = hex::encode(hasher.finalize());
    if got != m.sha256 {
        return Err(Error::Refused(format!(
            "member {:?} does not match its checksum (manifest sha256 {}, content {got}): the archive was altered or damaged",
            m.name, m.sha256
        )));
    }
    Ok(())
}

async fn copy_hashed<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    input: &mut R,
    out: &mut W,
    m: &Member,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> Result<()> {
    let mut left = m.size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = input
            .read(&mut buf[..want])
            .await
            .map_err(|e| Error::io(format!("cannot read member {:?}", m.name), e))?;
        if n == 0 {
            return Err(truncated(&m.name));
        }
        hasher.update(&buf[..n]);
        // A failed write here is the store refusing the blob; its error says why.
        out.write_all(&buf[..n])
            .await
            .map_err(|e| Error::io(format!("cannot store member {:?}", m.name), e))?;
        left -= n as u64;
    }
    out.flush()
        .await
        .map_err(|e| Error::io(format!("cannot store member {:?}", m.name), e))?;
    Ok(())
}

fn truncated(at: &str) -> Error {
    Error::Refused(format!(
        "the archive is truncated: it ends inside {at}; nothing was restored"
    ))
}

async fn read_exact<R: AsyncRead + Unpin>(input: &mut R, buf: &mut [u8], at: &str) -> Result<()> {
    match input.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(truncated(at)),
        Err(e) => Err(Error::io(format!("cannot read the archive at {at}"), e)),
    }
}

async fn skip_padding<R: AsyncRead + Unpin>(input: &mut R, size: u64, at: &str) -> Result<()> {
    let rest = (padded(size) - size) as usize;
    let mut pad = [0u8; 512];
    read_exact(input, &mut pad[..rest], at).await
}

/// The next member's header: a regular file with a checked name; anything else is refused.
async fn next_header<R: AsyncRead + Unpin>(input: &mut R, at: &str) -> Result<(String, u64)> {
    let mut block = [0u8; 512];
    read_exact(input, &mut block, at).await?;
    if block.iter().all(|b| *b == 0) {
        return Err(Error::Refused(format!(
            "the archive ends before {at}: it is truncated or not a Slipway archive"
        )));
    }
    let h = tar::Header::from_byte_slice(&block);
    let stored = h
        .cksum()
        .map_err(|_| Error::Refused(format!("the tar header before {at} is damaged")))?;
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    if stored != computed {
        return Err(Error::Refused(format!(
            "the tar header before {at} is damaged (checksum)"
        )));
    }
    let name = String::from_utf8(h.path_bytes().into_owned())
        .map_err(|_| Error::Refused(format!("a member name before {at} is not UTF-8")))?;
    let kind = h.entry_type();
    if kind != tar::EntryType::Regular {
        let what = match kind {
            tar::EntryType::Symlink => "a symlink",
            tar::EntryType::Link => "a hard link",
            tar::EntryType::Directory => "a directory",
            tar::EntryType::Char | tar::EntryType::Block => "a device",
            tar::EntryType::GNULongName | tar::EntryType::XHeader => "a long-name header",
            _ => "not a regular file",
        };
        return Err(Error::Refused(format!(
            "member {name:?} is {what}: a Slipway archive holds regular files only"
        )));
    }
    check_member_name(&name).map_err(Error::Refused)?;
    let size = h
        .size()
        .map_err(|_| Error::Refused(format!("member {name:?} has a damaged size")))?;
    Ok((name, size))
}
