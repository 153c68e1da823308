//! `slipway server`: the roles live in `slipway_server`; the binary adds what needs `unsafe`
//! (the process's uid, its file limit) and the CLI's own config (registering the server as a
//! cluster), which that crate must not know.

use anyhow::{Context, Result};
use std::path::PathBuf;

pub async fn run(args: slipway_server::ServerArgs) -> Result<()> {
    let no_register = args.no_register;
    let nofile = raise_nofile_limit();
    let root = is_root();
    let mut config = slipway_server::Config::new(args, || default_data_dir(root), nofile, root)?;
    if !no_register {
        config.on_listening = Some(Box::new(|url: &str, key: &str| {
            crate::config::register_local_cluster(url, key)
                .context("cannot add this server to the CLI config (use --no-register to skip)")
        }));
    }
    slipway_server::run(config).await
}

/// `slipway supervise`: the flags after `supervise` go to the children as given.
pub async fn supervise(args: slipway_server::supervise::SuperviseArgs) -> Result<()> {
    let argv: Vec<String> = std::env::args()
        .skip_while(|a| a != "supervise")
        .skip(1)
        .collect();
    let data_dir = match &args.server.data_dir {
        Some(dir) => dir.clone(),
        None => default_data_dir(is_root())?,
    };
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    slipway_server::supervise::run(slipway_server::supervise::Supervise {
        args,
        argv,
        exe,
        data_dir,
    })
    .await
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Raises the soft limit on open files to the hard one (the kernel's default soft limit,
/// often 1024, would be the first thing a busy router runs into), and returns it.
fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

fn default_data_dir(root: bool) -> Result<PathBuf> {
    if root {
        return Ok(PathBuf::from("/var/lib/slipway"));
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("slipway"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --data-dir")?;
    Ok(PathBuf::from(home).join(".local/share/slipway"))
}
