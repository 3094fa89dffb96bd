//! Network adapters: the Web3Signer REST API over mutual TLS.
//!
//! The accept loop is `TcpListener` → `tokio_rustls::TlsAcceptor` (client certificate mandatory,
//! see `crate::net::tls`) → hyper `serve_connection`; the peer certificate becomes a
//! [`ClientIdentity`] request extension there. Refuses: connections that do not finish the TLS
//! handshake within [`HANDSHAKE_TIMEOUT`], and every connection without a valid client certificate
//! (in the handshake, before any HTTP is read).
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::net::error::ApiError;
use crate::net::tls::{peer_identity, ClientIdentity, TlsFiles};
use crate::service::authz::{Api, Caller};
use crate::service::authz::{ReloadError, Reloadable};
use crate::service::sign::Admission;
use crate::service::{ServiceError, SigningService};

/// A client that has not finished the TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many connections (handshaking or open) at once; further clients wait in the
/// kernel's accept queue, so a flood of idle sockets cannot exhaust file descriptors.
pub const MAX_CONNECTIONS: usize = 2048;
/// An HTTP/1.1 client must send a request's headers within this time (also bounds how long an
/// idle keep-alive connection is held).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 64;
/// On shutdown, requests in flight get this long to finish (their records are already durable;
/// letting them answer avoids a missed duty).
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything served on the mutual-TLS port. Requests whose content-type is
/// `application/grpc…` go to the gRPC API ([`crate::net::grpc::router`]); all others to the REST
/// side: the Web3Signer API, KeyStake's admin routes, `more` (the keymanager API), all behind
/// the keymanager authorization guard.
///
/// Refuses, before anything else of the request is read: a request without a verified client
/// identity (the accept loop attaches one to every mutual-TLS connection, so this guards
/// against serving this router without it), and on gRPC a client the policy does not name —
/// tonic decodes a whole message before its handler runs, so the check must come first.
pub fn app(service: Arc<SigningService>, more: Router) -> Router {
    let rest = crate::net::rest::sign::router(service.clone())
        .merge(crate::net::rest::operator::router(service.clone()))
        .merge(more)
        .layer(axum::middleware::from_fn_with_state(
            service.clone(),
            crate::net::rest::operator::keymanager_guard,
        ));
    let grpc = crate::net::grpc::router(service.clone());
    let dkg = crate::net::grpc::dkg::router(service.store().path().to_owned());
    Router::new().fallback_service(tower::service_fn(
        move |request: http::Request<axum::body::Body>| {
            let (rest, grpc, service) = (rest.clone(), grpc.clone(), service.clone());
            let dkg = dkg.clone();
            async move {
                let grpc_request = is_grpc(request.headers());
                let identity = request.extensions().get::<ClientIdentity>().cloned();
                // DKG peers are authorized by the ceremony's pins (net::grpc::dkg), not by the
                // policy; a peer let in by its pin may call nothing else.
                if grpc_request && request.uri().path().starts_with(DKG_PATH) {
                    return dkg.oneshot(request).await;
                }
                if identity.as_ref().is_some_and(|i| i.pinned_peer) {
                    let refused =
                        ServiceError::Forbidden(keystake_core::policy::Denial::NoIdentity);
                    return Ok(if grpc_request {
                        tonic::Status::from(refused).into_http()
                    } else {
                        ApiError::from(refused).into_response()
                    });
                }
                let Some(identity) = identity else {
                    tracing::warn!("request without a client identity refused");
                    let refused =
                        ServiceError::Forbidden(keystake_core::policy::Denial::NoIdentity);
                    return Ok(if grpc_request {
                        tonic::Status::from(refused).into_http()
                    } else {
                        ApiError::from(refused).into_response()
                    });
                };
                if !grpc_request {
                    return rest.oneshot(request).await;
                }
                let caller = Caller::new(Some(identity), Api::Grpc);
                let path = request.uri().path();
                let admission = if path.ends_with("/Sign") || path.ends_with("/SignBatch") {
                    Admission::Signing {
                        identifier: String::new(),
                    }
                } else {
                    Admission::Operation("grpc")
                };
                if let Err(error) = service.admit(&caller, admission).await {
                    return Ok(tonic::Status::from(error).into_http());
                }
                grpc.oneshot(request).await
            }
        },
    ))
}

/// Path prefix of the `keystake.v1.Dkg` service.
const DKG_PATH: &str = "/keystake.v1.Dkg/";

/// gRPC requests announce themselves with `application/grpc`, `application/grpc+proto`, …
fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A connection ready for HTTP and the verified client identity, or `None`: dropped.
pub type Handshaken<S> = Option<(S, Option<ClientIdentity>)>;

/// How a freshly accepted TCP connection becomes a stream to speak HTTP on.
pub trait Handshake: Send + Sync + 'static {
    type Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    /// Whether HTTP/2 is offered besides HTTP/1.1 (gRPC needs it).
    const HTTP2: bool;
    /// The stream and the verified client identity, or `None` to drop the connection (the
    /// reason is logged here).
    fn handshake(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Handshaken<Self::Stream>> + Send;
}

/// The appliance's port: TLS 1.3 with a mandatory client certificate, configuration taken at
/// each handshake (so a CRL reload applies to the next connection).
pub struct MutualTls(pub Arc<TlsReloader>);

impl Handshake for MutualTls {
    type Stream = tokio_rustls::server::TlsStream<TcpStream>;
    const HTTP2: bool = true;

    async fn handshake(&self, stream: TcpStream, peer: SocketAddr) -> Handshaken<Self::Stream> {
        let acceptor = TlsAcceptor::from(self.0.current());
        let tls_stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(error)) => {
                    tracing::info!(%peer, %error, "TLS handshake refused");
                    return None;
                }
                Err(_) => {
                    tracing::info!(%peer, "TLS handshake timed out");
                    return None;
                }
            };
        let Some(mut identity) = peer_identity(tls_stream.get_ref().1) else {
            // The verifier makes a client certificate mandatory; this is defence in depth.
            tracing::warn!(%peer, "connection without a client identity dropped");
            return None;
        };
        identity.pinned_peer = self.0.accepted_by_pin(&identity);
        tracing::debug!(%peer, client = %identity.display_name(), "client connected");
        Some((tls_stream, Some(identity)))
    }
}

/// Plain HTTP/1.1 (the forwarder, on loopback): no identity.
pub struct PlainHttp;

impl Handshake for PlainHttp {
    type Stream = TcpStream;
    const HTTP2: bool = false;

    async fn handshake(&self, stream: TcpStream, _: SocketAddr) -> Handshaken<Self::Stream> {
        Some((stream, None))
    }
}

/// Serve `app` on `listener` with mutual TLS (configuration from `tls` at each handshake)
/// until `shutdown` resolves.
pub async fn serve_mtls(
    listener: TcpListener,
    tls: Arc<TlsReloader>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve(listener, MutualTls(tls), app, shutdown).await
}

/// The accept loop: accept up to [`MAX_CONNECTIONS`] connections at once, hand each to
/// `handshake` and serve `app` on it, until `shutdown` resolves; then stop accepting and give
/// requests in flight [`DRAIN_TIMEOUT`] to finish.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handshake: H,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let handshake = Arc::new(handshake);
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
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
        let handshake = handshake.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Some((stream, identity)) = handshake.handshake(stream, peer).await {
                serve_connection::<H>(stream, identity, peer, app, watcher).await;
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// The server TLS configuration in force, rebuilt from its files on [`Reloadable::reload`]
/// (SIGHUP, admin call). A reload that fails leaves the previous configuration in force.
pub struct TlsReloader {
    files: Option<TlsFiles>,
    /// DKG certificate pins (`net::pinned`), when this port serves DKG peers.
    pins: Option<Arc<crate::net::pinned::PinSet>>,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsReloader {
    /// Build from files (refusing to start on any error).
    pub fn from_files(files: TlsFiles) -> Result<Self, crate::net::tls::TlsError> {
        Self::from_files_with_pins(files, None)
    }

    /// [`TlsReloader::from_files`], also accepting the DKG peers pinned in `pins`.
    pub fn from_files_with_pins(
        files: TlsFiles,
        pins: Option<Arc<crate::net::pinned::PinSet>>,
    ) -> Result<Self, crate::net::tls::TlsError> {
        let config = crate::net::tls::server_config_with_pins(&files, pins.clone())?;
        Ok(TlsReloader {
            files: Some(files),
            pins,
            current: RwLock::new(config),
        })
    }

    /// Whether this connection's client certificate was accepted by a DKG pin only.
    fn accepted_by_pin(&self, identity: &ClientIdentity) -> bool {
        self.pins
            .as_ref()
            .is_some_and(|pins| pins.accepted_by_pin(&identity.fingerprint_sha256))
    }

    /// A configuration that never changes.
    pub fn fixed(config: Arc<rustls::ServerConfig>) -> Self {
        TlsReloader {
            files: None,
            pins: None,
            current: RwLock::new(config),
        }
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Reloadable for TlsReloader {
    fn reload(&self) -> Result<(), ReloadError> {
        let Some(files) = &self.files else {
            return Ok(());
        };
        let config = crate::net::tls::server_config_with_pins(files, self.pins.clone())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        tracing::info!(crl = ?files.crl, "TLS configuration reloaded");
        Ok(())
    }
}

async fn serve_connection<H: Handshake>(
    stream: H::Stream,
    identity: Option<ClientIdentity>,
    peer: SocketAddr,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let service = app.map_request(move |mut request: http::Request<hyper::body::Incoming>| {
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        request
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if H::HTTP2 {
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_H2_STREAMS)
            .keep_alive_interval(Some(Duration::from_secs(20)))
            .keep_alive_timeout(Duration::from_secs(20));
    } else {
        builder = builder.http1_only();
    }
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    if let Err(error) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

/// The identity of the client that sent a request (set by the accept loop).
pub type Identity = axum::Extension<ClientIdentity>;
