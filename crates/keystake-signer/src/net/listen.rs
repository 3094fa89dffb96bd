//! Network adapters: the Web3Signer REST API over mutual TLS.
//!
//! The accept loop is `TcpListener` → `tokio_rustls::TlsAcceptor` (client certificate mandatory,
//! see `crate::net::tls`) → hyper `serve_connection`; the peer certificate becomes a
//! [`ClientIdentity`] request extension there. The HTTP version comes from ALPN (`h2`, else
//! HTTP/1.1), so nothing is read from a client before HTTP's own timeouts apply.
//!
//! Refuses: more than [`MAX_HANDSHAKES_PER_IP`] unauthenticated handshakes at once from one
//! source address (the surplus is closed at once), connections that do not finish the TLS
//! handshake within [`HANDSHAKE_TIMEOUT`], every connection without a valid client certificate
//! (in the handshake, before any HTTP is read), every request of a client the policy does not
//! name or names with no grant (right after its headers, before any body), gRPC calls that do
//! not finish within [`GRPC_REQUEST_TIMEOUT`], and connections idle (no request in flight) for
//! [`IDLE_TIMEOUT`].
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
/// At most this many TLS handshakes (not yet authenticated) at once from one source address,
/// an eighth of [`MAX_CONNECTIONS`]: a flood of stalled handshakes from one host cannot occupy
/// more than that many connection slots, while a validator host opening a burst of fresh
/// connections (a load balancer, a middleware restarting) stays far below it.
pub const MAX_HANDSHAKES_PER_IP: usize = MAX_CONNECTIONS / 8;
/// A connection with no request in flight for this long is closed (HTTP/2 keep-alive pings do
/// not count as activity; HTTP/1.1 is also bounded by [`HEADER_READ_TIMEOUT`]).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A gRPC call (reading its message, deciding, signing, answering) must finish within this;
/// REST bodies have their own read timeout (`crate::net::rest::body`).
pub const GRPC_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
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
                let identity = request.extensions().get::<Arc<ClientIdentity>>().cloned();
                // DKG peers need both: the policy's `dkg` grant for their certificate (here,
                // the one authorization path) and a pin by a ceremony of this appliance
                // (net::grpc::dkg). A peer let in by its pin may call nothing else.
                if grpc_request && request.uri().path().starts_with(DKG_PATH) {
                    let caller = Caller::new(identity, Api::Grpc);
                    if let Err(refused) = service
                        .authorize(
                            &caller,
                            &keystake_core::policy::Target::None,
                            keystake_core::policy::Operation::Dkg,
                        )
                        .await
                    {
                        return Ok(tonic::Status::from(refused).into_http());
                    }
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
                    // Every REST route, bodies or not: an unnamed or ungranted client is refused
                    // on its headers (recorded as what the route is).
                    let caller = Caller::new(Some(identity), Api::Rest);
                    if let Err(error) = service
                        .admit(&caller, rest_admission(request.uri().path()))
                        .await
                    {
                        return Ok(ApiError::from(error).into_response());
                    }
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
                // tonic reads the message without a deadline of its own: bound the whole call.
                match tokio::time::timeout(GRPC_REQUEST_TIMEOUT, grpc.oneshot(request)).await {
                    Ok(answer) => answer,
                    Err(_) => Ok(tonic::Status::deadline_exceeded(format!(
                        "the call did not finish within {GRPC_REQUEST_TIMEOUT:?}"
                    ))
                    .into_http()),
                }
            }
        },
    ))
}

/// Path prefix of the `keystake.v1.Dkg` service.
const DKG_PATH: &str = "/keystake.v1.Dkg/";

/// What a REST request is, for the record of an admission refusal (the same names the body
/// extractor of `crate::net::rest::body` uses).
fn rest_admission(path: &str) -> Admission {
    if let Some(identifier) = path.strip_prefix("/api/v1/eth2/sign/") {
        Admission::Signing {
            identifier: identifier.to_owned(),
        }
    } else if path.starts_with("/api/v1/eth2/slashable/") {
        Admission::Operation("slashing_dry_run")
    } else if path.starts_with(crate::net::rest::operator::KEYMANAGER_PREFIX) {
        Admission::Operation("keymanager")
    } else if path.starts_with("/keystake/v1/admin/") || path == "/reload" {
        Admission::Operation("operator")
    } else {
        Admission::Operation("rest")
    }
}

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
    /// Whether this connection speaks HTTP/2 (negotiated by ALPN), so that the version need
    /// not be sniffed from the client's first bytes (a read without a timeout).
    fn negotiated_h2(_stream: &Self::Stream) -> bool {
        false
    }
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

    fn negotiated_h2(stream: &Self::Stream) -> bool {
        stream.get_ref().1.alpn_protocol() == Some(crate::net::tls::ALPN_H2)
    }

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
    let handshaking = Arc::new(HandshakesPerIp::default());
    let (stop, stopping) = tokio::sync::watch::channel(false);
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
        let Some(handshake_slot) = handshaking.enter(peer.ip()) else {
            tracing::info!(%peer, "too many handshakes at once from this address; connection closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let handshake = handshake.clone();
        let app = app.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let handshaken = handshake.handshake(stream, peer).await;
            drop(handshake_slot);
            if let Some((stream, identity)) = handshaken {
                serve_connection::<H>(stream, identity, peer, app, stopping).await;
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting connections; draining requests in flight");
    let _ = stop.send(true);
    // Every connection holds a permit until it ends: all of them back means all drained.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// Unauthenticated handshakes in progress per source address ([`MAX_HANDSHAKES_PER_IP`]).
#[derive(Default)]
struct HandshakesPerIp(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One handshake's place in [`HandshakesPerIp`], given back on drop.
struct HandshakeSlot {
    table: Arc<HandshakesPerIp>,
    ip: std::net::IpAddr,
}

impl HandshakesPerIp {
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<HandshakeSlot> {
        let mut table = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = table.entry(ip).or_insert(0);
        if *count >= MAX_HANDSHAKES_PER_IP {
            return None;
        }
        *count += 1;
        Some(HandshakeSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut table = self.table.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = table.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                table.remove(&self.ip);
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended (idle detection).
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    last_end: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn idle_for(&self) -> Duration {
        if self.in_flight.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.last_end
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }
}

/// Marks one request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_end.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
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
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity {
        in_flight: std::sync::atomic::AtomicUsize::new(0),
        last_end: std::sync::Mutex::new(tokio::time::Instant::now()),
    });
    let tracked = activity.clone();
    // One identity per connection, shared by its requests (a clone per request copied its names).
    let identity = identity.map(Arc::new);
    let service = tower::service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        let in_flight = InFlight::start(&tracked);
        let app = app.clone();
        async move {
            let answer = app.oneshot(request).await;
            drop(in_flight);
            answer
        }
    });
    let h2 = H::HTTP2 && H::negotiated_h2(&stream);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_H2_STREAMS)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    // The version is fixed here (ALPN), never sniffed: hyper-util's sniff reads the client's
    // first bytes with no timeout at all.
    let builder = if h2 {
        builder.http2_only()
    } else {
        builder.http1_only()
    };
    let connection =
        builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut closing = false;
    let mut idle_check = tokio::time::interval(IDLE_TIMEOUT / 4);
    loop {
        tokio::select! {
            ended = connection.as_mut() => {
                if let Err(error) = ended {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            _ = stopping.changed(), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = idle_check.tick(), if !closing => {
                if activity.idle_for() >= IDLE_TIMEOUT {
                    tracing::debug!(%peer, "idle connection closed");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
