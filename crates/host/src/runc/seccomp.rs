//! The seccomp filter every job runs under (`linux.seccomp` of the OCI spec; runc compiles it
//! with libseccomp and loads it right before it execs the job's init).
//!
//! An allowlist: any system call not named here fails with `EPERM`. Docker's default profile is
//! the reference for what a general-purpose Linux program needs; this list is written for
//! Slipway's capability set (see `spec.rs`), so the calls Docker allows only to containers with
//! extra capabilities (`CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SYS_TIME`, …) are simply absent.
//!
//! What stays out, and why:
//! - new namespaces and entering others (`unshare`, `setns`, `clone`/`clone3` with namespace
//!   flags): a user namespace hands its creator every capability inside it, the way past the
//!   capability set to `mount`, netfilter and the kernel code behind them;
//! - mounts old and new (`mount`, `umount2`, `pivot_root`, `fsopen`, `fsmount`, `open_tree`,
//!   `move_mount`, `mount_setattr`, …);
//! - the kernel's large attack surfaces a web process has no use for: `bpf`, `perf_event_open`,
//!   `userfaultfd`, `io_uring_*`, keyrings (`keyctl`, `add_key`, `request_key`), `kexec_*`,
//!   modules, `open_by_handle_at` (the "shocker" escape), `quotactl`, `syslog`, `acct`,
//!   `reboot`, swap, clock setting, NUMA policy, `kcmp`/`pidfd_getfd`/`process_madvise`;
//! - `personality` except the harmless personas, and the `AF_ALG`/`AF_VSOCK` socket families.
//!
//! `clone3` takes its flags in memory seccomp cannot read, so it returns `ENOSYS`: glibc and
//! others then fall back to `clone`, whose flags are checked. System calls newer than what
//! runc's libseccomp knows get `ENOSYS` from runc's own prelude, so new programs fall back too.

use anyhow::Result;
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};

/// Allowed without conditions, by theme. Calls a kernel or libseccomp does not know are skipped
/// by runc, so 32-bit (32-bit ARM) and newer names can be listed alongside.
const ALLOWED: &[&[&str]] = &[
    // Processes, threads, scheduling.
    &[
        "brk",
        "capget",
        "capset",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "fork",
        "vfork",
        "getpid",
        "getppid",
        "gettid",
        "getpgid",
        "getpgrp",
        "getsid",
        "setsid",
        "setpgid",
        "kill",
        "tkill",
        "tgkill",
        "wait4",
        "waitid",
        "waitpid",
        "prctl",
        "prlimit64",
        "getrlimit",
        "ugetrlimit",
        "setrlimit",
        "getrusage",
        "getpriority",
        "setpriority",
        "sched_yield",
        "sched_getaffinity",
        "sched_setaffinity",
        "sched_getattr",
        "sched_setattr",
        "sched_getparam",
        "sched_setparam",
        "sched_getscheduler",
        "sched_setscheduler",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "set_tid_address",
        "set_robust_list",
        "get_robust_list",
        "rseq",
        "futex",
        "futex_time64",
        "futex_waitv",
        "futex_wait",
        "futex_wake",
        "futex_requeue",
        "membarrier",
        "seccomp",
        "pidfd_open",
        "pidfd_send_signal",
        "process_mrelease",
        "restart_syscall",
        "ioprio_get",
        "ioprio_set",
        "getcpu",
        "uname",
        "sysinfo",
        "times",
        "pause",
        "alarm",
        "chroot",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
    ],
    // Identity (changing it needs CAP_SETUID/CAP_SETGID, which only root jobs have).
    &[
        "getuid",
        "geteuid",
        "getgid",
        "getegid",
        "getresuid",
        "getresgid",
        "getgroups",
        "setuid",
        "setgid",
        "setreuid",
        "setregid",
        "setresuid",
        "setresgid",
        "setgroups",
        "setfsuid",
        "setfsgid",
        "getuid32",
        "geteuid32",
        "getgid32",
        "getegid32",
        "getresuid32",
        "getresgid32",
        "getgroups32",
        "setuid32",
        "setgid32",
        "setreuid32",
        "setregid32",
        "setresuid32",
        "setresgid32",
        "setgroups32",
        "setfsuid32",
        "setfsgid32",
    ],
    // Signals.
    &[
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "rt_sigpending",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_sigqueueinfo",
        "rt_tgsigqueueinfo",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigreturn",
        "sigprocmask",
    ],
    // Memory.
    &[
        "mmap",
        "mmap2",
        "munmap",
        "mprotect",
        "mremap",
        "madvise",
        "mincore",
        "mlock",
        "mlock2",
        "mlockall",
        "munlock",
        "munlockall",
        "msync",
        "memfd_create",
        "memfd_secret",
        "remap_file_pages",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "map_shadow_stack",
        "mseal",
    ],
    // Files and descriptors.
    &[
        "read",
        "write",
        "readv",
        "writev",
        "pread64",
        "pwrite64",
        "preadv",
        "pwritev",
        "preadv2",
        "pwritev2",
        "open",
        "openat",
        "openat2",
        "creat",
        "close",
        "close_range",
        "dup",
        "dup2",
        "dup3",
        "lseek",
        "_llseek",
        "fcntl",
        "fcntl64",
        "ioctl",
        "flock",
        "fsync",
        "fdatasync",
        "sync",
        "syncfs",
        "sync_file_range",
        "truncate",
        "truncate64",
        "ftruncate",
        "ftruncate64",
        "fallocate",
        "fadvise64",
        "fadvise64_64",
        "readahead",
        "sendfile",
        "sendfile64",
        "splice",
        "tee",
        "vmsplice",
        "copy_file_range",
        "cachestat",
        "stat",
        "lstat",
        "fstat",
        "newfstatat",
        "statx",
        "stat64",
        "lstat64",
        "fstat64",
        "fstatat64",
        "statfs",
        "fstatfs",
        "statfs64",
        "fstatfs64",
        "access",
        "faccessat",
        "faccessat2",
        "chdir",
        "fchdir",
        "getcwd",
        "mkdir",
        "mkdirat",
        "rmdir",
        "rename",
        "renameat",
        "renameat2",
        "link",
        "linkat",
        "unlink",
        "unlinkat",
        "symlink",
        "symlinkat",
        "readlink",
        "readlinkat",
        "chmod",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "chown",
        "fchown",
        "lchown",
        "fchownat",
        "chown32",
        "fchown32",
        "lchown32",
        "umask",
        "utime",
        "utimes",
        "utimensat",
        "utimensat_time64",
        "futimesat",
        "getdents",
        "getdents64",
        "mknod",
        "mknodat",
        "getxattr",
        "lgetxattr",
        "fgetxattr",
        "listxattr",
        "llistxattr",
        "flistxattr",
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
        "getxattrat",
        "setxattrat",
        "listxattrat",
        "removexattrat",
        "name_to_handle_at",
        "inotify_init",
        "inotify_init1",
        "inotify_add_watch",
        "inotify_rm_watch",
        "pipe",
        "pipe2",
        "eventfd",
        "eventfd2",
    ],
    // Waiting for events; async I/O (the old interface: io_uring stays out).
    &[
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_wait",
        "epoll_pwait",
        "epoll_pwait2",
        "poll",
        "ppoll",
        "ppoll_time64",
        "select",
        "_newselect",
        "pselect6",
        "pselect6_time64",
        "io_setup",
        "io_destroy",
        "io_submit",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "io_cancel",
    ],
    // Time and timers (reading the clock; setting it needs CAP_SYS_TIME and stays out).
    &[
        "clock_gettime",
        "clock_gettime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "nanosleep",
        "gettimeofday",
        "time",
        "adjtimex",
        "clock_adjtime",
        "clock_adjtime64",
        "getitimer",
        "setitimer",
        "timer_create",
        "timer_settime",
        "timer_settime64",
        "timer_gettime",
        "timer_gettime64",
        "timer_getoverrun",
        "timer_delete",
        "timerfd_create",
        "timerfd_settime",
        "timerfd_settime64",
        "timerfd_gettime",
        "timerfd_gettime64",
    ],
    // System V and POSIX IPC (private to the job's IPC namespace).
    &[
        "ipc",
        "shmget",
        "shmat",
        "shmdt",
        "shmctl",
        "semget",
        "semop",
        "semctl",
        "semtimedop",
        "semtimedop_time64",
        "msgget",
        "msgsnd",
        "msgrcv",
        "msgctl",
        "mq_open",
        "mq_unlink",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_notify",
        "mq_getsetattr",
    ],
    // Sockets (`socket` itself is checked below).
    &[
        "socketpair",
        "bind",
        "listen",
        "accept",
        "accept4",
        "connect",
        "getsockname",
        "getpeername",
        "getsockopt",
        "setsockopt",
        "sendto",
        "recvfrom",
        "sendmsg",
        "recvmsg",
        "sendmmsg",
        "recvmmsg",
        "recvmmsg_time64",
        "shutdown",
        "socketcall",
        "send",
        "recv",
        "getrandom",
    ],
];

/// Architecture-specific calls of the architectures the filter covers.
#[cfg(target_arch = "x86_64")]
const ARCH_ALLOWED: &[&str] = &[
    "arch_prctl",
    "modify_ldt",
    "set_thread_area",
    "get_thread_area",
];
#[cfg(target_arch = "aarch64")]
const ARCH_ALLOWED: &[&str] = &[
    "arm_fadvise64_64",
    "arm_sync_file_range",
    "sync_file_range2",
    "breakpoint",
    "cacheflush",
    "set_tls",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const ARCH_ALLOWED: &[&str] = &[];

/// The architectures whose system calls pass the filter; a call of any other (a 32-bit x86
/// program on x86_64) kills the process with `SIGSYS`.
///
/// x86_64 alone, without i386 (and x32): i386 has the multiplexed `socketcall`, and libseccomp
/// turns every `socket` rule into "socketcall(SYS_SOCKET): allow" for it, dropping the family
/// check (the arguments are in memory, where seccomp cannot read) — a static 32-bit program
/// made the `AF_VSOCK` sockets refused below. A deny rule for it cannot be added either (it
/// conflicts with the allow rules of the native `socket`). Heroku's stacks are 64-bit only; the
/// 32-bit system call table is also a surface of its own. 32-bit ARM on aarch64 has no
/// multiplexer and keeps working.
fn architectures() -> Vec<Arch> {
    if cfg!(target_arch = "x86_64") {
        vec![Arch::ScmpArchX86_64]
    } else if cfg!(target_arch = "aarch64") {
        vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm]
    } else {
        vec![Arch::ScmpArchNative]
    }
}

/// The namespace flags of `clone(2)`: `CLONE_NEWNS`, `NEWCGROUP`, `NEWUTS`, `NEWIPC`, `NEWUSER`,
/// `NEWPID`, `NEWNET`. (`CLONE_NEWTIME` shares its bit with the exit signal in `clone`'s
/// flags; a time namespace can only be made through `unshare`, which is denied whole.)
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// `personality(2)` values that change nothing dangerous: `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26`, `PER_LINUX32|UNAME26`, and `0xffffffff` (a query).
const PERSONAS: [u64; 5] = [0, 0x0008, 0x0002_0000, 0x0002_0008, 0xffff_ffff];

const AF_ALG: u64 = 38;
const AF_NFC: u64 = 39;
const AF_VSOCK: u64 = 40;

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

fn allow(names: &[&str]) -> Result<LinuxSyscall> {
    Ok(LinuxSyscallBuilder::default()
        .names(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()?)
}

/// One call allowed when its argument `index` compares to `value` with `op`.
fn allow_if(
    name: &str,
    index: usize,
    op: LinuxSeccompOperator,
    value: u64,
    value_two: Option<u64>,
) -> Result<LinuxSyscall> {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .value(value)
        .op(op);
    if let Some(v2) = value_two {
        arg = arg.value_two(v2);
    }
    Ok(LinuxSyscallBuilder::default()
        .names(vec![name.to_string()])
        .action(LinuxSeccompAction::ScmpActAllow)
        .args(vec![arg.build()?])
        .build()?)
}

/// `ptrace` (and reading/writing another process's memory, which the kernel checks the same
/// way) could bypass seccomp filters before Linux 4.8; from 4.8 on, the kernel re-checks a
/// traced call, and ptrace reaches only the job's own processes of the same uid.
pub fn ptrace_is_safe(kernel_release: &str) -> bool {
    let mut parts = kernel_release
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (4, 8)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default()
}

/// The filter for a job.
pub fn profile() -> Result<LinuxSeccomp> {
    let mut syscalls = Vec::new();
    for group in ALLOWED {
        syscalls.push(allow(group)?);
    }
    if !ARCH_ALLOWED.is_empty() {
        syscalls.push(allow(ARCH_ALLOWED)?);
    }
    if ptrace_is_safe(&kernel_release()) {
        syscalls.push(allow(&["ptrace", "process_vm_readv", "process_vm_writev"])?);
    }
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    // clone without a namespace flag: (flags & mask) == 0. The flags are argument 0 on x86 and
    // arm (s390 swaps the first two, and is not covered here).
    syscalls.push(allow_if(
        "clone",
        0,
        ScmpCmpMaskedEq,
        CLONE_NAMESPACE_FLAGS,
        Some(0),
    )?);
    syscalls.push(
        LinuxSyscallBuilder::default()
            .names(vec!["clone3".to_string()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(ENOSYS)
            .build()?,
    );
    // Every socket family but AF_ALG (the kernel's crypto API) and AF_VSOCK (host/guest
    // sockets). Raw and packet sockets are refused by the missing CAP_NET_RAW.
    syscalls.push(allow_if("socket", 0, ScmpCmpLt, AF_ALG, None)?);
    syscalls.push(allow_if("socket", 0, ScmpCmpEq, AF_NFC, None)?);
    syscalls.push(allow_if("socket", 0, ScmpCmpGt, AF_VSOCK, None)?);
    for p in PERSONAS {
        syscalls.push(allow_if("personality", 0, ScmpCmpEq, p, None)?);
    }
    Ok(LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures())
        .syscalls(syscalls)
        .build()?)
}

/// Every name the profile allows unconditionally (tests and docs).
pub fn allowed_names() -> Vec<&'static str> {
    ALLOWED.iter().flat_map(|g| g.iter().copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dangerous_calls_are_not_allowed_and_the_everyday_ones_are() {
        let allowed = allowed_names();
        for bad in [
            "unshare",
            "setns",
            "mount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "keyctl",
            "add_key",
            "request_key",
            "bpf",
            "perf_event_open",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "open_by_handle_at",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "ptrace",
            "personality",
            "clone",
            "clone3",
            "socket",
            "reboot",
            "swapon",
            "syslog",
            "settimeofday",
            "clock_settime",
            "sethostname",
            "quotactl",
            "kcmp",
            "pidfd_getfd",
            "acct",
            "lookup_dcookie",
            "mbind",
            "set_mempolicy",
        ] {
            assert!(!allowed.contains(&bad), "{bad} is allowed outright");
        }
        let unique: std::collections::HashSet<_> = allowed.iter().collect();
        assert_eq!(unique.len(), allowed.len(), "a name is listed twice");
        for good in [
            "read",
            "execve",
            "futex",
            "epoll_wait",
            "accept4",
            "getrandom",
        ] {
            assert!(allowed.contains(&good), "{good}");
        }
        let json = serde_json::to_value(profile().unwrap()).unwrap();
        assert_eq!(json["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(json["defaultErrnoRet"], 1);
        let rules = json["syscalls"].as_array().unwrap();
        let rule = |name: &str| -> Vec<&serde_json::Value> {
            rules
                .iter()
                .filter(|r| r["names"].as_array().unwrap().iter().any(|n| n == name))
                .collect()
        };
        let clone3 = rule("clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(
            (&clone3[0]["action"], &clone3[0]["errnoRet"]),
            (&"SCMP_ACT_ERRNO".into(), &38.into())
        );
        let clone = rule("clone");
        assert_eq!(clone[0]["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0]["args"][0]["value"], 0x7E02_0000u64);
        assert_eq!(clone[0]["args"][0]["valueTwo"], 0);
        assert_eq!(rule("socket").len(), 3);
        assert_eq!(rule("personality").len(), 5);
        if cfg!(target_arch = "x86_64") {
            assert_eq!(
                json["architectures"],
                serde_json::json!(["SCMP_ARCH_X86_64"]),
                "no i386: its socketcall would skip the socket family rules"
            );
        }
    }

    #[test]
    fn ptrace_is_allowed_from_linux_4_8() {
        assert!(ptrace_is_safe("6.18.44-fc-v1272"));
        assert!(ptrace_is_safe("4.8.0"));
        assert!(!ptrace_is_safe("4.7.10-generic"));
        assert!(!ptrace_is_safe("3.10.0-1160.el7.x86_64"));
        assert!(!ptrace_is_safe(""));
    }
}
