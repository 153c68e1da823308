//! version, completion, help and usage errors (no server needed).

use crate::support::{BIN, fails, ok};
use assert_cmd::Command;

fn slipway() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("SLIPWAY_CONFIG", "/nonexistent/slipway-test.toml")
        .env_remove("SLIPWAY_URL")
        .env_remove("SLIPWAY_KEY")
        .current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn version_and_completions() {
    assert_eq!(
        ok(slipway().arg("version")),
        format!("slipway {}\n", env!("CARGO_PKG_VERSION"))
    );
    let bash = ok(slipway().args(["completion", "bash"]));
    assert!(
        bash.contains("_slipway()") && bash.contains("rollback"),
        "{bash}"
    );
    let zsh = ok(slipway().args(["completion", "zsh"]));
    assert!(zsh.starts_with("#compdef slipway"), "{zsh}");
    ok(slipway().args(["completion", "fish"]));
}

#[test]
fn help_lists_the_commands_and_usage_errors_exit_1() {
    let help = ok(slipway().arg("--help"));
    for cmd in [
        "create", "apps", "env", "release", "route", "cluster", "server",
    ] {
        assert!(
            help.contains(&format!("\n  {cmd} ")),
            "{cmd} missing:\n{help}"
        );
    }
    let err = fails(slipway().arg("no-such-command"));
    assert!(err.starts_with("error: "), "{err}");
    let err = fails(slipway().args(["route", "add", "http", "-c", "cert.pem", "x.com"]));
    assert!(
        err.contains("--tls-key"),
        "a certificate needs its key: {err}"
    );
}

#[test]
fn no_cluster_configured_says_how_to_get_one() {
    let err = fails(slipway().arg("apps"));
    assert_eq!(
        err,
        "error: no cluster configured: start one with `slipway server`, or add one with \
         `slipway cluster add NAME URL KEY`\n"
    );
}
