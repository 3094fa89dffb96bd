//! `keystake-signer connect`: a loopback forwarder for validator clients that cannot present a
//! client certificate (Lodestar). It runs on the validator-client host, accepts plain HTTP/1.1 on a
//! loopback address, and sends each request on to the appliance over mutual TLS with this host's
//! client certificate, reusing pooled upstream connections ([`crate::net::client::MtlsClient`]).
//!
//! Why this rather than a plain listener on the appliance: the appliance keeps one door, mutual
//! TLS, so the certificate (and its revocation) still decides who may ask for signatures, and the
//! traffic crossing the network stays encrypted and authenticated. The plain-HTTP hop never leaves
//! the validator-client host, where whoever can reach loopback can already read the client's own
//! files. See `docs/security.md` ("Forwarder").
//!
//! It refuses: listen addresses that are not loopback (unless explicitly forced, with a loud
//! warning); request bodies over [`MAX_FORWARD_BODY`] (413); header values that are not visible
//! ASCII (400). Upstream failures become JSON errors, one log line each saying which: appliance
//! unreachable (503), appliance refused our client certificate (502), appliance certificate not
//! trusted by us (502), broken upstream exchange (502), no answer in time (504) — statuses set in
//! the forwarder's own mapping (`error.rs`). Hop-by-hop headers (`Connection` and those it names, `Keep-Alive`,
//! `Transfer-Encoding`, …) are not forwarded either way; the client's `Connection: close` is
//! honoured on the client side (the answer carries it and the socket is closed) while the
//! upstream connection stays pooled.
#![forbid(unsafe_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub mod cluster;
mod error;
pub mod threshold;

use axum::body::Body;
use axum::response::IntoResponse;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use tokio::net::TcpListener;

pub use self::error::{forward_status, ApplianceReport, ForwardError, NotCombined};
use crate::net::client::{ClientError, FailureKind, MtlsClient};
use crate::net::tls::{self, TlsError};

/// Largest request body forwarded (a keymanager import of many keystores fits).
pub const MAX_FORWARD_BODY: usize = 8 * 1024 * 1024;
/// Default bound on one upstream exchange, connection set-up included (well inside a 12 s slot).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1), plus `Host` and
/// `Content-Length`, which the next hop sets itself.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// What `connect` is given on the command line.
#[derive(Clone, Debug)]
pub struct ForwarderOptions {
    pub listen: SocketAddr,
    /// `https://APPLIANCE:PORT`
    pub upstream: String,
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub allow_non_loopback: bool,
    pub timeout: Duration,
}

/// Why the forwarder cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error(
        "refusing to listen on {0}: the forwarder accepts plain HTTP and must only be reachable \
         from this host; use a loopback address (127.0.0.1 or ::1), or pass --allow-non-loopback \
         if you really mean to expose unauthenticated signing to the network"
    )]
    NonLoopback(SocketAddr),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("invalid upstream: {0}")]
    Upstream(ClientError),
    #[error("cluster file refused: {0}")]
    Cluster(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        source: std::io::Error,
    },
}

/// Whether a listen address is loopback, or non-loopback and explicitly allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exposure {
    Loopback,
    NonLoopbackForced,
}

/// Pure check of a listen address. IPv4-mapped IPv6 loopback (`::ffff:127.0.0.1`) counts as
/// loopback; the unspecified addresses (`0.0.0.0`, `::`) do not.
pub fn check_listen_address(
    address: SocketAddr,
    allow_non_loopback: bool,
) -> Result<Exposure, ForwarderError> {
    if address.ip().to_canonical().is_loopback() {
        Ok(Exposure::Loopback)
    } else if allow_non_loopback {
        Ok(Exposure::NonLoopbackForced)
    } else {
        Err(ForwarderError::NonLoopback(address))
    }
}

/// Refuse what a web page (or a DNS-rebinding attack) can send to a loopback port but a validator
/// client never does: any `Origin` header (browsers add it to cross-origin and POST requests), and
/// a `Host` that is not a loopback name or address (a rebinding page reaches 127.0.0.1 under its
/// own host name). A forced non-loopback listener also accepts its own address as the host. A
/// request without `Host` (HTTP/1.0) cannot come from a browser and passes.
pub fn check_browser_headers(headers: &HeaderMap, listen: SocketAddr) -> Result<(), ForwardError> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = String::from_utf8_lossy(origin.as_bytes());
        let origin: String = origin.chars().take(100).collect();
        return Err(ForwardError::Forbidden(format!(
            "a request with an Origin header ({origin:?}) comes from a web page; validator              clients send none"
        )));
    }
    for host in headers.get_all(header::HOST) {
        let text = host.to_str().unwrap_or("");
        if !is_local_host(text, listen) {
            let shown: String = String::from_utf8_lossy(host.as_bytes())
                .chars()
                .take(100)
                .collect();
            return Err(ForwardError::Forbidden(format!(
                "Host {shown:?} is not a loopback name or address (DNS rebinding?); use                  127.0.0.1, [::1] or localhost"
            )));
        }
    }
    Ok(())
}

/// `host[:port]` names loopback (`localhost`, 127.0.0.0/8, `[::1]`) or the listen address itself.
fn is_local_host(text: &str, listen: SocketAddr) -> bool {
    let host = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, after)) if after.is_empty() || after.starts_with(':') => inside,
            _ => return false,
        },
        None => text.rsplit_once(':').map_or(text, |(host, _port)| host),
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback() || ip == listen.ip(),
        Err(_) => false,
    }
}

/// The loud warning of a forced non-loopback listener (stderr and log).
pub(crate) fn warn_non_loopback(address: SocketAddr) {
    let warning = format!(
        "WARNING: the forwarder listens on {address}, which is NOT a loopback address. Anyone \
         who can reach it can have the appliances sign with this host's client certificate, \
         without any authentication. Restrict it with a firewall or use 127.0.0.1."
    );
    eprintln!("{warning}");
    tracing::warn!("{warning}");
}

/// The headers of `headers` that may cross this hop, as text (values must be visible ASCII).
pub fn end_to_end_headers(headers: &HeaderMap) -> Result<Vec<(String, String)>, ForwardError> {
    let named_in_connection: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect();
    let mut out = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let lower = name.as_str();
        if HOP_BY_HOP.contains(&lower)
            || name == header::CONTENT_LENGTH
            || named_in_connection.iter().any(|n| n == lower)
        {
            continue;
        }
        let text = value.to_str().map_err(|_| {
            ForwardError::BadRequest(format!("header {lower:?} is not visible ASCII"))
        })?;
        out.push((lower.to_owned(), text.to_owned()));
    }
    Ok(out)
}

/// Forwards requests to one appliance.
pub struct Forwarder {
    client: MtlsClient,
    upstream: String,
    /// The address listened on, for the Host check.
    listen: SocketAddr,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// Load the client identity and CA and prepare the pooled upstream client.
    pub fn new(options: &ForwarderOptions) -> Result<Self, ForwarderError> {
        let tls = tls::client_config(&options.ca, &options.client_cert, &options.client_key)?;
        let upstream = options.upstream.trim_end_matches('/').to_owned();
        let client = MtlsClient::new(tls, &upstream)
            .map_err(ForwarderError::Upstream)?
            .with_timeout(options.timeout);
        Ok(Forwarder {
            client,
            upstream,
            listen: options.listen,
        })
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The forward error for a failed upstream request. A failure without a clear cause (the
    /// pooled connection closed before answering) is diagnosed on a fresh connection, so a
    /// refused certificate or a dead appliance is named as such.
    async fn explain(&self, error: ClientError) -> ForwardError {
        let unclear = error.failure_kind() == Some(FailureKind::Other);
        let first_failure = error.to_string();
        let forward_error = ForwardError::from_client(&self.upstream, error);
        if !unclear {
            return forward_error;
        }
        let detail = format!("{first_failure}; a fresh connection showed why");
        let upstream = self.upstream.clone();
        match self.client.diagnose().await {
            Some(FailureKind::Connect) => ForwardError::Unreachable { upstream, detail },
            Some(FailureKind::ClientCertificateRefused) => {
                ForwardError::CertificateRefused { upstream, detail }
            }
            Some(FailureKind::ServerCertificateRejected) => {
                ForwardError::ServerCertificateRejected { upstream, detail }
            }
            Some(FailureKind::Other) | None => forward_error,
        }
    }

    /// `GET /upcheck` upstream: tells at start-up whether the appliance is reachable and accepts
    /// our certificate.
    pub async fn probe(&self) -> Result<(), ForwardError> {
        let response = match self
            .client
            .request(http::Method::GET, "/upcheck", &[], None)
            .await
        {
            Ok(response) => response,
            Err(error) => return Err(self.explain(error).await),
        };
        if response.status == 200 {
            Ok(())
        } else {
            Err(ForwardError::Broken {
                upstream: self.upstream.clone(),
                detail: format!("/upcheck answered {}", response.status),
            })
        }
    }

    /// Forward one request and return the appliance's answer (status, end-to-end headers, body).
    pub async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, ForwardError> {
        check_browser_headers(request.headers(), self.listen)?;
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        let headers = end_to_end_headers(&parts.headers)?;
        let body = Limited::new(body, MAX_FORWARD_BODY)
            .collect()
            .await
            .map_err(|err| {
                if err.is::<http_body_util::LengthLimitError>() {
                    ForwardError::BodyTooLarge {
                        limit: MAX_FORWARD_BODY,
                    }
                } else {
                    ForwardError::BadRequest(format!("reading the request body: {err}"))
                }
            })?
            .to_bytes();
        let header_refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let body = (!body.is_empty()).then(|| body.to_vec());
        let answer = match self
            .client
            .request(parts.method.clone(), &path, &header_refs, body)
            .await
        {
            Ok(answer) => answer,
            Err(error) => return Err(self.explain(error).await),
        };
        let mut response = Response::new(Body::from(answer.body));
        *response.status_mut() =
            http::StatusCode::from_u16(answer.status).map_err(|_| ForwardError::Broken {
                upstream: self.upstream.clone(),
                detail: format!("invalid status {}", answer.status),
            })?;
        copy_end_to_end(&answer.headers, response.headers_mut());
        Ok(response)
    }

    /// [`Self::forward`], with failures turned into JSON error answers and logged once.
    pub async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        match self.forward(request).await {
            Ok(response) => response,
            Err(error) => {
                if error.is_upstream() {
                    tracing::warn!(cause = error.cause(), %method, %path, %error, "request not forwarded");
                } else {
                    tracing::debug!(cause = error.cause(), %method, %path, %error, "request not forwarded");
                }
                error.into_response()
            }
        }
    }
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named_in_connection: Vec<HeaderName> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for (name, value) in from {
        if HOP_BY_HOP.contains(&name.as_str())
            || name == header::CONTENT_LENGTH
            || named_in_connection.contains(name)
        {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

/// Bind `listen` after `check_listen_address` allowed it as `exposure`; a forced non-loopback
/// listener is announced loudly here, so both forwarders warn the same way.
pub(crate) async fn bind(
    listen: SocketAddr,
    exposure: Exposure,
) -> Result<(TcpListener, SocketAddr), ForwarderError> {
    let bind_error = |source| ForwarderError::Bind {
        address: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    if exposure == Exposure::NonLoopbackForced {
        warn_non_loopback(address);
    }
    Ok((listener, address))
}

/// Serve plain HTTP/1.1 on `listener` through the one accept loop (`crate::net::listen`), every
/// request answered by `handle`, until `shutdown` resolves. Both forwarders serve through here.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    handle: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let app = axum::Router::new().fallback(move |request: Request<Body>| handle(request));
    crate::net::listen::serve(listener, crate::net::listen::PlainHttp, app, shutdown).await
}

/// `connect`: check the listen address, load the identity, bind, probe the appliance once (a
/// failure is logged, not fatal: the appliance may start later), then forward until `shutdown`.
/// Prints `forwarding on http://ADDR to UPSTREAM` on stdout once listening.
pub async fn run(
    options: &ForwarderOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwarderError> {
    let exposure = check_listen_address(options.listen, options.allow_non_loopback)?;
    let mut forwarder = Forwarder::new(options)?;
    let (listener, address) = bind(options.listen, exposure).await?;
    forwarder.listen = address;
    let forwarder = Arc::new(forwarder);
    tracing::info!(%address, upstream = forwarder.upstream(), "forwarding plain HTTP to the appliance over mutual TLS");
    match forwarder.probe().await {
        Ok(()) => tracing::info!(upstream = forwarder.upstream(), "appliance reachable"),
        Err(error) => {
            tracing::warn!(cause = error.cause(), %error, "appliance check failed; forwarding anyway")
        }
    }
    println!("forwarding on http://{address} to {}", forwarder.upstream());
    let handle = move |request| {
        let forwarder = forwarder.clone();
        async move { forwarder.handle(request).await }
    };
    serve(listener, handle, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_unless_forced() {
        let check = |text: &str, forced| check_listen_address(text.parse().unwrap(), forced);
        for ok in [
            "127.0.0.1:9000",
            "127.8.9.10:1",
            "[::1]:9000",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(check(ok, false).unwrap(), Exposure::Loopback, "{ok}");
        }
        for bad in [
            "0.0.0.0:9000",
            "[::]:9000",
            "192.0.2.1:9000",
            "[2001:db8::1]:1",
        ] {
            let error = check(bad, false).unwrap_err();
            assert!(
                error.to_string().contains("--allow-non-loopback"),
                "{bad}: {error}"
            );
            assert_eq!(check(bad, true).unwrap(), Exposure::NonLoopbackForced);
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_behind() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "close, x-private".parse().unwrap());
        headers.insert("x-private", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("host", "127.0.0.1:1".parse().unwrap());
        headers.insert("content-length", "3".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("accept", "*/*".parse().unwrap());
        let mut kept = end_to_end_headers(&headers).unwrap();
        kept.sort();
        assert_eq!(
            kept,
            vec![
                ("accept".to_owned(), "*/*".to_owned()),
                ("content-type".to_owned(), "application/json".to_owned()),
            ]
        );
        let mut response = HeaderMap::new();
        copy_end_to_end(&headers, &mut response);
        assert_eq!(response.len(), 2);
        assert!(response.contains_key("accept") && response.contains_key("content-type"));
    }

    #[test]
    fn web_pages_and_rebinding_hosts_are_refused() {
        let listen: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let with = |name: &'static str, value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(name, value.parse().unwrap());
            check_browser_headers(&headers, listen)
        };
        for ok in [
            "127.0.0.1:9000",
            "127.0.0.1",
            "localhost:9000",
            "LOCALHOST",
            "[::1]:9000",
            "127.1.2.3:1",
        ] {
            assert!(with("host", ok).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9000",
            "192.0.2.1:9000",
            "[::1",
            "[2001:db8::1]:9000",
            "localhost.evil.example",
        ] {
            assert!(
                matches!(with("host", bad), Err(ForwardError::Forbidden(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            with("origin", "null"),
            Err(ForwardError::Forbidden(_))
        ));
        assert!(check_browser_headers(&HeaderMap::new(), listen).is_ok());
        // A forced non-loopback listener accepts its own address.
        let exposed: SocketAddr = "192.0.2.1:9000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("host", "192.0.2.1:9000".parse().unwrap());
        assert!(check_browser_headers(&headers, exposed).is_ok());
    }

    #[test]
    fn non_ascii_header_values_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert("x-name", http::HeaderValue::from_bytes(b"caf\xe9").unwrap());
        assert!(matches!(
            end_to_end_headers(&headers),
            Err(ForwardError::BadRequest(_))
        ));
    }
}
