//! Small real images written directly as OCI layouts or `docker save` archives, for tests and
//! benchmarks (no Docker engine, no network): a busybox rootfs layer from the host's
//! `/bin/busybox`, app layers, whiteouts, and deliberately hostile layers.

use anyhow::{Context, Result};
use slipway_blobstore::Digest;
use std::io::Write;
use std::path::Path;

/// Builds one layer (an uncompressed tar).
pub struct LayerBuilder {
    tar: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl LayerBuilder {
    pub fn new() -> Self {
        let mut tar = tar::Builder::new(Vec::new());
        tar.mode(tar::HeaderMode::Deterministic);
        LayerBuilder { tar }
    }

    pub fn dir(mut self, path: &str) -> Self {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        self.tar
            .append_data(&mut h, path, std::io::empty())
            .expect("in-memory tar");
        self
    }

    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        self.tar
            .append_data(&mut h, path, data)
            .expect("in-memory tar");
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.tar
            .append_link(&mut h, path, target)
            .expect("in-memory tar");
        self
    }

    /// An OCI/AUFS whiteout: `dir/.wh.name` deletes `dir/name` of the layers below.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let wh = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&wh, 0o644, b"")
    }

    /// An entry with a name written as is (`../x`, `/etc/x`): what a hostile image holds. The
    /// tar crate refuses such names through its normal API, so the header is filled by hand.
    pub fn raw_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        let bytes = name.as_bytes();
        h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        h.set_cksum();
        self.tar.append(&h, data).expect("in-memory tar");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.tar.into_inner().expect("in-memory tar")
    }
}

/// The host's static busybox as a root filesystem: `/bin/busybox`, a link per applet the tests
/// use, `/etc/passwd`, `/tmp`.
pub fn busybox_layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read("/bin/busybox")
        .context("cannot read /bin/busybox (install busybox-static)")?;
    let mut l = LayerBuilder::new()
        .dir("bin")
        .dir("etc")
        .dir("tmp")
        .dir("www")
        .file("bin/busybox", 0o755, &busybox)
        .file(
            "etc/passwd",
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
        )
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\n");
    for applet in [
        "sh", "httpd", "ls", "cat", "echo", "env", "id", "pwd", "sleep", "test", "wget", "true",
    ] {
        l = l.symlink(&format!("bin/{applet}"), "busybox");
    }
    Ok(l.finish())
}

/// An image: layers (bottom first) and the config fields a release reads.
#[derive(Default, Clone)]
pub struct ImageBuilder {
    layers: Vec<Vec<u8>>,
    /// Layers written as given, declared gzip'd (e.g. a truncated stream), above `layers`.
    raw_gzip: Vec<Vec<u8>>,
    gzip: bool,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    exposed: Vec<u16>,
    working_dir: Option<String>,
    user: Option<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl ImageBuilder {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn layer(mut self, tar: Vec<u8>) -> Self {
        self.layers.push(tar);
        self
    }
    /// A layer whose bytes are written as given and declared as gzip'd tar in the OCI layout
    /// (for broken or hostile streams); not part of docker archives.
    pub fn raw_gzip_layer(mut self, bytes: Vec<u8>) -> Self {
        self.raw_gzip.push(bytes);
        self
    }
    /// Gzip the layers in the OCI layout (with the `gzip` program, deterministic `-n`).
    pub fn gzip(mut self, yes: bool) -> Self {
        self.gzip = yes;
        self
    }
    pub fn entrypoint(mut self, args: &[&str]) -> Self {
        self.entrypoint = Some(strings(args));
        self
    }
    pub fn cmd(mut self, args: &[&str]) -> Self {
        self.cmd = Some(strings(args));
        self
    }
    pub fn env(mut self, kv: &str) -> Self {
        self.env.push(kv.to_string());
        self
    }
    pub fn expose(mut self, port: u16) -> Self {
        self.exposed.push(port);
        self
    }
    pub fn working_dir(mut self, dir: &str) -> Self {
        self.working_dir = Some(dir.into());
        self
    }
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The config blob's JSON.
    pub fn config(&self) -> Vec<u8> {
        let mut c = serde_json::json!({});
        if let Some(e) = &self.entrypoint {
            c["Entrypoint"] = serde_json::json!(e);
        }
        if let Some(e) = &self.cmd {
            c["Cmd"] = serde_json::json!(e);
        }
        if !self.env.is_empty() {
            c["Env"] = serde_json::json!(self.env);
        }
        if !self.exposed.is_empty() {
            let ports: serde_json::Map<String, serde_json::Value> = self
                .exposed
                .iter()
                .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
                .collect();
            c["ExposedPorts"] = serde_json::Value::Object(ports);
        }
        if let Some(w) = &self.working_dir {
            c["WorkingDir"] = serde_json::json!(w);
        }
        if let Some(u) = &self.user {
            c["User"] = serde_json::json!(u);
        }
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .map(|l| Digest::of_bytes(l).to_string())
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": c,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .expect("JSON")
    }

    /// Writes an OCI image layout into `dir` (created); returns the manifest digest.
    pub fn write_oci(&self, dir: &Path) -> Result<Digest> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        let put = |bytes: &[u8]| -> Result<Digest> {
            let d = Digest::of_bytes(bytes);
            std::fs::write(blobs.join(d.hex()), bytes)?;
            Ok(d)
        };
        let config = self.config();
        let config_d = put(&config)?;
        let mut layers = Vec::new();
        for l in &self.layers {
            let (bytes, mt) = if self.gzip {
                (gzip(l)?, crate::spec::OCI_LAYER_GZIP)
            } else {
                (l.clone(), crate::spec::OCI_LAYER_TAR)
            };
            let d = put(&bytes)?;
            layers.push(
                serde_json::json!({"mediaType": mt, "digest": d.to_string(), "size": bytes.len()}),
            );
        }
        for bytes in &self.raw_gzip {
            let d = put(bytes)?;
            layers.push(serde_json::json!({
                "mediaType": crate::spec::OCI_LAYER_GZIP, "digest": d.to_string(), "size": bytes.len()
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": crate::spec::OCI_MANIFEST,
            "config": {"mediaType": crate::spec::OCI_CONFIG, "digest": config_d.to_string(), "size": config.len()},
            "layers": layers,
        }))?;
        let md = put(&manifest)?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        std::fs::write(
            dir.join("index.json"),
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "manifests": [{"mediaType": crate::spec::OCI_MANIFEST, "digest": md.to_string(),
                  "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}],
            }))?,
        )?;
        Ok(md)
    }

    /// Writes a `docker save` archive (legacy layout: `<n>/layer.tar`, `<config hex>.json`,
    /// `manifest.json`) to `path`.
    pub fn write_docker_archive(&self, path: &Path, repo_tag: &str) -> Result<()> {
        let config = self.config();
        let config_name = format!("{}.json", Digest::of_bytes(&config).hex());
        let mut b = LayerBuilder::new().file(&config_name, 0o644, &config);
        let mut names = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let name = format!("{i:02}/layer.tar");
            b = b.dir(&format!("{i:02}")).file(&name, 0o644, l);
            names.push(name);
        }
        let manifest = serde_json::to_vec(&serde_json::json!([
            {"Config": config_name, "RepoTags": [repo_tag], "Layers": names}
        ]))?;
        b = b.file("manifest.json", 0o644, &manifest);
        std::fs::write(path, b.finish())?;
        Ok(())
    }
}

/// `gzip -n` of `data` (the `gzip` program keeps this crate free of a compression dependency).
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut child = std::process::Command::new("gzip")
        .args(["-n", "-c", "-1"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer.join().expect("writer thread")?;
    anyhow::ensure!(out.status.success(), "gzip failed");
    Ok(out.stdout)
}
