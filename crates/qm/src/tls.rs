//! HTTPS for `qm serve`: the rustls server config (ring provider, HTTP/1.1 over ALPN) built from
//! the PEM files of `--tls-cert` and `--tls-key`, and [`TlsListener`], an axum listener that
//! accepts TCP connections and hands axum only those whose TLS handshake finished, so the daemon
//! serves HTTPS through the same `axum::serve(..).with_graceful_shutdown(..)` as plain HTTP.
//! Handshakes run on their own tasks: a slow or broken client holds up no one else.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A client has this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for axum to take them.
const BACKLOG: usize = 64;

/// The server config for the certificate chain in `cert` and the private key in `key` (PEM);
/// every error names the flag and the path.
pub(crate) fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert_pem = std::fs::read(cert)
        .with_context(|| format!("--tls-cert {}: cannot read it", cert.display()))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("--tls-cert {}: not a PEM certificate: {e}", cert.display()))?;
    if chain.is_empty() {
        bail!("--tls-cert {}: no CERTIFICATE block in it", cert.display());
    }
    let key_pem = std::fs::read(key)
        .with_context(|| format!("--tls-key {}: cannot read it", key.display()))?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| anyhow!("--tls-key {}: no PEM private key in it: {e}", key.display()))?;
    let provider = Arc::new(ring_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS: the ring provider supports no protocol version")?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            anyhow!(
                "--tls-cert {} with --tls-key {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// rustls's *ring* provider. rustls 0.23.48 deprecated it for lacking post-quantum key
/// exchange; its replacement, aws-lc-rs, needs cmake and a C build, which this project avoids
/// (ureq's client side uses *ring* too).
#[expect(deprecated, reason = "ring, not aws-lc-rs: see above")]
fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A TCP listener whose connections come out TLS-wrapped; dropping it stops the accepting.
#[derive(Debug)]
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` (on the current tokio runtime).
    pub(crate) fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = tx.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let (stream, peer) = match accepted {
                    Ok(c) => c,
                    Err(error) if is_connection_error(&error) => continue,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, as axum's own
                        // listener does.
                        tracing::warn!(%error, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

/// An error of one connection (the peer gave up before it was accepted), not of the listener.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task holds a sender for as long as this receiver lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
