//! The JSON shapes of etcd's v3 gateway (proto3 JSON): keys and values are base64, int64s are
//! JSON strings, and fields at their default value (0, false, empty, the first enum variant)
//! are left out — so every field here has a default.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// int64/uint64 as proto3 JSON writes them: a string (a number is accepted too).
pub(crate) mod int {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
            U(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s
                .parse::<i64>()
                .or_else(|_| s.parse::<u64>().map(|u| u as i64))
                .map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
            // Member ids are uint64: keep their bits.
            Either::U(u) => Ok(u as i64),
        }
    }
}

/// bytes as proto3 JSON writes them: standard base64.
pub(crate) mod bytes {
    use super::*;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes()).map_err(serde::de::Error::custom)
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

/// The header of every response: the store's revision when the request was served.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Header {
    #[serde(with = "int")]
    pub cluster_id: i64,
    #[serde(with = "int")]
    pub member_id: i64,
    #[serde(with = "int")]
    pub revision: i64,
    #[serde(with = "int")]
    pub raft_term: i64,
}

/// A key and its value with etcd's revisions: `create_revision` is when the key was created
/// (unique and increasing across the cluster), `mod_revision` its last change, `version` the
/// number of changes since creation, `lease` the lease it lives under (0: none).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    #[serde(with = "bytes")]
    pub key: Vec<u8>,
    #[serde(with = "int")]
    pub create_revision: i64,
    #[serde(with = "int")]
    pub mod_revision: i64,
    #[serde(with = "int")]
    pub version: i64,
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
    #[serde(with = "int")]
    pub lease: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortOrder {
    #[default]
    None,
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortTarget {
    #[default]
    Key,
    Version,
    Create,
    Mod,
    Value,
}

/// `/v3/kv/range`: one key, or `[key, range_end)`; at `revision` (0: the latest).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RangeRequest {
    #[serde(with = "bytes")]
    pub key: Vec<u8>,
    #[serde(with = "bytes", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub limit: i64,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub revision: i64,
    pub sort_order: SortOrder,
    pub sort_target: SortTarget,
    #[serde(skip_serializing_if = "is_false")]
    pub count_only: bool,
}

impl RangeRequest {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            ..Default::default()
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> RangeRequest {
        let key = prefix.into();
        RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..Default::default()
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    #[serde(with = "int")]
    pub count: i64,
    pub more: bool,
}

/// `/v3/kv/put`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PutRequest {
    #[serde(with = "bytes")]
    pub key: Vec<u8>,
    #[serde(with = "bytes")]
    pub value: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub lease: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    pub header: Header,
    pub prev_kv: Option<KeyValue>,
}

/// `/v3/kv/deleterange`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeleteRangeRequest {
    #[serde(with = "bytes")]
    pub key: Vec<u8>,
    #[serde(with = "bytes", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(skip_serializing_if = "is_false")]
    pub prev_kv: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct DeleteRangeResponse {
    pub header: Header,
    #[serde(with = "int")]
    pub deleted: i64,
    pub prev_kvs: Vec<KeyValue>,
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// The key's create revision (0: the key does not exist).
    Create(i64),
    /// The key's last modification revision.
    Mod(i64),
    /// The number of changes since the key was created (0: it does not exist).
    Version(i64),
    Value(Vec<u8>),
    /// The lease the key lives under.
    Lease(i64),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompareResult {
    #[default]
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// One condition of a [`TxnRequest`]: `key`'s `target` compared by `result`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            key: key.into(),
            result,
            target,
        }
    }
}

impl Serialize for Compare {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(4))?;
        m.serialize_entry("key", &B64.encode(&self.key))?;
        m.serialize_entry("result", &self.result)?;
        match &self.target {
            CompareTarget::Create(r) => {
                m.serialize_entry("target", "CREATE")?;
                m.serialize_entry("create_revision", &r.to_string())?;
            }
            CompareTarget::Mod(r) => {
                m.serialize_entry("target", "MOD")?;
                m.serialize_entry("mod_revision", &r.to_string())?;
            }
            CompareTarget::Version(v) => {
                m.serialize_entry("target", "VERSION")?;
                m.serialize_entry("version", &v.to_string())?;
            }
            CompareTarget::Value(v) => {
                m.serialize_entry("target", "VALUE")?;
                m.serialize_entry("value", &B64.encode(v))?;
            }
            CompareTarget::Lease(l) => {
                m.serialize_entry("target", "LEASE")?;
                m.serialize_entry("lease", &l.to_string())?;
            }
        }
        m.end()
    }
}

/// One operation of a transaction.
#[derive(Clone, Debug, Serialize)]
pub enum RequestOp {
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_delete_range")]
    DeleteRange(DeleteRangeRequest),
}

/// `/v3/kv/txn`: if every compare holds, `success` runs, else `failure` — atomically.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_put: Option<PutResponse>,
    pub response_delete_range: Option<DeleteRangeResponse>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    pub responses: Vec<ResponseOp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LeaseResponse {
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
    /// Remaining (keep-alive: renewed) TTL in seconds; 0 or absent when the lease is gone.
    #[serde(rename = "TTL", with = "int")]
    pub ttl: i64,
    #[serde(rename = "grantedTTL", with = "int")]
    pub granted_ttl: i64,
    pub error: String,
}

/// A lease etcd granted: keys put under it are deleted when it expires or is revoked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    /// Seconds, as etcd granted it (etcd raises a TTL below its minimum).
    pub ttl: i64,
}

/// `/v3/watch` create request.
#[derive(Clone, Debug, Default, Serialize)]
pub struct WatchRequest {
    #[serde(with = "bytes")]
    pub key: Vec<u8>,
    #[serde(with = "bytes", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    /// First revision to report (0: from now).
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub start_revision: i64,
    /// Deletes carry the key's last value.
    #[serde(skip_serializing_if = "is_false")]
    pub prev_kv: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub progress_notify: bool,
}

impl WatchRequest {
    /// Every key under `prefix`, from `start_revision` on, deletes with their last value.
    pub fn prefix(prefix: impl Into<Vec<u8>>, start_revision: i64) -> WatchRequest {
        let key = prefix.into();
        WatchRequest {
            range_end: prefix_end(&key),
            key,
            start_revision,
            prev_kv: true,
            progress_notify: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    #[default]
    Put,
    Delete,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// For a delete: the key and the delete's revision only.
    pub kv: KeyValue,
    /// The value before this event (asked with `prev_kv`).
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct WatchResponse {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    #[serde(with = "int")]
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<WatchEvent>,
}

/// `/v3/maintenance/status` of one member.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Status {
    pub header: Header,
    pub version: String,
    #[serde(rename = "dbSize", with = "int")]
    pub db_size: i64,
    /// The member id of the cluster's raft leader as this member sees it.
    #[serde(with = "int")]
    pub leader: i64,
    #[serde(rename = "raftTerm", with = "int")]
    pub raft_term: i64,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Member {
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
    pub name: String,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner")]
    pub is_learner: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct MemberListResponse {
    pub members: Vec<Member>,
}

/// The end of the range of keys that start with `prefix` (etcd's convention: the prefix with
/// its last byte below 0xff incremented; `\0` — every key — when there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_ff() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn int64s_are_strings_and_defaults_are_absent() {
        let kv: KeyValue =
            serde_json::from_str(r#"{"key":"YQ==","create_revision":"7","lease":"-5"}"#).unwrap();
        assert_eq!((kv.key.as_slice(), kv.create_revision), (&b"a"[..], 7));
        assert_eq!((kv.mod_revision, kv.lease, kv.value.len()), (0, -5, 0));
        // A member id above i64::MAX keeps its bits.
        let m: Member = serde_json::from_str(r#"{"ID":"18446744073709551615"}"#).unwrap();
        assert_eq!(m.id, -1);
        let c = Compare::new("k", CompareResult::Equal, CompareTarget::Create(0));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"key":"aw==","result":"EQUAL","target":"CREATE","create_revision":"0"}"#
        );
        let op = RequestOp::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 12,
            prev_kv: false,
        });
        assert_eq!(
            serde_json::to_string(&op).unwrap(),
            r#"{"request_put":{"key":"aw==","value":"dg==","lease":"12"}}"#
        );
    }
}
