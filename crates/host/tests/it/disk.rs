//! Every job's writable layer is bounded (its own loop-mounted ext4 of the job's disk limit): a
//! write past the limit gets ENOSPC wherever in the rootfs it lands, the host holds at most the
//! limit for the job, and nothing (mount, loop device, image) outlives the job.

use crate::harness::*;
use futures_util::StreamExt;
use slipway_host::{HostApi, JobStatus};
use std::path::Path;
use std::time::{Duration, Instant};

/// Loop devices whose backing file is under `dir`.
fn loops_under(dir: &Path) -> Vec<String> {
    let d = dir.display().to_string();
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|f| f.starts_with(&d))
        .collect()
}

async fn wait_for_line(api: &dyn HostApi, id: &str, marker: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines: Vec<String> = log_lines(api, id)
            .await
            .into_iter()
            .map(|l| l.msg)
            .collect();
        if lines.iter().any(|l| l == marker) {
            return lines;
        }
        assert!(Instant::now() < deadline, "no {marker:?} in {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_past_the_disk_limit_get_enospc_and_the_host_holds_at_most_the_limit() {
    if skip_unless_root(
        "writes_past_the_disk_limit_get_enospc_and_the_host_holds_at_most_the_limit",
    ) {
        return;
    }
    let h = TestHost::start().await;
    const LIMIT: u64 = 32 << 20;
    // 20 MB into /app fits; 20 more into /var does not: both count against one limit. (As
    // root in the container, as an image's root user would be: a stack job runs as uid 1000
    // and cannot write /var at all.)
    let mut j = job(
        "disk",
        &[
            "sh",
            "-c",
            "mkdir -p /app; dd if=/dev/zero of=/app/a bs=1M count=20 2>&1; echo app=$?; \
             dd if=/dev/zero of=/var/b bs=1M count=20 2>&1; echo var=$?; echo written; \
             exec sleep 1000",
        ],
    );
    j.config.stop_grace_ms = Some(100);
    j.config.uid = Some(0);
    j.resources.disk_bytes = Some(LIMIT);
    let info = h.agent.add_job(j.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let lines = wait_for_line(&h.agent, &j.id, "written").await;
    assert!(lines.iter().any(|l| l == "app=0"), "{lines:?}");
    assert!(lines.iter().any(|l| l == "var=1"), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/var/b") && l.contains("No space left on device")),
        "dd into /var did not get ENOSPC: {lines:?}"
    );
    // What the job costs the host's disk: the image's allocated blocks.
    let image = h.data_dir().join("containers").join(&j.id).join("disk.img");
    let used = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&image).unwrap().blocks() * 512
    };
    assert!(
        (20 << 20..=LIMIT).contains(&used),
        "the job's image holds {used} bytes on the host (limit {LIMIT})"
    );
    assert_eq!(loops_under(h.data_dir()).len(), 1);
    // The job's layer and its rootfs are nosuid and nodev on the host: a setuid-root file a job
    // leaves there is not one to a host user who reaches the data dir.
    let dir = h.data_dir().join("containers").join(&j.id).join("bundle");
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    for m in ["disk", "rootfs"] {
        let at = dir.join(m).display().to_string();
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(at.as_str()))
            .unwrap_or_else(|| panic!("{at} is not mounted"));
        let opts = line.split(' ').nth(3).unwrap_or_default();
        assert!(
            opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
            "{line}"
        );
    }

    h.agent.stop_job(&j.id).await.unwrap();
    h.agent.wait_job(&j.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.data_dir().join("containers").join(&j.id).exists() {
        assert!(Instant::now() < deadline, "the container dir stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mounts_under(h.data_dir()), Vec::<String>::new());
    assert_eq!(loops_under(h.data_dir()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_with_its_disk_full_says_so_in_its_exit() {
    if skip_unless_root("a_job_that_fails_with_its_disk_full_says_so_in_its_exit") {
        return;
    }
    let h = TestHost::start().await;
    let mut j = job(
        "full",
        &["sh", "-c", "dd if=/dev/zero of=/app/big bs=1M count=64"],
    );
    j.resources.disk_bytes = Some(16 << 20);
    j.config.uid = Some(0);
    h.agent.add_job(j.clone()).await.unwrap();
    let done = h.agent.wait_job(&j.id).await.unwrap();
    let exit = done.exit.expect("an exit status");
    assert!(exit.disk_full, "{exit:?}");
    assert_eq!(exit.to_string(), "exit 1, disk full (limit 16 MiB)");
    let out: Vec<String> = h
        .agent
        .logs(&j.id, false)
        .await
        .unwrap()
        .map(|l| l.msg)
        .collect()
        .await;
    assert!(
        out.iter().any(|l| l.contains("No space left on device")),
        "{out:?}"
    );
    // A job that ends with room left is not "disk full".
    let ok = job(
        "roomy",
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/app/big bs=1M count=1; exit 2",
        ],
    );
    h.agent.add_job(ok.clone()).await.unwrap();
    let done = h.agent.wait_job(&ok.id).await.unwrap();
    assert_eq!(done.exit.unwrap().to_string(), "exit 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_limit_outside_the_bounds_is_refused_with_the_bounds() {
    if skip_unless_root("a_disk_limit_outside_the_bounds_is_refused_with_the_bounds") {
        return;
    }
    let h = TestHost::start().await;
    for bytes in [1 << 20, u64::MAX] {
        let mut j = job("bad", &["true"]);
        j.resources.disk_bytes = Some(bytes);
        let msg = match h.agent.add_job(j.clone()).await {
            Ok(info) => {
                assert_eq!(info.status, JobStatus::Failed, "{info:?}");
                info.error.unwrap_or_default()
            }
            Err(e) => e.to_string(),
        };
        assert!(
            msg.contains("disk limit") && msg.contains("16 MiB..1024 GiB"),
            "{msg}"
        );
    }
    assert_eq!(mounts_under(h.data_dir()), Vec::<String>::new());
    assert_eq!(loops_under(h.data_dir()), Vec::<String>::new());
}

/// The pool's images of `bytes`: (inode, path).
fn pooled(dir: &Path, bytes: u64) -> Vec<(u64, std::path::PathBuf)> {
    use std::os::unix::fs::MetadataExt;
    let mut v: Vec<_> = std::fs::read_dir(dir.join("disk-pool"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with(&format!("{bytes}-")) && n.ends_with(".img")
                })
                .map(|e| (e.metadata().unwrap().ino(), e.path()))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

async fn pool_holds(dir: &Path, bytes: u64, n: usize) -> Vec<(u64, std::path::PathBuf)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = pooled(dir, bytes);
        if v.len() == n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "the pool holds {v:?}, not {n} images of {bytes}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Jobs take their disk images from a pool formatted ahead (mkfs off the start path): each
/// image is used by one job only, the pool refills, and a size jobs ask for is pooled next time.
#[tokio::test(flavor = "multi_thread")]
async fn jobs_take_preformatted_disk_images_once_each_and_the_pool_refills() {
    if skip_unless_root("jobs_take_preformatted_disk_images_once_each_and_the_pool_refills") {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    const DEFAULT: u64 = 1 << 30;
    let h = TestHost::start().await;
    let dir = h.data_dir().to_path_buf();
    let before = pool_holds(&dir, DEFAULT, 2).await;

    let mut j = job("pooled", &["sh", "-c", "exec sleep 1000"]);
    j.config.stop_grace_ms = Some(100);
    h.agent.add_job(j.clone()).await.unwrap();
    let image = dir.join("containers").join(&j.id).join("disk.img");
    let ino = std::fs::metadata(&image).unwrap().ino();
    assert!(
        before.iter().any(|(i, _)| *i == ino),
        "the job's image {ino} was not one of the pool's {before:?}"
    );
    let after = pool_holds(&dir, DEFAULT, 2).await;
    assert!(
        after.iter().all(|(i, _)| *i != ino),
        "the job's image is still offered to others: {after:?}"
    );

    // A size no job asked for yet is formatted at start, then kept ready.
    let mut small = job("small", &["sh", "-c", "df -k / | tail -1"]);
    small.resources.disk_bytes = Some(64 << 20);
    h.agent.add_job(small.clone()).await.unwrap();
    assert_eq!(
        h.agent
            .wait_job(&small.id)
            .await
            .unwrap()
            .exit
            .unwrap()
            .code,
        0
    );
    let ready = pool_holds(&dir, 64 << 20, 2).await;
    assert_eq!(ready.len(), 2);

    h.agent.stop_job(&j.id).await.unwrap();
    h.agent.wait_job(&j.id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while image.exists() {
        assert!(Instant::now() < deadline, "the used image stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mounts_under(h.data_dir()), Vec::<String>::new());
    assert_eq!(loops_under(h.data_dir()), Vec::<String>::new());
}
