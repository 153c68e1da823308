//! The `pre-receive` hook's side (`slipway git-hook`, run by `git receive-pack` in the app's
//! repo with the environment the receiver set): reads git's `old new ref` lines, posts them to
//! the server with the push's token and quarantine dir, prints the lines the server streams back
//! (git relays them to the pusher as `remote: …`), and exits 0 only if the push deployed.

use super::{HookEvent, HookRequest, RefUpdate};
use futures_util::StreamExt;
use std::io::{BufRead, Write};

/// Runs the hook; returns the process exit code.
pub async fn run() -> i32 {
    match run_inner().await {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            say(&format!("error: {e}"));
            1
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| {
        format!("{name} is not set: this hook runs only inside a push to the Slipway server")
    })
}

/// Parses git's hook input: one `old new ref` line per updated ref.
pub(crate) fn parse_updates(input: impl BufRead) -> Result<Vec<RefUpdate>, String> {
    let mut updates = Vec::new();
    for line in input.lines() {
        let line = line.map_err(|e| format!("cannot read the hook's input: {e}"))?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(old), Some(new), Some(name)) => updates.push(RefUpdate {
                old: old.into(),
                new: new.into(),
                name: name.into(),
            }),
            _ if line.trim().is_empty() => {}
            _ => return Err(format!("unexpected hook input line {line:?}")),
        }
    }
    Ok(updates)
}

async fn run_inner() -> Result<bool, String> {
    let url = env("SLIPWAY_HOOK_URL")?;
    let key = env("SLIPWAY_HOOK_KEY")?;
    let token = env("SLIPWAY_PUSH_TOKEN")?;
    let updates = parse_updates(std::io::stdin().lock())?;
    let req = HookRequest {
        token,
        updates,
        quarantine: std::env::var("GIT_QUARANTINE_PATH").ok(),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("cannot make an HTTP client: {e}"))?;
    let resp = client
        .post(&url)
        .bearer_auth(key)
        .json(&req)
        .send()
        .await
        .map_err(|e| format!("cannot reach the Slipway server at {url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        return Err(format!(
            "the server refused the push ({status}): {}",
            body.trim()
        ));
    }
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    // What was printed, to say a build's own last words once (` !     Unable to select…`).
    let mut printed = std::collections::HashSet::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the connection to the server broke: {e}"))?;
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            match serde_json::from_slice::<HookEvent>(&line) {
                Ok(HookEvent::Line(l)) => {
                    say(&l);
                    printed.insert(l.trim_start_matches([' ', '!']).trim_end().to_string());
                }
                Ok(HookEvent::Ok) => return Ok(true),
                Ok(HookEvent::Error(m)) => {
                    if printed.contains(m.trim()) {
                        say("error: push rejected (the reason is above)");
                    } else {
                        say(&format!("error: {m}"));
                    }
                    return Ok(false);
                }
                Err(e) => return Err(format!("bad line from the server: {e}")),
            }
        }
    }
    Err("the server ended the push without a result".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_git_hook_input() {
        let input = "0000000000000000000000000000000000000000 1111111111111111111111111111111111111111 refs/heads/main\n\n";
        let u = super::parse_updates(input.as_bytes()).unwrap();
        assert_eq!(u.len(), 1);
        assert_eq!(u[0].name, "refs/heads/main");
        assert!(super::parse_updates("garbage\n".as_bytes()).is_err());
    }
}
