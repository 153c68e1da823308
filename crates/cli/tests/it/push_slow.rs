//! `git push` of real-world apps on the bookworm stack, with pip reaching PyPI. Only with
//! `SLIPWAY_SLOW_TESTS=1` (CI sets it): the bookworm stack is built once into the shared test
//! stacks dir (`/tmp/slipway-test-stacks`, minutes the first time) and reused.

use crate::push::{app_repo, create_in, http, push, until};
use crate::support::*;
use std::time::Duration;

/// True when the slow tests are asked for (`SLIPWAY_SLOW_TESTS=1`); otherwise a counted skip.
fn slow_tests(test: &str) -> bool {
    !slipway_testkit::skip_unless_slow(test)
}

/// A web server of the standard library that answers with the version of `six`, which pip
/// installs from PyPI: the app serves only if the venv is on its path at runtime.
const APP_PY: &str = r#"import os
import six
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("six " + six.__version__ + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("0.0.0.0", int(os.environ["PORT"])), Handler).serve_forever()
"#;

#[test]
fn a_python_app_deploys_by_git_push_on_bookworm_with_pip_from_pypi() {
    let name = "a_python_app_deploys_by_git_push_on_bookworm_with_pip_from_pypi";
    if skip_unless_root(name) || !slow_tests(name) {
        return;
    }
    let stacks = std::env::temp_dir().join("slipway-test-stacks");
    let built = std::process::Command::new(BIN)
        .args(["host", "stack", "build", "bookworm", "--stacks-dir"])
        .arg(&stacks)
        .status()
        .unwrap();
    assert!(built.success(), "building the bookworm stack failed");
    // Host numbers 2840-2859.
    let n = 2840 + std::process::id() % 20;
    let host = HostServer::start(n, &loopback_router(&[]));
    let server = &host.s;
    let router = logged_addr(server, "router: HTTP on ");
    let app = "py";
    let dir = app_repo(
        server,
        app,
        &[("requirements.txt", "six==1.16.0\n"), ("app.py", APP_PY)],
    );
    create_in(server, &dir, app);
    server.ok(&["-a", app, "meta", "set", "stack=bookworm"]);

    // No Procfile: the python buildpack's default `web: python app.py`.
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    for want in [
        "remote: -----> Python app detected",
        "remote: -----> Installing dependencies with pip",
        "Successfully installed six-1.16.0",
        "remote: =====> Scaling initial release to web=1",
        "remote: =====> Application deployed",
    ] {
        assert!(err.contains(want), "{want:?} not in {err}");
    }
    let vhost = format!("{app}.{DOMAIN}");
    let resp = until(
        "the python app",
        Duration::from_secs(20),
        || http(&router, "/", &vhost, None),
        "six 1.16.0",
    );
    // http.server answers HTTP/1.0 with a body that ends at the close; the router speaks
    // HTTP/1.1 to its client (RFC 9110 §6.2: a proxy sends its own version) and says the
    // connection closes after it.
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    assert!(resp.to_lowercase().contains("connection: close"), "{resp}");
}
