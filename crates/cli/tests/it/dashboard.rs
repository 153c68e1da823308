//! The web dashboard in a real browser: headless Debian chromium driven through chromedriver
//! (WebDriver, `fantoccini`) against a live `slipway server` with its host agent (real runc
//! jobs), an app deployed by `git push`. Screenshots (PNG from the same browser) go to
//! `$SLIPWAY_SCREENSHOTS` or `target/dashboard-screenshots/`.

use crate::push::{app_repo, create_in, push};
use crate::support::*;
use fantoccini::{Client, Locator};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        for bin in ["chromedriver", "chromium"] {
            let found = Command::new("which").arg(bin).output().unwrap();
            assert!(
                found.status.success(),
                "{bin} is not installed: run scripts/install-deps --test (Debian chromium, chromium-driver)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: chromium starts in it, and a failing test (no session close)
        // kills the whole group, leaving no browser behind.
        let child = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,900"]
            }
        });
        let caps = caps.as_object().unwrap().clone();
        fantoccini::ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session from chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}

fn screenshots_dir() -> PathBuf {
    let dir = std::env::var_os("SLIPWAY_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard-screenshots")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until `f` (the page's text or a count) satisfies `ok`; the last value.
async fn wait_for<T: std::fmt::Debug>(
    what: &str,
    mut f: impl AsyncFnMut() -> T,
    ok: impl Fn(&T) -> bool,
) -> T {
    let t0 = Instant::now();
    loop {
        let v = f().await;
        if ok(&v) {
            return v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{what}: still {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn up_web_jobs(b: &Client) -> usize {
    b.find_all(Locator::Css("tr.job[data-type=web][data-state=up]"))
        .await
        .map(|v| v.len())
        .unwrap_or(0)
}

async fn text(b: &Client, css: &str) -> String {
    match b.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A raw POST with the browser's session cookie but no CSRF token (a forged form).
fn forged_post(server: &TestServer, path: &str, cookie: &str) -> String {
    let addr = server.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let body = "p.web=5";
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nCookie: slipway_session={cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn dashboard_logs_in_scales_sets_env_and_rolls_back_in_a_real_browser() {
    if skip_unless_root("dashboard_logs_in_scales_sets_env_and_rolls_back_in_a_real_browser") {
        return;
    }
    let n = 4700 + std::process::id() % 50;
    let host = HostServer::start(n, &[]);
    let server = &host.s;
    let app = "dash";
    let dir = app_repo(server, app, &[("Procfile", "web: httpd -f -p $PORT\n")]);
    create_in(server, &dir, app);
    let (ok, err) = push(server, &dir, "main");
    assert!(ok, "{err}");
    let first_release = server.client();
    let first_release = block_on(first_release.app(app)).unwrap().release.unwrap();

    let driver = Driver::start();
    let shots = screenshots_dir();
    let base = format!("{}/dashboard", server.url);
    let key = server.key();
    block_on(async {
        let b = driver.browser().await;
        // Nothing without logging in: the apps list sends to the login page.
        b.goto(&format!("{base}/apps")).await.unwrap();
        assert!(
            b.current_url()
                .await
                .unwrap()
                .path()
                .ends_with("/dashboard/login")
        );
        assert!(
            b.find(Locator::Css("#apps")).await.is_err(),
            "the apps list without a session"
        );

        // A wrong key does not log in.
        b.find(Locator::Css("#key"))
            .await
            .unwrap()
            .send_keys("not-the-key")
            .await
            .unwrap();
        b.find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            "the login error",
            async || text(&b, "#login-error").await,
            |t| t == "Wrong API key.",
        )
        .await;
        b.goto(&format!("{base}/apps")).await.unwrap();
        assert!(
            b.current_url()
                .await
                .unwrap()
                .path()
                .ends_with("/dashboard/login")
        );

        // The right key: the apps list shows the pushed app, web 1/1.
        b.find(Locator::Css("#key"))
            .await
            .unwrap()
            .send_keys(&key)
            .await
            .unwrap();
        b.find(Locator::Css("button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let row = wait_for(
            "the apps list",
            async || text(&b, "#apps").await,
            |t| t.contains(app) && t.contains("1/1"),
        )
        .await;
        assert!(row.contains(&first_release.to_string()[..8]), "{row}");
        std::fs::write(shots.join("apps.png"), b.screenshot().await.unwrap()).unwrap();

        // A forged POST (the session cookie, no CSRF token) is refused.
        let cookie = b
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == "slipway_session")
            .expect("the session cookie")
            .value()
            .to_string();
        let forged = forged_post(server, &format!("/dashboard/apps/{app}/scale"), &cookie);
        assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
        let f = block_on_formation(server, app, first_release).await;
        assert_eq!(f, 1, "the forged POST changed nothing");

        // The app page: one web job up; scale web 1→2 and see the second job without reload.
        b.goto(&format!("{base}/apps/{app}")).await.unwrap();
        wait_for(
            "one web job up",
            async || up_web_jobs(&b).await,
            |n| *n == 1,
        )
        .await;
        let input = b.find(Locator::Css("input[name='p.web']")).await.unwrap();
        input.clear().await.unwrap();
        input.send_keys("2").await.unwrap();
        b.find(Locator::Css("#formation button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        // The form's answer is a new page load (at the form's anchor); mark it, then the job
        // must appear in it.
        wait_for(
            "the app page after scaling",
            async || b.current_url().await.unwrap().to_string(),
            |u| u.ends_with("#formation"),
        )
        .await;
        b.execute("window.slipwayMark = 42;", vec![]).await.unwrap();
        let t0 = Instant::now();
        wait_for(
            "two web jobs up",
            async || up_web_jobs(&b).await,
            |n| *n == 2,
        )
        .await;
        let seen = b
            .execute("return window.slipwayMark;", vec![])
            .await
            .unwrap();
        assert_eq!(seen, serde_json::json!(42), "the page was reloaded");
        eprintln!(
            "second web job seen on the page {:?} after the scale form",
            t0.elapsed()
        );
        // The page from its top for the screenshot (the form's answer scrolled to its anchor).
        b.goto(&format!("{base}/apps/{app}")).await.unwrap();
        wait_for(
            "two web jobs up",
            async || up_web_jobs(&b).await,
            |n| *n == 2,
        )
        .await;
        b.execute("window.slipwayMark = 42;", vec![]).await.unwrap();
        // The live tail: a line the app writes now (a one-off job) appears without reload.
        let line = format!("dashboard-live-{}", std::process::id());
        let mut run = server.cmd();
        run.args(["-a", app, "run", "-d", "--", "echo", &line]);
        tokio::task::spawn_blocking(move || crate::support::ok(&mut run))
            .await
            .unwrap();
        wait_for(
            "the live tail",
            async || text(&b, "#log-lines").await,
            |t| t.contains(&line),
        )
        .await;
        let seen = b
            .execute("return window.slipwayMark;", vec![])
            .await
            .unwrap();
        assert_eq!(seen, serde_json::json!(42), "the page was reloaded");
        std::fs::write(shots.join("app.png"), b.screenshot().await.unwrap()).unwrap();

        // An env var set from the page: a new release, deployed, with the var.
        b.find(Locator::Css("#env-set input[name=key]"))
            .await
            .unwrap()
            .send_keys("GREETING")
            .await
            .unwrap();
        b.find(Locator::Css("#env-set input[name=value]"))
            .await
            .unwrap()
            .send_keys("hello")
            .await
            .unwrap();
        b.find(Locator::Css("#env-set button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let c = server.client();
        let rel = wait_for(
            "the env change deployed",
            async || c.current_release(app).await.unwrap().unwrap(),
            |r| r.env.get("GREETING").map(String::as_str) == Some("hello"),
        )
        .await;
        assert_ne!(rel.id, first_release);
        b.goto(&format!("{base}/apps/{app}")).await.unwrap();
        assert_eq!(text(&b, "#current-release").await, rel.id.to_string()[..8]);
        assert!(text(&b, "#env").await.contains("GREETING"));
        assert!(text(&b, "#releases").await.contains("+ env GREETING"));

        // An API error shows next to its form: a bad variable name.
        b.find(Locator::Css("#env-set input[name=key]"))
            .await
            .unwrap()
            .send_keys("BAD NAME")
            .await
            .unwrap();
        b.find(Locator::Css("#env-set button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let e = wait_for(
            "the API's error",
            async || text(&b, "#env .error").await,
            |t| !t.is_empty(),
        )
        .await;
        assert!(e.contains("invalid environment variable name"), "{e}");

        // A route added from the page, listed, then removed from the page.
        b.find(Locator::Css("#route-add input[name=domain]"))
            .await
            .unwrap()
            .send_keys("extra.apps.test")
            .await
            .unwrap();
        b.find(Locator::Css("#route-add button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            "the route listed",
            async || text(&b, "#routes").await,
            |t| t.contains("extra.apps.test/"),
        )
        .await;
        let routes = c.routes(app).await.unwrap();
        assert!(
            routes.iter().any(|r| r.to_string().starts_with("http/")),
            "{routes:?}"
        );
        b.find(Locator::Css(
            "button[aria-label='Remove route extra.apps.test/']",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
        wait_for(
            "the route removed",
            async || text(&b, "#routes").await,
            |t| t.contains("Add HTTP route") && !t.contains("extra.apps.test/"),
        )
        .await;
        let left = c.routes(app).await.unwrap();
        assert!(
            !left.iter().any(
                |r| matches!(r, slipway_types::Route::Http(h) if h.domain == "extra.apps.test")
            ),
            "{left:?}"
        );

        // Roll back to the first release from the page; the page shows it current.
        let button = format!(
            "button[aria-label='Roll back to release {}']",
            &first_release.to_string()[..8]
        );
        b.find(Locator::Css(&button))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            "the rollback deployed",
            async || c.app(app).await.unwrap().release,
            |r| *r == Some(first_release),
        )
        .await;
        b.goto(&format!("{base}/apps/{app}")).await.unwrap();
        assert_eq!(
            text(&b, "#current-release").await,
            first_release.to_string()[..8]
        );

        // The push's build and its log, one click from the app page.
        b.goto(&format!("{base}/apps/{app}")).await.unwrap();
        b.find(Locator::Css("#builds a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            "the build log",
            async || text(&b, "#build-log").await,
            |t| t.contains("Procfile app detected"),
        )
        .await;

        // The cluster page: the host agent, with the app's jobs under it.
        b.goto(&format!("{base}/cluster")).await.unwrap();
        let host = text(&b, "section.host").await;
        let jobs = c.jobs(app).await.unwrap();
        let on = jobs
            .iter()
            .find_map(|j| j.host_id.clone())
            .expect("a placed job");
        assert!(host.contains(&on) && host.contains(app), "{host}");

        // Logging out ends the session: the cookie no longer opens anything.
        b.find(Locator::Css("header button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_for(
            "the login page after logout",
            async || b.current_url().await.unwrap().path().to_string(),
            |p| p.ends_with("/dashboard/login"),
        )
        .await;
        let after = forged_post(server, &format!("/dashboard/apps/{app}/scale"), &cookie);
        assert!(after.starts_with("HTTP/1.1 403"), "{after}");
        b.close().await.unwrap();
    });
}

async fn block_on_formation(server: &TestServer, app: &str, release: slipway_types::Id) -> u32 {
    let f = server.client().formation(app, release).await.unwrap();
    f.processes.get("web").copied().unwrap_or(0)
}
