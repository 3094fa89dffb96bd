//! YubiHSM2 sealing backend, through the `yubihsm` crate (HTTP connector or USB).
//!
//! The same contract as the PKCS#11 backend, with the construction the YubiHSM2 command set and the
//! crate's `mockhsm` (our CI device) both support. The natural choice, `Wrap Data`/`Unwrap Data`
//! under a wrap key, is not implemented by `mockhsm` 0.42 (it panics on those commands), so it could
//! not be tested; and its format has no additional authenticated data. Instead:
//!
//! * The device holds one **HMAC-SHA256 sealing key**, generated on the device (origin
//!   `generated`), with the `sign-hmac` capability only: never exportable under wrap, no other use.
//! * Each seal draws a random 128-bit nonce and asks the device for a per-blob key
//!   `K = HMAC_device(sealing key, "keystake-seal-v1/yubihsm2/kdf" || header || nonce || SHA-256(aad))`
//!   where `aad` is [`SealContext::aad`]. The context is bound by this derivation: a blob opened
//!   under another context, or by another device's key, derives another `K`.
//! * On the host, `K` yields a keystream `HMAC(K, "…/encrypt")` (XORed with the 32-byte share) and a
//!   tag `HMAC(K, "…/authenticate" || ciphertext)` (encrypt-then-MAC, a PRF-based SIV-like scheme).
//!   Unseal recomputes `K`, checks the tag in constant time first, then decrypts.
//!
//! Blob body: `nonce (16) || ciphertext (32) || tag (32)`. One device round trip per seal/unseal.
//! `K` and the keystream exist on the host only inside `Zeroizing` buffers, for the duration of one
//! call, like the share itself.
//!
//! The `yubihsm::Client` serializes commands over one authenticated session (the device executes
//! them one at a time anyway) and re-opens the session by itself after it was lost; an HSM failure
//! answers [`SealError::Unavailable`] and the next call reconnects. `open` refuses a sealing key
//! that is exportable, was imported or re-imported, has any capability besides HMAC, or a label
//! other than the configured one.
#![forbid(unsafe_code)]

use std::fmt;

use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use yubihsm::{object, Capability, Client, Connector, Credentials, Domain};
use zeroize::Zeroizing;

use super::{SealBackend, SealContext, SealError, SealedShare, Sealer, SHARE_LEN};

const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 32;
const BODY_LEN: usize = NONCE_LEN + SHARE_LEN + TAG_LEN;
/// YubiHSM2 object labels are at most 40 bytes.
const MAX_LABEL_LEN: usize = 40;

const KDF_LABEL: &[u8] = b"keystake-seal-v1/yubihsm2/kdf";
const ENCRYPT_LABEL: &[u8] = b"keystake-seal-v1/yubihsm2/encrypt";
const AUTHENTICATE_LABEL: &[u8] = b"keystake-seal-v1/yubihsm2/authenticate";

/// The only capabilities the sealing key may have.
const SEALING_KEY_CAPABILITIES: Capability = Capability::SIGN_HMAC;

type HmacSha256 = Hmac<Sha256>;

/// What the signer's authentication key must be allowed to do to serve: seal and unseal (and
/// derive the enrolment key) with `sign-hmac`, sign TLS handshakes and the audit head with
/// `sign-ecdsa`. Checked when the sealer opens, so a key set up with too little fails at start
/// with the missing capability named, not at the first request.
pub const SERVING_CAPABILITIES: Capability = Capability::SIGN_HMAC.union(Capability::SIGN_ECDSA);

// What `init` needs on top, only for keys it has to create: `generate-hmac-key` (sealing and
// enrolment keys, delegating `sign-hmac`) and `generate-asymmetric-key` (the P-256 keys,
// delegating `sign-ecdsa`); checked before each generation (`check_auth_key`).

/// How to reach the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum YubiHsmConnector {
    /// Through `yubihsm-connector` (default `127.0.0.1:12345`).
    Http {
        addr: String,
        port: u16,
        timeout_ms: u64,
    },
    /// Directly over USB; `serial` picks one device when several are plugged in.
    Usb {
        serial: Option<String>,
        timeout_ms: u64,
    },
}

impl YubiHsmConnector {
    /// Build the `yubihsm` connector (no I/O yet).
    pub fn build(&self) -> Result<Connector, SealError> {
        match self {
            YubiHsmConnector::Http {
                addr,
                port,
                timeout_ms,
            } => Ok(Connector::http(&yubihsm::HttpConfig {
                addr: addr.clone(),
                port: *port,
                timeout_ms: *timeout_ms,
            })),
            YubiHsmConnector::Usb { serial, timeout_ms } => {
                let serial = serial
                    .as_deref()
                    .map(str::parse::<yubihsm::device::SerialNumber>)
                    .transpose()
                    .map_err(|e| {
                        SealError::InvalidConfig(format!("YubiHSM2 serial number: {e}"))
                    })?;
                Ok(Connector::usb(&yubihsm::UsbConfig {
                    serial,
                    timeout_ms: *timeout_ms,
                }))
            }
        }
    }
}

impl fmt::Display for YubiHsmConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            YubiHsmConnector::Http { addr, port, .. } => write!(f, "http://{addr}:{port}"),
            YubiHsmConnector::Usb {
                serial: Some(serial),
                ..
            } => write!(f, "usb serial {serial}"),
            YubiHsmConnector::Usb { serial: None, .. } => f.write_str("usb"),
        }
    }
}

/// Where the sealing key lives on a YubiHSM2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YubiHsmConfig {
    pub connector: YubiHsmConnector,
    /// Authentication key the signer logs in with (its password comes separately).
    pub auth_key_id: u16,
    /// Object id of the HMAC sealing key.
    pub key_id: u16,
    /// Label of the HMAC sealing key (at most 40 bytes).
    pub key_label: String,
    /// Domain (1–16) the sealing key is created in; the auth key must share it.
    pub domain: u8,
}

impl YubiHsmConfig {
    fn validate(&self) -> Result<Domain, SealError> {
        if self.key_label.is_empty() || self.key_label.len() > MAX_LABEL_LEN {
            return Err(SealError::InvalidConfig(format!(
                "YubiHSM2 key label must be 1 to {MAX_LABEL_LEN} bytes, got {}",
                self.key_label.len()
            )));
        }
        if self.key_id == 0 {
            return Err(SealError::InvalidConfig(
                "YubiHSM2 object id 0 is reserved".to_string(),
            ));
        }
        if self.key_id == crate::hsm::yubihsm_enrolment::ENROLMENT_KEY_ID {
            return Err(SealError::InvalidConfig(format!(
                "YubiHSM2 key_id {:#06x} is the enrolment key's; the sealing key needs its own",
                self.key_id
            )));
        }
        Domain::at(usize::from(self.domain)).map_err(|_| {
            SealError::InvalidConfig(format!(
                "YubiHSM2 domain must be 1 to 16, got {}",
                self.domain
            ))
        })
    }
}

/// A [`Sealer`] backed by an HMAC-SHA256 key inside a YubiHSM2 (see the module doc).
pub struct YubiHsmSealer {
    client: Client,
    config: YubiHsmConfig,
    key_id: object::Id,
    /// Where `init` creates the appliance's other keys (signing keys).
    domain: Domain,
    description: String,
}

impl fmt::Debug for YubiHsmSealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("YubiHsmSealer")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl YubiHsmSealer {
    /// Connect and create the sealing key if there is none at `config.key_id`. Idempotent: an
    /// existing key is checked, never replaced, and no second key with the label is created.
    pub fn initialize(config: &YubiHsmConfig, password: &SecretString) -> Result<(), SealError> {
        Self::initialize_with(config.connector.build()?, config, password)
    }

    /// [`initialize`](Self::initialize) over a connector built by the caller (tests:
    /// `yubihsm::Connector::mockhsm()`); `config.connector` is not used.
    pub fn initialize_with(
        connector: Connector,
        config: &YubiHsmConfig,
        password: &SecretString,
    ) -> Result<(), SealError> {
        let domain = config.validate()?;
        let client = connect(connector, config, password)?;
        check_auth_key(
            &client,
            config,
            domain,
            SERVING_CAPABILITIES,
            Capability::empty(),
        )?;
        match client.get_object_info(config.key_id, object::Type::HmacKey) {
            Ok(info) => return check_sealing_key(&info, config),
            Err(e) if e.device_error() == Some(yubihsm::device::ErrorKind::ObjectNotFound) => {}
            Err(e) => return Err(hsm_error("looking up the sealing key", e)),
        }
        let same_label = client
            .list_objects(&[
                object::Filter::Type(object::Type::HmacKey),
                object::Filter::Label(label(&config.key_label)),
            ])
            .map_err(|e| hsm_error("listing HMAC keys", e))?;
        if !same_label.is_empty() {
            return Err(SealError::DuplicateKey {
                label: config.key_label.clone(),
                count: same_label.len(),
            });
        }
        // Only now, when there is something to create: an auth key set up by setup.sh (which
        // created the keys already) may lack these.
        check_auth_key(
            &client,
            config,
            domain,
            Capability::GENERATE_HMAC_KEY,
            Capability::SIGN_HMAC,
        )?;
        client
            .generate_hmac_key(
                config.key_id,
                label(&config.key_label),
                domain,
                SEALING_KEY_CAPABILITIES,
                yubihsm::hmac::Algorithm::Sha256,
            )
            .map_err(|e| hsm_error("generating the sealing key", e))?;
        let info = client
            .get_object_info(config.key_id, object::Type::HmacKey)
            .map_err(|e| hsm_error("reading the new sealing key", e))?;
        check_sealing_key(&info, config)
    }

    /// Connect, authenticate and check the sealing key.
    pub fn open(config: &YubiHsmConfig, password: &SecretString) -> Result<Self, SealError> {
        let description = format!(
            "yubihsm2 {} key {:#06x} '{}'",
            config.connector, config.key_id, config.key_label
        );
        Self::open_described(config.connector.build()?, config, password, description)
    }

    /// [`open`](Self::open) over a connector built by the caller (tests:
    /// `yubihsm::Connector::mockhsm()`); `config.connector` is not used.
    pub fn open_with(
        connector: Connector,
        config: &YubiHsmConfig,
        password: &SecretString,
    ) -> Result<Self, SealError> {
        let description = format!(
            "yubihsm2 (caller-supplied connector) key {:#06x} '{}'",
            config.key_id, config.key_label
        );
        Self::open_described(connector, config, password, description)
    }

    fn open_described(
        connector: Connector,
        config: &YubiHsmConfig,
        password: &SecretString,
        description: String,
    ) -> Result<Self, SealError> {
        let domain = config.validate()?;
        let client = connect(connector, config, password)?;
        check_auth_key(
            &client,
            config,
            domain,
            SERVING_CAPABILITIES,
            Capability::empty(),
        )?;
        let info = client
            .get_object_info(config.key_id, object::Type::HmacKey)
            .map_err(|e| match e.device_error() {
                Some(yubihsm::device::ErrorKind::ObjectNotFound) => SealError::KeyNotFound {
                    label: config.key_label.clone(),
                },
                _ => hsm_error("looking up the sealing key", e),
            })?;
        check_sealing_key(&info, config)?;
        Ok(YubiHsmSealer {
            client,
            config: config.clone(),
            key_id: config.key_id,
            domain,
            description,
        })
    }

    /// The authenticated client (for `hsm check`'s device query).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// `init`: generate the signing key of `role` on the device unless it exists (in the
    /// sealing key's domain); check it either way.
    pub fn ensure_signing_key(
        &self,
        role: crate::hsm::signing_key::KeyRole,
    ) -> Result<(), SealError> {
        let id = crate::hsm::signing_key::yubihsm::object_id(role);
        if let Err(e) = self.client.get_object_info(id, object::Type::AsymmetricKey) {
            if e.device_error() == Some(yubihsm::device::ErrorKind::ObjectNotFound) {
                self.require_capabilities(
                    Capability::GENERATE_ASYMMETRIC_KEY,
                    Capability::SIGN_ECDSA,
                )?;
            }
        }
        crate::hsm::signing_key::yubihsm::ensure_key(&self.client, role, self.domain)
    }

    /// Refuse, naming what is missing, when the authentication key lacks `needed` or cannot
    /// delegate `delegated` (before `init` creates a key).
    pub(crate) fn require_capabilities(
        &self,
        needed: Capability,
        delegated: Capability,
    ) -> Result<(), SealError> {
        check_auth_key(&self.client, &self.config, self.domain, needed, delegated)
    }

    /// The domain the appliance's keys live in.
    pub(crate) fn domain(&self) -> Domain {
        self.domain
    }

    /// Open the signing key of `role` on this sealer's authenticated client (one session to
    /// the device, which executes commands one at a time anyway).
    pub fn signing_key(
        &self,
        role: crate::hsm::signing_key::KeyRole,
    ) -> Result<crate::hsm::signing_key::yubihsm::YubiHsmSigningKey, SealError> {
        crate::hsm::signing_key::yubihsm::YubiHsmSigningKey::open(self.client.clone(), role)
    }

    /// Ask the device for the per-blob key of `nonce` under `context`.
    fn blob_key(
        &self,
        nonce: &[u8],
        context: &SealContext,
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let header = SealedShare::header_for(SealBackend::YubiHsmHmacSha256);
        let context_hash = Sha256::digest(context.aad());
        let mut input = Vec::with_capacity(KDF_LABEL.len() + header.len() + nonce.len() + 32);
        input.extend_from_slice(KDF_LABEL);
        input.extend_from_slice(&header);
        input.extend_from_slice(nonce);
        input.extend_from_slice(&context_hash);
        let key = self
            .client
            .sign_hmac(self.key_id, input)
            .map_err(|e| hsm_error("deriving the blob key", e))?;
        let key = Zeroizing::new(key.into_vec());
        if key.len() != 32 {
            return Err(SealError::Backend(format!(
                "the device returned a {}-byte HMAC-SHA256 output",
                key.len()
            )));
        }
        Ok(key)
    }
}

fn label(text: &str) -> object::Label {
    object::Label::from(text)
}

fn connect(
    connector: Connector,
    config: &YubiHsmConfig,
    password: &SecretString,
) -> Result<Client, SealError> {
    let credentials =
        Credentials::from_password(config.auth_key_id, password.expose_secret().as_bytes());
    // `reconnect`: the client keeps the derived credentials to open a new session after the old
    // one timed out or the device was unplugged.
    Client::open(connector, credentials, true).map_err(|e| hsm_error("connecting", e))
}

/// Refuse an authentication key that lacks a capability, delegated capability or the domain the
/// signer needs, naming what is missing (the device would refuse the first command that needs
/// it with a bare "insufficient permissions"; `hsm-config/yubihsm2/setup.sh` creates a key with
/// exactly what is needed).
fn check_auth_key(
    client: &Client,
    config: &YubiHsmConfig,
    domain: Domain,
    needed: Capability,
    delegated: Capability,
) -> Result<(), SealError> {
    let info = client
        .get_object_info(config.auth_key_id, object::Type::AuthenticationKey)
        .map_err(|e| hsm_error("reading the authentication key's capabilities", e))?;
    let missing = needed.difference(info.capabilities);
    let missing_delegated = delegated.difference(info.delegated_capabilities);
    if !missing.is_empty() || !missing_delegated.is_empty() {
        return Err(SealError::InvalidConfig(format!(
            "YubiHSM2 authentication key {:#06x} lacks capabilities the signer needs: \
             missing {missing:?}, missing delegated {missing_delegated:?} \
             (create it with hsm-config/yubihsm2/setup.sh)",
            config.auth_key_id
        )));
    }
    if !info.domains.contains(domain) {
        return Err(SealError::InvalidConfig(format!(
            "YubiHSM2 authentication key {:#06x} is not in domain {} where the keys live \
             (its domains: {:?})",
            config.auth_key_id, config.domain, info.domains
        )));
    }
    Ok(())
}

pub(crate) fn hsm_error(doing: &str, error: yubihsm::client::Error) -> SealError {
    use yubihsm::client::ErrorKind;
    use yubihsm::device::ErrorKind as DeviceErrorKind;
    match error.kind() {
        ErrorKind::AuthenticationError => SealError::WrongPin,
        ErrorKind::DeviceError => match error.device_error() {
            Some(DeviceErrorKind::AuthenticationFailed) => SealError::WrongPin,
            Some(DeviceErrorKind::InsufficientPermissions) => SealError::Backend(format!(
                "{doing}: the authentication key lacks a capability or domain it needs"
            )),
            _ => SealError::Unavailable(format!("{doing}: {error}")),
        },
        _ => SealError::Unavailable(format!("{doing}: {error}")),
    }
}

fn check_sealing_key(info: &object::Info, config: &YubiHsmConfig) -> Result<(), SealError> {
    check_hmac_key(info, config.key_id, &config.key_label)
}

/// An HMAC-SHA256 key fit to seal or derive from: labelled `expected_label`, generated on this
/// device, capability `sign-hmac` only, not exportable under wrap (the sealing key and the
/// enrolment key, `hsm::yubihsm_enrolment`, get the same check).
pub(crate) fn check_hmac_key(
    info: &object::Info,
    id: object::Id,
    expected_label: &str,
) -> Result<(), SealError> {
    let unsuitable = |reason: String| SealError::UnsuitableKey {
        label: expected_label.to_owned(),
        reason,
    };
    if info.label != label(expected_label) {
        return Err(unsuitable(format!(
            "object {id:#06x} is labelled '{}'",
            info.label
        )));
    }
    if info.algorithm != yubihsm::Algorithm::Hmac(yubihsm::hmac::Algorithm::Sha256) {
        return Err(unsuitable(format!(
            "algorithm is {:?}, not hmac-sha256",
            info.algorithm
        )));
    }
    if info
        .capabilities
        .contains(Capability::EXPORTABLE_UNDER_WRAP)
    {
        return Err(unsuitable("it is exportable under wrap".to_string()));
    }
    if !SEALING_KEY_CAPABILITIES.contains(info.capabilities) {
        return Err(unsuitable(format!(
            "it has capabilities beyond sign-hmac: {:?}",
            info.capabilities
        )));
    }
    if info.origin != object::Origin::Generated {
        return Err(unsuitable(format!(
            "origin is {:?}: its value existed outside this device",
            info.origin
        )));
    }
    Ok(())
}

/// Keystream and tag from the per-blob key.
fn keystream(blob_key: &[u8]) -> Result<Zeroizing<[u8; SHARE_LEN]>, SealError> {
    let mut mac = new_mac(blob_key)?;
    mac.update(ENCRYPT_LABEL);
    let mut stream = Zeroizing::new([0u8; SHARE_LEN]);
    // The keystream is as secret as the share it unmasks: wipe the digest's stack copy too.
    let mut digest = mac.finalize().into_bytes();
    stream.copy_from_slice(&digest);
    zeroize::Zeroize::zeroize(digest.as_mut_slice());
    Ok(stream)
}

fn tag_mac(blob_key: &[u8], ciphertext: &[u8]) -> Result<HmacSha256, SealError> {
    let mut mac = new_mac(blob_key)?;
    mac.update(AUTHENTICATE_LABEL);
    mac.update(ciphertext);
    Ok(mac)
}

fn new_mac(key: &[u8]) -> Result<HmacSha256, SealError> {
    HmacSha256::new_from_slice(key)
        .map_err(|_| SealError::Backend("HMAC key of invalid length".to_string()))
}

impl Sealer for YubiHsmSealer {
    fn seal(
        &self,
        secret: &Zeroizing<[u8; SHARE_LEN]>,
        context: &SealContext,
    ) -> Result<SealedShare, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let blob_key = self.blob_key(&nonce, context)?;
        let stream = keystream(&blob_key)?;
        let mut ciphertext = [0u8; SHARE_LEN];
        for ((out, share_byte), stream_byte) in
            ciphertext.iter_mut().zip(secret.iter()).zip(stream.iter())
        {
            *out = share_byte ^ stream_byte;
        }
        let tag = tag_mac(&blob_key, &ciphertext)?.finalize().into_bytes();
        Ok(SealedShare::assemble(
            SealBackend::YubiHsmHmacSha256,
            &[&nonce, &ciphertext, &tag],
        ))
    }

    fn unseal(
        &self,
        sealed: &SealedShare,
        context: &SealContext,
    ) -> Result<Zeroizing<[u8; SHARE_LEN]>, SealError> {
        let body = sealed.body_for(SealBackend::YubiHsmHmacSha256, BODY_LEN)?;
        let (nonce, rest) = body.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(SHARE_LEN);
        let blob_key = self.blob_key(nonce, context)?;
        // Authenticate before decrypting; constant-time comparison.
        tag_mac(&blob_key, ciphertext)?
            .verify_slice(tag)
            .map_err(|_| SealError::Integrity)?;
        let stream = keystream(&blob_key)?;
        let mut share = Zeroizing::new([0u8; SHARE_LEN]);
        for ((out, cipher_byte), stream_byte) in
            share.iter_mut().zip(ciphertext.iter()).zip(stream.iter())
        {
            *out = cipher_byte ^ stream_byte;
        }
        Ok(share)
    }

    fn health_check(&self) -> Result<(), SealError> {
        self.client
            .get_object_info(self.key_id, object::Type::HmacKey)
            .map(|_| ())
            .map_err(|e| hsm_error("health check", e))
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// The crate's in-memory YubiHSM2 for tests (debug builds only): a fresh device per call.
#[cfg(test)]
pub(crate) mod test_support {
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    use secrecy::SecretString;
    use yubihsm::Connector;

    use super::{YubiHsmConfig, YubiHsmConnector, YubiHsmSealer};

    /// mockhsm's factory-default authentication key: id 1, password "password".
    pub(crate) const MOCK_AUTH_KEY_ID: u16 = 1;

    pub(crate) fn mock_password() -> SecretString {
        SecretString::from("password")
    }

    pub(crate) fn config() -> YubiHsmConfig {
        YubiHsmConfig {
            connector: YubiHsmConnector::Http {
                addr: "127.0.0.1".to_string(),
                port: 12345,
                timeout_ms: 5000,
            },
            auth_key_id: MOCK_AUTH_KEY_ID,
            key_id: 0x0064,
            key_label: "keystake-seal".to_string(),
            domain: 1,
        }
    }

    /// A mock device behind a `yubihsm-connector`-compatible HTTP server (the crate's own
    /// `http::Server`, what production talks to), reached through a TCP relay on 127.0.0.1:
    /// [`unplug`](Self::unplug) closes every connection and the port, as a pulled device under a
    /// dying connector does; [`plug_in`](Self::plug_in) opens the port again. The device's state
    /// (the crate's `mockhsm`) survives, as a real device's objects survive being unplugged.
    pub(crate) struct Cable {
        port: u16,
        server_port: u16,
        relay: Option<Relay>,
    }

    struct Relay {
        stop: Arc<AtomicBool>,
        streams: Arc<Mutex<Vec<TcpStream>>>,
        accept: std::thread::JoinHandle<()>,
    }

    impl Cable {
        pub(crate) fn new() -> Self {
            let free_port = || {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port()
            };
            let server_port = free_port();
            let server = yubihsm::connector::http::Server::new(
                &yubihsm::HttpConfig {
                    addr: "127.0.0.1".to_string(),
                    port: server_port,
                    timeout_ms: 5000,
                },
                Connector::mockhsm(),
            )
            .unwrap();
            // Serves until the test process ends (one idle thread per cable).
            std::thread::spawn(move || while server.handle_request().is_ok() {});
            let mut cable = Cable {
                port: free_port(),
                server_port,
                relay: None,
            };
            cable.plug_in();
            cable
        }

        /// A connector to the device, as `[hsm] connector = "http"` builds it.
        pub(crate) fn connector(&self) -> Connector {
            Connector::http(&yubihsm::HttpConfig {
                addr: "127.0.0.1".to_string(),
                port: self.port,
                timeout_ms: 2000,
            })
        }

        pub(crate) fn plug_in(&mut self) {
            assert!(self.relay.is_none(), "already plugged in");
            let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let streams = Arc::new(Mutex::new(Vec::new()));
            let (stopped, open, server_port) = (stop.clone(), streams.clone(), self.server_port);
            let accept = std::thread::spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                        continue;
                    };
                    client.set_nonblocking(false).unwrap();
                    let server = TcpStream::connect(("127.0.0.1", server_port)).unwrap();
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server.try_clone().unwrap(), client.try_clone().unwrap()),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                    let mut open = open.lock().unwrap();
                    open.push(client);
                    open.push(server);
                }
            });
            self.relay = Some(Relay {
                stop,
                streams,
                accept,
            });
        }

        pub(crate) fn unplug(&mut self) {
            let relay = self.relay.take().expect("plugged in");
            relay.stop.store(true, Ordering::SeqCst);
            relay.accept.join().unwrap();
            for stream in relay.streams.lock().unwrap().drain(..) {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }

    impl Drop for Cable {
        fn drop(&mut self) {
            if self.relay.is_some() {
                self.unplug();
            }
        }
    }

    /// A fresh mock device with the sealing key, and a sealer on it.
    pub(crate) fn fresh_sealer() -> (Connector, YubiHsmSealer) {
        let connector = Connector::mockhsm();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        let sealer =
            YubiHsmSealer::open_with(connector.clone(), &config(), &mock_password()).unwrap();
        (connector, sealer)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::hsm::contract_tests;

    fn admin_client(connector: &Connector) -> Client {
        Client::open(connector.clone(), Credentials::default(), true).unwrap()
    }

    contract_tests::sealer_contract_tests!(|_: &str| fresh_sealer().1, "yubihsm2");

    #[test]
    fn blob_layout_is_nonce_ciphertext_tag() {
        let (_, sealer) = fresh_sealer();
        let sealed = sealer
            .seal(&contract_tests::secret(1), &contract_tests::context(1))
            .unwrap();
        assert_eq!(sealed.0.len(), 2 + BODY_LEN);
        assert_eq!(sealed.0[..2], [1, 0x02]);
        // A PKCS#11 blob is refused by header, before any device call.
        let mut foreign = sealed.clone();
        foreign.0[1] = SealBackend::Pkcs11AesGcm.tag();
        assert!(matches!(
            sealer.unseal(&foreign, &contract_tests::context(1)),
            Err(SealError::MalformedBlob(_))
        ));
    }

    #[test]
    fn initialize_is_idempotent() {
        let connector = Connector::mockhsm();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        let sealer =
            YubiHsmSealer::open_with(connector.clone(), &config(), &mock_password()).unwrap();
        let ctx = contract_tests::context(2);
        let sealed = sealer.seal(&contract_tests::secret(2), &ctx).unwrap();

        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();

        let keys = admin_client(&connector)
            .list_objects(&[
                object::Filter::Type(object::Type::HmacKey),
                object::Filter::Label(label("keystake-seal")),
            ])
            .unwrap();
        assert_eq!(keys.len(), 1);
        // Same key: the old blob still opens.
        assert_eq!(
            *sealer.unseal(&sealed, &ctx).unwrap(),
            *contract_tests::secret(2)
        );

        // Another id with the same label is refused rather than creating a second key.
        let mut other_id = config();
        other_id.key_id = 0x0065;
        assert!(matches!(
            YubiHsmSealer::initialize_with(connector, &other_id, &mock_password()),
            Err(SealError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn sealing_key_is_not_exportable() {
        let (connector, _sealer) = fresh_sealer();
        let admin = admin_client(&connector);
        let info = admin
            .get_object_info(config().key_id, object::Type::HmacKey)
            .unwrap();
        assert_eq!(info.capabilities, Capability::SIGN_HMAC);
        assert_eq!(info.origin, object::Origin::Generated);
        admin
            .generate_wrap_key(
                0x0200,
                label("export-attempt"),
                Domain::DOM1,
                Capability::EXPORT_WRAPPED,
                Capability::all(),
                yubihsm::wrap::Algorithm::Aes256Ccm,
            )
            .unwrap();
        assert!(admin
            .export_wrapped(0x0200, object::Type::HmacKey, config().key_id)
            .is_err());
    }

    #[test]
    fn open_refuses_unsuitable_keys() {
        // Exportable under wrap.
        let connector = Connector::mockhsm();
        admin_client(&connector)
            .generate_hmac_key(
                config().key_id,
                label("keystake-seal"),
                Domain::DOM1,
                Capability::SIGN_HMAC | Capability::EXPORTABLE_UNDER_WRAP,
                yubihsm::hmac::Algorithm::Sha256,
            )
            .unwrap();
        assert!(matches!(
            YubiHsmSealer::open_with(connector.clone(), &config(), &mock_password()),
            Err(SealError::UnsuitableKey { .. })
        ));
        assert!(matches!(
            YubiHsmSealer::initialize_with(connector, &config(), &mock_password()),
            Err(SealError::UnsuitableKey { .. })
        ));

        // Imported: its value was known outside the device.
        let connector = Connector::mockhsm();
        admin_client(&connector)
            .put_hmac_key(
                config().key_id,
                label("keystake-seal"),
                Domain::DOM1,
                Capability::SIGN_HMAC,
                yubihsm::hmac::Algorithm::Sha256,
                vec![0x42; 32],
            )
            .unwrap();
        match YubiHsmSealer::open_with(connector, &config(), &mock_password()) {
            Err(SealError::UnsuitableKey { reason, .. }) => assert!(reason.contains("Imported")),
            other => panic!("expected UnsuitableKey, got {other:?}"),
        }

        // Right id, other label.
        let connector = Connector::mockhsm();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        let mut relabelled = config();
        relabelled.key_label = "something-else".to_string();
        assert!(matches!(
            YubiHsmSealer::open_with(connector, &relabelled, &mock_password()),
            Err(SealError::UnsuitableKey { .. })
        ));
    }

    #[test]
    fn wrong_password_and_missing_key_are_reported() {
        let connector = Connector::mockhsm();
        match YubiHsmSealer::open_with(connector.clone(), &config(), &SecretString::from("nope")) {
            Err(SealError::WrongPin) => {}
            other => panic!("expected WrongPin, got {other:?}"),
        }
        match YubiHsmSealer::open_with(connector, &config(), &mock_password()) {
            Err(SealError::KeyNotFound { label }) => assert_eq!(label, "keystake-seal"),
            other => panic!("expected KeyNotFound, got {other:?}"),
        }
    }

    #[test]
    fn bad_configuration_is_refused() {
        let mut bad = config();
        bad.domain = 17;
        assert!(matches!(
            YubiHsmSealer::open_with(Connector::mockhsm(), &bad, &mock_password()),
            Err(SealError::InvalidConfig(_))
        ));
        let mut bad = config();
        bad.key_label = "x".repeat(41);
        assert!(matches!(
            YubiHsmSealer::open_with(Connector::mockhsm(), &bad, &mock_password()),
            Err(SealError::InvalidConfig(_))
        ));
        let bad_serial = YubiHsmConnector::Usb {
            serial: Some("not-a-serial".to_string()),
            timeout_ms: 1000,
        };
        assert!(matches!(
            bad_serial.build(),
            Err(SealError::InvalidConfig(_))
        ));
    }

    #[test]
    fn unreachable_connector_is_unavailable() {
        let mut config = config();
        // Port 1 on localhost: nothing listens there.
        config.connector = YubiHsmConnector::Http {
            addr: "127.0.0.1".to_string(),
            port: 1,
            timeout_ms: 500,
        };
        match YubiHsmSealer::open(&config, &mock_password()) {
            Err(SealError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn an_unplugged_device_is_unavailable_then_recovers_when_plugged_in() {
        let mut cable = Cable::new();
        YubiHsmSealer::initialize_with(cable.connector(), &config(), &mock_password()).unwrap();
        let sealer =
            YubiHsmSealer::open_with(cable.connector(), &config(), &mock_password()).unwrap();
        use crate::hsm::signing_key::{HsmSigningKey, KeyRole};
        sealer.ensure_signing_key(KeyRole::Tls).unwrap();
        let tls_key = sealer.signing_key(KeyRole::Tls).unwrap();
        let ctx = contract_tests::context(1);
        let sealed = sealer.seal(&contract_tests::secret(1), &ctx).unwrap();
        cable.unplug();
        for outcome in [
            sealer.unseal(&sealed, &ctx).map(|_| ()),
            sealer.seal(&contract_tests::secret(1), &ctx).map(|_| ()),
            sealer.health_check(),
            tls_key.sign_sha256(b"handshake").map(|_| ()),
        ] {
            match outcome {
                Err(SealError::Unavailable(_)) => {}
                other => panic!("unplugged: expected Unavailable, got {other:?}"),
            }
        }
        // Opening while unplugged (a restart without the device) is refused the same way.
        assert!(matches!(
            YubiHsmSealer::open_with(cable.connector(), &config(), &mock_password()),
            Err(SealError::Unavailable(_))
        ));
        cable.plug_in();
        // The same sealer recovers without being reopened: the client opens a new session
        // (the old one was aborted with the connection) on the next call.
        sealer.health_check().unwrap();
        assert_eq!(
            *sealer.unseal(&sealed, &ctx).unwrap(),
            *contract_tests::secret(1)
        );
        let again = sealer.seal(&contract_tests::secret(1), &ctx).unwrap();
        assert_eq!(
            *sealer.unseal(&again, &ctx).unwrap(),
            *contract_tests::secret(1)
        );
        let signature = tls_key.sign_sha256(b"handshake").unwrap();
        assert!(tls_key.public_key().verify_sha256(b"handshake", &signature));
    }

    #[test]
    fn an_auth_key_without_the_capabilities_is_refused_by_name() {
        // The mock does not enforce capabilities, so the signer checks its own key's at open.
        let connector = Connector::mockhsm();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        let admin = admin_client(&connector);
        let limited = |id: u16, capabilities: Capability, domains: Domain| {
            admin
                .put_authentication_key(
                    id,
                    label("limited"),
                    domains,
                    capabilities,
                    Capability::empty(),
                    yubihsm::authentication::Algorithm::YubicoAes,
                    yubihsm::authentication::Key::derive_from_password(b"limited"),
                )
                .unwrap();
            let mut config = config();
            config.auth_key_id = id;
            config
        };
        let no_ecdsa = limited(0x0010, Capability::SIGN_HMAC, Domain::DOM1);
        match YubiHsmSealer::open_with(connector.clone(), &no_ecdsa, &SecretString::from("limited"))
        {
            Err(SealError::InvalidConfig(message)) => {
                assert!(message.contains("0x0010"), "{message}");
                assert!(message.contains("SIGN_ECDSA"), "{message}");
                assert!(!message.contains("SIGN_HMAC"), "{message}");
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        let other_domain = limited(0x0011, SERVING_CAPABILITIES, Domain::DOM2);
        match YubiHsmSealer::open_with(
            connector.clone(),
            &other_domain,
            &SecretString::from("limited"),
        ) {
            Err(SealError::InvalidConfig(message)) => {
                assert!(message.contains("not in domain 1"), "{message}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
        // setup.sh's serving key (sign-hmac + sign-ecdsa, delegating nothing) opens, and `init`
        // with it succeeds when the keys exist: it has nothing to create.
        let serving = limited(0x0012, SERVING_CAPABILITIES, Domain::DOM1);
        YubiHsmSealer::open_with(connector.clone(), &serving, &SecretString::from("limited"))
            .unwrap();
        YubiHsmSealer::initialize_with(connector.clone(), &serving, &SecretString::from("limited"))
            .unwrap();
        // But on a device without the sealing key, `init` with it names what is missing.
        let empty = Connector::mockhsm();
        let admin = admin_client(&empty);
        admin
            .put_authentication_key(
                0x0012,
                label("limited"),
                Domain::DOM1,
                SERVING_CAPABILITIES,
                Capability::empty(),
                yubihsm::authentication::Algorithm::YubicoAes,
                yubihsm::authentication::Key::derive_from_password(b"limited"),
            )
            .unwrap();
        match YubiHsmSealer::initialize_with(empty, &serving, &SecretString::from("limited")) {
            Err(SealError::InvalidConfig(message)) => {
                assert!(message.contains("GENERATE_HMAC_KEY"), "{message}")
            }
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn debug_and_description_hold_no_secret() {
        let (_, sealer) = fresh_sealer();
        let printed = format!("{sealer:?} {}", sealer.describe());
        assert!(!printed.contains("password"));
        assert!(printed.contains("0x0064"));
    }
}
