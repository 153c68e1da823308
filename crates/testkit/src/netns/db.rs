//! Reaching the test run's PostgreSQL from the hosts of a [`super::NetnsLan`]: it listens on
//! 127.0.0.1, which no host's netns reaches. [`TcpForwarder`] on the LAN's gateway (cut off with
//! a host's cable, like a database on another machine) or its Unix socket ([`unix_socket_url`]:
//! the mount namespace is shared, so every host reaches it, whatever happens to the LAN).

use std::io;
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::Duration;

/// `url` (a `postgres://` URL on TCP) made to connect through the server's Unix socket instead
/// (`?host=/dir&port=…` stays on `localhost:PORT` for sqlx's socket file name), which every
/// host of a LAN reaches: the mount namespace is shared, the loopback address is not.
pub async fn unix_socket_url(url: &str) -> Result<String, String> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .map_err(|e| format!("connect to {url}: {e}"))?;
    let show = |row: sqlx::any::AnyRow| row.try_get::<String, _>(0).map_err(|e| e.to_string());
    let dirs = show(
        sqlx::query("SHOW unix_socket_directories")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?,
    )?;
    let port = show(
        sqlx::query("SHOW port")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| e.to_string())?,
    )?;
    let socket_dir = dirs
        .split(',')
        .map(str::trim)
        .find(|d| d.starts_with('/'))
        .ok_or_else(|| format!("PostgreSQL at {url} has no Unix socket directory ({dirs:?})"))?;
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a URL: {url}"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, "postgres"));
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    let (db, query) = path.split_once('?').unwrap_or((path, ""));
    let sep = if query.is_empty() { "" } else { "&" };
    Ok(format!(
        "postgres://{user}localhost:{port}/{db}?{query}{sep}host={socket_dir}"
    ))
}

/// A TCP forwarder in the root netns: what connects to [`TcpForwarder::addr`] (e.g. the LAN's
/// gateway address, which every host reaches) is joined to `target` (e.g. PostgreSQL on
/// 127.0.0.1, which no host reaches). Unlike [`unix_socket_url`], a host whose cable is pulled
/// ([`NetnsLan::cut_link`]) loses it, as it would lose a database on another machine. Two
/// threads per connection; on drop it stops accepting and shuts every connection down.
pub struct TcpForwarder {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<Mutex<Vec<Conn>>>,
}

/// A forwarded connection: both sockets, and how many of its two directions are done.
struct Conn {
    done: std::sync::Arc<std::sync::atomic::AtomicU8>,
    sockets: [std::net::TcpStream; 2],
}

impl TcpForwarder {
    /// Listens on `listen_ip` (a free port) and forwards to `target`.
    pub fn start(listen_ip: Ipv4Addr, target: std::net::SocketAddr) -> io::Result<TcpForwarder> {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
        let listener = std::net::TcpListener::bind((listen_ip, 0))?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let (stop2, conns2) = (stop.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) =
                    std::net::TcpStream::connect_timeout(&target, Duration::from_secs(5))
                else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let done = Arc::new(AtomicU8::new(0));
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let done = done.clone();
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                        let _ = from.shutdown(std::net::Shutdown::Read);
                        done.fetch_add(1, Ordering::SeqCst);
                    });
                }
                let mut kept = conns2.lock().unwrap();
                // Finished connections are let go (their sockets closed) as new ones come.
                kept.retain(|c| c.done.load(Ordering::SeqCst) < 2);
                kept.push(Conn {
                    done,
                    sockets: [client, server],
                });
            }
        });
        Ok(TcpForwarder { addr, stop, conns })
    }

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for TcpForwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes the accept loop, which sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        for c in self.conns.lock().unwrap().drain(..) {
            for s in &c.sockets {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// `url` with its `host:port` replaced by `addr` (a `scheme://user@host:port/db?query` URL).
pub fn url_with_addr(url: &str, addr: std::net::SocketAddr) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("not a URL: {url}"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let user = authority
        .rsplit_once('@')
        .map(|(u, _)| format!("{u}@"))
        .unwrap_or_default();
    Ok(format!("{scheme}://{user}{addr}{tail}"))
}

/// The `IP:PORT` of a `postgres://…@IP:PORT/…` URL (where a [`TcpForwarder`] forwards to).
pub fn url_addr(url: &str) -> Result<std::net::SocketAddr, String> {
    let rest = url
        .split_once("://")
        .map(|(_, r)| r)
        .ok_or_else(|| format!("not a URL: {url}"))?;
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hostport = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:5432")
    };
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .map_err(|e| format!("{hostport} in {url}: {e}"))
}
