//! Registry metrics (docs/metrics.md): blob uploads stored and their bytes.

use slipway_metrics::Counters;

pub static UPLOADS: Counters = Counters::new(
    "slipway_registry_uploads_total",
    "Blob uploads (image layers and configs) stored.",
    &[],
);

pub static UPLOAD_BYTES: Counters = Counters::new(
    "slipway_registry_upload_bytes_total",
    "Bytes of the blob uploads stored.",
    &[],
);

pub(crate) fn upload_done(bytes: u64) {
    UPLOADS.inc(&[]);
    UPLOAD_BYTES.add(&[], bytes as f64);
}

/// Appends the registry's families to `out`.
pub fn render(out: &mut String) {
    UPLOADS.render(out);
    UPLOAD_BYTES.render(out);
}
