//! Stacks: the rootfs a job's layers sit on. Recipes are the shell scripts in `stacks/<name>/`
//! (embedded in the binary so it builds them anywhere); a built stack is cached in
//! `<stacks_dir>/<name>/rootfs` together with the hash of its recipe, and rebuilt when the
//! recipe changes.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const STACKS: [(&str, &str); 2] = [
    ("busybox", include_str!("../../../stacks/busybox/build.sh")),
    (
        "bookworm",
        include_str!("../../../stacks/bookworm/build.sh"),
    ),
];

/// The slug runner, installed as `/runner/init` in every stack: slug jobs run
/// `/runner/init start TYPE` (see `docs/build.md`). Part of every recipe's hash, so a change
/// rebuilds the cached stacks.
pub const RUNNER_INIT: &str = include_str!("../../../stacks/runner/init");

/// FNV-1a of the recipe (and the slug runner): enough to notice a change.
pub fn recipe_hash(name: &str) -> Option<String> {
    let (_, script) = STACKS.iter().find(|(n, _)| *n == name)?;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in script.bytes().chain(RUNNER_INIT.bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    Some(format!("{h:016x}"))
}

/// Where stack `name`'s rootfs is: `<stacks_dir>/<name>/rootfs`, and only there. `name` must
/// be a stack name ([`slipway_types::validate_stack_name`]); anything else (a path such as
/// `/usr/local`, `..`) is refused, even if it reached a job through a bad value in the store,
/// so no host directory can become a job's root filesystem. The rootfs must be a real
/// directory (not a symlink) with `bin` or `usr` in it.
pub fn rootfs(stacks_dir: &Path, name: &str) -> Result<PathBuf> {
    slipway_types::validate_stack_name(name).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let dir = stacks_dir.join(name);
    let p = dir.join("rootfs");
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if !real_dir(&dir) || !real_dir(&p) || (!p.join("bin").exists() && !p.join("usr").exists()) {
        bail!(
            "stack {name:?} is not built (no rootfs at {}): run `slipway host stack build \
             {name}`",
            p.display()
        );
    }
    Ok(p)
}

/// The rootfs of a built stack, if it is built from the current recipe.
pub fn built(stacks_dir: &Path, name: &str) -> Option<PathBuf> {
    let dir = stacks_dir.join(name);
    let hash = std::fs::read_to_string(dir.join("recipe-hash")).ok()?;
    (Some(hash.trim().to_string()) == recipe_hash(name)).then(|| dir.join("rootfs"))
}

/// Builds (or reuses) stack `name` in `stacks_dir`; returns its rootfs. With `progress`, the
/// recipe's output goes to stderr; otherwise it is kept and shown only if the build fails.
/// Safe to call concurrently: each build goes to its own temp dir and the first rename wins.
pub fn build(stacks_dir: &Path, name: &str, progress: bool) -> Result<PathBuf> {
    let (_, script) = STACKS.iter().find(|(n, _)| *n == name).with_context(|| {
        let names: Vec<&str> = STACKS.iter().map(|(n, _)| *n).collect();
        format!("unknown stack {name:?}; known stacks: {}", names.join(", "))
    })?;
    if let Some(r) = built(stacks_dir, name) {
        return Ok(r);
    }
    let hash = recipe_hash(name).expect("known stack");
    std::fs::create_dir_all(stacks_dir)
        .with_context(|| format!("creating {}", stacks_dir.display()))?;
    let tmp = stacks_dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    let started = std::time::Instant::now();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(format!("stack-{name}"))
        .arg(tmp.join("rootfs"));
    let out = if progress {
        cmd.stdout(std::io::stderr()).stderr(std::io::stderr());
        let st = cmd.status().context("running the stack recipe with sh")?;
        (st, String::new())
    } else {
        let o = cmd.output().context("running the stack recipe with sh")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status, text)
    };
    if !out.0.success() {
        let _ = std::fs::remove_dir_all(&tmp);
        bail!(
            "building stack {name} failed ({}); recipe output:\n{}",
            out.0,
            out.1.trim()
        );
    }
    install_runner(&tmp.join("rootfs"))?;
    std::fs::write(tmp.join("recipe-hash"), &hash)?;
    let dest = stacks_dir.join(name);
    if dest.exists() && built(stacks_dir, name).is_none() {
        // Outdated: move it aside (running jobs may still use it as their lower layer).
        let old = stacks_dir.join(format!(".{name}.old.{}", std::process::id()));
        std::fs::rename(&dest, &old)?;
    }
    if std::fs::rename(&tmp, &dest).is_err() {
        // Someone else finished first; theirs is as good as ours.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if progress {
        eprintln!("stack {name} built in {:.1?}", started.elapsed());
    }
    built(stacks_dir, name).with_context(|| format!("stack {name} missing after the build"))
}

/// Writes [`RUNNER_INIT`] to `<rootfs>/runner/init` (0755).
fn install_runner(rootfs: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = rootfs.join("runner");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let init = dir.join("init");
    std::fs::write(&init, RUNNER_INIT).with_context(|| format!("writing {}", init.display()))?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_resolves_only_to_a_rootfs_in_the_stacks_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let stacks = tmp.path().join("stacks");
        std::fs::create_dir_all(stacks.join("mini/rootfs/bin")).unwrap();
        assert_eq!(rootfs(&stacks, "mini").unwrap(), stacks.join("mini/rootfs"));
        // A real directory with a bin/ outside the stacks dir, named every way a path can be.
        std::fs::create_dir_all(tmp.path().join("outside/rootfs/bin")).unwrap();
        let outside = tmp.path().join("outside");
        for bad in [
            "/usr/local",
            "/",
            outside.to_str().unwrap(),
            "../outside",
            "..",
            "mini/../../outside",
        ] {
            let e = rootfs(&stacks, bad).unwrap_err().to_string();
            assert!(e.contains("invalid stack"), "{bad}: {e}");
        }
        // A symlink in the stacks dir does not lead out of it either.
        std::os::unix::fs::symlink(&outside, stacks.join("linked")).unwrap();
        let e = rootfs(&stacks, "linked").unwrap_err().to_string();
        assert!(e.contains("is not built"), "{e}");
        let e = rootfs(&stacks, "missing").unwrap_err().to_string();
        assert!(e.contains("slipway host stack build missing"), "{e}");
    }
}
