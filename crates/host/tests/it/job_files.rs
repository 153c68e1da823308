//! A job's files through the blob store (`slipway_host::job_files`): unpacked into a bounded
//! per-job dir before the job starts, packed back after it exits, refused without a blob store.

use slipway_blobstore::{BlobStore, Digest, FsBlobStore};
use slipway_host::fake::FakeRuntime;
use slipway_host::{Agent, AgentConfig, HostApi, HostJob, JobConfig, JobFiles, JobStatus};
use std::path::Path;
use std::sync::Arc;

fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn job(id: &str, files: Vec<JobFiles>) -> HostJob {
    let mut config = JobConfig::new("busybox", &["/bin/true"]);
    config.uid = Some(1000);
    config.gid = Some(1000);
    config.files = files;
    HostJob {
        id: id.into(),
        app_id: String::new(),
        app_name: String::new(),
        release_id: String::new(),
        process_type: "build".into(),
        metadata: Default::default(),
        config,
        resources: slipway_host::Resources {
            disk_bytes: Some(64 << 20),
            ..Default::default()
        },
    }
}

fn entry(target: &str, from: Option<String>, collect: bool, readonly: bool) -> JobFiles {
    JobFiles {
        target: target.into(),
        from,
        collect,
        readonly,
        max_bytes: None,
    }
}

#[tokio::test]
async fn inputs_are_unpacked_for_the_job_and_outputs_come_back_through_the_blob_store() {
    if slipway_testkit::skip_unless_root("job files") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let src = blobs
        .put(
            Box::new(std::io::Cursor::new(tarball(&[("hello.txt", "hi")]))),
            None,
        )
        .await
        .unwrap();
    let mut cfg = AgentConfig::new(dir.path().join("host"));
    cfg.blobs = Some(blobs.clone() as Arc<dyn BlobStore>);
    let fake = Arc::new(FakeRuntime::new());
    let agent = Agent::start(cfg, fake.clone()).await.unwrap();
    let j = job(
        "files-1",
        vec![
            entry("/app", Some(src.digest.to_string()), true, false),
            entry("/slipway/out", None, true, false),
            entry("/slipway/meta", Some(src.digest.to_string()), false, true),
        ],
    );
    let info = agent.add_job(j).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{:?}", info.error);
    // The job's record keeps no bind mount: the host made its own.
    assert!(info.job.config.mounts.is_empty());
    let job_dir = dir.path().join("host/job-files/jobs/files-1");
    let app = job_dir.join("0/d");
    assert_eq!(
        std::fs::read_to_string(app.join("hello.txt")).unwrap(),
        "hi"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(&app).unwrap().uid(),
        1000,
        "a writable top is the job's"
    );
    assert_eq!(std::fs::metadata(job_dir.join("2/d")).unwrap().uid(), 0);
    // What the job "writes".
    std::fs::write(app.join("built"), "slug").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", job_dir.join("1/d/link")).unwrap();
    fake.exit("files-1", 0);
    let done = agent.wait_job("files-1").await.unwrap();
    assert_eq!(done.status, JobStatus::Done, "{:?}", done.error);
    assert_eq!(done.outputs.len(), 2, "{:?}", done.outputs);
    assert!(
        !job_dir.exists(),
        "the job's files are removed after it ends"
    );
    let unpacked = dir.path().join("unpacked");
    let d: Digest = done.outputs["/app"].parse().unwrap();
    let (_, mut body) = blobs.get(&d).await.unwrap().unwrap();
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut data)
        .await
        .unwrap();
    let tgz = dir.path().join("app.tgz");
    std::fs::write(&tgz, data).unwrap();
    slipway_host::layers::unpack_file(&tgz, &unpacked).unwrap();
    assert_eq!(
        std::fs::read_to_string(unpacked.join("built")).unwrap(),
        "slug"
    );
    assert_eq!(
        std::fs::read_to_string(unpacked.join("hello.txt")).unwrap(),
        "hi"
    );
    let d: Digest = done.outputs["/slipway/out"].parse().unwrap();
    let (_, mut body) = blobs.get(&d).await.unwrap().unwrap();
    let mut data = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut body, &mut data)
        .await
        .unwrap();
    let out = dir.path().join("out");
    slipway_host::layers::unpack(flate2::read::GzDecoder::new(&data[..]), &out).unwrap();
    // A symlink stays a symlink: packing never followed it.
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap(),
        Path::new("/etc/passwd")
    );
}

#[tokio::test]
async fn a_host_without_a_blob_store_or_a_bad_file_entry_refuses_the_job() {
    if slipway_testkit::skip_unless_root("job files refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        AgentConfig::new(dir.path().join("host")),
        Arc::new(FakeRuntime::new()),
    )
    .await
    .unwrap();
    let info = agent
        .add_job(job("nb-1", vec![entry("/app", None, true, false)]))
        .await
        .unwrap();
    assert_eq!(info.status, JobStatus::Failed);
    let why = info.error.unwrap();
    assert!(why.contains("no blob store configured"), "{why}");

    let blobs = Arc::new(FsBlobStore::open(dir.path().join("blobs")).unwrap());
    let mut cfg = AgentConfig::new(dir.path().join("host2"));
    cfg.blobs = Some(blobs as Arc<dyn BlobStore>);
    let agent = Agent::start(cfg, Arc::new(FakeRuntime::new()))
        .await
        .unwrap();
    let missing = format!("sha256:{}", "0".repeat(64));
    for (i, (f, want)) in [
        (
            entry("/app/../etc", None, false, false),
            "must be an absolute path",
        ),
        (entry("app", None, false, false), "must be an absolute path"),
        (entry("/", None, false, false), "must be an absolute path"),
        (
            entry("/app", Some(missing), false, false),
            "not in the blob store",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let info = agent
            .add_job(job(&format!("bad-{i}"), vec![f]))
            .await
            .unwrap();
        assert_eq!(info.status, JobStatus::Failed);
        let why = format!("{:?}", info.error);
        assert!(why.contains(want), "{why}");
        assert!(
            !dir.path()
                .join(format!("host2/job-files/jobs/bad-{i}"))
                .exists()
        );
    }
}
