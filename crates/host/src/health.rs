//! Health checks per port (Flynn's model): probe until `threshold` successes in a row mark the
//! port up; if that does not happen within `start_timeout` the port is down (and the job killed
//! with `kill_down`). Once up, probe every `interval`; `threshold` failures in a row mark it
//! down. Every flip is a job event (`up` / `down`).
//!
//! Until the port first passes, the probes come 2 ms apart and back off (doubling) to Flynn's
//! 100 ms: most processes listen within milliseconds of their start, and every deploy waits for
//! this (a fixed 100 ms cost a `git push` 100-200 ms); a slow starter gets the same 100 ms
//! polling as before after ≈0.2 s.

use crate::agent::Agent;
use crate::types::{CheckKind, HealthCheck};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Flynn's check timeout and start interval.
const TIMEOUT: Duration = Duration::from_secs(2);
const START_INTERVAL: Duration = Duration::from_millis(100);
/// The first pause while a port has not passed yet; doubled after each probe up to
/// [`START_INTERVAL`].
const FIRST_START_PAUSE: Duration = Duration::from_millis(2);

/// One probe. `Err` says why it failed, in words.
pub(crate) async fn probe(addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let fut = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        if check.kind == CheckKind::Tcp {
            return Ok(());
        }
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: slipway-health\r\n\r\n",
            check.path
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 256];
        let mut n = 0;
        while n < 12 {
            let k = s.read(&mut buf[n..]).await.map_err(|e| e.to_string())?;
            if k == 0 {
                break;
            }
            n += k;
        }
        let head = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status from {addr}"))?;
        let ok = match check.status {
            Some(want) => code == want,
            None => (200..400).contains(&code),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("GET {} answered {code}", check.path))
        }
    };
    tokio::time::timeout(TIMEOUT, fut)
        .await
        .map_err(|_| format!("no answer from {addr} within {TIMEOUT:?}"))?
}

pub(crate) async fn run(agent: Agent, id: String, index: usize, addr: SocketAddr, c: HealthCheck) {
    let started = Instant::now();
    let start_timeout = Duration::from_millis(c.start_timeout_ms);
    let interval = Duration::from_millis(c.interval_ms.max(10));
    let threshold = c.threshold.max(1);
    let (mut up, mut oks, mut fails, mut reported_down) = (false, 0u32, 0u32, false);
    let mut start_pause = FIRST_START_PAUSE;
    loop {
        if agent.is_terminal(&id) {
            return;
        }
        let res = probe(addr, &c).await;
        if agent.is_terminal(&id) {
            return;
        }
        match res {
            Ok(()) => {
                oks += 1;
                fails = 0;
                if !up && oks >= threshold {
                    up = true;
                    reported_down = false;
                    agent.check_result(&id, index, true, None);
                }
            }
            Err(e) => {
                oks = 0;
                fails += 1;
                if up && fails >= threshold {
                    up = false;
                    let why = format!("health check on port {} failed: {e}", addr.port());
                    agent.check_result(&id, index, false, Some(why.clone()));
                    if c.kill_down {
                        agent.kill_down(&id, why).await;
                        return;
                    }
                } else if !up && !reported_down && started.elapsed() >= start_timeout {
                    reported_down = true;
                    let why = format!(
                        "health check on port {} did not pass within {:?} ({e})",
                        addr.port(),
                        start_timeout
                    );
                    agent.check_result(&id, index, false, Some(why.clone()));
                    if c.kill_down {
                        agent.kill_down(&id, why).await;
                        return;
                    }
                }
            }
        }
        let pause = if up || reported_down {
            interval
        } else {
            let p = start_pause;
            start_pause = (start_pause * 2).min(START_INTERVAL);
            p
        };
        tokio::time::sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_probe_checks_status() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 512];
                let n = s.read(&mut b).await.unwrap();
                let req = String::from_utf8_lossy(&b[..n]).to_string();
                let code = if req.starts_with("GET /ok ") {
                    200
                } else {
                    503
                };
                let _ = s
                    .write_all(format!("HTTP/1.0 {code} X\r\n\r\n").as_bytes())
                    .await;
            }
        });
        assert!(probe(addr, &HealthCheck::http("/ok")).await.is_ok());
        let err = probe(addr, &HealthCheck::http("/bad")).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
        assert!(probe(addr, &HealthCheck::tcp()).await.is_ok());
        let closed: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(probe(closed, &HealthCheck::tcp()).await.is_err());
    }
}
