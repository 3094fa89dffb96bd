//! Network adapters: the Web3Signer REST API over mutual TLS.
//!
//! The accept loop is `TcpListener` → `tokio_rustls::TlsAcceptor` (client certificate mandatory,
//! see `crate::tls`) → hyper `serve_connection`; the peer certificate becomes a
//! [`ClientIdentity`] request extension there. Refuses: connections that do not finish the TLS
//! handshake within [`HANDSHAKE_TIMEOUT`], and every connection without a valid client certificate
//! (in the handshake, before any HTTP is read).
#![forbid(unsafe_code)]

pub mod admin;
pub mod error;
pub mod keymanager;
pub mod rest;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::tls::{peer_identity, ClientIdentity};

/// A client that has not finished the TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` with mutual TLS until `shutdown` resolves.
pub async fn serve_mtls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move { serve_connection(acceptor, stream, peer, app).await });
    }
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
) {
    let tls_stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let Some(identity) = peer_identity(tls_stream.get_ref().1) else {
        // The verifier makes a client certificate mandatory; this is defence in depth.
        tracing::warn!(%peer, "connection without a client identity dropped");
        return;
    };
    tracing::debug!(%peer, client = %identity.display_name(), "client connected");
    let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(identity.clone());
        request
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection(TokioIo::new(tls_stream), TowerToHyperService::new(service))
        .await
    {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// The identity of the client that sent a request (set by the accept loop).
pub type Identity = axum::Extension<ClientIdentity>;
