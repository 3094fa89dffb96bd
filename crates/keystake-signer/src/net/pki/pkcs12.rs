//! PKCS#12 files for validator clients that take their TLS material that way: a client identity
//! (`<client>.p12`: private key + certificate + CA, for Lighthouse's `client_identity_path` and
//! Teku's external-signer keystore) and a truststore holding only the CA (`ca.p12`, for Teku's
//! external-signer truststore). Each comes with a random password in a separate file.
//!
//! Only modern algorithms are written: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC) for every bag and an
//! HMAC-SHA256 integrity MAC, which OpenSSL 1.1+/3, Java 8u301+ (Teku) and native-tls (Lighthouse)
//! read. The legacy RC2/3DES schemes are not compiled in.
//!
//! It refuses: a private key that is not PKCS#8 DER, certificates that do not parse, and (when
//! reading back) a wrong password or a file without exactly one private key.
#![forbid(unsafe_code)]

use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, Pkcs12ImportPolicy,
    PrivateKey, PrivateKeyChain,
};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// PBKDF2 / MAC iterations. OpenSSL's default is 2048; more costs nothing here (files are written
/// once and read once at client start).
pub const ITERATIONS: u32 = 10_000;

/// Suffix of a client identity file (`<client>.p12`).
pub const IDENTITY_EXTENSION: &str = "p12";
/// File name of the CA-only truststore.
pub const TRUSTSTORE_FILE: &str = "ca.p12";
/// Suffix of the password file written next to each PKCS#12 file (`<file>.pass`).
pub const PASSWORD_SUFFIX: &str = ".pass";

/// Why a PKCS#12 file could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("cannot encode PKCS#12: {0}")]
    Encode(String),
    #[error("cannot read PKCS#12 (wrong password or damaged file): {0}")]
    Decode(String),
    #[error("PKCS#12 file holds {0} private keys; expected exactly one")]
    KeyCount(usize),
}

/// A fresh random password (32 hex characters, 128 bits): printable, so every client accepts it
/// from a file or a YAML string.
pub fn random_password() -> SecretString {
    let mut bytes = Zeroizing::new([0u8; 16]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    SecretString::from(hex::encode(bytes.as_slice()))
}

/// A PKCS#12 client identity: `key_pkcs8` (DER) with `cert` (DER) and the issuing `ca` (DER)
/// as its chain, under the friendly name `alias`.
pub fn client_identity(
    alias: &str,
    key_pkcs8: &[u8],
    cert: &[u8],
    ca: &[u8],
    password: &SecretString,
) -> Result<Vec<u8>, Pkcs12Error> {
    let encode = |e: p12_keystore::error::Error| Pkcs12Error::Encode(e.to_string());
    let key = PrivateKey::from_der(key_pkcs8).map_err(encode)?;
    let chain = vec![
        Certificate::from_der(cert).map_err(encode)?,
        Certificate::from_der(ca).map_err(encode)?,
    ];
    let mut local_key_id = [0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut local_key_id);
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id.to_vec(), key, chain)),
    );
    write(&store, password)
}

/// A PKCS#12 truststore with `ca` (DER) as its only, trusted, certificate (marked with the
/// attribute Java needs to load it as a trusted entry).
pub fn truststore(alias: &str, ca: &[u8], password: &SecretString) -> Result<Vec<u8>, Pkcs12Error> {
    let cert = Certificate::from_der(ca).map_err(|e| Pkcs12Error::Encode(e.to_string()))?;
    let mut store = KeyStore::new();
    store.add_entry(alias, KeyStoreEntry::Certificate(cert));
    write(&store, password)
}

fn write(store: &KeyStore, password: &SecretString) -> Result<Vec<u8>, Pkcs12Error> {
    store
        .writer(password.expose_secret())
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(ITERATIONS)
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(ITERATIONS)
        .write()
        .map_err(|e| Pkcs12Error::Encode(e.to_string()))
}

/// What a client identity file holds, read back (tests and operators' checks).
pub struct ReadIdentity {
    pub alias: String,
    /// PKCS#8 DER of the private key.
    pub key_pkcs8: Zeroizing<Vec<u8>>,
    /// DER certificates linked to the key (the end entity first).
    pub chain: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ReadIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadIdentity")
            .field("alias", &self.alias)
            .field("key_pkcs8", &"<redacted>")
            .field("chain", &self.chain.len())
            .finish()
    }
}

/// Decrypt a client identity file and return its one key and chain.
pub fn read_client_identity(
    data: &[u8],
    password: &SecretString,
) -> Result<ReadIdentity, Pkcs12Error> {
    let store = KeyStore::from_pkcs12(data, password.expose_secret(), Pkcs12ImportPolicy::Strict)
        .map_err(|e| Pkcs12Error::Decode(e.to_string()))?;
    let chains: Vec<(&str, &PrivateKeyChain)> = store
        .entries()
        .filter_map(|(alias, entry)| match entry {
            KeyStoreEntry::PrivateKeyChain(chain) => Some((alias.as_str(), chain)),
            _ => None,
        })
        .collect();
    let [(alias, chain)] = chains.as_slice() else {
        return Err(Pkcs12Error::KeyCount(chains.len()));
    };
    Ok(ReadIdentity {
        alias: (*alias).to_owned(),
        key_pkcs8: Zeroizing::new(chain.key().as_der().to_vec()),
        chain: chain.certs().iter().map(|c| c.as_der().to_vec()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> (rcgen::KeyPair, rcgen::Certificate, rcgen::Certificate) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (key, cert, ca)
    }

    #[test]
    fn identity_round_trips_with_its_password_only() {
        let (key, cert, ca) = material();
        let password = random_password();
        let der = Zeroizing::new(key.serialize_der());
        let p12 = client_identity("client", &der, cert.der(), ca.der(), &password).unwrap();
        let read = read_client_identity(&p12, &password).unwrap();
        assert_eq!(read.alias, "client");
        assert_eq!(read.key_pkcs8.as_slice(), der.as_slice());
        // The CA travels in the file too (openssl shows it), but is not linked to the key.
        assert_eq!(read.chain.first(), Some(&cert.der().to_vec()));
        assert!(!format!("{read:?}").contains(&hex::encode(&der[..8])));

        let wrong = SecretString::from("not the password".to_owned());
        assert!(matches!(
            read_client_identity(&p12, &wrong),
            Err(Pkcs12Error::Decode(_))
        ));
    }

    #[test]
    fn truststore_has_no_key() {
        let (_, _, ca) = material();
        let password = random_password();
        let p12 = truststore("ca", ca.der(), &password).unwrap();
        assert!(matches!(
            read_client_identity(&p12, &password),
            Err(Pkcs12Error::KeyCount(0))
        ));
    }

    #[test]
    fn passwords_are_random_and_printable() {
        let a = random_password();
        let b = random_password();
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 32);
        assert!(a.expose_secret().chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn garbage_key_is_refused() {
        let (_, cert, ca) = material();
        let result = client_identity("c", b"not a key", cert.der(), ca.der(), &random_password());
        assert!(matches!(result, Err(Pkcs12Error::Encode(_))));
    }
}
