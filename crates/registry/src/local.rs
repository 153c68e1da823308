//! Images on disk, read in place for `slipway image push`: a `docker save` archive (a tar with
//! `manifest.json`, or that tar extracted) and an OCI image layout (`oci-layout`, `index.json`
//! and `blobs/`, as a directory or a tar). Nothing is extracted: a blob in a tar is a byte range
//! of the tar, so a 1 GB image costs no temporary disk.
//!
//! A docker archive has no registry manifest (its layers are uncompressed tars named by path),
//! so one is built: Docker schema 2 with `rootfs.diff.tar` layers, digests computed here. An OCI
//! layout's manifest is pushed byte for byte, so its digest stays the same.

use crate::spec::{self, Descriptor, Manifest};
use anyhow::{Context, Result, bail};
use slipway_blobstore::{Digest, Hasher};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Where a blob's bytes are.
#[derive(Clone, Debug)]
pub enum Source {
    /// A whole file.
    File(PathBuf),
    /// `len` bytes at `offset` of a file (a member of an uncompressed tar).
    Range {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// Bytes in memory (a built manifest's config is already a file; this is for tests).
    Bytes(std::sync::Arc<Vec<u8>>),
}

impl Source {
    /// A blocking reader of the blob.
    pub fn open(&self) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Source::File(p) => Box::new(std::fs::File::open(p)?),
            Source::Range { path, offset, len } => {
                let mut f = std::fs::File::open(path)?;
                f.seek(SeekFrom::Start(*offset))?;
                Box::new(f.take(*len))
            }
            Source::Bytes(b) => Box::new(std::io::Cursor::new(b.as_ref().clone())),
        })
    }

    fn read_all(&self, max: u64) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open()?.take(max + 1).read_to_end(&mut buf)?;
        if buf.len() as u64 > max {
            bail!("file is larger than {max} bytes: not a manifest or config");
        }
        Ok(buf)
    }
}

#[derive(Clone, Debug)]
pub struct LocalBlob {
    pub digest: Digest,
    pub size: u64,
    pub source: Source,
}

/// An image ready to push: its manifest (exact bytes) and the blobs it names, config first.
#[derive(Clone, Debug)]
pub struct LocalImage {
    /// `docker-archive` or `oci-layout`.
    pub format: &'static str,
    pub manifest: Vec<u8>,
    pub media_type: String,
    pub digest: Digest,
    pub blobs: Vec<LocalBlob>,
    /// A tag the archive names (`RepoTags` of a docker archive, `ref.name` of an OCI layout).
    pub tag: Option<String>,
}

/// The files of an image: a directory or an (uncompressed) tar.
enum Files {
    Dir(PathBuf),
    Tar {
        path: PathBuf,
        /// Member path → (offset, size) or a link target.
        entries: HashMap<String, TarEntry>,
    },
}

#[derive(Clone, Debug)]
enum TarEntry {
    File { offset: u64, size: u64 },
    Link(String),
}

/// `a/./b/../c` → `a/c`; refuses paths that leave the image (absolute or too many `..`).
fn normalize(p: &str) -> Result<String> {
    let mut out: Vec<String> = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            Component::ParentDir if !out.is_empty() => {
                out.pop();
            }
            _ => bail!("path {p:?} points outside the image"),
        }
    }
    Ok(out.join("/"))
}

impl Files {
    fn open(path: &Path) -> Result<Files> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            return Ok(Files::Dir(path.to_path_buf()));
        }
        let mut f = std::fs::File::open(path)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic)?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] {
            bail!(
                "{} is gzip-compressed: decompress it first (`gunzip -k {}`), an image archive is read in place",
                path.display(),
                path.display()
            );
        }
        if n >= 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            bail!(
                "{} is zstd-compressed: decompress it first (`zstd -d`)",
                path.display()
            );
        }
        f.seek(SeekFrom::Start(0))?;
        let mut archive = tar::Archive::new(f);
        let mut entries = HashMap::new();
        for e in archive
            .entries()
            .with_context(|| format!("{} is not a tar archive", path.display()))?
        {
            let e =
                e.with_context(|| format!("{} is not a readable tar archive", path.display()))?;
            let name = e.path()?.to_string_lossy().into_owned();
            let Ok(name) = normalize(&name) else { continue };
            let kind = e.header().entry_type();
            if kind.is_file() {
                entries.insert(
                    name,
                    TarEntry::File {
                        offset: e.raw_file_position(),
                        size: e.size(),
                    },
                );
            } else if (kind.is_symlink() || kind.is_hard_link())
                && let Some(target) = e.link_name()?
            {
                {
                    let target = target.to_string_lossy().into_owned();
                    // Symlinks are relative to the member's directory, hard links to the root.
                    let full = if kind.is_symlink() {
                        let dir = Path::new(&name)
                            .parent()
                            .map(|d| d.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        format!("{dir}/{target}")
                    } else {
                        target
                    };
                    if let Ok(full) = normalize(&full) {
                        entries.insert(name, TarEntry::Link(full));
                    }
                }
            }
        }
        Ok(Files::Tar {
            path: path.to_path_buf(),
            entries,
        })
    }

    fn source(&self, name: &str) -> Result<Option<(Source, u64)>> {
        let mut name = normalize(name)?;
        match self {
            Files::Dir(dir) => {
                let p = dir.join(&name);
                // Follow links only within the image directory.
                let Ok(real) = p.canonicalize() else {
                    return Ok(None);
                };
                if !real.starts_with(dir.canonicalize()?) {
                    bail!("{name} points outside the image directory");
                }
                let meta = std::fs::metadata(&real)?;
                Ok(meta.is_file().then_some((Source::File(real), meta.len())))
            }
            Files::Tar { path, entries } => {
                for _ in 0..8 {
                    match entries.get(&name) {
                        None => return Ok(None),
                        Some(TarEntry::File { offset, size }) => {
                            return Ok(Some((
                                Source::Range {
                                    path: path.clone(),
                                    offset: *offset,
                                    len: *size,
                                },
                                *size,
                            )));
                        }
                        Some(TarEntry::Link(t)) => name = t.clone(),
                    }
                }
                bail!("{name}: too many links")
            }
        }
    }

    fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        match self.source(name)? {
            Some((s, _)) => Ok(Some(
                s.read_all(max).with_context(|| format!("reading {name}"))?,
            )),
            None => Ok(None),
        }
    }
}

/// Reads the image at `path` (format detected from its files).
pub fn open(path: &Path) -> Result<LocalImage> {
    let files = Files::open(path)?;
    if files.source("oci-layout")?.is_some() && files.source("index.json")?.is_some() {
        oci_layout(&files).with_context(|| format!("{} (OCI image layout)", path.display()))
    } else if files.source("manifest.json")?.is_some() {
        docker_archive(&files).with_context(|| format!("{} (docker save archive)", path.display()))
    } else {
        bail!(
            "{} is neither a `docker save` archive (no manifest.json) nor an OCI image layout (no oci-layout and index.json)",
            path.display()
        )
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn layout_blob(files: &Files, desc: &Descriptor) -> Result<LocalBlob> {
    let (source, size) = files
        .source(&blob_path(&desc.digest))?
        .with_context(|| format!("blob {} is missing from the layout", desc.digest))?;
    if size != desc.size {
        bail!(
            "blob {} has {size} bytes, its descriptor says {}: the layout is corrupt",
            desc.digest,
            desc.size
        );
    }
    Ok(LocalBlob {
        digest: desc.digest.clone(),
        size,
        source,
    })
}

#[derive(serde::Deserialize)]
struct IndexEntry {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: Digest,
    #[serde(default)]
    platform: Option<spec::Platform>,
    #[serde(default)]
    annotations: HashMap<String, String>,
}

/// One manifest out of an index: the only one, else the linux/amd64 one.
fn pick(entries: Vec<IndexEntry>) -> Result<IndexEntry> {
    let n = entries.len();
    if n == 1 {
        return Ok(entries.into_iter().next().expect("one"));
    }
    let mut amd64: Vec<IndexEntry> = entries
        .into_iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
        })
        .collect();
    match amd64.len() {
        1 => Ok(amd64.remove(0)),
        0 if n == 0 => bail!("index.json lists no image"),
        _ => bail!(
            "index.json lists {n} images and not exactly one for linux/amd64: keep one image in the layout"
        ),
    }
}

fn oci_layout(files: &Files) -> Result<LocalImage> {
    #[derive(serde::Deserialize)]
    struct Idx {
        manifests: Vec<IndexEntry>,
    }
    let index = files
        .read("index.json", spec::MAX_MANIFEST_BYTES as u64)?
        .context("no index.json")?;
    let idx: Idx = serde_json::from_slice(&index).context("index.json is not an OCI index")?;
    let mut entry = pick(idx.manifests)?;
    let tag = entry
        .annotations
        .get("org.opencontainers.image.ref.name")
        .cloned();
    // A nested index (multi-platform image): one level down.
    for _ in 0..2 {
        if entry.media_type != spec::OCI_INDEX && entry.media_type != spec::DOCKER_LIST {
            break;
        }
        let bytes = files
            .read(&blob_path(&entry.digest), spec::MAX_MANIFEST_BYTES as u64)?
            .with_context(|| format!("index {} is missing", entry.digest))?;
        let idx: Idx = serde_json::from_slice(&bytes).context("nested index is not JSON")?;
        entry = pick(idx.manifests)?;
    }
    let manifest = files
        .read(&blob_path(&entry.digest), spec::MAX_MANIFEST_BYTES as u64)?
        .with_context(|| format!("manifest {} is missing from the layout", entry.digest))?;
    let digest = Digest::of_bytes(&manifest);
    if digest != entry.digest {
        bail!(
            "manifest {} has digest {digest}: the layout is corrupt",
            entry.digest
        );
    }
    let ct = (!entry.media_type.is_empty()).then_some(entry.media_type.as_str());
    let parsed = spec::parse_manifest(&manifest, ct).map_err(|e| anyhow::anyhow!(e.message))?;
    let mut blobs = vec![layout_blob(files, &parsed.manifest.config)?];
    for l in &parsed.manifest.layers {
        blobs.push(layout_blob(files, l)?);
    }
    Ok(LocalImage {
        format: "oci-layout",
        manifest,
        media_type: parsed.media_type,
        digest,
        blobs,
        tag: tag.filter(|t| !t.contains(['/', ':'])),
    })
}

/// Hashes a blob (docker archives name layers by path, not digest).
fn hash(source: &Source) -> Result<(Digest, u64, bool)> {
    let mut r = source.open()?;
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut gzip = None;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        if gzip.is_none() {
            gzip = Some(n >= 2 && buf[..2] == [0x1f, 0x8b]);
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((h.finish(), size, gzip.unwrap_or(false)))
}

fn docker_archive(files: &Files) -> Result<LocalImage> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let bytes = files
        .read("manifest.json", spec::MAX_MANIFEST_BYTES as u64)?
        .context("no manifest.json")?;
    let mut entries: Vec<Entry> =
        serde_json::from_slice(&bytes).context("manifest.json is not a docker save manifest")?;
    if entries.len() != 1 {
        bail!(
            "the archive holds {} images: save one image per archive (`docker save IMAGE -o FILE`)",
            entries.len()
        );
    }
    let entry = entries.remove(0);
    let (config_src, _) = files
        .source(&entry.config)?
        .with_context(|| format!("config {} is missing from the archive", entry.config))?;
    let config_bytes = config_src.read_all(spec::MAX_CONFIG_BYTES)?;
    spec::ImageConfig::parse(&config_bytes).map_err(|e| anyhow::anyhow!(e.message))?;
    let config = LocalBlob {
        digest: Digest::of_bytes(&config_bytes),
        size: config_bytes.len() as u64,
        source: Source::Bytes(std::sync::Arc::new(config_bytes)),
    };
    let mut blobs = vec![config.clone()];
    let mut layers = Vec::new();
    for l in &entry.layers {
        let (src, _) = files
            .source(l)?
            .with_context(|| format!("layer {l} is missing from the archive"))?;
        let (digest, size, gzip) = hash(&src).with_context(|| format!("reading layer {l}"))?;
        layers.push(Descriptor {
            media_type: if gzip {
                spec::DOCKER_LAYER_GZIP
            } else {
                spec::DOCKER_LAYER_TAR
            }
            .into(),
            digest: digest.clone(),
            size,
            platform: None,
        });
        blobs.push(LocalBlob {
            digest,
            size,
            source: src,
        });
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::DOCKER_MANIFEST.into()),
        config: Descriptor {
            media_type: spec::DOCKER_CONFIG.into(),
            digest: config.digest,
            size: config.size,
            platform: None,
        },
        layers,
    };
    let manifest = serde_json::to_vec_pretty(&manifest)?;
    let tag = entry
        .repo_tags
        .unwrap_or_default()
        .first()
        .and_then(|t| t.rsplit_once(':').map(|(_, t)| t.to_string()))
        .filter(|t| !t.contains('/'));
    Ok(LocalImage {
        format: "docker-archive",
        digest: Digest::of_bytes(&manifest),
        manifest,
        media_type: spec::DOCKER_MANIFEST.into(),
        blobs,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(arch: &str, d: char) -> IndexEntry {
        IndexEntry {
            media_type: crate::spec::OCI_MANIFEST.into(),
            digest: format!("sha256:{}", d.to_string().repeat(64))
                .parse()
                .unwrap(),
            platform: Some(spec::Platform {
                architecture: arch.into(),
                os: "linux".into(),
            }),
            annotations: HashMap::new(),
        }
    }

    #[test]
    fn picks_linux_amd64_out_of_an_index() {
        let e = pick(vec![entry("arm64", 'a'), entry("amd64", 'b')]).unwrap();
        assert_eq!(e.digest.hex(), "b".repeat(64));
        assert!(pick(vec![entry("arm64", 'a'), entry("s390x", 'b')]).is_err());
        assert_eq!(
            pick(vec![entry("arm64", 'a')]).unwrap().digest.hex(),
            "a".repeat(64)
        );
        assert!(pick(vec![]).is_err());
    }

    #[test]
    fn normalize_refuses_escapes() {
        assert_eq!(normalize("./a/./b/../c").unwrap(), "a/c");
        assert!(normalize("../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("a/../../x").is_err());
    }
}
