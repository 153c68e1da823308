//! Resolving a job's `user` (`name`, `uid`, `name:group`, `uid:gid` — an image's `User`) in the
//! container's own rootfs, as Docker does: names are looked up in the rootfs's `/etc/passwd` and
//! `/etc/group` (the merged overlay, so the top layer wins), never the host's.

//!
//! [`job_user`] decides who a job runs as: its `uid`/`gid`, else its `user` (an image's `USER`),
//! else, for a job on a stack (slugs, `slipway run`, builds), [`DEFAULT_JOB_UID`] as on Heroku:
//! container root is the host's root (no user namespace), so only images that ask for it (no
//! `USER`, as Docker runs them) get it.

use crate::types::{DEFAULT_JOB_UID, HostJob, JobConfig};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Who a job runs as, decided by [`job_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobUser {
    pub uid: u32,
    pub gid: u32,
    /// The unprivileged default: the job also gets `/app` and `HOME=/app`.
    pub default: bool,
}

/// The user to set on a job whose config does not say it fully; `None` leaves the config as it
/// is (both ids given, or one of them: the other is 0). `on_stack`: the job runs on a stack
/// rather than an image's own rootfs.
pub fn job_user(config: &JobConfig, on_stack: bool, rootfs: &Path) -> Result<Option<JobUser>> {
    if let Some(user) = &config.user
        && (config.uid.is_none() || config.gid.is_none())
    {
        let (uid, gid) = resolve(rootfs, user)?;
        return Ok(Some(JobUser {
            uid: config.uid.unwrap_or(uid),
            gid: config.gid.unwrap_or(gid),
            default: false,
        }));
    }
    if on_stack && config.user.is_none() && config.uid.is_none() && config.gid.is_none() {
        return Ok(Some(JobUser {
            uid: DEFAULT_JOB_UID,
            gid: DEFAULT_JOB_UID,
            default: true,
        }));
    }
    Ok(None)
}

/// Makes the merged rootfs's `/tmp` mode 1777. runc gives a tmpfs mount the mode of the
/// directory under it (a stack's `/tmp` is often 0755), whatever `mode=` the spec asks, and a
/// job that is not root could then not write to its `/tmp`. Never through a symlink.
pub fn open_tmp(rootfs: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = rootfs.join("tmp");
    match std::fs::symlink_metadata(&tmp) {
        Ok(md) if md.is_dir() => {
            if md.permissions().mode() & 0o7777 != 0o1777 {
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
                    .with_context(|| format!("making {} world-writable", tmp.display()))?;
            }
        }
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir(&tmp)
                .and_then(|_| {
                    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
                })
                .with_context(|| format!("creating {}", tmp.display()))?;
        }
    }
    Ok(())
}

/// `job` as `u` runs it. For the default user, the merged rootfs's `/app` directory (the slug's,
/// or the stack's empty one) is made its own, so an app can write next to its code as on Heroku
/// (a slug's files already belong to the build's user, the same uid; only the directory inode
/// is copied up), and `HOME` is `/app` unless the job sets it.
pub fn apply(job: &HostJob, u: JobUser, rootfs: &Path) -> Result<HostJob> {
    let mut j = job.clone();
    j.config.uid = Some(u.uid);
    j.config.gid = Some(u.gid);
    if !u.default {
        return Ok(j);
    }
    let app = rootfs.join("app");
    // Never through a symlink: lchown, and only a real directory.
    if let Ok(md) = std::fs::symlink_metadata(&app)
        && md.is_dir()
    {
        use std::os::unix::fs::MetadataExt;
        if md.uid() != u.uid || md.gid() != u.gid {
            std::os::unix::fs::lchown(&app, Some(u.uid), Some(u.gid))
                .with_context(|| format!("giving {} to uid {}", app.display(), u.uid))?;
        }
        j.config
            .env
            .entry("HOME".into())
            .or_insert_with(|| "/app".into());
    }
    Ok(j)
}

/// The uid and gid `user` names in `rootfs`. A numeric uid without a group takes the gid from
/// its passwd entry if there is one, else 0; a name that is not in the rootfs is an error.
pub fn resolve(rootfs: &Path, user: &str) -> Result<(u32, u32)> {
    let user = user.trim();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() {
        bail!("invalid user {user:?}: expected NAME, UID, NAME:GROUP or UID:GID");
    }
    let passwd = read_in_root(rootfs, "etc/passwd")?;
    let entry = |pred: &dyn Fn(&[&str]) -> bool| -> Option<(u32, u32)> {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || !pred(&f) {
                return None;
            }
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        })
    };
    let (uid, primary_gid) = match u.parse::<u32>() {
        Ok(uid) => (uid, entry(&|f| f[2] == u).map(|(_, g)| g).unwrap_or(0)),
        Err(_) => match entry(&|f| f[0] == u) {
            Some(e) => e,
            None => bail!(
                "user {u:?} does not exist in the container's /etc/passwd: add it to the image \
                 or stack, or give a numeric uid"
            ),
        },
    };
    let gid = match g {
        None => primary_gid,
        Some("") => {
            bail!("invalid user {user:?}: the group after ':' is empty")
        }
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_in_root(rootfs, "etc/group")?;
                match group.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g).then(|| f[2].parse::<u32>().ok())?
                }) {
                    Some(gid) => gid,
                    None => bail!(
                        "group {g:?} does not exist in the container's /etc/group: add it to \
                         the image or stack, or give a numeric gid"
                    ),
                }
            }
        },
    };
    Ok((uid, gid))
}

/// The most of a user or group file the agent reads.
pub const MAX_USER_FILE: u64 = 1 << 20;

/// Opens `rel` as the job would see it: every symlink (absolute ones too) and `..` resolved
/// inside `rootfs` (`openat2` with `RESOLVE_IN_ROOT`, Linux 5.6). The agent runs as root on the
/// host, and an image is written by whoever pushed it: `etc/passwd -> /dev/zero` read with a
/// plain `open` grew the agent (the whole server) until the OOM killer came, and
/// `-> /some/host/file` read a host file. `O_PATH` for a mere lookup; `None`: nothing there.
pub fn open_in_root(rootfs: &Path, rel: &str, flags: i32) -> Result<Option<std::fs::File>> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::ffi::OsStrExt;
    let root = std::fs::File::open(rootfs)
        .with_context(|| format!("opening the job's rootfs {}", rootfs.display()))?;
    let path = std::ffi::CString::new(std::ffi::OsStr::new(rel).as_bytes())
        .with_context(|| format!("path {rel:?} has a NUL byte"))?;
    // SAFETY: all-zero is a valid open_how (non_exhaustive: no struct literal).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // openat2 refuses flags O_PATH does not take (O_NOCTTY among them).
    let extra = if flags & libc::O_PATH != 0 {
        libc::O_CLOEXEC
    } else {
        libc::O_CLOEXEC | libc::O_NOCTTY
    };
    how.flags = (flags | extra) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd, NUL-terminated path and open_how of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP) => Ok(None),
            _ => Err(e).with_context(|| format!("opening /{rel} in the job's rootfs")),
        };
    }
    // SAFETY: openat2 returned a new fd that nothing else owns.
    Ok(Some(unsafe { std::fs::File::from_raw_fd(fd as i32) }))
}

/// The text of the regular file `rel` of the rootfs, resolved inside it ([`open_in_root`]);
/// empty when there is none. Anything else (a device, a fifo) or a file over
/// [`MAX_USER_FILE`] is an error, never an endless or blocking read.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<String> {
    use std::io::Read;
    let Some(f) = open_in_root(rootfs, rel, libc::O_RDONLY | libc::O_NONBLOCK)? else {
        return Ok(String::new());
    };
    let md = f.metadata()?;
    if !md.is_file() {
        bail!("the container's /{rel} is not a regular file: fix the image or stack");
    }
    if md.len() > MAX_USER_FILE {
        bail!(
            "the container's /{rel} is larger than {} KiB: fix the image or stack",
            MAX_USER_FILE >> 10
        );
    }
    let mut s = String::new();
    f.take(MAX_USER_FILE)
        .read_to_string(&mut s)
        .with_context(|| format!("reading the container's /{rel}"))?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_numbers_in_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            root.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nstaff:x:50:app\n",
        )
        .unwrap();
        let r = |u| resolve(root.path(), u);
        assert_eq!(r("app").unwrap(), (1000, 1001));
        assert_eq!(r("app:staff").unwrap(), (1000, 50));
        assert_eq!(r("app:7").unwrap(), (1000, 7));
        assert_eq!(r("1000").unwrap(), (1000, 1001));
        assert_eq!(r("4242").unwrap(), (4242, 0));
        assert_eq!(r("4242:4243").unwrap(), (4242, 4243));
        assert_eq!(r("root").unwrap(), (0, 0));
        let e = r("nobody").unwrap_err().to_string();
        assert!(e.contains("\"nobody\" does not exist"), "{e}");
        let e = r("app:wheel").unwrap_err().to_string();
        assert!(e.contains("group \"wheel\""), "{e}");
        assert!(r("").is_err());
        assert!(r("app:").is_err());
    }

    #[test]
    fn stack_jobs_default_to_the_unprivileged_user_and_get_app() {
        use std::os::unix::fs::MetadataExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:1234:2345::/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("app")).unwrap();
        let mut c = JobConfig::new("busybox", &["true"]);
        let u = |c: &JobConfig, stack| job_user(c, stack, root.path()).unwrap();
        let default = JobUser {
            uid: DEFAULT_JOB_UID,
            gid: DEFAULT_JOB_UID,
            default: true,
        };
        assert_eq!(u(&c, true), Some(default));
        // An image's rootfs without USER: root, as Docker runs it.
        assert_eq!(u(&c, false), None);
        c.user = Some("web".into());
        assert_eq!(
            u(&c, false),
            Some(JobUser {
                uid: 1234,
                gid: 2345,
                default: false
            })
        );
        c.user = None;
        c.uid = Some(0);
        assert_eq!(u(&c, true), None, "explicit root stays root");
        // chown needs root.
        if slipway_testkit::skip_unless_root(
            "user::tests::stack_jobs_default_to_the_unprivileged_user_and_get_app",
        ) {
            return;
        }
        let job = HostJob {
            id: "j".into(),
            app_id: String::new(),
            app_name: String::new(),
            release_id: String::new(),
            process_type: String::new(),
            metadata: Default::default(),
            config: JobConfig::new("busybox", &["true"]),
            resources: Default::default(),
        };
        let j = apply(&job, default, root.path()).unwrap();
        assert_eq!((j.config.uid, j.config.gid), (Some(1000), Some(1000)));
        assert_eq!(j.config.env["HOME"], "/app");
        let md = std::fs::metadata(root.path().join("app")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000));
        // A symlinked /app is left alone (never followed) and gets no HOME.
        std::fs::remove_dir(root.path().join("app")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("app")).unwrap();
        let j = apply(&job, default, root.path()).unwrap();
        assert!(!j.config.env.contains_key("HOME"));
    }
}
