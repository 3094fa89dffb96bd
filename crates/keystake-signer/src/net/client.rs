//! A small mutual-TLS HTTP/1.1 client (hyper 1 + tokio-rustls) for integration tests, the load
//! tool and the loopback forwarder.
//!
//! One [`MtlsClient`] talks to one `https://host:port[/prefix]` base URL and keeps idle
//! connections alive for reuse (hyper-util's pooled client over our own TLS connector); clones
//! share the pool. The TLS configuration is the caller's (normally [`crate::net::tls::client_config`]),
//! except that ALPN is pinned to `http/1.1`, the only protocol this client speaks. Connecting to an
//! IP address works: the server certificate is then checked against its IP SANs.
//!
//! It refuses: base URLs that are not `https` or carry a query; request paths that do not start
//! with `/`; invalid header names or values; response bodies above [`MAX_RESPONSE_BODY`] bytes;
//! requests that take longer than the configured timeout (30 s by default).
#![forbid(unsafe_code)]

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Largest response body [`MtlsClient::request`] buffers.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;
/// Default bound on one request, connection set-up included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an unused pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A fully read HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base URL {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("invalid request path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid header {name:?}: {reason}")]
    InvalidHeader { name: String, reason: String },
    /// `request` is "METHOD URI" throughout.
    #[error("{request} failed: {detail}")]
    Request {
        request: String,
        detail: String,
        kind: FailureKind,
    },
    #[error("reading the response to {request} failed: {detail}")]
    Body { request: String, detail: String },
    #[error("the response to {request} is larger than {limit} bytes")]
    BodyTooLarge { request: String, limit: usize },
    #[error("{request} timed out after {timeout:?}")]
    Timeout { request: String, timeout: Duration },
}

/// What a failed request ran into, for callers that must tell causes apart (the loopback
/// forwarder answers and logs each differently). Read from the typed error chain (the rustls error
/// inside the I/O errors), not from message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No TCP connection could be made (refused, unreachable, name not resolved).
    Connect,
    /// We did not accept the server's certificate (unknown CA, wrong name, expired…).
    ServerCertificateRejected,
    /// The server sent a certificate-related TLS alert: it refused our client certificate.
    ClientCertificateRefused,
    /// Anything else: the connection broke mid-request, a protocol error…
    Other,
}

impl ClientError {
    /// The failure kind of a [`ClientError::Request`]; `None` for every other variant.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        match self {
            ClientError::Request { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Classify a hyper-util client error by walking its source chain, looking inside I/O errors for
/// the rustls error they carry.
pub fn classify_failure(error: &(dyn StdError + 'static)) -> FailureKind {
    use rustls::AlertDescription as Alert;
    let mut current = Some(error);
    let mut connect_failed = false;
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return match tls {
                rustls::Error::InvalidCertificate(_) => FailureKind::ServerCertificateRejected,
                rustls::Error::AlertReceived(
                    Alert::BadCertificate
                    | Alert::UnsupportedCertificate
                    | Alert::CertificateRevoked
                    | Alert::CertificateExpired
                    | Alert::CertificateUnknown
                    | Alert::UnknownCA
                    | Alert::CertificateRequired
                    | Alert::AccessDenied,
                ) => FailureKind::ClientCertificateRefused,
                _ => FailureKind::Other,
            };
        }
        if let Some(connect) = err.downcast_ref::<ConnectError>() {
            connect_failed = true;
            current = Some(&connect.source);
            continue;
        }
        if let Some(io_error) = err.downcast_ref::<io::Error>() {
            if let Some(inner) = io_error.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        current = err.source();
    }
    if connect_failed {
        FailureKind::Connect
    } else {
        FailureKind::Other
    }
}

/// A TCP connection could not be made: kept as a type so [`classify_failure`] can tell it apart.
#[derive(Debug, thiserror::Error)]
#[error("connect to {address}: {source}")]
struct ConnectError {
    address: String,
    source: io::Error,
}

/// The TLS handshake failed: keeps the rustls error reachable for [`classify_failure`].
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with {address}: {source}")]
struct HandshakeError {
    address: String,
    source: io::Error,
}

/// Pooled HTTP/1.1 client over mutual TLS for one base URL.
#[derive(Clone)]
pub struct MtlsClient {
    http: Client<TlsConnectorService, Full<Bytes>>,
    /// The pool's connector, for [`MtlsClient::diagnose`]'s one-off connection.
    connector: TlsConnectorService,
    /// `https://authority` without a trailing slash.
    origin: String,
    /// Path prefix from the base URL, without a trailing slash (often empty).
    prefix: String,
    timeout: Duration,
}

impl std::fmt::Debug for MtlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsClient")
            .field("origin", &self.origin)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl MtlsClient {
    /// A client for `base_url` (`https://127.0.0.1:PORT`, optionally with a path prefix).
    pub fn new(config: Arc<rustls::ClientConfig>, base_url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidBaseUrl {
            url: base_url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|err: hyper::http::uri::InvalidUri| invalid(&err.to_string()))?;
        if uri.scheme_str() != Some("https") {
            return Err(invalid("scheme must be https"));
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if uri.query().is_some() {
            return Err(invalid("must not carry a query"));
        }
        ServerName::try_from(host_without_brackets(authority.host()))
            .map_err(|err| invalid(&format!("host is not a DNS name or IP address: {err}")))?;

        // Our connections speak HTTP/1.1 only; offering h2 would let the server pick it.
        let mut tls = (*config).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = TlsConnectorService {
            tls: TlsConnector::from(Arc::new(tls)),
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector.clone());
        Ok(Self {
            http,
            connector,
            origin: format!("https://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_string(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The same client (sharing its pool) with another per-request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Find out what stops a fresh connection, after a request failed without a clear cause: in
    /// TLS 1.3 the server judges the client certificate after the client considers the handshake
    /// done, and when its refusal (an alert) reaches the pooled connection before the request is
    /// written, hyper reports only a cancelled request. This opens one connection outside the
    /// pool, sends `GET {prefix}/upcheck`, and reads the answer itself, so an alert is seen.
    /// `None`: an answer came (the connection works); `Some(kind)`: what failed.
    pub async fn diagnose(&self) -> Option<FailureKind> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let uri: Uri = self.origin.parse().ok()?;
        let authority = uri.authority()?.to_string();
        let request = format!(
            "GET {}/upcheck HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n",
            self.prefix
        );
        let mut connector = self.connector.clone();
        let attempt = async move {
            let connection = tower::Service::call(&mut connector, uri)
                .await
                .map_err(|e| classify_failure(&e))?;
            let mut stream = connection.0.into_inner();
            stream
                .write_all(request.as_bytes())
                .await
                .map_err(|e| classify_failure(&e))?;
            let mut first = [0u8; 16];
            match stream.read(&mut first).await {
                Ok(0) => Err(FailureKind::Other),
                Ok(_) => Ok(()),
                Err(e) => Err(classify_failure(&e)),
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(())) => None,
            Ok(Err(kind)) => Some(kind),
            Err(_elapsed) => Some(FailureKind::Other),
        }
    }

    /// Send one request and read the whole response. `path` starts with `/` and may carry a query.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        if !path.starts_with('/') {
            return Err(ClientError::InvalidPath {
                path: path.to_string(),
                reason: "must start with '/'".to_string(),
            });
        }
        let uri: Uri = format!("{}{}{}", self.origin, self.prefix, path)
            .parse()
            .map_err(
                |err: hyper::http::uri::InvalidUri| ClientError::InvalidPath {
                    path: path.to_string(),
                    reason: err.to_string(),
                },
            )?;
        let target = format!("{method} {uri}");
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|err| ClientError::InvalidPath {
                path: path.to_string(),
                reason: err.to_string(),
            })?;
        for (name, value) in headers {
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|err| {
                ClientError::InvalidHeader {
                    name: name.to_string(),
                    reason: err.to_string(),
                }
            })?;
            let header_value =
                HeaderValue::from_str(value).map_err(|err| ClientError::InvalidHeader {
                    name: name.to_string(),
                    reason: err.to_string(),
                })?;
            request.headers_mut().append(header_name, header_value);
        }

        let exchange = async {
            let response =
                self.http
                    .request(request)
                    .await
                    .map_err(|err| ClientError::Request {
                        request: target.clone(),
                        detail: error_chain(&err),
                        kind: classify_failure(&err),
                    })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, MAX_RESPONSE_BODY)
                .collect()
                .await
                .map_err(|err| {
                    if err.is::<http_body_util::LengthLimitError>() {
                        ClientError::BodyTooLarge {
                            request: target.clone(),
                            limit: MAX_RESPONSE_BODY,
                        }
                    } else {
                        ClientError::Body {
                            request: target.clone(),
                            detail: error_chain(err.as_ref()),
                        }
                    }
                })?
                .to_bytes();
            Ok(Response {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ClientError::Timeout {
                request: target,
                timeout: self.timeout,
            }),
        }
    }
}

/// hyper-util's errors say little at the top level ("client error (Connect)"); the cause, such as
/// the TLS alert, sits further down the chain.
fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn host_without_brackets(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_string()
}

/// Opens TCP + TLS connections for the pooled client.
#[derive(Clone)]
struct TlsConnectorService {
    tls: TlsConnector,
}

type ConnectFuture = Pin<Box<dyn Future<Output = io::Result<TlsConnection>> + Send>>;

impl tower::Service<Uri> for TlsConnectorService {
    type Response = TlsConnection;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, destination: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = destination
                .host()
                .map(host_without_brackets)
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "URI has no host"))?;
            let port = destination.port_u16().unwrap_or(443);
            let server_name = ServerName::try_from(host.clone())
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
            let address = format!("{host}:{port}");
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| {
                    let kind = source.kind();
                    let address = address.clone();
                    io::Error::new(kind, ConnectError { address, source })
                })?;
            // Requests are small and latency matters more than packet count.
            tcp.set_nodelay(true)?;
            let stream = tls.connect(server_name, tcp).await.map_err(|source| {
                io::Error::new(source.kind(), HandshakeError { address, source })
            })?;
            Ok(TlsConnection(TokioIo::new(stream)))
        })
    }
}

/// A TLS stream adapted to hyper's I/O traits (a local type so it can implement hyper-util's
/// `Connection`).
struct TlsConnection(TokioIo<TlsStream<TcpStream>>);

impl Connection for TlsConnection {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_config() -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 supported")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    #[test]
    fn base_url_must_be_https_with_a_host() {
        for bad in [
            "http://127.0.0.1:1",
            "127.0.0.1:1",
            "https:///x",
            "https://h:1/?q=1",
            "",
        ] {
            assert!(
                matches!(
                    MtlsClient::new(any_config(), bad),
                    Err(ClientError::InvalidBaseUrl { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[tokio::test]
    async fn base_url_prefix_and_paths() {
        let client = MtlsClient::new(any_config(), "https://[::1]:8443/api/").expect("client");
        assert_eq!(client.origin, "https://[::1]:8443");
        assert_eq!(client.prefix, "/api");
        let err = client
            .request(Method::GET, "no-slash", &[], None)
            .await
            .expect_err("relative path");
        assert!(matches!(err, ClientError::InvalidPath { .. }));
        let err = client
            .request(Method::GET, "/x", &[("bad header", "v")], None)
            .await
            .expect_err("bad header");
        assert!(matches!(err, ClientError::InvalidHeader { .. }));
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        // Accepts TCP but never answers the TLS handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let holder = tokio::spawn(async move {
            let accepted = listener.accept().await;
            std::future::pending::<()>().await;
            drop(accepted);
        });
        let client = MtlsClient::new(any_config(), &format!("https://{addr}"))
            .expect("client")
            .with_timeout(Duration::from_millis(200));
        let err = client
            .request(Method::GET, "/upcheck", &[], None)
            .await
            .expect_err("no answer");
        holder.abort();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(
            err.to_string()
                .starts_with(&format!("GET https://{addr}/upcheck")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn connection_refused_is_reported_with_the_address() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let client =
            MtlsClient::new(any_config(), &format!("https://127.0.0.1:{port}")).expect("client");
        let err = client
            .request(Method::GET, "/", &[], None)
            .await
            .expect_err("nothing listens");
        let message = err.to_string();
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert_eq!(err.failure_kind(), Some(FailureKind::Connect), "{message}");
    }

    #[test]
    fn failure_kinds_come_from_the_typed_chain() {
        let wrap = |tls: rustls::Error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                HandshakeError {
                    address: "h:1".into(),
                    source: io::Error::new(io::ErrorKind::InvalidData, tls),
                },
            )
        };
        let refused = wrap(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        ));
        assert_eq!(
            classify_failure(&refused),
            FailureKind::ClientCertificateRefused
        );
        let untrusted = wrap(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(
            classify_failure(&untrusted),
            FailureKind::ServerCertificateRejected
        );
        let other_alert = wrap(rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure,
        ));
        assert_eq!(classify_failure(&other_alert), FailureKind::Other);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_failure(&reset), FailureKind::Other);
    }
}
