//! The bundled buildpacks (`buildpacks/` in the source tree), embedded in the binary so an
//! installed `slipway` has them: [`install`] writes them to a directory (the server's
//! `<data>/buildpacks`) that build jobs mount read-only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Path below the buildpacks dir → content. Everything under `bin/` is executable.
pub const FILES: [(&str, &str); 13] = [
    ("order", include_str!("../../../buildpacks/order")),
    (
        "python/bin/detect",
        include_str!("../../../buildpacks/python/bin/detect"),
    ),
    (
        "python/bin/compile",
        include_str!("../../../buildpacks/python/bin/compile"),
    ),
    (
        "python/bin/release",
        include_str!("../../../buildpacks/python/bin/release"),
    ),
    (
        "nodejs/bin/detect",
        include_str!("../../../buildpacks/nodejs/bin/detect"),
    ),
    (
        "nodejs/bin/compile",
        include_str!("../../../buildpacks/nodejs/bin/compile"),
    ),
    (
        "nodejs/bin/release",
        include_str!("../../../buildpacks/nodejs/bin/release"),
    ),
    (
        "static/bin/detect",
        include_str!("../../../buildpacks/static/bin/detect"),
    ),
    (
        "static/bin/compile",
        include_str!("../../../buildpacks/static/bin/compile"),
    ),
    (
        "static/bin/release",
        include_str!("../../../buildpacks/static/bin/release"),
    ),
    (
        "procfile/bin/detect",
        include_str!("../../../buildpacks/procfile/bin/detect"),
    ),
    (
        "procfile/bin/compile",
        include_str!("../../../buildpacks/procfile/bin/compile"),
    ),
    (
        "procfile/bin/release",
        include_str!("../../../buildpacks/procfile/bin/release"),
    ),
];

/// Writes the bundled buildpacks into `dir` (replacing what a previous version wrote there).
pub fn install(dir: &Path) -> std::io::Result<()> {
    for (rel, content) in FILES {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, content)?;
        let mode = if rel.contains("/bin/") { 0o755 } else { 0o644 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &p)?;
    }
    Ok(())
}
