//! HTTPS: a listener that hands axum connections once their TLS handshake has finished.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts TCP connections and completes their handshakes side by side, so that one slow or
/// silent client does not hold up the others.
pub(crate) struct TlsListener {
    socket: TcpListener,
    config: watch::Receiver<Arc<rustls::ServerConfig>>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub(crate) fn new(
        socket: TcpListener,
        config: watch::Receiver<Arc<rustls::ServerConfig>>,
    ) -> Self {
        TlsListener {
            socket,
            config,
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Both branches are cancel-safe (a TCP accept, a finished handshake), so axum may drop
    // this future at any point without losing a connection.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.borrow().clone());
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => Some((s, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                                    None
                                }
                                Err(_) => None,
                            }
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and similar: back off instead of spinning.
                        tracing::error!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(ready)) = done {
                        return ready;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.socket.local_addr()
    }
}
