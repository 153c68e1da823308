//! Layers are checked when their manifest is pushed, so a hostile or broken image is refused
//! with a clear error at push time instead of failing later on a host. This is defence in
//! depth: the host's layer cache unpacks safely on its own (it neutralises what it cannot
//! refuse); here the push is refused for what no honest image contains:
//! - entries whose name is absolute or contains `..` (path traversal);
//! - hard links whose target is absolute or contains `..`;
//! - entries written through a symlink the same layer created (`link -> /etc`, then
//!   `link/passwd`): the classic symlink escape;
//! - device nodes other than the 0/0 character device (overlay's whiteout form);
//! - entries more than 1000 directories deep;
//! - a gzip stream or tar that ends early (truncated) or is not a tar at all.
//!
//! A verified layer is remembered (`<dir>/verified/<hex>`), so a re-push does not re-read it.

use crate::error::{RegistryError, Result};
use crate::server::Registry;
use slipway_blobstore::Digest;
use std::collections::HashSet;
use std::io::Read;
use std::path::{Component, Path};

/// Deepest entry a layer may have (path components): the host's layer cache refuses deeper
/// ones too (`slipway_host::layers::MAX_DEPTH`), so they are refused at push already.
const MAX_DEPTH: usize = 1000;

/// Why a layer was refused, in words.
fn refuse(d: &Digest, why: String) -> RegistryError {
    RegistryError::new(
        axum::http::StatusCode::BAD_REQUEST,
        "LAYER_INVALID",
        format!("layer {d} is refused: {why}; rebuild the image from trusted sources"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

fn escapes(p: &Path) -> bool {
    p.components().any(|c| {
        matches!(
            c,
            Component::ParentDir | Component::RootDir | Component::Prefix(_)
        )
    })
}

/// Checks one layer's tar stream (already decompressed). Pure over a reader, so it is tested
/// without a store.
pub(crate) fn check_tar(reader: impl Read) -> std::result::Result<u64, String> {
    let mut archive = tar::Archive::new(reader);
    let mut symlinks: HashSet<String> = HashSet::new();
    let mut n = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| format!("it is not a tar archive ({e})"))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| format!("its tar stream is broken or truncated ({e})"))?;
        n += 1;
        let path = entry
            .path()
            .map_err(|e| format!("an entry has an unreadable name ({e})"))?
            .into_owned();
        let name = path.to_string_lossy().into_owned();
        if escapes(&path) {
            return Err(format!("entry {name:?} points outside the image root"));
        }
        let norm: Vec<String> = path
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        if norm.len() > MAX_DEPTH {
            return Err(format!(
                "entry {:?}… is more than {MAX_DEPTH} directories deep",
                name.chars().take(200).collect::<String>()
            ));
        }
        // Is any parent of this entry a symlink this layer made? The prefixes grow one
        // component at a time: linear in the name's length, not quadratic.
        let mut parent = String::new();
        for part in &norm[..norm.len().saturating_sub(1)] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            if symlinks.contains(&parent) {
                return Err(format!(
                    "entry {name:?} is written through the symlink {parent:?}"
                ));
            }
        }
        let kind = entry.header().entry_type();
        let joined = norm.join("/");
        if kind.is_symlink() {
            symlinks.insert(joined);
        } else {
            symlinks.remove(&joined);
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| format!("entry {name:?} has an unreadable link target ({e})"))?
                .unwrap_or_default();
            if escapes(&target) {
                return Err(format!(
                    "hard link {name:?} points outside the image root ({})",
                    target.display()
                ));
            }
        }
        if kind.is_block_special() || kind.is_character_special() {
            let major = entry.header().device_major().ok().flatten().unwrap_or(1);
            let minor = entry.header().device_minor().ok().flatten().unwrap_or(1);
            if kind.is_block_special() || major != 0 || minor != 0 {
                return Err(format!(
                    "entry {name:?} is a device node, which images may not contain"
                ));
            }
        }
        // Read the content through, so a truncated body is found.
        std::io::copy(&mut entry, &mut std::io::sink())
            .map_err(|e| format!("entry {name:?} is truncated ({e})"))?;
    }
    Ok(n)
}

/// Checks a layer blob of media type `media_type` (gzip'd or plain tar).
pub(crate) fn check_layer(reader: impl Read, gzip: bool) -> std::result::Result<u64, String> {
    if gzip {
        let mut gz = flate2::read::GzDecoder::new(reader);
        let n = check_tar(&mut gz).map_err(|e| {
            if e.contains("truncated") || e.contains("broken") || e.contains("not a tar") {
                format!("{e}; the gzip stream may be truncated or corrupt")
            } else {
                e
            }
        })?;
        // The tar ended: the rest of the gzip stream must be complete too.
        std::io::copy(&mut gz, &mut std::io::sink())
            .map_err(|e| format!("its gzip stream is truncated or corrupt ({e})"))?;
        Ok(n)
    } else {
        check_tar(reader)
    }
}

impl Registry {
    /// Verifies a layer blob (once per digest).
    pub(crate) async fn verify_layer(&self, d: &Digest, media_type: &str) -> Result<()> {
        let marker = self.dir.join("verified").join(d.hex());
        if tokio::fs::metadata(&marker).await.is_ok() {
            return Ok(());
        }
        let (_, body) = self
            .blobs
            .get(d)
            .await?
            .ok_or_else(|| RegistryError::blob_unknown(d.as_str()))?;
        let gzip = media_type.ends_with("gzip");
        let handle = tokio::runtime::Handle::current();
        let checked = tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            let reader = tokio_util::io::SyncIoBridge::new(body);
            check_layer(reader, gzip)
        })
        .await
        .map_err(|e| RegistryError::internal(format!("layer check: {e}")))?;
        checked.map_err(|why| refuse(d, why))?;
        let _ = tokio::fs::create_dir_all(marker.parent().expect("in verified/")).await;
        let _ = tokio::fs::write(&marker, b"").await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testimage::{LayerBuilder, gzip};

    #[test]
    fn honest_layers_pass() {
        let l = LayerBuilder::new()
            .dir("bin")
            .file("bin/a", 0o755, b"x")
            .symlink("bin/sh", "/bin/busybox")
            .whiteout("etc/old")
            .finish();
        assert_eq!(check_layer(&l[..], false).unwrap(), 4);
        assert_eq!(check_layer(&gzip(&l).unwrap()[..], true).unwrap(), 4);
    }

    #[test]
    fn entries_deeper_than_1000_levels_are_refused_and_checked_in_linear_time() {
        let ok = format!("{}f", "d/".repeat(999));
        let l = LayerBuilder::new().file(&ok, 0o644, b"x").finish();
        assert_eq!(check_layer(&l[..], false).unwrap(), 1);
        let deep = format!("{}f", "d/".repeat(1000));
        let l = LayerBuilder::new().file(&deep, 0o644, b"x").finish();
        let e = check_layer(&l[..], false).unwrap_err();
        assert!(e.contains("more than 1000 directories deep"), "{e}");
        assert!(e.len() < 400, "the message quotes a bounded part: {e}");
    }

    #[test]
    fn hostile_layers_are_refused() {
        let trav = LayerBuilder::new().raw_file("../../evil", b"x").finish();
        assert!(
            check_layer(&trav[..], false)
                .unwrap_err()
                .contains("outside")
        );
        let abs = LayerBuilder::new().raw_file("/etc/evil", b"x").finish();
        assert!(
            check_layer(&abs[..], false)
                .unwrap_err()
                .contains("outside")
        );
        let through = LayerBuilder::new()
            .symlink("www", "/etc")
            .file("www/evil", 0o644, b"x")
            .finish();
        let e = check_layer(&through[..], false).unwrap_err();
        assert!(e.contains("through the symlink"), "{e}");
        let gz = gzip(
            &LayerBuilder::new()
                .file("a", 0o644, &[7u8; 100_000])
                .finish(),
        )
        .unwrap();
        let e = check_layer(&gz[..gz.len() / 2], true).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = check_layer(
            &b"plainly not a tar, but long enough to hold a header"[..],
            true,
        )
        .unwrap_err();
        assert!(!e.is_empty());
    }
}
