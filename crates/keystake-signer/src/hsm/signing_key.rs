//! P-256 **signing keys inside the HSM**: the appliance's TLS server key ([`KeyRole::Tls`]) and
//! its identity key ([`KeyRole::Identity`], which signs DKG broadcasts and the audit head).
//!
//! `init` generates each key pair inside the token ([`ensure_pkcs11_key`], or
//! [`yubihsm::ensure_key`] on a YubiHSM2), idempotently: an existing pair is checked, never
//! replaced. The private key is a token object, `CKA_PRIVATE`, `CKA_SENSITIVE`, never
//! extractable, not modifiable, not copyable and usable **only** to sign (`CKM_ECDSA`; no
//! derive, decrypt or unwrap) — the same [`pkcs11::KeyProfile`] / [`pkcs11::check_key`]
//! machinery as the sealing and enrolment keys, so generation and checking cannot drift apart.
//! The two roles have distinct labels, so the TLS key can never sign a DKG broadcast.
//!
//! The rest of the code sees [`HsmSigningKey`]: the public key as an uncompressed SEC1 point, and
//! "sign this 32-byte SHA-256 digest" → a 64-byte `r || s` signature ([`EcdsaSignature`], which
//! also gives the DER form TLS and X.509 want). The digest is computed on the host
//! ([`HsmSigningKey::sign_sha256`]): `CKM_ECDSA` signs a digest, and hashing on the host keeps
//! the message off the HSM link (network HSMs) and works the same on every token.
//!
//! PKCS#11 ([`Pkcs11SigningKey`]) signs on the sealer's session pool (a cryptoki `Session` is
//! not `Sync`): a signature borrows one idle session for one `C_SignInit`/`C_Sign`, so
//! concurrent handshakes sign in parallel on different sessions; the private key's handle is
//! cached per pool generation (no object search per signature) and found again after the pool
//! was rebuilt. YubiHSM2 ([`yubihsm::YubiHsmSigningKey`]) signs through
//! `yubihsm::ecdsa::Signer<NistP256>`.
//!
//! Every key is self-tested when opened or ensured: a random digest is signed in the HSM and the
//! signature verified in software against the public key read from the HSM, so a token holding
//! mismatched halves, or a key that does not sign, is refused at start rather than at the first
//! handshake.
//!
//! What this module refuses: a role's label held by anything other than exactly one private
//! and one public P-256 key; a private key that was ever extractable or readable, may derive,
//! decrypt or unwrap, or cannot sign; a public key that is not an uncompressed P-256 point; a
//! signature from the HSM that is not 64 bytes or does not verify. Errors are [`SealError`]s
//! (the HSM layer's one error type), so an HSM that is down while signing is
//! [`SealError::Unavailable`] → 503 through `net/error.rs`.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::{Arc, RwLock};

use cryptoki::error::Error as CryptokiError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use rand::RngCore;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use crate::hsm::pkcs11::{self, Pkcs11Config, Pkcs11Sealer, P256_EC_PARAMS, P256_SEC1_LEN};
use crate::hsm::SealError;

/// Length of a SHA-256 digest, what [`HsmSigningKey::sign_digest`] signs.
pub const DIGEST_LEN: usize = 32;
/// Length of a P-256 ECDSA signature as `r || s`.
pub const SIGNATURE_LEN: usize = 64;

/// What a signing key is for. Each role is its own key pair with its own label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyRole {
    /// The TLS server key: signs TLS 1.3 handshakes (`CertificateVerify`) and nothing else.
    Tls,
    /// The appliance's identity key: signs DKG broadcasts and the audit head.
    Identity,
}

impl KeyRole {
    pub const ALL: [KeyRole; 2] = [KeyRole::Tls, KeyRole::Identity];

    /// `CKA_LABEL` of both halves of the key pair (PKCS#11), label of the object (YubiHSM2).
    pub fn label(self) -> &'static str {
        match self {
            KeyRole::Tls => "keystake-tls-key",
            KeyRole::Identity => "keystake-identity-key",
        }
    }
}

impl fmt::Display for KeyRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyRole::Tls => "TLS server key",
            KeyRole::Identity => "identity key",
        })
    }
}

/// A P-256 public key as an uncompressed SEC1 point (`0x04 || x || y`), checked to be on the
/// curve when it was read from the HSM.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct P256PublicKey([u8; P256_SEC1_LEN]);

impl P256PublicKey {
    /// Accept an uncompressed SEC1 point on P-256.
    pub fn from_sec1(bytes: &[u8]) -> Option<Self> {
        let point: [u8; P256_SEC1_LEN] = bytes.try_into().ok()?;
        // ring has no "parse a point" call; its ECDH refuses a point off the curve, so an
        // agreement with a throw-away ephemeral key is the on-curve check.
        let rng = ring::rand::SystemRandom::new();
        let ephemeral =
            ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
                .ok()?;
        ring::agreement::agree_ephemeral(
            ephemeral,
            &ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, &point),
            |_| (),
        )
        .ok()?;
        Some(P256PublicKey(point))
    }

    /// The uncompressed SEC1 encoding (65 bytes).
    pub fn as_sec1(&self) -> &[u8; P256_SEC1_LEN] {
        &self.0
    }

    /// Verify a `r || s` signature over SHA-256(`message`).
    pub fn verify_sha256(&self, message: &[u8], signature: &EcdsaSignature) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0[..])
            .verify(message, signature.as_bytes())
            .is_ok()
    }
}

impl fmt::Debug for P256PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "P256PublicKey({})", hex::encode(self.0))
    }
}

/// A P-256 ECDSA signature as `r || s` (32 bytes each, big-endian).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EcdsaSignature([u8; SIGNATURE_LEN]);

impl EcdsaSignature {
    pub fn from_bytes(bytes: [u8; SIGNATURE_LEN]) -> Self {
        EcdsaSignature(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; SIGNATURE_LEN] {
        &self.0
    }

    /// The DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` that TLS and X.509 use.
    pub fn to_der(&self) -> Vec<u8> {
        let r = der_integer(&self.0[..32]);
        let s = der_integer(&self.0[32..]);
        // At most 2 × 35 bytes: the length always fits the short form.
        let mut der = Vec::with_capacity(2 + r.len() + s.len());
        der.push(0x30);
        der.push((r.len() + s.len()) as u8);
        der.extend_from_slice(&r);
        der.extend_from_slice(&s);
        der
    }
}

impl fmt::Debug for EcdsaSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EcdsaSignature({})", hex::encode(self.0))
    }
}

/// DER INTEGER of an unsigned big-endian value: minimal length, a zero byte before a set
/// top bit so it stays positive.
fn der_integer(value: &[u8]) -> Vec<u8> {
    let start = value
        .iter()
        .position(|&b| b != 0)
        .unwrap_or(value.len() - 1);
    let value = &value[start..];
    let pad = value[0] & 0x80 != 0;
    let mut out = Vec::with_capacity(3 + value.len());
    out.push(0x02);
    out.push((value.len() + usize::from(pad)) as u8);
    if pad {
        out.push(0);
    }
    out.extend_from_slice(value);
    out
}

/// A P-256 key pair whose private half lives in the HSM and can only sign.
///
/// Implementations are safe to call from many threads at once (TLS handshakes sign
/// concurrently).
pub trait HsmSigningKey: Send + Sync {
    /// Which of the appliance's keys this is.
    fn role(&self) -> KeyRole;

    /// The public half.
    fn public_key(&self) -> &P256PublicKey;

    /// Sign a SHA-256 digest computed by the caller: ECDSA P-256 in the HSM, `r || s` out.
    fn sign_digest(&self, digest: &[u8; DIGEST_LEN]) -> Result<EcdsaSignature, SealError>;

    /// Human-readable identity of the key (no secrets), e.g. for logs and `hsm check`.
    fn describe(&self) -> String;

    /// SHA-256 of `message` on the host, then [`sign_digest`](Self::sign_digest).
    fn sign_sha256(&self, message: &[u8]) -> Result<EcdsaSignature, SealError> {
        let digest: [u8; DIGEST_LEN] = Sha256::digest(message).into();
        self.sign_digest(&digest)
    }
}

/// Sign a random digest and verify it in software: the two halves belong together and the key
/// signs. Used by every backend when a key is opened or ensured.
pub(crate) fn self_test(key: &dyn HsmSigningKey) -> Result<(), SealError> {
    let mut message = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut message);
    let signature = key.sign_sha256(&message)?;
    if !key.public_key().verify_sha256(&message, &signature) {
        return Err(SealError::UnsuitableKey {
            label: key.role().label().to_owned(),
            reason: "self-test: its signature does not verify under the public key stored with it"
                .to_owned(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PKCS#11.

/// The private half of a signing key: a P-256 key that never left the token and can only sign.
fn private_key_profile() -> pkcs11::KeyProfile {
    pkcs11::KeyProfile {
        kind: "a P-256 EC private key",
        exact: vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        ],
        required: &[(AttributeType::Sign, "cannot sign")],
        forbidden: &[
            (AttributeType::Derive, "may derive (ECDH)"),
            (AttributeType::Decrypt, "may decrypt"),
            (AttributeType::Unwrap, "may unwrap"),
        ],
    }
}

fn unsuitable(role: KeyRole, reason: impl Into<String>) -> SealError {
    SealError::UnsuitableKey {
        label: role.label().to_owned(),
        reason: reason.into(),
    }
}

/// The pair of `role` as found on the token.
struct FoundPair {
    private: ObjectHandle,
    public: P256PublicKey,
}

/// Find and check the pair: `Ok(Ok(None))` when no object has the role's label. The outer error
/// is the token failing, the inner one a refusal.
fn find_pair(
    session: &Session,
    role: KeyRole,
) -> Result<Result<Option<FoundPair>, SealError>, CryptokiError> {
    let label = || Attribute::Label(role.label().as_bytes().to_vec());
    let all = session.find_objects(&[label()])?;
    let private = session.find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY), label()])?;
    let public = session.find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), label()])?;
    let (private, public) = match (private.as_slice(), public.as_slice()) {
        ([], []) if all.is_empty() => return Ok(Ok(None)),
        ([private], [public]) if all.len() == 2 => (*private, *public),
        _ => {
            return Ok(Err(unsuitable(
                role,
                format!(
                    "expected one private and one public key with this label, found {} private, \
                     {} public, {} objects in all",
                    private.len(),
                    public.len(),
                    all.len()
                ),
            )))
        }
    };
    match pkcs11::check_key(session, private, &private_key_profile()) {
        Ok(()) => {}
        Err(pkcs11::KeyCheckError::Hsm(error)) => return Err(error),
        Err(pkcs11::KeyCheckError::Unsuitable(reason)) => return Ok(Err(unsuitable(role, reason))),
    }
    let attributes =
        session.get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])?;
    let mut params = None;
    let mut point = None;
    for attribute in attributes {
        match attribute {
            Attribute::EcParams(value) => params = Some(value),
            Attribute::EcPoint(value) => point = Some(value),
            _ => {}
        }
    }
    if params.as_deref() != Some(&P256_EC_PARAMS[..]) {
        return Ok(Err(unsuitable(role, "the public key is not on P-256")));
    }
    let public = point
        .as_deref()
        .and_then(pkcs11::sec1_from_ec_point)
        .and_then(|sec1| P256PublicKey::from_sec1(&sec1));
    match public {
        Some(public) => Ok(Ok(Some(FoundPair { private, public }))),
        None => Ok(Err(unsuitable(
            role,
            "CKA_EC_POINT is not an uncompressed point on P-256",
        ))),
    }
}

fn generate_pair(session: &Session, role: KeyRole) -> Result<(), CryptokiError> {
    let label = Attribute::Label(role.label().as_bytes().to_vec());
    // The public half is public: readable without login, but not modifiable, and not usable
    // by the token for anything (verification happens on the host).
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Modifiable(false),
        label.clone(),
        Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Derive(false),
    ];
    let mut private_template = vec![label];
    private_template.extend(private_key_profile().generation_template());
    session.generate_key_pair(
        &Mechanism::EccKeyPairGen,
        &public_template,
        &private_template,
    )?;
    Ok(())
}

/// `CKM_ECDSA` over a host-computed digest: the token answers `r || s`.
fn sign_in_token(
    session: &Session,
    private: ObjectHandle,
    digest: &[u8; DIGEST_LEN],
) -> Result<Result<EcdsaSignature, SealError>, CryptokiError> {
    let signature = session.sign(&Mechanism::Ecdsa, private, digest)?;
    match <[u8; SIGNATURE_LEN]>::try_from(signature.as_slice()) {
        Ok(bytes) => Ok(Ok(EcdsaSignature(bytes))),
        Err(_) => Ok(Err(SealError::Backend(format!(
            "the token returned a {}-byte ECDSA signature, expected {SIGNATURE_LEN} (r || s)",
            signature.len()
        )))),
    }
}

/// `init`: create the pair of `role` on the configured token unless it exists, check it either
/// way (attributes, and a signature verified in software). Idempotent. Returns the public key.
pub fn ensure_pkcs11_key(
    config: &Pkcs11Config,
    user_pin: &SecretString,
    role: KeyRole,
) -> Result<P256PublicKey, SealError> {
    let session = pkcs11::user_session(config, user_pin)?;
    let hsm = |doing: &str| {
        let doing = doing.to_owned();
        move |error: CryptokiError| SealError::Unavailable(format!("{doing}: {error}"))
    };
    let pair = match find_pair(&session, role).map_err(hsm("searching for the signing key"))?? {
        Some(pair) => pair,
        None => {
            generate_pair(&session, role).map_err(|error| {
                SealError::Backend(format!("generating the {role} in the token: {error}"))
            })?;
            find_pair(&session, role)
                .map_err(hsm("reading the new signing key"))??
                .ok_or_else(|| SealError::KeyNotFound {
                    label: role.label().to_owned(),
                })?
        }
    };
    let mut message = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut message);
    let digest: [u8; DIGEST_LEN] = Sha256::digest(message).into();
    let signature =
        sign_in_token(&session, pair.private, &digest).map_err(hsm("signing the self-test"))??;
    if !pair.public.verify_sha256(&message, &signature) {
        return Err(unsuitable(
            role,
            "self-test: its signature does not verify under the public key stored with it",
        ));
    }
    Ok(pair.public)
}

/// A signing key in a PKCS#11 token, signing on the sealer's session pool.
pub struct Pkcs11SigningKey {
    sealer: Arc<Pkcs11Sealer>,
    role: KeyRole,
    public: P256PublicKey,
    /// The private key's handle and the pool generation it was found in.
    handle: RwLock<Option<(u64, ObjectHandle)>>,
}

impl fmt::Debug for Pkcs11SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11SigningKey")
            .field("role", &self.role)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Pkcs11SigningKey {
    /// Find and check the key of `role` on the sealer's token (refusing a missing or unfit key)
    /// and self-test it.
    pub fn open(sealer: Arc<Pkcs11Sealer>, role: KeyRole) -> Result<Self, SealError> {
        let found =
            sealer.with_pooled_session("opening the signing key", |session, generation| {
                Ok(find_pair(session, role)?.map(|found| found.map(|pair| (generation, pair))))
            })?;
        let (generation, pair) = found.ok_or_else(|| SealError::KeyNotFound {
            label: role.label().to_owned(),
        })?;
        let key = Pkcs11SigningKey {
            sealer,
            role,
            public: pair.public,
            handle: RwLock::new(Some((generation, pair.private))),
        };
        self_test(&key)?;
        Ok(key)
    }

    /// The cached handle when it belongs to `generation`, else search the token again (and
    /// check that it is still the same key: a re-inserted token could hold another one).
    fn private_handle(
        &self,
        session: &Session,
        generation: u64,
    ) -> Result<Result<ObjectHandle, SealError>, CryptokiError> {
        let cached = *self
            .handle
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((cached_generation, handle)) = cached {
            if cached_generation == generation {
                return Ok(Ok(handle));
            }
        }
        let pair = match find_pair(session, self.role)? {
            Ok(Some(pair)) => pair,
            Ok(None) => {
                return Ok(Err(SealError::KeyNotFound {
                    label: self.role.label().to_owned(),
                }))
            }
            Err(refusal) => return Ok(Err(refusal)),
        };
        if pair.public != self.public {
            return Ok(Err(unsuitable(
                self.role,
                "the token now holds a different key under this label than when the signer started",
            )));
        }
        *self
            .handle
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((generation, pair.private));
        Ok(Ok(pair.private))
    }
}

impl HsmSigningKey for Pkcs11SigningKey {
    fn role(&self) -> KeyRole {
        self.role
    }

    fn public_key(&self) -> &P256PublicKey {
        &self.public
    }

    fn sign_digest(&self, digest: &[u8; DIGEST_LEN]) -> Result<EcdsaSignature, SealError> {
        self.sealer
            .with_pooled_session("signing with the HSM key", |session, generation| {
                let handle = match self.private_handle(session, generation)? {
                    Ok(handle) => handle,
                    Err(refusal) => return Ok(Err(refusal)),
                };
                sign_in_token(session, handle, digest)
            })
    }

    fn describe(&self) -> String {
        let config = self.sealer.config();
        format!(
            "{} '{}' (P-256) in pkcs11 token '{}'",
            self.role,
            self.role.label(),
            config.token_label
        )
    }
}

// ---------------------------------------------------------------------------------------------
// YubiHSM2.

#[cfg(feature = "yubihsm")]
pub mod yubihsm {
    //! The signing keys on a YubiHSM2: asymmetric objects (`ecp256`) generated on the device
    //! at fixed object ids ([`object_id`]) with the role's label, capability `sign-ecdsa` only
    //! (not exportable under wrap), signing through `yubihsm::ecdsa::Signer<NistP256>` (the
    //! device hashes nothing: the host's SHA-256 digest is signed as is).

    use std::fmt;

    use ::yubihsm::ecdsa::{NistP256, Signer};
    use ::yubihsm::{asymmetric, object, Capability, Client, Domain};
    use signature::hazmat::PrehashSigner;

    use super::{EcdsaSignature, HsmSigningKey, KeyRole, P256PublicKey, DIGEST_LEN};
    use crate::hsm::SealError;

    /// The only capability a signing key may have.
    const SIGNING_KEY_CAPABILITIES: Capability = Capability::SIGN_ECDSA;

    /// Object id of the role's key (asymmetric-key ids are a namespace of their own, apart
    /// from the HMAC sealing key's).
    pub fn object_id(role: KeyRole) -> object::Id {
        match role {
            KeyRole::Tls => 0x0101,
            KeyRole::Identity => 0x0102,
        }
    }

    fn unsuitable(role: KeyRole, reason: impl Into<String>) -> SealError {
        super::unsuitable(role, reason)
    }

    fn device_error(doing: &str, error: ::yubihsm::client::Error) -> SealError {
        crate::hsm::yubihsm::hsm_error(doing, error)
    }

    fn check_key(info: &object::Info, role: KeyRole) -> Result<(), SealError> {
        if info.label != object::Label::from(role.label()) {
            return Err(unsuitable(
                role,
                format!(
                    "object {:#06x} is labelled '{}'",
                    object_id(role),
                    info.label
                ),
            ));
        }
        if info.algorithm != ::yubihsm::Algorithm::Asymmetric(asymmetric::Algorithm::EcP256) {
            return Err(unsuitable(
                role,
                format!("algorithm is {:?}, not ecp256", info.algorithm),
            ));
        }
        if info
            .capabilities
            .contains(Capability::EXPORTABLE_UNDER_WRAP)
        {
            return Err(unsuitable(role, "it is exportable under wrap"));
        }
        if !SIGNING_KEY_CAPABILITIES.contains(info.capabilities) {
            return Err(unsuitable(
                role,
                format!(
                    "it has capabilities beyond sign-ecdsa: {:?}",
                    info.capabilities
                ),
            ));
        }
        if info.origin != object::Origin::Generated {
            return Err(unsuitable(
                role,
                format!(
                    "origin is {:?}: its value existed outside this device",
                    info.origin
                ),
            ));
        }
        Ok(())
    }

    /// `init`: generate the role's key on the device unless it exists; check it either way.
    pub fn ensure_key(client: &Client, role: KeyRole, domain: Domain) -> Result<(), SealError> {
        let id = object_id(role);
        match client.get_object_info(id, object::Type::AsymmetricKey) {
            Ok(info) => return check_key(&info, role),
            Err(e) if e.device_error() == Some(::yubihsm::device::ErrorKind::ObjectNotFound) => {}
            Err(e) => return Err(device_error("looking up the signing key", e)),
        }
        client
            .generate_asymmetric_key(
                id,
                object::Label::from(role.label()),
                domain,
                SIGNING_KEY_CAPABILITIES,
                asymmetric::Algorithm::EcP256,
            )
            .map_err(|e| device_error("generating the signing key", e))?;
        let info = client
            .get_object_info(id, object::Type::AsymmetricKey)
            .map_err(|e| device_error("reading the new signing key", e))?;
        check_key(&info, role)
    }

    /// A signing key on a YubiHSM2.
    pub struct YubiHsmSigningKey {
        signer: Signer<NistP256>,
        role: KeyRole,
        public: P256PublicKey,
    }

    impl fmt::Debug for YubiHsmSigningKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("YubiHsmSigningKey")
                .field("role", &self.role)
                .field("public", &self.public)
                .finish_non_exhaustive()
        }
    }

    impl YubiHsmSigningKey {
        /// Check the role's key on the device, read its public key and self-test it. `client`
        /// is the sealer's authenticated client (it reconnects by itself).
        pub fn open(client: Client, role: KeyRole) -> Result<Self, SealError> {
            let id = object_id(role);
            let info = client
                .get_object_info(id, object::Type::AsymmetricKey)
                .map_err(|e| match e.device_error() {
                    Some(::yubihsm::device::ErrorKind::ObjectNotFound) => SealError::KeyNotFound {
                        label: role.label().to_owned(),
                    },
                    _ => device_error("looking up the signing key", e),
                })?;
            check_key(&info, role)?;
            let signer = Signer::<NistP256>::create(client, id).map_err(|e| {
                SealError::Unavailable(format!("reading the {role}'s public key: {e}"))
            })?;
            // The crate builds the point from the device's untagged x || y: uncompressed.
            let public = P256PublicKey::from_sec1(signer.public_key().as_bytes())
                .ok_or_else(|| unsuitable(role, "its public key is not a point on P-256"))?;
            let key = YubiHsmSigningKey {
                signer,
                role,
                public,
            };
            super::self_test(&key)?;
            Ok(key)
        }
    }

    impl HsmSigningKey for YubiHsmSigningKey {
        fn role(&self) -> KeyRole {
            self.role
        }

        fn public_key(&self) -> &P256PublicKey {
            &self.public
        }

        fn sign_digest(&self, digest: &[u8; DIGEST_LEN]) -> Result<EcdsaSignature, SealError> {
            let signature: ::yubihsm::ecdsa::Signature<NistP256> = self
                .signer
                .sign_prehash(digest)
                .map_err(|e| SealError::Unavailable(format!("signing on the YubiHSM2: {e}")))?;
            let mut bytes = [0u8; super::SIGNATURE_LEN];
            bytes.copy_from_slice(&signature.to_bytes());
            Ok(EcdsaSignature(bytes))
        }

        fn describe(&self) -> String {
            format!(
                "{} '{}' (P-256) on the YubiHSM2, object {:#06x}",
                self.role,
                self.role.label(),
                object_id(self.role)
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use cryptoki::object::AttributeInfo;

    use super::*;
    use crate::hsm::pkcs11::test_support::*;

    fn fresh_token(purpose: &str) -> (Pkcs11Config, Arc<Pkcs11Sealer>) {
        let (config, sealer) = fresh_sealer(purpose);
        (config, Arc::new(sealer))
    }

    /// Verification with ring over the message: an independent implementation.
    fn assert_signs(key: &dyn HsmSigningKey) {
        for message in [&b"first"[..], b"", &[0xffu8; 300]] {
            let signature = key.sign_sha256(message).unwrap();
            assert!(key.public_key().verify_sha256(message, &signature));
            assert!(!key
                .public_key()
                .verify_sha256(b"another message", &signature));
            UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_ASN1,
                &key.public_key().as_sec1()[..],
            )
            .verify(message, &signature.to_der())
            .expect("the DER form verifies too");
        }
    }

    /// The body both backends run (SoftHSM2 below, the YubiHSM2 mock in
    /// `yubihsm_mock_generates_checks_and_signs`): signatures verify under the public key (r‖s
    /// and DER, ring as the independent verifier), and 4 threads signing at once all verify.
    fn signing_key_contract(key: Arc<dyn HsmSigningKey>) {
        assert_signs(key.as_ref());
        let handles: Vec<_> = (0..4u8)
            .map(|thread| {
                let key = Arc::clone(&key);
                std::thread::spawn(move || {
                    for round in 0..10u8 {
                        let message = [thread, round, 0x5a];
                        let signature = key.sign_sha256(&message).unwrap();
                        assert!(key.public_key().verify_sha256(&message, &signature));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert!(key.describe().contains(key.role().label()));
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let mut rs = [0u8; 64];
        rs[31] = 1; // r = 1
        rs[32] = 0x80; // s has its top bit set
        let der = EcdsaSignature(rs).to_der();
        assert_eq!(&der[..5], &[0x30, 3 + 35, 0x02, 0x01, 0x01]);
        assert_eq!(&der[5..8], &[0x02, 33, 0x00]);
        assert_eq!(der.len(), 2 + 3 + 35);
    }

    #[test]
    fn init_creates_one_pair_per_role_idempotently_and_locked_down() {
        let (config, sealer) = fresh_token("signing-init");
        let tls = ensure_pkcs11_key(&config, &user_pin(), KeyRole::Tls).unwrap();
        let identity = ensure_pkcs11_key(&config, &user_pin(), KeyRole::Identity).unwrap();
        assert_ne!(tls, identity, "each role has its own key");
        assert_eq!(
            ensure_pkcs11_key(&config, &user_pin(), KeyRole::Tls).unwrap(),
            tls
        );
        let session = pkcs11::user_session(&config, &user_pin()).unwrap();
        for role in KeyRole::ALL {
            let all = session
                .find_objects(&[Attribute::Label(role.label().as_bytes().to_vec())])
                .unwrap();
            assert_eq!(all.len(), 2, "{role}: exactly one pair");
            let pair = find_pair(&session, role).unwrap().unwrap().unwrap();
            let info = session
                .get_attribute_info(pair.private, &[AttributeType::Value])
                .unwrap();
            assert!(
                matches!(info.as_slice(), [AttributeInfo::Sensitive]),
                "{info:?}"
            );
            assert!(session
                .get_attributes(pair.private, &[AttributeType::Value])
                .unwrap()
                .is_empty());
            assert!(session
                .update_attributes(pair.private, &[Attribute::Extractable(true)])
                .is_err());
            let flags = session
                .get_attributes(
                    pair.private,
                    &[
                        AttributeType::Sensitive,
                        AttributeType::Extractable,
                        AttributeType::NeverExtractable,
                        AttributeType::Sign,
                        AttributeType::Derive,
                        AttributeType::Decrypt,
                    ],
                )
                .unwrap();
            for expected in [
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::NeverExtractable(true),
                Attribute::Sign(true),
                Attribute::Derive(false),
                Attribute::Decrypt(false),
            ] {
                assert!(
                    flags.contains(&expected),
                    "{role}: {expected:?} in {flags:?}"
                );
            }
        }
        let key = Pkcs11SigningKey::open(Arc::clone(&sealer), KeyRole::Tls).unwrap();
        assert_eq!(key.public_key(), &tls);
        signing_key_contract(Arc::new(key));
    }

    #[test]
    fn a_missing_or_ecdh_capable_key_is_refused() {
        let (config, sealer) = fresh_token("signing-weak");
        match Pkcs11SigningKey::open(Arc::clone(&sealer), KeyRole::Identity) {
            Err(SealError::KeyNotFound { label }) => assert_eq!(label, "keystake-identity-key"),
            other => panic!("expected KeyNotFound, got {other:?}"),
        }
        // A pair under the label that may also derive: refused by open and by init.
        let session = pkcs11::user_session(&config, &user_pin()).unwrap();
        let label = Attribute::Label(KeyRole::Identity.label().as_bytes().to_vec());
        let mut private_template = vec![label.clone(), Attribute::Derive(true)];
        private_template.extend(
            private_key_profile()
                .generation_template()
                .into_iter()
                .filter(|a| a.attribute_type() != AttributeType::Derive),
        );
        session
            .generate_key_pair(
                &Mechanism::EccKeyPairGen,
                &[
                    Attribute::Token(true),
                    label,
                    Attribute::EcParams(P256_EC_PARAMS.to_vec()),
                ],
                &private_template,
            )
            .unwrap();
        match Pkcs11SigningKey::open(Arc::clone(&sealer), KeyRole::Identity) {
            Err(SealError::UnsuitableKey { reason, .. }) => assert_eq!(reason, "may derive (ECDH)"),
            other => panic!("expected UnsuitableKey, got {other:?}"),
        }
        assert!(matches!(
            ensure_pkcs11_key(&config, &user_pin(), KeyRole::Identity),
            Err(SealError::UnsuitableKey { .. })
        ));
    }

    #[test]
    fn concurrent_signatures_and_recovery_after_a_lost_login() {
        let (config, sealer) = fresh_token("signing-parallel");
        ensure_pkcs11_key(&config, &user_pin(), KeyRole::Tls).unwrap();
        let key = Arc::new(Pkcs11SigningKey::open(Arc::clone(&sealer), KeyRole::Tls).unwrap());
        let handles: Vec<_> = (0..6u8)
            .map(|thread| {
                let key = Arc::clone(&key);
                std::thread::spawn(move || {
                    for round in 0..20u8 {
                        let message = [thread, round];
                        let signature = key.sign_sha256(&message).unwrap();
                        assert!(key.public_key().verify_sha256(&message, &signature));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        // The login is lost under the signer: refused as unavailable (503), never a signature;
        // then the pool is rebuilt, the handle found again, and signing works.
        let intruder = pkcs11::user_session(&config, &user_pin()).unwrap();
        intruder.logout().unwrap();
        drop(intruder);
        match key.sign_sha256(b"during the fault") {
            Err(SealError::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        let signature = key.sign_sha256(b"after").unwrap();
        assert!(key.public_key().verify_sha256(b"after", &signature));
    }

    #[cfg(feature = "yubihsm")]
    #[test]
    fn yubihsm_mock_generates_checks_and_signs() {
        let connector = ::yubihsm::Connector::mockhsm();
        let client =
            ::yubihsm::Client::open(connector, ::yubihsm::Credentials::default(), true).unwrap();
        let domain = ::yubihsm::Domain::DOM1;
        match yubihsm::YubiHsmSigningKey::open(client.clone(), KeyRole::Tls) {
            Err(SealError::KeyNotFound { .. }) => {}
            other => panic!("expected KeyNotFound, got {:?}", other.map(|_| ())),
        }
        yubihsm::ensure_key(&client, KeyRole::Tls, domain).unwrap();
        yubihsm::ensure_key(&client, KeyRole::Tls, domain).unwrap();
        yubihsm::ensure_key(&client, KeyRole::Identity, domain).unwrap();
        let tls = yubihsm::YubiHsmSigningKey::open(client.clone(), KeyRole::Tls).unwrap();
        let identity = yubihsm::YubiHsmSigningKey::open(client.clone(), KeyRole::Identity).unwrap();
        assert_ne!(tls.public_key(), identity.public_key());
        signing_key_contract(Arc::new(tls));
        signing_key_contract(Arc::new(identity));
        // A key with more than sign-ecdsa under the role's id is refused.
        client
            .delete_object(
                yubihsm::object_id(KeyRole::Identity),
                ::yubihsm::object::Type::AsymmetricKey,
            )
            .unwrap();
        client
            .generate_asymmetric_key(
                yubihsm::object_id(KeyRole::Identity),
                ::yubihsm::object::Label::from(KeyRole::Identity.label()),
                domain,
                ::yubihsm::Capability::SIGN_ECDSA | ::yubihsm::Capability::EXPORTABLE_UNDER_WRAP,
                ::yubihsm::asymmetric::Algorithm::EcP256,
            )
            .unwrap();
        assert!(matches!(
            yubihsm::YubiHsmSigningKey::open(client.clone(), KeyRole::Identity),
            Err(SealError::UnsuitableKey { .. })
        ));
    }
}
