//! A TCP proxy between a worker and PostgreSQL that can cut the network: pass traffic, drop
//! every connection (and refuse new ones), or stall (accept, keep connections open, forward
//! nothing), then heal. A stall is the nasty case: nothing fails, queries just never answer.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward both ways.
    Pass,
    /// Close every connection; accept new ones only to close them at once.
    Drop,
    /// Forward nothing, close nothing (a black hole that heals).
    Stall,
}

/// A running proxy; dropping it stops accepting (open connections end with their peers).
pub struct Proxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, watching) = watch::channel(Mode::Pass);
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let watching = watching.clone();
                if *watching.borrow() == Mode::Drop {
                    continue; // dropped: the client sees its connection closed
                }
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        forward(client, server, watching).await;
                    }
                });
            }
        });
        Ok(Self { addr, mode, accept })
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `url` with its host and port replaced by the proxy's.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme_user, rest) = url.split_once('@').unwrap_or(("postgres://", url));
        let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
        format!("{scheme_user}@{}/{path}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.set(Mode::Drop);
        self.accept.abort();
    }
}

/// Pumps both directions until either side closes or the mode becomes [`Mode::Drop`].
async fn forward(client: TcpStream, server: TcpStream, mode: watch::Receiver<Mode>) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::select! {
        () = pump(cr, sw, mode.clone()) => {}
        () = pump(sr, cw, mode) => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // Hold still while stalled; leave on drop.
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Pass => break,
                Mode::Drop => return,
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just as a stall began are held until it heals, like a real partition.
        loop {
            let now = *mode.borrow_and_update();
            match now {
                Mode::Pass => break,
                Mode::Drop => return,
                Mode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, ms: u64) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(ms), s.read_exact(&mut buf))
                .await;
        match read {
            Ok(Ok(_)) => Some(buf.to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn stall_holds_bytes_until_healed_and_drop_closes() {
        let proxy = Proxy::start(echo_server().await).await.expect("proxy");
        let mut s = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut s, 2000).await.as_deref(),
            Some(&b"ping"[..])
        );

        proxy.set(Mode::Stall);
        assert_eq!(
            round_trip(&mut s, 300).await,
            None,
            "a stall forwards nothing"
        );
        proxy.set(Mode::Pass);
        let mut held = [0u8; 4];
        tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut held))
            .await
            .expect("the held bytes arrive after healing")
            .expect("read");
        assert_eq!(&held, b"ping");

        proxy.set(Mode::Drop);
        let mut rest = [0u8; 1];
        let closed =
            tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut fresh = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut fresh, 300).await,
            None,
            "new connections are dropped"
        );
        proxy.set(Mode::Pass);
        let mut healed = TcpStream::connect(proxy.addr).await.expect("connect");
        assert_eq!(
            round_trip(&mut healed, 2000).await.as_deref(),
            Some(&b"ping"[..])
        );
    }
}
