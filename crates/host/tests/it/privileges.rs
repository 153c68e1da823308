//! What a job may do to the host, read from inside real jobs: its user, capabilities, seccomp
//! filter and pids limits (see docs/security.md, "Containers").

use crate::harness::*;
use slipway_host::{HostApi, JobStatus, Resources};

async fn stdout_of(h: &TestHost, j: slipway_host::HostJob) -> (Vec<String>, Vec<String>) {
    let info = h.agent.add_job(j.clone()).await.unwrap();
    assert_eq!(info.status, JobStatus::Running, "{info:?}");
    let done = h.agent.wait_job(&j.id).await.unwrap();
    let lines = log_lines(&h.agent, &j.id).await;
    let pick = |s: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.stream == s)
            .map(|l| l.msg.clone())
            .collect()
    };
    assert_eq!(done.exit.as_ref().unwrap().code, 0, "{done:?} {lines:?}");
    (pick("stdout"), pick("init"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_job_keeps_few_capabilities_and_cannot_make_namespaces() {
    if skip_unless_root("a_root_job_keeps_few_capabilities_and_cannot_make_namespaces") {
        return;
    }
    let h = TestHost::start().await;
    let mut j = job(
        "root",
        &[
            "sh",
            "-c",
            "grep -E '^(Uid|Seccomp|CapEff|CapBnd):' /proc/self/status; \
             unshare -r true 2>/dev/null || echo unshare=denied; \
             unshare -n true 2>/dev/null || echo unshare-net=denied; \
             mount -t tmpfs none /mnt 2>/dev/null || echo mount=denied; \
             arping -c1 -w1 -I eth0 10.0.0.1 2>&1 | grep -q 'Operation not permitted' && echo packet=denied; \
             sh -c 'echo forked'",
        ],
    );
    j.config.uid = Some(0);
    let (out, _) = stdout_of(&h, j).await;
    for want in [
        "Uid:\t0\t0\t0\t0",
        "Seccomp:\t2",
        // Chown, DacOverride, Fowner, Fsetid, Kill, Setgid, Setuid, Setpcap, NetBindService,
        // SysChroot.
        "CapEff:\t00000000000405fb",
        "CapBnd:\t00000000000405fb",
        "unshare=denied",
        "unshare-net=denied",
        "mount=denied",
        "packet=denied",
        // clone3 says ENOSYS, and the fallback to clone works.
        "forked",
    ] {
        assert!(out.iter().any(|l| l == want), "{want:?} not in {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_caps_all_jobs_pids_and_clamps_a_job_above_it() {
    if skip_unless_root("the_agent_caps_all_jobs_pids_and_clamps_a_job_above_it") {
        return;
    }
    let h = TestHost::start().await;
    let parent = format!("/sys/fs/cgroup/pids/{}/pids.max", h.names.cgroup_parent);
    let cap = std::fs::read_to_string(&parent).unwrap();
    assert_eq!(
        cap.trim(),
        slipway_host::runc::default_jobs_max_procs().to_string()
    );
    // Removed under the agent: the next job puts it back, capped.
    let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/pids/{}", h.names.cgroup_parent));
    let mut j = job(
        "pids",
        &["sh", "-c", "echo pids=$(cat /sys/fs/cgroup/pids/pids.max)"],
    );
    j.resources = Resources {
        max_procs: Some(10_000_000),
        ..Default::default()
    };
    let (out, init) = stdout_of(&h, j).await;
    let cap = slipway_host::runc::default_jobs_max_procs();
    assert_eq!(out, [format!("pids={cap}")]);
    assert!(
        init.iter().any(|l| l.contains(&format!(
            "max_procs 10000000 is above this host's limit for all jobs together ({cap})"
        ))),
        "{init:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&parent).unwrap().trim(),
        cap.to_string()
    );
    // The default for a job that sets nothing.
    let (out, _) = stdout_of(
        &h,
        job("pids2", &["sh", "-c", "cat /sys/fs/cgroup/pids/pids.max"]),
    )
    .await;
    assert_eq!(out, ["512"]);
}

/// An image's `/etc/passwd` (or `/etc`) that is a symlink must be resolved inside the image: the
/// agent reads it as root on the host, so `etc/passwd -> /dev/zero` would grow the agent until
/// the OOM killer took the whole server, and `-> /some/host/file` ran the job with ids read from
/// a host file.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_lookup_never_reads_host_files_through_an_image_symlink() {
    if skip_unless_root("a_user_lookup_never_reads_host_files_through_an_image_symlink") {
        return;
    }
    let h = TestHost::start().await;
    let host = tempfile::tempdir().unwrap();
    let host_passwd = host.path().join("passwd");
    std::fs::write(&host_passwd, "intruder:x:4321:4321::/:/bin/sh\n").unwrap();
    let start = |layer: &std::path::Path| {
        let mut j = job("symuser", &["sh", "-c", "id -u"]);
        j.config.layers = vec![layer.to_path_buf()];
        j.config.user = Some("intruder".into());
        j
    };
    let failed = |info: slipway_host::JobInfo| {
        assert_ne!(info.status, JobStatus::Running, "{info:?}");
        info.error.unwrap_or_default()
    };

    // The file itself is a symlink to a host file.
    let layer = tempfile::tempdir().unwrap();
    std::fs::create_dir(layer.path().join("etc")).unwrap();
    std::os::unix::fs::symlink(&host_passwd, layer.path().join("etc/passwd")).unwrap();
    let e = failed(h.agent.add_job(start(layer.path())).await.unwrap());
    assert!(
        e.contains("user \"intruder\" does not exist in the container's /etc/passwd"),
        "{e}"
    );

    // `etc` is a symlink to a host directory.
    let layer = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(host.path(), layer.path().join("etc")).unwrap();
    let e = failed(h.agent.add_job(start(layer.path())).await.unwrap());
    assert!(
        e.contains("does not exist in the container's /etc/passwd"),
        "{e}"
    );

    // An endless device, and a file too large to be a user list: refused, bounded.
    let layer = tempfile::tempdir().unwrap();
    std::fs::create_dir(layer.path().join("etc")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", layer.path().join("etc/passwd")).unwrap();
    let e = failed(h.agent.add_job(start(layer.path())).await.unwrap());
    assert!(
        e.contains("does not exist in the container's /etc/passwd"),
        "{e}"
    );
    std::fs::remove_file(layer.path().join("etc/passwd")).unwrap();
    let f = std::fs::File::create(layer.path().join("etc/passwd")).unwrap();
    f.set_len(64 << 20).unwrap();
    let e = failed(h.agent.add_job(start(layer.path())).await.unwrap());
    assert!(e.contains("/etc/passwd is larger than"), "{e}");
}

/// The start-time check that a job's command exists looks inside the rootfs too: through an
/// image's `hostroot -> /` it told a pusher whether any host path existed (a job that started
/// and crashed, or one refused at start).
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_command_is_looked_up_inside_its_rootfs() {
    if skip_unless_root("a_jobs_command_is_looked_up_inside_its_rootfs") {
        return;
    }
    let h = TestHost::start().await;
    let host = tempfile::NamedTempFile::new().unwrap();
    let layer = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/", layer.path().join("hostroot")).unwrap();
    let cmd = format!("/hostroot{}", host.path().display());
    let mut j = job("probe", &[&cmd]);
    j.config.layers = vec![layer.path().to_path_buf()];
    let info = h.agent.add_job(j).await.unwrap();
    assert_eq!(info.status, JobStatus::Failed, "{info:?}");
    let e = info.error.unwrap_or_default();
    assert!(e.contains("no such file or directory"), "{e}");
}

/// A static i386 ELF that runs `code` (loaded at 0x08048000, right after the headers).
fn elf32(code: &[u8]) -> Vec<u8> {
    const BASE: u32 = 0x0804_8000;
    let total = (52 + 32 + code.len()) as u32;
    let mut e = vec![0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let h16 = |e: &mut Vec<u8>, v: u16| e.extend_from_slice(&v.to_le_bytes());
    let h32 = |e: &mut Vec<u8>, v: u32| e.extend_from_slice(&v.to_le_bytes());
    h16(&mut e, 2); // ET_EXEC
    h16(&mut e, 3); // EM_386
    h32(&mut e, 1);
    h32(&mut e, BASE + 52 + 32); // entry
    h32(&mut e, 52); // phoff
    h32(&mut e, 0); // shoff
    h32(&mut e, 0); // flags
    for v in [52, 32, 1, 0, 0, 0] {
        h16(&mut e, v); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    for v in [1, 0, BASE, BASE, total, total, 5, 0x1000] {
        h32(&mut e, v); // PT_LOAD, offset, vaddr, paddr, filesz, memsz, R+X, align
    }
    e.extend_from_slice(code);
    e
}

/// `socket(AF_VSOCK, SOCK_STREAM, 0)` through i386's multiplexed `socketcall`, whose
/// arguments are in memory where seccomp cannot read the family: libseccomp allowed it whole,
/// so a static 32-bit program made the sockets the filter refuses (`AF_VSOCK` to the
/// hypervisor, `AF_ALG`). The program exits 0 when it got a socket, else with the errno; the
/// filter now covers x86_64 alone, and an i386 system call kills the program (SIGSYS: 159).
#[tokio::test(flavor = "multi_thread")]
async fn a_32_bit_socketcall_cannot_make_the_socket_families_the_filter_refuses() {
    if skip_unless_root("a_32_bit_socketcall_cannot_make_the_socket_families_the_filter_refuses") {
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        return; // i386 code; other architectures have no socketcall multiplexer to test
    }
    #[rustfmt::skip]
    let code = [
        0x6a, 0x00, 0x6a, 0x01, 0x6a, 0x28, // push 0; push SOCK_STREAM; push AF_VSOCK
        0x89, 0xe1,                         // mov ecx, esp
        0xbb, 0x01, 0x00, 0x00, 0x00,       // mov ebx, SYS_SOCKET
        0xb8, 0x66, 0x00, 0x00, 0x00,       // mov eax, __NR_socketcall
        0xcd, 0x80,                         // int 0x80
        0x85, 0xc0, 0x78, 0x04,             // test eax, eax; js neg
        0x31, 0xdb, 0xeb, 0x04,             // xor ebx, ebx; jmp exit
        0xf7, 0xd8, 0x89, 0xc3,             // neg: neg eax; mov ebx, eax
        0xb8, 0x01, 0x00, 0x00, 0x00,       // exit: mov eax, __NR_exit
        0xcd, 0x80,                         // int 0x80
    ];
    let h = TestHost::start().await;
    let layer = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    let bin = layer.path().join("vsock32");
    std::fs::write(&bin, elf32(&code)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(layer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut j = job("sockcall", &["sh", "-c", "/vsock32; echo socketcall=$?"]);
    j.config.layers = vec![layer.path().to_path_buf()];
    j.config.uid = Some(0);
    let (out, _) = stdout_of(&h, j).await;
    assert_eq!(
        out,
        ["socketcall=159"],
        "killed by SIGSYS at its first call"
    );
}
