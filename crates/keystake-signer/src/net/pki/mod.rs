//! Certificate generation for demo and test PKIs (what `keystake-signer certs generate` runs).
//!
//! Writes a small mutual-TLS PKI with `rcgen`: one CA (basicConstraints CA, pathLen 0, keyCertSign +
//! cRLSign), one server certificate (serverAuth, DNS and IP SANs) and any number of client
//! certificates (clientAuth, CN = client name), all ECDSA P-256. Each client identity is also
//! written as PKCS#12 (`<client>.p12` + password file `<client>.p12.pass`, for Lighthouse and
//! Teku), and the CA as a PKCS#12 truststore (`ca.p12` + `ca.p12.pass`, for Teku); see
//! `crate::net::pki::pkcs12`. Further clients and CRLs can be issued later from an existing `ca.pem` +
//! `ca.key` (PEM only).
//!
//! It refuses: client names that are not plain file names (empty, `.`/`..`, path separators,
//! characters outside `[A-Za-z0-9._@-]`, a leading dot, the reserved names `ca` and `server`);
//! server names that are neither an IP address nor a DNS name; zero validity; overwriting any
//! existing file unless [`Overwrite::Replace`] is given (under [`Overwrite::Refuse`] all targets
//! are checked first, so an existing file means nothing is written); a "CA" whose certificate
//! lacks the CA flag or whose key does not match its certificate; revoking certificates issued by
//! another CA.
//!
//! Private keys are created with mode 0600 from the start (never chmod-ed afterwards) and the
//! serialized key text is held in `Zeroizing` buffers.
#![forbid(unsafe_code)]

pub mod pkcs12;

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::string::{BmpString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::x509::X509Name;
use zeroize::Zeroizing;

use crate::hsm::signing_key::HsmSigningKey;
use crate::net::tls::{HsmTlsKey, ServerKey, TlsFiles};

/// Server names used when the caller gives none: loopback by name and by IP address.
pub const DEFAULT_SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];
/// File name of the CA certificate inside a PKI directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside a PKI directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the server certificate inside a PKI directory.
pub const SERVER_CERT_FILE: &str = "server.pem";
/// File name of the server private key inside a PKI directory.
pub const SERVER_KEY_FILE: &str = "server.key";

const CA_COMMON_NAME: &str = "KeyStake signer CA";
const ORGANIZATION: &str = "KeyStake";
/// Longest client name: the X.520 upper bound for a common name.
const MAX_CLIENT_NAME_LEN: usize = 64;
/// Backdating absorbs small clock differences between the machine that generates the PKI and
/// the machines that verify it.
const BACKDATE: time::Duration = time::Duration::minutes(5);
use crate::files::{self, PRIVATE_FILE_MODE as KEY_FILE_MODE, PUBLIC_FILE_MODE};
pub use crate::files::{FileError, Overwrite};

/// A certificate and its private key as written to disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedCert {
    /// The client (or server) name the certificate was issued for.
    pub name: String,
    /// PEM certificate file.
    pub cert: PathBuf,
    /// PEM (PKCS#8) private key file, mode 0600.
    pub key: PathBuf,
}

/// Paths of a freshly generated PKI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedPki {
    /// `ca.pem`
    pub ca_cert: PathBuf,
    /// `ca.key` (mode 0600)
    pub ca_key: PathBuf,
    /// `server.pem`
    pub server_cert: PathBuf,
    /// The server certificate's key: the HSM's TLS key, or `server.key` (mode 0600).
    pub server_key: ServerKey,
    /// One entry per requested client, in the order given.
    pub clients: Vec<IssuedCert>,
}

impl GeneratedPki {
    /// The server side of this PKI as TLS configuration input (no CRL).
    pub fn tls_files(&self) -> TlsFiles {
        TlsFiles {
            ca_cert: self.ca_cert.clone(),
            server_cert: self.server_cert.clone(),
            server_key: self.server_key.clone(),
            crl: None,
        }
    }

    /// The certificate issued for `name`, if it was part of this PKI.
    pub fn client(&self, name: &str) -> Option<&IssuedCert> {
        self.clients.iter().find(|client| client.name == name)
    }
}

/// Why a certificate could not be generated, issued or revoked.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("invalid client name {name:?}: {reason}")]
    InvalidClientName { name: String, reason: &'static str },
    #[error("client name {0:?} given twice")]
    DuplicateClient(String),
    #[error("invalid server name {name:?}: {reason}")]
    InvalidServerName { name: String, reason: &'static str },
    #[error("certificate validity must be at least one day")]
    ZeroValidity,
    #[error("invalid validity period: not after ({not_after}) must be later than not before ({not_before})")]
    InvalidValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("validity of {0} days reaches beyond the representable date range")]
    ValidityOutOfRange(u32),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot parse certificate {}: {reason}", path.display())]
    ParseCertificate { path: PathBuf, reason: String },
    #[error("no usable private key in {}: {reason}", path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{} is not a CA certificate (basicConstraints CA flag missing)", .0.display())]
    NotCa(PathBuf),
    #[error("CA key {} does not belong to CA certificate {}", key.display(), cert.display())]
    CaKeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("cannot reuse the subject name of CA certificate {}: {reason}", path.display())]
    UnsupportedCaName { path: PathBuf, reason: &'static str },
    #[error("certificate {} is not for {key}: its public key differs", cert.display())]
    KeyMismatch { cert: PathBuf, key: String },
    #[error("certificate {} was not issued by the CA in {}", cert.display(), ca.display())]
    ForeignCertificate { cert: PathBuf, ca: PathBuf },
    #[error("certificate generation failed: {0}")]
    Generation(#[from] rcgen::Error),
    #[error("cannot write PKCS#12 file {}: {source}", path.display())]
    Pkcs12 {
        path: PathBuf,
        source: crate::net::pki::pkcs12::Pkcs12Error,
    },
}

/// An HSM signing key as rcgen sees it: the certificate (or CSR) names its public key, and a
/// CSR is signed by it in the HSM.
pub struct RcgenHsmKey<'a>(pub &'a dyn HsmSigningKey);

impl PublicKeyData for RcgenHsmKey<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key().as_sec1()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for RcgenHsmKey<'_> {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0
            .sign_sha256(message)
            .map(|signature| signature.to_der())
            .map_err(|error| {
                tracing::warn!(%error, "the HSM did not sign the certificate request");
                rcgen::Error::RemoteKeyError
            })
    }
}

/// Generate a complete PKI in `out_dir`: `ca.pem`, `ca.key`, `server.pem`, `server.key` and
/// `<client>.pem`, `<client>.key` for every client. `server_names` empty means
/// [`DEFAULT_SERVER_NAMES`]; entries that parse as IP addresses become IP SANs, others DNS SANs,
/// and the first one is also the server certificate's CN.
pub fn generate(
    out_dir: &Path,
    server_names: &[String],
    clients: &[String],
    validity_days: u32,
    overwrite: Overwrite,
) -> Result<GeneratedPki, CertError> {
    generate_with_server_key(
        out_dir,
        server_names,
        clients,
        validity_days,
        overwrite,
        None,
    )
}

/// [`generate`], with the server certificate issued to `hsm_key` (the HSM's TLS key) when
/// given: then no `server.key` is written, the key never exists outside the HSM.
pub fn generate_with_server_key(
    out_dir: &Path,
    server_names: &[String],
    clients: &[String],
    validity_days: u32,
    overwrite: Overwrite,
    hsm_key: Option<HsmTlsKey>,
) -> Result<GeneratedPki, CertError> {
    let (not_before, not_after) = validity_from_now(validity_days)?;
    let server_names: Vec<String> = if server_names.is_empty() {
        DEFAULT_SERVER_NAMES
            .iter()
            .map(|name| name.to_string())
            .collect()
    } else {
        server_names.to_vec()
    };
    let server_sans = server_names
        .iter()
        .map(|name| server_san(name))
        .collect::<Result<Vec<_>, _>>()?;
    let mut seen = BTreeSet::new();
    for client in clients {
        validate_client_name(client)?;
        if !seen.insert(client.as_str()) {
            return Err(CertError::DuplicateClient(client.clone()));
        }
    }

    let pki = GeneratedPki {
        ca_cert: out_dir.join(CA_CERT_FILE),
        ca_key: out_dir.join(CA_KEY_FILE),
        server_cert: out_dir.join(SERVER_CERT_FILE),
        server_key: match &hsm_key {
            Some(key) => ServerKey::Hsm(key.clone()),
            None => ServerKey::File(out_dir.join(SERVER_KEY_FILE)),
        },
        clients: clients
            .iter()
            .map(|name| client_paths(out_dir, name))
            .collect(),
    };
    let mut targets = vec![&pki.ca_cert, &pki.ca_key, &pki.server_cert];
    if let ServerKey::File(path) = &pki.server_key {
        targets.push(path);
    }
    for client in &pki.clients {
        targets.push(&client.cert);
        targets.push(&client.key);
    }
    let pkcs12_targets: Vec<PathBuf> = pki
        .clients
        .iter()
        .flat_map(|client| {
            let (file, password) = pkcs12_paths(out_dir, &client.name);
            [file, password]
        })
        .chain({
            let (file, password) = truststore_paths(out_dir);
            [file, password]
        })
        .collect();
    targets.extend(pkcs12_targets.iter());
    files::create_private_dir(out_dir)?;
    refuse_existing(&targets, overwrite)?;

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    // A random suffix keeps CAs from different runs apart: with equal names a certificate from
    // another CA would look like ours until its signature fails to verify.
    let mut ca_suffix = [0u8; 4];
    rand::rngs::OsRng.fill_bytes(&mut ca_suffix);
    ca_params.distinguished_name =
        distinguished_name(&format!("{CA_COMMON_NAME} {}", hex::encode(ca_suffix)));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params.not_before = not_before;
    ca_params.not_after = not_after;
    ca_params.serial_number = Some(random_serial());
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let mut server_params = leaf_params(&server_names[0], not_before, not_after);
    server_params.subject_alt_names = server_sans;
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = match &hsm_key {
        Some(key) => {
            let cert = server_params.signed_by(&RcgenHsmKey(key.0.as_ref()), &issuer)?;
            (None, cert)
        }
        None => {
            let key = KeyPair::generate()?;
            let cert = server_params.signed_by(&key, &issuer)?;
            (Some(key), cert)
        }
    };

    let mut client_material = Vec::with_capacity(clients.len());
    for client in clients {
        let key = KeyPair::generate()?;
        let cert = client_params(client, not_before, not_after).signed_by(&key, &issuer)?;
        client_material.push((cert, key));
    }

    // Keys are written before their certificates so a crash never leaves a certificate whose key
    // is missing.
    write_key_and_cert(&pki.ca_key, &ca_key, &pki.ca_cert, &ca_cert, overwrite)?;
    match (&pki.server_key, &server_key) {
        (ServerKey::File(path), (Some(key), cert)) => {
            write_key_and_cert(path, key, &pki.server_cert, cert, overwrite)?
        }
        (_, (_, cert)) => files::write_file(
            &pki.server_cert,
            cert.pem().as_bytes(),
            PUBLIC_FILE_MODE,
            overwrite,
        )?,
    }
    for (paths, (cert, key)) in pki.clients.iter().zip(&client_material) {
        write_key_and_cert(&paths.key, key, &paths.cert, cert, overwrite)?;
        let (file, password_file) = pkcs12_paths(out_dir, &paths.name);
        let password = pkcs12::random_password();
        let key_der = Zeroizing::new(key.serialize_der());
        let p12 =
            pkcs12::client_identity(&paths.name, &key_der, cert.der(), ca_cert.der(), &password)
                .map_err(|source| CertError::Pkcs12 {
                    path: file.clone(),
                    source,
                })?;
        write_pkcs12(&file, &password_file, &p12, &password, overwrite)?;
    }
    let (file, password_file) = truststore_paths(out_dir);
    let password = pkcs12::random_password();
    let p12 =
        pkcs12::truststore("ca", ca_cert.der(), &password).map_err(|source| CertError::Pkcs12 {
            path: file.clone(),
            source,
        })?;
    write_pkcs12(&file, &password_file, &p12, &password, overwrite)?;
    Ok(pki)
}

/// A PEM certificate signing request for the server certificate, signed in the HSM by
/// `key` (the TLS key), for an operator's own CA: CN = the first server name, every name a SAN,
/// extended key usage serverAuth. `server_names` empty means [`DEFAULT_SERVER_NAMES`].
pub fn server_csr(server_names: &[String], key: &dyn HsmSigningKey) -> Result<String, CertError> {
    let server_names: Vec<String> = if server_names.is_empty() {
        DEFAULT_SERVER_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        server_names.to_vec()
    };
    let sans = server_names
        .iter()
        .map(|name| server_san(name))
        .collect::<Result<Vec<_>, _>>()?;
    let (not_before, not_after) = validity_from_now(1)?;
    let mut params = leaf_params(&server_names[0], not_before, not_after);
    // The CA chooses these; a CSR cannot carry them.
    params.serial_number = None;
    params.use_authority_key_identifier_extension = false;
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params.serialize_request(&RcgenHsmKey(key))?.pem()?)
}

/// Issue the server certificate to `key` (the HSM's TLS key) from the existing CA in `ca_dir`
/// (`ca.pem` + `ca.key`), valid from now for `validity_days`, and write it (PEM) to `out`:
/// CN = the first server name, every name a SAN, extended key usage serverAuth. `server_names`
/// empty means [`DEFAULT_SERVER_NAMES`]. What first-boot provisioning runs with the issuing CA
/// it carries (the CA key is wiped afterwards); no server key file exists at any point.
pub fn issue_server(
    ca_dir: &Path,
    out: &Path,
    server_names: &[String],
    validity_days: u32,
    overwrite: Overwrite,
    key: &dyn HsmSigningKey,
) -> Result<PathBuf, CertError> {
    let (not_before, not_after) = validity_from_now(validity_days)?;
    let server_names: Vec<String> = if server_names.is_empty() {
        DEFAULT_SERVER_NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        server_names.to_vec()
    };
    let sans = server_names
        .iter()
        .map(|name| server_san(name))
        .collect::<Result<Vec<_>, _>>()?;
    let ca = LoadedCa::load(ca_dir)?;
    if let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        files::create_private_dir(parent)?;
    }
    refuse_existing(&[&out.to_path_buf()], overwrite)?;
    let mut params = leaf_params(&server_names[0], not_before, not_after);
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&RcgenHsmKey(key), &ca.issuer)?;
    ca.check_issued_name(cert.der())?;
    files::write_file(out, cert.pem().as_bytes(), PUBLIC_FILE_MODE, overwrite)?;
    Ok(out.to_path_buf())
}

/// Check that the first certificate in `cert` (PEM, end-entity first) certifies `key`: the same
/// SubjectPublicKeyInfo. What `certs install` checks before it puts a certificate an operator's
/// CA issued (from `certs csr`) where `serve` reads it.
pub fn check_certifies(cert: &Path, key: &dyn HsmSigningKey) -> Result<(), CertError> {
    let der = read_first_certificate(cert, "server certificate")?;
    let parsed = parse_certificate(cert, &der)?;
    let spki = rustls::sign::public_key_to_spki(
        &rustls_pki_types::alg_id::ECDSA_P256,
        key.public_key().as_sec1(),
    );
    if parsed.public_key().raw != spki.as_ref() {
        return Err(CertError::KeyMismatch {
            cert: cert.to_path_buf(),
            key: key.describe(),
        });
    }
    Ok(())
}

/// Issue one more client certificate (valid from now for `validity_days`) from the CA in
/// `ca_dir` (`ca.pem` + `ca.key`), writing `<client>.pem` and `<client>.key` into `out_dir`.
pub fn issue_client(
    ca_dir: &Path,
    out_dir: &Path,
    client: &str,
    validity_days: u32,
    overwrite: Overwrite,
) -> Result<IssuedCert, CertError> {
    let (not_before, not_after) = validity_from_now(validity_days)?;
    issue_client_with_validity(ca_dir, out_dir, client, not_before, not_after, overwrite)
}

/// Like [`issue_client`] with an explicit validity window, which may lie entirely in the past or
/// the future (tests use it to make expired and not-yet-valid certificates).
pub fn issue_client_with_validity(
    ca_dir: &Path,
    out_dir: &Path,
    client: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    overwrite: Overwrite,
) -> Result<IssuedCert, CertError> {
    validate_client_name(client)?;
    if not_after <= not_before {
        return Err(CertError::InvalidValidity {
            not_before,
            not_after,
        });
    }
    let ca = LoadedCa::load(ca_dir)?;
    let issued = client_paths(out_dir, client);
    files::create_private_dir(out_dir)?;
    refuse_existing(&[&issued.cert, &issued.key], overwrite)?;

    let key = KeyPair::generate()?;
    let cert = client_params(client, not_before, not_after).signed_by(&key, &ca.issuer)?;
    ca.check_issued_name(cert.der())?;
    write_key_and_cert(&issued.key, &key, &issued.cert, &cert, overwrite)?;
    Ok(issued)
}

/// Write a PEM CRL signed by the CA in `ca_dir` that revokes every certificate in
/// `revoked_certs` (PEM files issued by that CA), valid for `validity_days`. The CRL number is the
/// current Unix time, so later CRLs always carry larger numbers.
pub fn write_crl(
    ca_dir: &Path,
    revoked_certs: &[PathBuf],
    out: &Path,
    validity_days: u32,
    overwrite: Overwrite,
) -> Result<PathBuf, CertError> {
    let (this_update, next_update) = validity_from_now(validity_days)?;
    write_crl_between(
        ca_dir,
        revoked_certs,
        out,
        this_update,
        next_update,
        overwrite,
    )
}

/// [`write_crl`] with explicit `thisUpdate`/`nextUpdate` (a CRL whose nextUpdate has passed is
/// how tests show that a stale CRL is refused).
pub fn write_crl_between(
    ca_dir: &Path,
    revoked_certs: &[PathBuf],
    out: &Path,
    this_update: OffsetDateTime,
    next_update: OffsetDateTime,
    overwrite: Overwrite,
) -> Result<PathBuf, CertError> {
    let ca = LoadedCa::load(ca_dir)?;
    let mut revoked = Vec::with_capacity(revoked_certs.len());
    for cert_path in revoked_certs {
        let der = read_first_certificate(cert_path, "certificate to revoke")?;
        let cert = parse_certificate(cert_path, &der)?;
        if !ca.issued(&cert) {
            return Err(CertError::ForeignCertificate {
                cert: cert_path.clone(),
                ca: ca.cert_path.clone(),
            });
        }
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&cert.tbs_certificate.serial.to_bytes_be()),
            revocation_time: this_update,
            reason_code: None,
            invalidity_date: None,
        });
    }
    let crl_number = u64::try_from(OffsetDateTime::now_utc().unix_timestamp()).unwrap_or(0);
    let params = CertificateRevocationListParams {
        this_update,
        next_update,
        crl_number: SerialNumber::from(crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: ca.key_identifier_method.clone(),
    };
    let crl = params.signed_by(&ca.issuer)?;
    if let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        files::create_private_dir(parent)?;
    }
    refuse_existing(&[&out.to_path_buf()], overwrite)?;
    files::write_file(out, crl.pem()?.as_bytes(), PUBLIC_FILE_MODE, overwrite)?;
    Ok(out.to_path_buf())
}

/// Check that `name` can be used both as a certificate CN and as a file name stem.
pub fn validate_client_name(name: &str) -> Result<(), CertError> {
    let invalid = |reason| CertError::InvalidClientName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > MAX_CLIENT_NAME_LEN {
        return Err(invalid("longer than 64 characters"));
    }
    if name.contains('/') || name.contains('\\') {
        return Err(invalid("contains a path separator"));
    }
    if name.starts_with('.') {
        return Err(invalid("starts with a dot (hidden file, `.` or `..`)"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(invalid("only letters, digits and . _ - @ are allowed"));
    }
    // `ca` and `server` would overwrite the PKI's own files.
    if name == "ca" || name == "server" {
        return Err(invalid("reserved for the CA and server files"));
    }
    Ok(())
}

/// The CA read back from `ca.pem` + `ca.key`, ready to sign.
struct LoadedCa {
    cert_path: PathBuf,
    subject_der: Vec<u8>,
    subject_key_id: Option<Vec<u8>>,
    key_identifier_method: KeyIdMethod,
    issuer: Issuer<'static, KeyPair>,
}

impl LoadedCa {
    fn load(ca_dir: &Path) -> Result<Self, CertError> {
        let cert_path = ca_dir.join(CA_CERT_FILE);
        let key_path = ca_dir.join(CA_KEY_FILE);
        let der = read_first_certificate(&cert_path, "CA certificate")?;
        let cert = parse_certificate(&cert_path, &der)?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|err| CertError::ParseCertificate {
                path: cert_path.clone(),
                reason: err.to_string(),
            })?
            .is_some_and(|constraints| constraints.value.ca);
        if !is_ca {
            return Err(CertError::NotCa(cert_path));
        }

        let key_pem =
            Zeroizing::new(
                fs::read_to_string(&key_path).map_err(|source| CertError::Read {
                    what: "CA private key",
                    path: key_path.clone(),
                    source,
                })?,
            );
        let key = KeyPair::from_pem(&key_pem).map_err(|err| CertError::BadPrivateKey {
            path: key_path.clone(),
            reason: err.to_string(),
        })?;
        if key.subject_public_key_info() != cert.public_key().raw {
            return Err(CertError::CaKeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }

        let mut params = CertificateParams::default();
        params.distinguished_name =
            rebuild_name(cert.subject()).map_err(|reason| CertError::UnsupportedCaName {
                path: cert_path.clone(),
                reason,
            })?;
        let subject_key_id = subject_key_identifier(&cert);
        params.key_identifier_method = subject_key_id
            .clone()
            .map(KeyIdMethod::PreSpecified)
            .unwrap_or(KeyIdMethod::Sha256);
        params.key_usages = key_usages(&cert);
        let key_identifier_method = params.key_identifier_method.clone();
        let subject_der = cert.subject().as_raw().to_vec();
        Ok(Self {
            cert_path,
            subject_der,
            subject_key_id,
            key_identifier_method,
            issuer: Issuer::new(params, key),
        })
    }

    /// Whether `cert` names this CA as its issuer: same issuer name and, where both certificates
    /// carry key identifiers, the same key.
    fn issued(&self, cert: &X509Certificate<'_>) -> bool {
        let same_name = cert.issuer().as_raw() == self.subject_der.as_slice();
        let same_key = match (authority_key_identifier(cert), &self.subject_key_id) {
            (Some(authority), Some(subject)) => authority == *subject,
            _ => true,
        };
        same_name && same_key
    }

    /// Chain building compares names byte for byte; make sure the rebuilt CA name encodes exactly
    /// like the original before handing out a certificate that would never verify.
    fn check_issued_name(&self, issued: &CertificateDer<'_>) -> Result<(), CertError> {
        let cert = parse_certificate(&self.cert_path, issued)?;
        if cert.issuer().as_raw() != self.subject_der.as_slice() {
            return Err(CertError::UnsupportedCaName {
                path: self.cert_path.clone(),
                reason: "its subject name does not re-encode byte for byte",
            });
        }
        Ok(())
    }
}

/// Rebuild an rcgen name from a parsed one, keeping every attribute's string type so that the
/// issuer name we write encodes exactly like the CA's subject.
fn rebuild_name(name: &X509Name<'_>) -> Result<DistinguishedName, &'static str> {
    let mut rebuilt = DistinguishedName::new();
    let mut seen_types = Vec::new();
    for rdn in name.iter() {
        let mut attributes = rdn.iter();
        let attribute = attributes
            .next()
            .ok_or("empty relative distinguished name")?;
        if attributes.next().is_some() {
            return Err("multi-valued relative distinguished names are not supported");
        }
        let oid: Vec<u64> = attribute
            .attr_type()
            .iter()
            .ok_or("attribute type OID component too large")?
            .collect();
        // rcgen keeps one value per attribute type; a repeated type would silently be dropped.
        if seen_types.contains(&oid) {
            return Err("repeated attribute types are not supported");
        }
        let value = attribute.attr_value();
        let data = value.data;
        let text = || std::str::from_utf8(data).map_err(|_| "attribute value is not UTF-8");
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => DnValue::PrintableString(
                text()?
                    .try_into()
                    .map_err(|_| "invalid PrintableString attribute")?,
            ),
            Tag::Ia5String => DnValue::Ia5String(
                text()?
                    .try_into()
                    .map_err(|_| "invalid IA5String attribute")?,
            ),
            Tag::T61String => DnValue::TeletexString(
                text()?
                    .try_into()
                    .map_err(|_| "invalid TeletexString attribute")?,
            ),
            Tag::BmpString => DnValue::BmpString(
                BmpString::from_utf16be(data.to_vec())
                    .map_err(|_| "invalid BMPString attribute")?,
            ),
            Tag::UniversalString => DnValue::UniversalString(
                UniversalString::from_utf32be(data.to_vec())
                    .map_err(|_| "invalid UniversalString attribute")?,
            ),
            _ => return Err("unsupported attribute string type"),
        };
        rebuilt.push(DnType::from_oid(&oid), dn_value);
        seen_types.push(oid);
    }
    Ok(rebuilt)
}

fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(id.0.to_vec())
            }
            _ => None,
        })
}

fn authority_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions()
        .find_map(|extension| match extension.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(id) => {
                id.key_identifier.as_ref().map(|key_id| key_id.0.to_vec())
            }
            _ => None,
        })
}

/// The CA's key usages, so rcgen refuses to sign a CRL with a CA that may not sign CRLs.
fn key_usages(cert: &X509Certificate<'_>) -> Vec<KeyUsagePurpose> {
    let Ok(Some(usage)) = cert.key_usage() else {
        return Vec::new();
    };
    let usage = usage.value;
    [
        (usage.digital_signature(), KeyUsagePurpose::DigitalSignature),
        (usage.non_repudiation(), KeyUsagePurpose::ContentCommitment),
        (usage.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
        (usage.data_encipherment(), KeyUsagePurpose::DataEncipherment),
        (usage.key_agreement(), KeyUsagePurpose::KeyAgreement),
        (usage.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (usage.crl_sign(), KeyUsagePurpose::CrlSign),
        (usage.encipher_only(), KeyUsagePurpose::EncipherOnly),
        (usage.decipher_only(), KeyUsagePurpose::DecipherOnly),
    ]
    .into_iter()
    .filter_map(|(set, purpose)| set.then_some(purpose))
    .collect()
}

fn read_first_certificate(
    path: &Path,
    what: &'static str,
) -> Result<CertificateDer<'static>, CertError> {
    let pem = fs::read(path).map_err(|source| CertError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(der)) => Ok(der),
        Some(Err(err)) => Err(CertError::ParseCertificate {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }),
        None => Err(CertError::NoCertificate(path.to_path_buf())),
    }
}

fn parse_certificate<'a>(path: &Path, der: &'a [u8]) -> Result<X509Certificate<'a>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::ParseCertificate {
            path: path.to_path_buf(),
            reason: "trailing data after the certificate".to_string(),
        }),
        Err(err) => Err(CertError::ParseCertificate {
            path: path.to_path_buf(),
            reason: err.to_string(),
        }),
    }
}

fn validity_from_now(days: u32) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
    if days == 0 {
        return Err(CertError::ZeroValidity);
    }
    let now = OffsetDateTime::now_utc();
    let not_after = now
        .checked_add(time::Duration::days(i64::from(days)))
        .filter(|not_after| not_after.year() <= 9999)
        .ok_or(CertError::ValidityOutOfRange(days))?;
    Ok((now - BACKDATE, not_after))
}

fn server_san(name: &str) -> Result<SanType, CertError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = |reason| CertError::InvalidServerName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 253 {
        return Err(invalid("a DNS name must have 1 to 253 characters"));
    }
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !labels_ok {
        return Err(invalid("neither an IP address nor a valid DNS name"));
    }
    let dns = name
        .to_string()
        .try_into()
        .map_err(|_| invalid("not an IA5 string"))?;
    Ok(SanType::DnsName(dns))
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, ORGANIZATION);
    name.push(DnType::CommonName, common_name);
    name
}

fn leaf_params(
    common_name: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    params
}

fn client_params(
    client: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = leaf_params(client, not_before, not_after);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

/// 128 random bits, positive and without a leading zero byte, so serials are unique per
/// certificate (CRLs revoke by serial).
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn client_paths(dir: &Path, name: &str) -> IssuedCert {
    IssuedCert {
        name: name.to_string(),
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

/// `<client>.p12` and its password file `<client>.p12.pass`.
pub fn pkcs12_paths(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let file = dir.join(format!("{name}.{}", pkcs12::IDENTITY_EXTENSION));
    let password = dir.join(format!(
        "{name}.{}{}",
        pkcs12::IDENTITY_EXTENSION,
        pkcs12::PASSWORD_SUFFIX
    ));
    (file, password)
}

/// `ca.p12` (CA-only truststore) and its password file `ca.p12.pass`.
pub fn truststore_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (
        dir.join(pkcs12::TRUSTSTORE_FILE),
        dir.join(format!(
            "{}{}",
            pkcs12::TRUSTSTORE_FILE,
            pkcs12::PASSWORD_SUFFIX
        )),
    )
}

/// The password file first (without a line break: some readers keep it), then the PKCS#12 file;
/// both 0600 (the identity holds an encrypted private key).
fn write_pkcs12(
    file: &Path,
    password_file: &Path,
    contents: &[u8],
    password: &secrecy::SecretString,
    overwrite: Overwrite,
) -> Result<(), CertError> {
    use secrecy::ExposeSecret;
    files::write_file(
        password_file,
        password.expose_secret().as_bytes(),
        KEY_FILE_MODE,
        overwrite,
    )?;
    Ok(files::write_file(file, contents, KEY_FILE_MODE, overwrite)?)
}

fn refuse_existing(targets: &[&PathBuf], overwrite: Overwrite) -> Result<(), CertError> {
    if overwrite == Overwrite::Refuse {
        if let Some(existing) = targets.iter().find(|path| path.symlink_metadata().is_ok()) {
            return Err(FileError::WouldOverwrite(existing.to_path_buf()).into());
        }
    }
    Ok(())
}

/// A private key (0600), then its certificate (public): a crash never leaves a certificate
/// whose key is missing.
fn write_key_and_cert(
    key_path: &Path,
    key: &KeyPair,
    cert_path: &Path,
    cert: &rcgen::Certificate,
    overwrite: Overwrite,
) -> Result<(), CertError> {
    write_key(key_path, key, overwrite)?;
    Ok(files::write_file(
        cert_path,
        cert.pem().as_bytes(),
        PUBLIC_FILE_MODE,
        overwrite,
    )?)
}

fn write_key(path: &Path, key: &KeyPair, overwrite: Overwrite) -> Result<(), CertError> {
    let pem = Zeroizing::new(key.serialize_pem());
    Ok(files::write_file(
        path,
        pem.as_bytes(),
        KEY_FILE_MODE,
        overwrite,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    /// The first subject CN, as text.
    fn common_name(cert: &X509Certificate<'_>) -> Option<String> {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    /// `generate` for `clients` with the default server names, valid for a day, refusing to
    /// overwrite.
    fn generate_for(dir: &Path, clients: &[&str]) -> Result<GeneratedPki, CertError> {
        generate(dir, &[], &names(clients), 1, Overwrite::Refuse)
    }

    fn parse_pem_file(path: &Path) -> Vec<u8> {
        read_first_certificate(path, "test certificate")
            .expect("test certificate readable")
            .to_vec()
    }

    #[test]
    fn generated_pki_has_the_right_roles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = generate(
            dir.path(),
            &[],
            &names(&["alice", "bob"]),
            30,
            Overwrite::Refuse,
        )
        .expect("generate");

        let ca_der = parse_pem_file(&pki.ca_cert);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("parse CA");
        let constraints = ca.basic_constraints().expect("bc").expect("bc present");
        assert!(constraints.value.ca);
        let usage = ca.key_usage().expect("ku").expect("ku present").value;
        assert!(usage.key_cert_sign() && usage.crl_sign());

        let server_der = parse_pem_file(&pki.server_cert);
        let (_, server) = x509_parser::parse_x509_certificate(&server_der).expect("parse server");
        assert_eq!(server.issuer().as_raw(), ca.subject().as_raw());
        let eku = server
            .extended_key_usage()
            .expect("eku")
            .expect("eku present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let sans = &server
            .subject_alternative_name()
            .expect("san")
            .expect("san present")
            .value
            .general_names;
        assert!(sans.contains(&GeneralName::DNSName("localhost")));
        assert!(sans.contains(&GeneralName::IPAddress(&[127, 0, 0, 1])));
        let server_bc = server.basic_constraints().expect("bc").expect("bc present");
        assert!(!server_bc.value.ca);

        for name in ["alice", "bob"] {
            let issued = pki.client(name).expect("client issued");
            assert_eq!(issued.cert, dir.path().join(format!("{name}.pem")));
            let der = parse_pem_file(&issued.cert);
            let (_, client) = x509_parser::parse_x509_certificate(&der).expect("parse client");
            assert_eq!(common_name(&client).as_deref(), Some(name));
            let eku = client
                .extended_key_usage()
                .expect("eku")
                .expect("eku present");
            assert!(eku.value.client_auth && !eku.value.server_auth);
            assert_eq!(client.issuer().as_raw(), ca.subject().as_raw());
        }
        assert_ne!(
            parse_pem_file(&pki.clients[0].cert),
            parse_pem_file(&pki.clients[1].cert)
        );
    }

    #[test]
    fn explicit_server_names_become_dns_and_ip_sans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = generate(
            dir.path(),
            &names(&["signer.example", "10.1.2.3", "::1"]),
            &[],
            1,
            Overwrite::Refuse,
        )
        .expect("generate");
        let der = parse_pem_file(&pki.server_cert);
        let (_, server) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(common_name(&server).as_deref(), Some("signer.example"));
        let sans = server
            .subject_alternative_name()
            .expect("san")
            .expect("present")
            .value
            .general_names
            .clone();
        assert_eq!(sans.len(), 3);
        assert!(sans.contains(&GeneralName::IPAddress(&[10, 1, 2, 3])));
        assert!(sans.contains(&GeneralName::DNSName("signer.example")));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_private_and_certificates_public() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = generate_for(dir.path(), &["alice"]).expect("generate");
        let mode = |path: &Path| fs::metadata(path).expect("metadata").permissions().mode() & 0o777;
        let ServerKey::File(server_key) = &pki.server_key else {
            panic!("generate writes a server key file");
        };
        for key in [&pki.ca_key, server_key, &pki.clients[0].key] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        assert_eq!(mode(&pki.ca_cert), 0o644);

        // A replaced key file gets a fresh 0600 file even if the old one was world-readable.
        fs::set_permissions(&pki.clients[0].key, fs::Permissions::from_mode(0o644)).expect("chmod");
        let issued =
            issue_client(dir.path(), dir.path(), "alice", 1, Overwrite::Replace).expect("reissue");
        assert_eq!(mode(&issued.key), 0o600);
    }

    #[test]
    fn refuses_to_overwrite_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("bob.key");
        fs::write(&blocker, b"keep me").expect("write blocker");
        let err = generate_for(dir.path(), &["alice", "bob"]).expect_err("must refuse");
        assert!(
            matches!(err, CertError::File(FileError::WouldOverwrite(ref path)) if *path == blocker)
        );
        assert!(!dir.path().join(CA_KEY_FILE).exists(), "nothing written");
        assert_eq!(fs::read(&blocker).expect("read"), b"keep me");

        let pki = generate_for(dir.path(), &["alice"]).expect("generate");
        let first_ca = fs::read(&pki.ca_cert).expect("read ca");
        let again = generate_for(dir.path(), &["alice"]);
        assert!(matches!(
            again,
            Err(CertError::File(FileError::WouldOverwrite(_)))
        ));
        let replaced =
            generate(dir.path(), &[], &names(&["alice"]), 1, Overwrite::Replace).expect("replace");
        assert_ne!(fs::read(&replaced.ca_cert).expect("read ca"), first_ca);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("readdir")
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().contains(".tmp-"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left behind");
    }

    #[test]
    fn client_names_must_be_safe_file_names() {
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", ".hidden", "ca", "server", "a b", "é",
        ] {
            assert!(
                matches!(
                    validate_client_name(bad),
                    Err(CertError::InvalidClientName { .. })
                ),
                "{bad:?} accepted"
            );
        }
        for good in ["alice", "vc-1", "node_2.prod", "ops@site"] {
            validate_client_name(good).expect(good);
        }
        assert!(validate_client_name(&"a".repeat(65)).is_err());

        let dir = tempfile::tempdir().expect("tempdir");
        let err = generate_for(dir.path(), &["../evil"]);
        assert!(matches!(err, Err(CertError::InvalidClientName { .. })));
        let dup = generate_for(dir.path(), &["a", "a"]);
        assert!(matches!(dup, Err(CertError::DuplicateClient(_))));
        let bad_server = generate(dir.path(), &names(&["bad name"]), &[], 1, Overwrite::Refuse);
        assert!(matches!(
            bad_server,
            Err(CertError::InvalidServerName { .. })
        ));
        let zero = generate(dir.path(), &[], &[], 0, Overwrite::Refuse);
        assert!(matches!(zero, Err(CertError::ZeroValidity)));
        assert!(!dir.path().join(CA_CERT_FILE).exists());
    }

    #[test]
    fn issue_client_from_existing_ca_chains_to_it() {
        let ca_dir = tempfile::tempdir().expect("tempdir");
        let out_dir = tempfile::tempdir().expect("tempdir");
        let pki = generate_for(ca_dir.path(), &[]).expect("generate");
        let issued = issue_client(ca_dir.path(), out_dir.path(), "carol", 2, Overwrite::Refuse)
            .expect("issue");
        assert_eq!(issued.key, out_dir.path().join("carol.key"));

        let ca_der = parse_pem_file(&pki.ca_cert);
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).expect("parse");
        let der = parse_pem_file(&issued.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(cert.issuer().as_raw(), ca.subject().as_raw());
        // Full path validation (signature, validity, EKU) by the verifier the server uses.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca_der.clone().into())
            .expect("CA is a valid anchor");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        verifier
            .verify_client_cert(
                &CertificateDer::from(der.clone()),
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .expect("issued certificate chains to the CA");

        let twice = issue_client(ca_dir.path(), out_dir.path(), "carol", 2, Overwrite::Refuse);
        assert!(matches!(
            twice,
            Err(CertError::File(FileError::WouldOverwrite(_)))
        ));
    }

    #[test]
    fn explicit_validity_is_written_as_given() {
        let dir = tempfile::tempdir().expect("tempdir");
        generate_for(dir.path(), &[]).expect("generate");
        let not_before = OffsetDateTime::now_utc() - time::Duration::days(10);
        let not_after = OffsetDateTime::now_utc() - time::Duration::days(1);
        let issued = issue_client_with_validity(
            dir.path(),
            dir.path(),
            "expired",
            not_before,
            not_after,
            Overwrite::Refuse,
        )
        .expect("issue");
        let der = parse_pem_file(&issued.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
        assert_eq!(
            cert.validity().not_after.timestamp(),
            not_after.unix_timestamp()
        );
        assert!(!cert.validity().is_valid());

        let backwards = issue_client_with_validity(
            dir.path(),
            dir.path(),
            "x",
            not_after,
            not_before,
            Overwrite::Refuse,
        );
        assert!(matches!(backwards, Err(CertError::InvalidValidity { .. })));
    }

    #[test]
    fn ca_material_is_checked_before_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        generate_for(dir.path(), &["alice"]).expect("generate");
        generate_for(other.path(), &[]).expect("generate");

        // A key from another CA.
        fs::copy(other.path().join(CA_KEY_FILE), dir.path().join(CA_KEY_FILE)).expect("copy");
        let err = issue_client(dir.path(), dir.path(), "bob", 1, Overwrite::Refuse)
            .expect_err("mismatched key");
        assert!(matches!(err, CertError::CaKeyMismatch { .. }), "{err}");

        // A leaf certificate posing as the CA.
        fs::copy(
            dir.path().join("alice.pem"),
            other.path().join(CA_CERT_FILE),
        )
        .expect("copy");
        let err = issue_client(other.path(), other.path(), "bob", 1, Overwrite::Refuse)
            .expect_err("not a CA");
        assert!(matches!(err, CertError::NotCa(_)), "{err}");

        let missing = tempfile::tempdir().expect("tempdir");
        let err = issue_client(missing.path(), missing.path(), "bob", 1, Overwrite::Refuse)
            .expect_err("no CA");
        let message = err.to_string();
        assert!(
            message.starts_with("cannot read CA certificate "),
            "{message}"
        );
        assert!(message.contains("ca.pem"), "{message}");
    }

    #[test]
    fn crl_lists_revoked_serials_and_refuses_foreign_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let pki = generate_for(dir.path(), &["alice", "mallory"]).expect("generate");
        let foreign = generate_for(other.path(), &["eve"]).expect("generate");
        let crl_path = dir.path().join("crl.pem");
        let mallory = pki.client("mallory").expect("mallory").cert.clone();
        write_crl(
            dir.path(),
            std::slice::from_ref(&mallory),
            &crl_path,
            7,
            Overwrite::Refuse,
        )
        .expect("crl");

        let pem = fs::read(&crl_path).expect("read crl");
        let der =
            rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&pem).expect("crl pem");
        let (_, crl) = x509_parser::parse_x509_crl(&der).expect("parse crl");
        let mallory_der = parse_pem_file(&mallory);
        let (_, mallory_cert) = x509_parser::parse_x509_certificate(&mallory_der).expect("parse");
        let serials: Vec<_> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![mallory_cert.raw_serial().to_vec()]);

        let err = write_crl(
            dir.path(),
            &[foreign.clients[0].cert.clone()],
            &dir.path().join("crl2.pem"),
            7,
            Overwrite::Refuse,
        )
        .expect_err("foreign cert");
        assert!(matches!(err, CertError::ForeignCertificate { .. }), "{err}");
        let again = write_crl(dir.path(), &[], &crl_path, 7, Overwrite::Refuse);
        assert!(matches!(
            again,
            Err(CertError::File(FileError::WouldOverwrite(_)))
        ));
    }
}
