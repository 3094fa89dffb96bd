//! The one place that builds rustls configurations, for every API (REST now, gRPC later), and that
//! turns a verified client certificate into a [`ClientIdentity`].
//!
//! Server side ([`server_config`]): TLS 1.3 only, ring provider only, a client certificate is
//! mandatory and must chain to the configured CA (rustls' `WebPkiClientVerifier`), so expired,
//! not-yet-valid, other-CA and (with a CRL configured) revoked certificates are refused during the
//! handshake, before any request is read. ALPN offers `h2` then `http/1.1`.
//!
//! Client side ([`client_config`]): TLS 1.3 only, trusts only the given CA, presents the given
//! certificate.
//!
//! It refuses to build a configuration from missing or unreadable files, files without a
//! certificate / private key / CRL, a key that does not match its certificate, or a CRL that was
//! not issued by the configured CA (which would otherwise lock every client out at handshake
//! time); every such error names the file at fault. CRLs are read once at start-up and their
//! `nextUpdate` is not enforced (a stale list still revokes; the appliance fetches nothing).
#![forbid(unsafe_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use crate::hsm::signing_key::HsmSigningKey;

/// ALPN identifier for HTTP/2 (gRPC).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN identifier for HTTP/1.1 (REST).
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Where the server certificate's private key is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerKey {
    /// The `Tls` signing key inside the HSM (the default): handshakes are signed by the HSM
    /// through [`HsmTlsKey`]; no key file exists.
    Hsm(HsmTlsKey),
    /// A PEM private key file (PKCS#8, PKCS#1 or SEC1): the documented opt-out
    /// (`[tls] server_key = "…"`), for test PKIs and operators without an HSM-capable setup.
    File(PathBuf),
}

/// The HSM's TLS key as rustls sees it: `choose_scheme` offers ECDSA_NISTP256_SHA256 only;
/// the handshake transcript is hashed (SHA-256) on the host and the digest signed in the HSM
/// (`CKM_ECDSA`, `r || s`), then DER-encoded as TLS wants. Signing blocks the calling thread
/// for one HSM operation (a pooled session: concurrent handshakes do not wait on each other
/// unless every session is busy).
#[derive(Clone)]
pub struct HsmTlsKey(pub Arc<dyn HsmSigningKey>);

impl std::fmt::Debug for HsmTlsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmTlsKey({})", self.0.describe())
    }
}

/// The same key object (configurations compare equal when they use the same HSM key).
impl PartialEq for HsmTlsKey {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for HsmTlsKey {}

impl HsmTlsKey {
    /// The key's SubjectPublicKeyInfo (id-ecPublicKey, prime256v1).
    pub fn spki(&self) -> rustls_pki_types::SubjectPublicKeyInfoDer<'static> {
        rustls::sign::public_key_to_spki(
            &rustls_pki_types::alg_id::ECDSA_P256,
            self.0.public_key().as_sec1(),
        )
    }
}

impl rustls::sign::SigningKey for HsmTlsKey {
    fn choose_scheme(
        &self,
        offered: &[rustls::SignatureScheme],
    ) -> Option<Box<dyn rustls::sign::Signer>> {
        offered
            .contains(&rustls::SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(self.clone()) as Box<dyn rustls::sign::Signer>)
    }

    fn public_key(&self) -> Option<rustls_pki_types::SubjectPublicKeyInfoDer<'_>> {
        Some(self.spki())
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

impl rustls::sign::Signer for HsmTlsKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        match self.0.sign_sha256(message) {
            Ok(signature) => Ok(signature.to_der()),
            Err(error) => {
                // The handshake fails (the client sees an internal-error alert); the reason
                // goes to the log, and /healthcheck reports the HSM.
                tracing::warn!(%error, "the HSM did not sign a TLS handshake");
                Err(rustls::Error::General(format!(
                    "the HSM did not sign the handshake: {error}"
                )))
            }
        }
    }

    fn scheme(&self) -> rustls::SignatureScheme {
        rustls::SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Files the server side of mutual TLS is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA certificate(s) client certificates must chain to.
    pub ca_cert: PathBuf,
    /// PEM server certificate chain, end-entity first.
    pub server_cert: PathBuf,
    /// The server certificate's private key: in the HSM, or a file (opt-out).
    pub server_key: ServerKey,
    /// Optional PEM CRL(s) issued by the CA.
    pub crl: Option<PathBuf>,
}

/// Why a TLS configuration could not be built or a certificate not read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{what} {} is not valid PEM: {reason}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("no certificate in {what} {}", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("no private key in {}", .0.display())]
    NoPrivateKey(PathBuf),
    #[error("unusable private key {}: {reason}", path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("private key {} does not match certificate {}", key.display(), cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("certificate {} was not issued for the HSM's TLS key ({key}); issue it with `keystake-signer certs generate --config …` or `certs csr`", cert.display())]
    HsmKeyMismatch { key: String, cert: PathBuf },
    #[error("CA certificate {} cannot be a trust anchor: {reason}", path.display())]
    BadCaCertificate { path: PathBuf, reason: String },
    #[error("no CRL in {}", .0.display())]
    NoCrl(PathBuf),
    #[error("CRL {} is unusable: {reason}", path.display())]
    BadCrl { path: PathBuf, reason: String },
    #[error("CRL {} is stale: its nextUpdate {next_update} has passed; issue a fresh one (`keystake-signer certs revoke`)", path.display())]
    StaleCrl { path: PathBuf, next_update: String },
    #[error("CRL {} was not issued by CA certificate {}", crl.display(), ca.display())]
    CrlFromOtherCa { crl: PathBuf, ca: PathBuf },
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    #[error("cannot parse client certificate: {0}")]
    ParseCertificate(String),
}

/// The server configuration every API listener uses: TLS 1.3, mandatory client certificate
/// chaining to `files.ca_cert`, optional CRL, ALPN `h2` and `http/1.1`.
///
/// Listeners that only speak HTTP/1.1 must either serve h2 as well (hyper-util's `auto` builder)
/// or clone the config and set `alpn_protocols` to `[ALPN_HTTP_1_1]`.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    server_config_with_pins(files, None)
}

/// [`server_config`], accepting besides the CA the certificates pinned by running DKG
/// ceremonies (`net::pinned`; such connections may reach the DKG service only).
pub fn server_config_with_pins(
    files: &TlsFiles,
    pins: Option<Arc<crate::net::pinned::PinSet>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_certs = load_certificates(&files.ca_cert, "CA certificate")?;
    let roots = root_store(&files.ca_cert, &ca_certs)?;

    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    if let Some(crl_path) = &files.crl {
        let crls = load_crls(crl_path)?;
        check_crl_issuers(crl_path, &crls, &files.ca_cert, &ca_certs)?;
        // A CRL past its nextUpdate no longer says who is revoked: refuse new connections
        // with it (webpki checks at every handshake) rather than trust a stale list.
        verifier = verifier.with_crls(crls).enforce_revocation_expiration();
    }
    let verifier = verifier.build().map_err(|err| match (&files.crl, err) {
        (Some(crl), rustls::server::VerifierBuilderError::InvalidCrl(reason)) => TlsError::BadCrl {
            path: crl.clone(),
            reason: format!("{reason:?}"),
        },
        (_, other) => TlsError::BadCaCertificate {
            path: files.ca_cert.clone(),
            reason: other.to_string(),
        },
    })?;

    let verifier: Arc<dyn rustls::server::danger::ClientCertVerifier> = match pins {
        Some(pins) => Arc::new(crate::net::pinned::PinnedPeerVerifier::new(verifier, pins)),
        None => verifier,
    };
    let chain = load_certificates(&files.server_cert, "server certificate")?;
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier);
    let mut config = match &files.server_key {
        ServerKey::File(path) => {
            let key = load_private_key(path)?;
            builder
                .with_single_cert(chain, key)
                .map_err(|err| key_error(err, path, &files.server_cert))?
        }
        ServerKey::Hsm(key) => {
            let certified = rustls::sign::CertifiedKey::new(chain, Arc::new(key.clone()));
            // The certificate must be the HSM key's: compared by SubjectPublicKeyInfo.
            certified
                .keys_match()
                .map_err(|_| TlsError::HsmKeyMismatch {
                    key: key.0.describe(),
                    cert: files.server_cert.clone(),
                })?;
            builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)))
        }
    };
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for talking to our own APIs: TLS 1.3, trusts only `ca_cert`, presents
/// `client_cert` / `client_key`. ALPN is left empty for the caller to choose.
pub fn client_config(
    ca_cert: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_certs = load_certificates(ca_cert, "CA certificate")?;
    let roots = root_store(ca_cert, &ca_certs)?;
    let chain = load_certificates(client_cert, "client certificate")?;
    let key = load_private_key(client_key)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|err| key_error(err, client_key, client_cert))?;
    Ok(Arc::new(config))
}

/// [`client_config`] with the client identity taken from a PKCS#12 file (`identity`, its key and
/// chain, as `certs generate` writes them for Lighthouse and Teku) opened with the password in
/// `password_file` (one line; a trailing newline is ignored).
pub fn client_config_pkcs12(
    ca_cert: &Path,
    identity: &Path,
    password_file: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_certs = load_certificates(ca_cert, "CA certificate")?;
    let roots = root_store(ca_cert, &ca_certs)?;
    let data = read_file(identity, "PKCS#12 client identity")?;
    let password = Zeroizing::new(read_file(password_file, "PKCS#12 password file")?);
    let password = std::str::from_utf8(&password).map_err(|_| TlsError::BadPrivateKey {
        path: password_file.to_path_buf(),
        reason: "the password file is not UTF-8".to_string(),
    })?;
    let password = secrecy::SecretString::from(password.trim_end_matches(['\r', '\n']));
    let read = crate::net::pki::pkcs12::read_client_identity(&data, &password).map_err(|err| {
        TlsError::BadPrivateKey {
            path: identity.to_path_buf(),
            reason: err.to_string(),
        }
    })?;
    if read.chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what: "PKCS#12 client identity",
            path: identity.to_path_buf(),
        });
    }
    let chain: Vec<CertificateDer<'static>> =
        read.chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(read.key_pkcs8.to_vec().into());
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|err| key_error(err, identity, identity))?;
    Ok(Arc::new(config))
}

/// The service's client identity, read here from the certificate the TLS layer verified.
pub use crate::service::authz::ClientIdentity;

impl ClientIdentity {
    /// Read the identity out of a DER certificate (normally one the verifier already accepted).
    pub fn from_der(cert: &[u8]) -> Result<Self, TlsError> {
        let (rest, parsed) = x509_parser::parse_x509_certificate(cert)
            .map_err(|err| TlsError::ParseCertificate(err.to_string()))?;
        if !rest.is_empty() {
            return Err(TlsError::ParseCertificate(
                "trailing data after the certificate".to_string(),
            ));
        }
        let common_name = parsed
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let dns_sans = parsed
            .subject_alternative_name()
            .map_err(|err| TlsError::ParseCertificate(err.to_string()))?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::DNSName(dns) => Some(dns.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            common_name,
            dns_sans,
            fingerprint_sha256: Sha256::digest(cert).into(),
            pinned_peer: false,
        })
    }
}

/// The identity of the verified client certificate on a server connection, once the handshake
/// has completed. `None` before the handshake or if the certificate cannot be parsed.
pub fn peer_identity(conn: &rustls::ServerConnection) -> Option<ClientIdentity> {
    let end_entity = conn.peer_certificates()?.first()?;
    match ClientIdentity::from_der(end_entity) {
        Ok(identity) => Some(identity),
        Err(err) => {
            tracing::warn!(error = %err, "verified client certificate could not be parsed");
            None
        }
    }
}

fn root_store(
    path: &Path,
    ca_certs: &[CertificateDer<'static>],
) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in ca_certs {
        roots
            .add(cert.clone())
            .map_err(|err| TlsError::BadCaCertificate {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })?;
    }
    Ok(roots)
}

fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn load_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

pub(crate) fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = Zeroizing::new(read_file(path, "private key")?);
    match PrivateKeyDer::from_pem_slice(&pem) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => Err(TlsError::NoPrivateKey(path.to_path_buf())),
        // The PEM error text is not shown: for a key file it could echo key material.
        Err(_) => Err(TlsError::Pem {
            what: "private key",
            path: path.to_path_buf(),
            reason: "malformed PEM".to_string(),
        }),
    }
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read_file(path, "CRL")?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            what: "CRL",
            path: path.to_path_buf(),
            reason: err.to_string(),
        })?;
    if crls.is_empty() {
        return Err(TlsError::NoCrl(path.to_path_buf()));
    }
    Ok(crls)
}

/// With a CRL configured, webpki treats a client whose issuer has no CRL as "revocation status
/// unknown" and refuses it. A CRL from the wrong CA would therefore lock every client out; say so
/// at start-up instead.
fn check_crl_issuers(
    crl_path: &Path,
    crls: &[CertificateRevocationListDer<'_>],
    ca_path: &Path,
    ca_certs: &[CertificateDer<'_>],
) -> Result<(), TlsError> {
    use x509_parser::extensions::ParsedExtension;

    // (subject name, subject key identifier) of every configured CA.
    let mut cas = Vec::with_capacity(ca_certs.len());
    for cert in ca_certs {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|err| {
            TlsError::BadCaCertificate {
                path: ca_path.to_path_buf(),
                reason: err.to_string(),
            }
        })?;
        let key_id =
            parsed
                .iter_extensions()
                .find_map(|extension| match extension.parsed_extension() {
                    ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                    _ => None,
                });
        cas.push((parsed.subject().as_raw().to_vec(), key_id));
    }
    for crl in crls {
        let (_, parsed) = x509_parser::parse_x509_crl(crl).map_err(|err| TlsError::BadCrl {
            path: crl_path.to_path_buf(),
            reason: err.to_string(),
        })?;
        if let Some(next_update) = parsed.next_update() {
            let now = x509_parser::time::ASN1Time::now();
            if next_update < now {
                return Err(TlsError::StaleCrl {
                    path: crl_path.to_path_buf(),
                    next_update: next_update.to_string(),
                });
            }
        }
        let issuer = parsed.issuer().as_raw();
        let authority_key_id =
            parsed
                .extensions()
                .iter()
                .find_map(|extension| match extension.parsed_extension() {
                    ParsedExtension::AuthorityKeyIdentifier(id) => {
                        id.key_identifier.as_ref().map(|key_id| key_id.0.to_vec())
                    }
                    _ => None,
                });
        let issued_by_a_ca = cas.iter().any(|(subject, key_id)| {
            let same_key = match (&authority_key_id, key_id) {
                (Some(authority), Some(subject_key)) => authority == subject_key,
                _ => true,
            };
            subject.as_slice() == issuer && same_key
        });
        if !issued_by_a_ca {
            return Err(TlsError::CrlFromOtherCa {
                crl: crl_path.to_path_buf(),
                ca: ca_path.to_path_buf(),
            });
        }
    }
    Ok(())
}

fn key_error(err: rustls::Error, key: &Path, cert: &Path) -> TlsError {
    match err {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            key: key.to_path_buf(),
            cert: cert.to_path_buf(),
        },
        other => TlsError::BadPrivateKey {
            path: key.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::header::HeaderValue;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use rustls::CertificateError;
    use time::OffsetDateTime;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::net::client::MtlsClient;
    use crate::net::pki::{self as certs, GeneratedPki, Overwrite};

    const WAIT: Duration = Duration::from_secs(5);

    /// TcpListener → TlsAcceptor → hyper http1 `serve_connection`, answering 200 "ok" with the
    /// client's identity in response headers; counts TCP connections and reports handshake errors.
    struct TestServer {
        addr: SocketAddr,
        accepted_connections: Arc<AtomicUsize>,
        handshake_errors: mpsc::UnboundedReceiver<rustls::Error>,
        task: JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl TestServer {
        async fn start(config: Arc<ServerConfig>) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local addr");
            let accepted_connections = Arc::new(AtomicUsize::new(0));
            let (error_tx, handshake_errors) = mpsc::unbounded_channel();
            let acceptor = TlsAcceptor::from(config);
            let counter = accepted_connections.clone();
            let task = tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::SeqCst);
                    let acceptor = acceptor.clone();
                    let error_tx = error_tx.clone();
                    tokio::spawn(async move {
                        let tls = match acceptor.accept(tcp).await {
                            Ok(tls) => tls,
                            Err(err) => {
                                let rustls_error = err
                                    .get_ref()
                                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                                    .cloned()
                                    .unwrap_or(rustls::Error::General(err.to_string()));
                                let _ = error_tx.send(rustls_error);
                                return;
                            }
                        };
                        let identity = peer_identity(tls.get_ref().1);
                        let service = service_fn(move |_request| {
                            let identity = identity.clone();
                            async move {
                                let mut response =
                                    hyper::Response::new(Full::new(Bytes::from_static(b"ok")));
                                if let Some(identity) = identity {
                                    let headers = response.headers_mut();
                                    let name = HeaderValue::from_str(&identity.display_name())
                                        .expect("test names are header-safe");
                                    headers.insert("x-client", name);
                                    let fingerprint =
                                        HeaderValue::from_str(&identity.fingerprint_hex())
                                            .expect("hex is header-safe");
                                    headers.insert("x-client-fingerprint", fingerprint);
                                }
                                Ok::<_, Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
            Self {
                addr,
                accepted_connections,
                handshake_errors,
                task,
            }
        }

        fn base_url(&self) -> String {
            format!("https://{}", self.addr)
        }

        async fn next_handshake_error(&mut self) -> rustls::Error {
            tokio::time::timeout(WAIT, self.handshake_errors.recv())
                .await
                .expect("server reported the handshake in time")
                .expect("server still running")
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    fn make_pki(dir: &Path, clients: &[&str]) -> GeneratedPki {
        certs::generate(dir, &[], &names(clients), 1, Overwrite::Refuse).expect("generate PKI")
    }

    fn client_for(pki: &GeneratedPki, name: &str, server: &TestServer) -> MtlsClient {
        let issued = pki.client(name).expect("client in PKI");
        let config = client_config(&pki.ca_cert, &issued.cert, &issued.key).expect("client config");
        MtlsClient::new(config, &server.base_url()).expect("client")
    }

    async fn get(
        client: &MtlsClient,
    ) -> Result<crate::net::client::Response, crate::net::client::ClientError> {
        client.request(hyper::Method::GET, "/", &[], None).await
    }

    /// The server key file of a file-key PKI.
    fn file_key(pki: &GeneratedPki) -> &PathBuf {
        match &pki.server_key {
            ServerKey::File(path) => path,
            ServerKey::Hsm(_) => panic!("a file-key PKI"),
        }
    }

    fn cert_der(path: &Path) -> Vec<u8> {
        load_certificates(path, "test certificate").expect("certificate")[0].to_vec()
    }

    #[tokio::test]
    async fn valid_client_certificate_gets_200_and_its_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice"]);
        let server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        let response = get(&client_for(&pki, "alice", &server))
            .await
            .expect("request");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, Bytes::from_static(b"ok"));
        assert_eq!(response.headers["x-client"], "alice");
        let expected: [u8; 32] = Sha256::digest(cert_der(&pki.clients[0].cert)).into();
        assert_eq!(
            response.headers["x-client-fingerprint"],
            hex::encode(expected).as_str()
        );
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &[]);
        let mut server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        let ca_certs = load_certificates(&pki.ca_cert, "CA").expect("ca");
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("tls13")
                .with_root_certificates(root_store(&pki.ca_cert, &ca_certs).expect("roots"))
                .with_no_client_auth();
        let client = MtlsClient::new(Arc::new(config), &server.base_url()).expect("client");
        assert!(
            get(&client).await.is_err(),
            "request without certificate answered"
        );
        let error = server.next_handshake_error().await;
        assert_eq!(error, rustls::Error::NoCertificatesPresented);
    }

    #[tokio::test]
    async fn certificate_from_another_ca_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &[]);
        let other = make_pki(other_dir.path(), &["eve"]);
        let mut server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        // Eve trusts our server's CA but holds a certificate from her own CA.
        let eve = other.client("eve").expect("eve");
        let config = client_config(&pki.ca_cert, &eve.cert, &eve.key).expect("config");
        let client = MtlsClient::new(config, &server.base_url()).expect("client");
        assert!(get(&client).await.is_err());
        let error = server.next_handshake_error().await;
        assert_eq!(
            error,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
        );
    }

    #[tokio::test]
    async fn expired_and_not_yet_valid_certificates_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &[]);
        let mut server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let windows = [
            ("expired", now - 10 * day, now - day),
            ("future", now + day, now + 10 * day),
        ];
        for (name, not_before, not_after) in windows {
            let issued = certs::issue_client_with_validity(
                dir.path(),
                dir.path(),
                name,
                not_before,
                not_after,
                Overwrite::Refuse,
            )
            .expect("issue");
            let config = client_config(&pki.ca_cert, &issued.cert, &issued.key).expect("config");
            let client = MtlsClient::new(config, &server.base_url()).expect("client");
            assert!(get(&client).await.is_err(), "{name} certificate answered");
            let error = server.next_handshake_error().await;
            let refused_for_time = matches!(
                (name, &error),
                (
                    "expired",
                    rustls::Error::InvalidCertificate(
                        CertificateError::Expired | CertificateError::ExpiredContext { .. }
                    )
                ) | (
                    "future",
                    rustls::Error::InvalidCertificate(
                        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }
                    )
                )
            );
            assert!(refused_for_time, "{name}: unexpected error {error:?}");
        }
        // The same CA's freshly issued certificate still works: the refusals were about time.
        certs::issue_client(dir.path(), dir.path(), "fresh", 1, Overwrite::Refuse).expect("issue");
        let fresh = dir.path().join("fresh");
        let config = client_config(
            &pki.ca_cert,
            &fresh.with_extension("pem"),
            &fresh.with_extension("key"),
        )
        .expect("config");
        let client = MtlsClient::new(config, &server.base_url()).expect("client");
        assert_eq!(get(&client).await.expect("fresh request").status, 200);
    }

    #[tokio::test]
    async fn revoked_certificate_is_refused_and_others_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice", "mallory"]);
        let crl = dir.path().join("crl.pem");
        let mallory = pki.client("mallory").expect("mallory").cert.clone();
        certs::write_crl(dir.path(), &[mallory], &crl, 7, Overwrite::Refuse).expect("crl");
        let files = TlsFiles {
            crl: Some(crl),
            ..pki.tls_files()
        };
        let mut server = TestServer::start(server_config(&files).expect("server config")).await;

        assert!(get(&client_for(&pki, "mallory", &server)).await.is_err());
        let error = server.next_handshake_error().await;
        assert_eq!(
            error,
            rustls::Error::InvalidCertificate(CertificateError::Revoked)
        );
        let response = get(&client_for(&pki, "alice", &server))
            .await
            .expect("alice");
        assert_eq!(response.status, 200);
    }

    /// A ClientHello offering only TLS 1.2 (no supported_versions extension), with the suites,
    /// groups and signature schemes a TLS 1.2-capable rustls server would accept.
    fn tls12_only_client_hello() -> Vec<u8> {
        fn extension(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(data);
        }
        let mut hello = vec![0x03, 0x03]; // legacy_version = TLS 1.2
        hello.extend_from_slice(&[0x5a; 32]); // random
        hello.push(0); // empty session id
        let suites: [u16; 6] = [0xc02b, 0xc02c, 0xcca9, 0xc02f, 0xc030, 0xcca8];
        hello.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
        for suite in suites {
            hello.extend_from_slice(&suite.to_be_bytes());
        }
        hello.extend_from_slice(&[1, 0]); // compression: null only
        let mut extensions = Vec::new();
        extension(
            &mut extensions,
            0x000a,
            &[0, 6, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18],
        );
        extension(&mut extensions, 0x000b, &[1, 0]);
        extension(
            &mut extensions,
            0x000d,
            &[0, 8, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01, 0x05, 0x03],
        );
        extension(&mut extensions, 0x0017, &[]); // extended_master_secret
        extension(&mut extensions, 0xff01, &[0]); // renegotiation_info
        hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        hello.extend_from_slice(&extensions);

        let mut handshake = vec![0x01]; // ClientHello
        handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&hello);
        let mut record = vec![0x16, 0x03, 0x01];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[tokio::test]
    async fn tls12_only_client_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &[]);
        let mut server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
        tcp.write_all(&tls12_only_client_hello())
            .await
            .expect("send hello");
        let mut reply = [0u8; 7];
        tokio::time::timeout(WAIT, tcp.read_exact(&mut reply))
            .await
            .expect("reply in time")
            .expect("read alert");
        // An alert record (0x15), fatal (2), protocol_version (70) — not a ServerHello (0x16).
        assert_eq!(
            reply[0], 0x15,
            "server did not answer with an alert: {reply:?}"
        );
        assert_eq!(&reply[5..], &[2, 70], "{reply:?}");
        let error = server.next_handshake_error().await;
        assert!(
            matches!(error, rustls::Error::PeerIncompatible(_)),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn client_reuses_one_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice"]);
        let server =
            TestServer::start(server_config(&pki.tls_files()).expect("server config")).await;
        let client = client_for(&pki, "alice", &server);
        let clone = client.clone();
        for round in 0..5 {
            let used = if round % 2 == 0 { &client } else { &clone };
            let response = used
                .request(
                    hyper::Method::POST,
                    "/eth/v1/eth2/sign/0x00",
                    &[("content-type", "application/json")],
                    Some(b"{}".to_vec()),
                )
                .await
                .expect("request");
            assert_eq!(response.status, 200);
        }
        assert_eq!(server.accepted_connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn alpn_offers_h2_then_http11() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice"]);
        let config = server_config(&pki.tls_files()).expect("server config");
        assert_eq!(
            config.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let server = TestServer::start(config).await;
        let alice = pki.client("alice").expect("alice");
        let mut client =
            (*client_config(&pki.ca_cert, &alice.cert, &alice.key).expect("config")).clone();
        client.alpn_protocols = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
        let tcp = TcpStream::connect(server.addr).await.expect("connect");
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("ip name");
        let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("handshake");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(
            tls.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
    }

    #[test]
    fn client_identity_from_generated_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice"]);
        let der = cert_der(&pki.clients[0].cert);
        let identity = ClientIdentity::from_der(&der).expect("identity");
        assert_eq!(identity.common_name.as_deref(), Some("alice"));
        assert!(identity.dns_sans.is_empty());
        let expected: [u8; 32] = Sha256::digest(&der).into();
        assert_eq!(identity.fingerprint_sha256, expected);
        assert_eq!(identity.display_name(), "alice");

        let server = ClientIdentity::from_der(&cert_der(&pki.server_cert)).expect("identity");
        assert_eq!(server.dns_sans, vec!["localhost".to_string()]);
        assert_ne!(server.fingerprint_sha256, identity.fingerprint_sha256);

        let anonymous = ClientIdentity {
            common_name: None,
            dns_sans: vec![],
            fingerprint_sha256: [0xab; 32],
            pinned_peer: false,
        };
        assert_eq!(
            anonymous.display_name(),
            format!("sha256:{}", "ab".repeat(32))
        );
        let by_dns = ClientIdentity {
            dns_sans: vec!["vc.example".to_string()],
            ..anonymous
        };
        assert_eq!(by_dns.display_name(), "vc.example");

        assert!(ClientIdentity::from_der(b"not a certificate").is_err());
        let mut trailing = der.clone();
        trailing.push(0);
        assert!(ClientIdentity::from_der(&trailing).is_err());
    }

    #[test]
    fn configuration_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other_dir = tempfile::tempdir().expect("tempdir");
        let pki = make_pki(dir.path(), &["alice"]);
        let other = make_pki(other_dir.path(), &[]);
        let error_text = |files: &TlsFiles| match server_config(files) {
            Ok(_) => panic!("configuration accepted: {files:?}"),
            Err(err) => err.to_string(),
        };

        let missing = dir.path().join("missing-ca.pem");
        let files = TlsFiles {
            ca_cert: missing.clone(),
            ..pki.tls_files()
        };
        assert!(
            error_text(&files).starts_with(&format!(
                "cannot read CA certificate {}: ",
                missing.display()
            )),
            "{}",
            error_text(&files)
        );

        for (files, expected) in [
            // A certificate file where the key should be.
            (
                TlsFiles {
                    server_key: ServerKey::File(pki.server_cert.clone()),
                    ..pki.tls_files()
                },
                format!("no private key in {}", pki.server_cert.display()),
            ),
            // A key file where the CA certificate should be.
            (
                TlsFiles {
                    ca_cert: pki.ca_key.clone(),
                    ..pki.tls_files()
                },
                format!("no certificate in CA certificate {}", pki.ca_key.display()),
            ),
            (
                TlsFiles {
                    server_key: other.server_key.clone(),
                    ..pki.tls_files()
                },
                format!(
                    "private key {} does not match certificate {}",
                    file_key(&other).display(),
                    pki.server_cert.display()
                ),
            ),
            // A certificate file where the CRL should be.
            (
                TlsFiles {
                    crl: Some(pki.ca_cert.clone()),
                    ..pki.tls_files()
                },
                format!("no CRL in {}", pki.ca_cert.display()),
            ),
        ] {
            assert_eq!(error_text(&files), expected);
        }

        let foreign_crl = other_dir.path().join("crl.pem");
        certs::write_crl(other_dir.path(), &[], &foreign_crl, 1, Overwrite::Refuse).expect("crl");
        let files = TlsFiles {
            crl: Some(foreign_crl.clone()),
            ..pki.tls_files()
        };
        assert!(error_text(&files).contains(&foreign_crl.display().to_string()));

        let alice = pki.client("alice").expect("alice");
        let err = client_config(&pki.ca_cert, &alice.cert, file_key(&pki))
            .expect_err("mismatched client key");
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        client_config(&pki.ca_cert, &alice.cert, &alice.key).expect("matching client key");
    }

    /// The TLS key in SoftHSM2: the server certificate is issued to the token's public key, no
    /// key file is written, real handshakes are signed by the token; a certificate for another
    /// key is refused at configuration time; with the HSM's login lost a handshake fails (no
    /// signature), and the next one works again.
    #[tokio::test]
    async fn handshakes_are_signed_by_the_key_in_softhsm2() {
        use crate::hsm::pkcs11::test_support::{fresh_sealer, user_pin};
        use crate::hsm::signing_key::{ensure_pkcs11_key, KeyRole, Pkcs11SigningKey};

        let (hsm, sealer) = fresh_sealer("tls-hsm");
        ensure_pkcs11_key(&hsm, &user_pin(), KeyRole::Tls).expect("TLS key");
        let key = HsmTlsKey(Arc::new(
            Pkcs11SigningKey::open(Arc::new(sealer), KeyRole::Tls).expect("open TLS key"),
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = certs::generate_with_server_key(
            dir.path(),
            &[],
            &names(&["alice"]),
            1,
            Overwrite::Refuse,
            Some(key.clone()),
        )
        .expect("PKI for the HSM key");
        assert!(!dir.path().join("server.key").exists());
        let server_der = cert_der(&pki.server_cert);
        let (_, parsed) = x509_parser::parse_x509_certificate(&server_der).expect("parse");
        assert_eq!(parsed.public_key().raw, key.spki().as_ref());

        let server = TestServer::start(server_config(&pki.tls_files()).expect("config")).await;
        let client = client_for(&pki, "alice", &server);
        for _ in 0..3 {
            // A fresh connection each time: a full handshake signed by the token.
            let client = client_for(&pki, "alice", &server);
            assert_eq!(get(&client).await.expect("request").status, 200);
        }
        assert_eq!(get(&client).await.expect("request").status, 200);

        // A certificate for another key (a file-key PKI's server certificate) is refused.
        let other_dir = tempfile::tempdir().expect("tempdir");
        let other = make_pki(other_dir.path(), &[]);
        let mismatched = TlsFiles {
            server_cert: other.server_cert.clone(),
            ..pki.tls_files()
        };
        assert!(matches!(
            server_config(&mismatched),
            Err(TlsError::HsmKeyMismatch { .. })
        ));

        // The token's login is lost under the signer: the handshake fails, nothing is signed;
        // the next handshake opens fresh sessions and succeeds.
        let intruder = crate::hsm::pkcs11::user_session(&hsm, &user_pin()).expect("session");
        intruder.logout().expect("logout");
        drop(intruder);
        let during = client_for(&pki, "alice", &server);
        assert!(get(&during).await.is_err(), "handshake without the HSM");
        let after = client_for(&pki, "alice", &server);
        assert_eq!(
            get(&after).await.expect("request after recovery").status,
            200
        );
    }

    /// `serve`'s composition: sealing and the TLS key on ONE bounded pool of 2 sessions
    /// (`app::open_sealer_with_signing_key`). 16 concurrent full handshakes while 4 threads
    /// unseal: every handshake verifies (the client checks the server's signature), every
    /// share opens, and the pool never holds more than its 2 sessions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn handshakes_and_unseals_share_one_bounded_pool() {
        use crate::hsm::contract_tests;
        use crate::hsm::pkcs11::test_support::{fresh_config, so_pin, user_pin};
        use crate::hsm::pkcs11::Pkcs11Sealer;
        use crate::hsm::signing_key::{ensure_pkcs11_key, KeyRole, Pkcs11SigningKey};
        use crate::hsm::Sealer;

        let mut hsm = fresh_config("tls-shared-pool");
        hsm.sessions = 2;
        Pkcs11Sealer::initialize(&hsm, &so_pin(), &user_pin()).expect("init");
        ensure_pkcs11_key(&hsm, &user_pin(), KeyRole::Tls).expect("TLS key");
        let sealer = Arc::new(Pkcs11Sealer::open(&hsm, &user_pin()).expect("open"));
        let key = HsmTlsKey(Arc::new(
            Pkcs11SigningKey::open(Arc::clone(&sealer), KeyRole::Tls).expect("open TLS key"),
        ));
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = certs::generate_with_server_key(
            dir.path(),
            &[],
            &names(&["alice"]),
            1,
            Overwrite::Refuse,
            Some(key),
        )
        .expect("PKI for the HSM key");
        let server = TestServer::start(server_config(&pki.tls_files()).expect("config")).await;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let unsealers: Vec<_> = (0..4u8)
            .map(|seed| {
                let sealer = Arc::clone(&sealer);
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let ctx = contract_tests::context(seed);
                    let sealed = sealer.seal(&contract_tests::secret(seed), &ctx).unwrap();
                    let mut opened = 0u32;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) || opened < 10 {
                        let share = sealer.unseal(&sealed, &ctx).unwrap();
                        assert_eq!(*share, *contract_tests::secret(seed));
                        opened += 1;
                    }
                    opened
                })
            })
            .collect();
        let handshakes: Vec<_> = (0..16)
            .map(|_| {
                let client = client_for(&pki, "alice", &server);
                tokio::spawn(async move { get(&client).await.expect("request").status })
            })
            .collect();
        for handshake in handshakes {
            assert_eq!(handshake.await.expect("task"), 200);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for unsealer in unsealers {
            assert!(unsealer.join().expect("unsealer") >= 10);
        }
        assert!(sealer.open_sessions() <= 2, "{}", sealer.open_sessions());
    }

    #[test]
    fn the_csr_is_signed_by_the_hsm_key_and_names_the_servers() {
        use crate::hsm::pkcs11::test_support::{fresh_sealer, user_pin};
        use crate::hsm::signing_key::{ensure_pkcs11_key, KeyRole, Pkcs11SigningKey};
        use x509_parser::prelude::FromDer;

        let (hsm, sealer) = fresh_sealer("tls-csr");
        ensure_pkcs11_key(&hsm, &user_pin(), KeyRole::Tls).expect("TLS key");
        let key = Pkcs11SigningKey::open(Arc::new(sealer), KeyRole::Tls).expect("open");
        let pem = certs::server_csr(&names(&["signer.example", "10.0.0.7"]), &key).expect("csr");
        let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .expect("PEM CSR");
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der.as_ref())
                .expect("parse CSR");
        // The self-signature verifies under the token's key (ring, independently of rcgen).
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &key.public_key().as_sec1()[..],
        )
        .verify(
            csr.certification_request_info.raw,
            csr.signature_value.as_ref(),
        )
        .expect("CSR signed by the HSM key");
        let spki = HsmTlsKey(Arc::new(key)).spki();
        assert_eq!(
            csr.certification_request_info.subject_pki.raw,
            spki.as_ref()
        );
        assert!(csr
            .certification_request_info
            .subject
            .to_string()
            .contains("signer.example"));
    }
}
