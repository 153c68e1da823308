//! Resolving a job's `user` (`name`, `uid`, `name:group`, `uid:gid` — an image's `User`) in the
//! container's own rootfs, as Docker does: names are looked up in the rootfs's `/etc/passwd` and
//! `/etc/group` (the merged overlay, so the top layer wins), never the host's.

use anyhow::{Result, bail};
use std::path::Path;

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
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap_or_default();
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
                let group = std::fs::read_to_string(rootfs.join("etc/group")).unwrap_or_default();
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
}
