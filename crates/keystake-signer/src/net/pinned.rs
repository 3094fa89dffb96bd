//! Certificate pinning for DKG peers (issue 12): appliances of independent operators do not
//! share a CA, so a ceremony's participants authenticate each other by the exact TLS
//! certificates pinned in the definition.
//!
//! Server side ([`PinnedPeerVerifier`]): the normal CA verifier runs first and its answer stands
//! whenever it accepts; only a certificate it refuses is accepted instead when its SHA-256 is
//! one of the pins (the certificates of the participants of a running ceremony in this
//! appliance's database, re-read at most once per [`PIN_REFRESH`]). Such a connection is marked
//! ([`PinSet::accepted_by_pin`]): `net::listen` lets it reach the `keystake.v1.Dkg` service and
//! nothing else, so the CA check of every other route is not weakened.
//!
//! Client side ([`peer_client_config`]): TLS 1.3, presents this appliance's certificate and
//! accepts exactly the peer's pinned certificate (its handshake signature checked with the
//! ring provider's algorithms), whatever CA issued it and whatever name it carries.
//!
//! Refuses: a pinned certificate outside its validity period; any server certificate other than
//! the pinned one.
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// How often the pins are re-read from the database when an unknown certificate arrives.
pub const PIN_REFRESH: Duration = Duration::from_secs(1);

/// The certificates of the participants of running ceremonies (their SHA-256), from the
/// database, and the fingerprints that were accepted by pin rather than by the CA.
pub struct PinSet {
    database: Option<PathBuf>,
    pins: RwLock<(HashSet<[u8; 32]>, Option<Instant>)>,
    by_pin: Mutex<HashSet<[u8; 32]>>,
}

impl std::fmt::Debug for PinSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinSet").finish_non_exhaustive()
    }
}

impl PinSet {
    /// Pins read from the DKG tables of the database at `database`.
    pub fn from_database(database: PathBuf) -> Self {
        Self {
            database: Some(database),
            pins: RwLock::new((HashSet::new(), None)),
            by_pin: Mutex::new(HashSet::new()),
        }
    }

    fn refresh_if_stale(&self) {
        let Some(path) = &self.database else { return };
        let stale = self
            .pins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .is_none_or(|at| at.elapsed() >= PIN_REFRESH);
        if !stale {
            return;
        }
        let fresh: HashSet<[u8; 32]> = match crate::store::dkg::DkgStore::open(path)
            .and_then(|store| store.pinned_certificates())
        {
            Ok(certificates) => certificates
                .iter()
                .map(|der| Sha256::digest(der).into())
                .collect(),
            Err(error) => {
                tracing::warn!(%error, "cannot read the DKG certificate pins");
                HashSet::new()
            }
        };
        *self.pins.write().unwrap_or_else(|p| p.into_inner()) = (fresh, Some(Instant::now()));
    }

    fn is_pinned(&self, fingerprint: &[u8; 32]) -> bool {
        self.refresh_if_stale();
        self.pins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .contains(fingerprint)
    }

    /// Whether a connection with this client certificate was let in by its pin only.
    pub fn accepted_by_pin(&self, fingerprint: &[u8; 32]) -> bool {
        self.by_pin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(fingerprint)
    }
}

/// The CA verifier, with pinned DKG peers accepted besides (module doc).
#[derive(Debug)]
pub struct PinnedPeerVerifier {
    ca: Arc<dyn ClientCertVerifier>,
    pins: Arc<PinSet>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedPeerVerifier {
    pub fn new(ca: Arc<dyn ClientCertVerifier>, pins: Arc<PinSet>) -> Self {
        Self {
            ca,
            pins,
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

fn check_validity(end_entity: &CertificateDer<'_>, now: UnixTime) -> Result<(), rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    let validity = parsed.validity();
    if now < validity.not_before.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidYet,
        ));
    }
    if now > validity.not_after.timestamp() {
        return Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
    }
    Ok(())
}

impl ClientCertVerifier for PinnedPeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self.ca.verify_client_cert(end_entity, intermediates, now) {
            Ok(verified) => Ok(verified),
            Err(ca_error) => {
                let fingerprint: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
                if !self.pins.is_pinned(&fingerprint) {
                    return Err(ca_error);
                }
                check_validity(end_entity, now)?;
                self.pins
                    .by_pin
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(fingerprint);
                Ok(ClientCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts exactly one server certificate.
#[derive(Debug)]
struct PinnedServer {
    certificate: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() != self.certificate.as_slice() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        check_validity(end_entity, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration for calling one DKG peer: TLS 1.3, ALPN `h2`, presents `chain` with
/// `key` (this appliance's certificate, the one pinned in the definition; its key in the HSM by
/// default), accepts only `pinned`.
pub fn peer_client_config(
    chain: Vec<CertificateDer<'static>>,
    key: &super::tls::ServerKey,
    pinned: &[u8],
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedServer {
        certificate: pinned.to_vec(),
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match key {
        super::tls::ServerKey::File(path) => {
            let key: PrivateKeyDer<'static> =
                super::tls::load_private_key(path).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        super::tls::ServerKey::Hsm(key) => {
            let certified = rustls::sign::CertifiedKey::new(chain, Arc::new(key.clone()));
            certified
                .keys_match()
                .map_err(|_| format!("the certificate is not the key of {}", key.0.describe()))?;
            builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                certified,
            )))
        }
    };
    config.alpn_protocols = vec![super::tls::ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}
