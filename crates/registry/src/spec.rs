//! The image formats Slipway accepts: Docker v2 schema 2 and OCI image manifests, their image
//! configs, and the media types that tell them apart. Parsing is strict where a mistake would
//! run the wrong thing (digests, sizes, the kind of manifest) and lenient elsewhere (unknown
//! fields are ignored, as every registry does).

use crate::error::RegistryError;
use serde::{Deserialize, Serialize};
use slipway_blobstore::Digest;
use std::collections::BTreeMap;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Uncompressed Docker layer (what `docker save` archives hold); containerd and skopeo accept it.
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Layer media types the host's layer cache unpacks (plain or gzip'd tar).
pub const LAYER_TYPES: &[&str] = &[
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    OCI_LAYER_TAR,
    OCI_LAYER_GZIP,
];

/// Manifests larger than this are refused (real ones are a few KiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// Image configs larger than this are refused (real ones are a few KiB, with history).
pub const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// A content descriptor: what a manifest says about one blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
}

/// A single-platform image manifest (Docker schema 2 or OCI: the same shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A manifest list / image index (only read to pick or refuse a platform).
#[derive(Clone, Debug, Deserialize)]
pub struct Index {
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

/// A parsed, validated manifest with the media type it is served under.
#[derive(Clone, Debug)]
pub struct ParsedManifest {
    pub media_type: String,
    pub manifest: Manifest,
    pub json: serde_json::Value,
}

/// The media type of manifest `bytes`: its `mediaType` field, else the request's
/// `Content-Type`, else OCI (an OCI manifest may omit the field).
pub fn manifest_media_type(bytes: &[u8], content_type: Option<&str>) -> String {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Option<Probe> = serde_json::from_slice(bytes).ok();
    if let Some(Probe {
        media_type: Some(t),
        ..
    }) = &probe
    {
        return t.clone();
    }
    if let Some(ct) = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json" && *c != "application/octet-stream")
    {
        return ct.to_string();
    }
    if probe.is_some_and(|p| p.manifests.is_some()) {
        OCI_INDEX.into()
    } else {
        OCI_MANIFEST.into()
    }
}

/// Parses a manifest a client pushes. Lists and indexes are refused with what to do instead:
/// a release runs one image on this host's platform, and picking one for the user from a list
/// would hide that the others were dropped.
pub fn parse_manifest(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<ParsedManifest, RegistryError> {
    let media_type = manifest_media_type(bytes, content_type);
    match media_type.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => {}
        DOCKER_LIST | OCI_INDEX => {
            return Err(RegistryError::manifest_invalid(
                "manifest lists and image indexes are not supported: push a single-platform image \
                 (linux/amd64), e.g. `skopeo copy` without --all, or `docker push` of an image built \
                 for one platform",
            ));
        }
        DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED => {
            return Err(RegistryError::manifest_invalid(
                "Docker schema 1 manifests are not supported: push with a client that sends schema 2 \
                 or OCI manifests (Docker 1.10+, skopeo)",
            ));
        }
        other => {
            return Err(RegistryError::manifest_invalid(format!(
                "unsupported manifest media type {other:?}: expected {DOCKER_MANIFEST} or {OCI_MANIFEST}"
            )));
        }
    }
    let json: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| RegistryError::manifest_invalid(format!("manifest is not JSON: {e}")))?;
    let manifest: Manifest = serde_json::from_value(json.clone()).map_err(|e| {
        RegistryError::manifest_invalid(format!("manifest has the wrong shape: {e}"))
    })?;
    if manifest.schema_version != 2 {
        return Err(RegistryError::manifest_invalid(format!(
            "manifest schemaVersion is {}, expected 2",
            manifest.schema_version
        )));
    }
    if manifest.layers.is_empty() {
        return Err(RegistryError::manifest_invalid(
            "the image has no layers: there is nothing to run",
        ));
    }
    for l in &manifest.layers {
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(RegistryError::unsupported(format!(
                "layer {} has media type {:?}, which Slipway cannot unpack: use gzip'd or plain tar \
                 layers (zstd and foreign layers are not supported)",
                l.digest, l.media_type
            )));
        }
    }
    Ok(ParsedManifest {
        media_type,
        manifest,
        json,
    })
}

/// The part of an image config (`config` of the config blob) a release uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
}

/// An image config blob.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub config: Option<RunConfig>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, RegistryError> {
        serde_json::from_slice(bytes).map_err(|e| {
            RegistryError::manifest_invalid(format!("the image config is not valid JSON: {e}"))
        })
    }

    fn run(&self) -> RunConfig {
        self.config.clone().unwrap_or_default()
    }

    /// Entrypoint + Cmd, as Docker runs them.
    pub fn command(&self) -> Vec<String> {
        let r = self.run();
        let mut args = r.entrypoint.unwrap_or_default();
        args.extend(r.cmd.unwrap_or_default());
        args
    }

    /// `Env` as a map; entries without `=` or with names a release cannot hold are skipped.
    pub fn env(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in self.run().env.unwrap_or_default() {
            if let Some((k, v)) = e.split_once('=') {
                let valid = !k.is_empty()
                    && !k.as_bytes()[0].is_ascii_digit()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !v.contains('\0');
                if valid {
                    out.insert(k.to_string(), v.to_string());
                }
            }
        }
        out
    }

    /// The lowest exposed TCP port (`"8080/tcp"`, or a bare number), if any. "First" in a JSON
    /// object has no stable meaning, so the lowest is taken: it is what users expect for the
    /// usual single port, and deterministic for several.
    pub fn first_tcp_port(&self) -> Option<u16> {
        self.run()
            .exposed_ports
            .unwrap_or_default()
            .keys()
            .filter_map(|k| {
                let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), "tcp"));
                (proto.eq_ignore_ascii_case("tcp"))
                    .then(|| port.parse::<u16>().ok())
                    .flatten()
            })
            .filter(|p| *p != 0)
            .min()
    }

    pub fn working_dir(&self) -> Option<String> {
        self.run().working_dir.filter(|w| !w.is_empty())
    }

    pub fn user(&self) -> Option<String> {
        self.run().user.filter(|u| !u.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{}","size":10}},"layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","digest":"{}","size":20}}]}}"#,
            d('a'),
            d('b')
        );
        let m = parse_manifest(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, DOCKER_MANIFEST);
        assert_eq!(m.manifest.layers[0].size, 20);
        // OCI manifests may omit mediaType: the Content-Type tells.
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":10}},"layers":[{{"mediaType":"{OCI_LAYER_TAR}","digest":"{}","size":20}}]}}"#,
            d('a'),
            d('b')
        );
        let m = parse_manifest(body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
    }

    #[test]
    fn refuses_lists_schema1_bad_digests_and_zstd() {
        let list = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
        let e = parse_manifest(list.as_bytes(), None).unwrap_err();
        assert!(e.message.contains("single-platform"), "{}", e.message);
        let e = parse_manifest(br#"{"schemaVersion":1}"#, Some(DOCKER_SCHEMA1)).unwrap_err();
        assert!(e.message.contains("schema 1"), "{}", e.message);
        let bad = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"sha256:../x","size":1}},"layers":[]}}"#
        );
        assert_eq!(
            parse_manifest(bad.as_bytes(), None).unwrap_err().code,
            "MANIFEST_INVALID"
        );
        let zstd = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+zstd","digest":"{}","size":1}}]}}"#,
            d('a'),
            d('b')
        );
        assert_eq!(
            parse_manifest(zstd.as_bytes(), None).unwrap_err().code,
            "UNSUPPORTED"
        );
        assert!(parse_manifest(b"not json", Some(OCI_MANIFEST)).is_err());
    }

    #[test]
    fn image_config_fields() {
        let c = ImageConfig::parse(
            br#"{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/bin/sh","-c"],"Cmd":["httpd -f"],
                "Env":["PATH=/bin","A=1=2","bad","1X=y"],"WorkingDir":"/www","User":"1000:1000",
                "ExposedPorts":{"9000/tcp":{},"53/udp":{},"8081/tcp":{}}}}"#,
        )
        .unwrap();
        assert_eq!(c.command(), ["/bin/sh", "-c", "httpd -f"]);
        let env = c.env();
        assert_eq!(env.get("A").map(String::as_str), Some("1=2"));
        assert_eq!(env.len(), 2);
        assert_eq!(c.first_tcp_port(), Some(8081));
        assert_eq!(c.working_dir().as_deref(), Some("/www"));
        assert_eq!(c.user().as_deref(), Some("1000:1000"));
        let empty = ImageConfig::parse(b"{}").unwrap();
        assert!(empty.command().is_empty());
        assert_eq!(empty.first_tcp_port(), None);
    }
}
