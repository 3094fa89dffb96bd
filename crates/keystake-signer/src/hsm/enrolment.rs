//! The appliance's **enrolment key** and the encryption of share packages to it (design.md §3,
//! "a share package from a trusted split (encrypted to the appliance's enrolment public key)").
//!
//! ## Choice: ECDH on P-256 inside the token
//!
//! `init` generates, inside the same PKCS#11 token as the sealing key, an EC P-256 key pair
//! labelled [`ENROLMENT_KEY_LABEL`]. The private key is a token object, `CKA_PRIVATE`,
//! `CKA_SENSITIVE`, not extractable, not modifiable, not copyable, and usable **only** for
//! `CKM_ECDH1_DERIVE` (no sign, decrypt or unwrap). The public key leaves the token as
//! [`EnrolmentPublicKey`].
//!
//! Why EC rather than RSA-OAEP (both work on SoftHSM2 2.6.1): the dealer side needs no new
//! cryptography library (`ring`, already linked for TLS, does ephemeral P-256 ECDH and
//! AES-256-GCM, and refuses points off the curve), every package has its own ephemeral key
//! (the package key of one package says nothing about another), and the key that opens the
//! package is **derived inside the token and never leaves it**: the appliance asks the token to
//! derive an AES-256 session key (`CKM_ECDH1_DERIVE`) as a sensitive, non-extractable session
//! object and to decrypt the package with it (`CKM_AES_GCM`). Only the 32-byte share comes out,
//! into a zeroizing buffer, to be checked and sealed at once under the sealing key.
//!
//! ## Package construction (ECIES with the raw shared secret)
//!
//! ```text
//! e, E = fresh P-256 key pair (dealer, one per package)
//! K    = x-coordinate of e·P   (P = recipient's enrolment public key; 32 bytes)
//! C    = AES-256-GCM(K, IV = 12 random bytes, AAD = manifest::package_aad(...), share)
//! ```
//!
//! SoftHSM2 2.6.1 implements only the null KDF (`CKD_NULL`) for `CKM_ECDH1_DERIVE` (it refuses
//! `CKD_SHA256_KDF`; a test below pins this), so the AES key is the shared x-coordinate itself
//! rather than a hash of it. That is sound here: every key encrypts exactly one 32-byte message;
//! under DDH on P-256 the x-coordinate is indistinguishable from that of a random point, which
//! has at least 255 bits of min-entropy (a factor of at most 2 on any attack on AES-256-GCM);
//! and the context a KDF would mix in (recipient fingerprint, ephemeral key, index, group key,
//! manifest hash) is bound by the AAD instead. A later format version can add a KDF once the
//! supported tokens implement one.
//!
//! Both backends implement [`EnrolmentKey`] ("open this ECIES ciphertext"): [`Pkcs11EnrolmentKey`]
//! here, and on a YubiHSM2 a P-256 scalar derived on demand from an on-device HMAC key
//! (`hsm::yubihsm_enrolment`, whose module doc gives the construction and how it differs from a
//! device-resident key). Package opening, its checks and the DKG decryptor are written once
//! over the trait.
//!
//! What this module refuses: a token holding half a key pair, two objects with the label, a
//! private key that is extractable, was ever readable, or may sign/decrypt/unwrap; a recipient
//! key off the curve; a package addressed to another appliance ([`EnrolmentError::WrongRecipient`],
//! checked before the HSM is asked) or that fails authentication ([`EnrolmentError::Integrity`]).
#![forbid(unsafe_code)]

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::hsm::pkcs11::{self, Pkcs11Config};
use crate::hsm::SealError;
use keystake_core::bls::SecretKey;
use keystake_core::manifest::{
    self, CheckedPackage, EnrolmentFingerprint, EnrolmentPublicKey, ManifestError, SharePackage,
    VerifiedManifest, P256_POINT_LEN, PACKAGE_CIPHERTEXT_LEN, PACKAGE_FORMAT, PACKAGE_IV_LEN,
};
use keystake_core::threshold::{self, SecretShare, ThresholdError};

/// `CKA_LABEL` of both halves of the enrolment key pair.
pub const ENROLMENT_KEY_LABEL: &str = "keystake-enrolment-key";

use crate::hsm::pkcs11::P256_EC_PARAMS;

/// GCM tag length in bits.
const TAG_BITS: u64 = 128;

/// `CKR_AEAD_DECRYPT_FAILED` (PKCS#11 3.0), which cryptoki 0.12 has no name for.
const CKR_AEAD_DECRYPT_FAILED: u64 = 0x0000_0035;

#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    #[error("HSM: {0}")]
    Seal(#[from] SealError),
    #[error("HSM error while {doing}: {reason}")]
    Hsm { doing: &'static str, reason: String },
    #[error("no enrolment key pair labelled '{label}' on the token; run `keystake-signer init`")]
    Missing { label: String },
    #[error("the enrolment key pair '{label}' on the token is not usable: {reason}")]
    Inconsistent { label: String, reason: String },
    #[error("the enrolment key '{label}' is not fit for use: {reason}")]
    Unsuitable { label: String, reason: String },
    #[error("invalid recipient enrolment key {fingerprint}: not a point on P-256")]
    InvalidRecipient { fingerprint: EnrolmentFingerprint },
    #[error("this share package is for the appliance with enrolment key {package}, not for this appliance ({appliance})")]
    WrongRecipient {
        package: EnrolmentFingerprint,
        appliance: EnrolmentFingerprint,
    },
    #[error("the share package does not open with this appliance's enrolment key (tampered, or not made for it)")]
    Integrity,
    #[error("the package holds share {index}, but it does not match the manifest: {source}")]
    ShareMismatch {
        index: keystake_core::types::ShareIndex,
        source: ThresholdError,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("encrypting the package failed: {0}")]
    Crypto(&'static str),
}

/// An appliance's enrolment key: its public half, and opening an ECIES ciphertext made to it
/// (`K = x(d·E)`, AES-256-GCM) without the private half leaving the backend's control. Only the
/// plaintext comes out, in a zeroizing buffer.
pub trait EnrolmentKey: Send {
    fn public_key(&self) -> EnrolmentPublicKey;

    /// Decrypt `ciphertext || tag` made with the ephemeral key `ephemeral_public_key`;
    /// [`EnrolmentError::Integrity`] when it does not authenticate or the point is refused.
    fn open(
        &self,
        ephemeral_public_key: &EnrolmentPublicKey,
        iv: &[u8; PACKAGE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnrolmentError>;

    /// Where the key lives (no secrets).
    fn describe(&self) -> String;
}

fn hsm(doing: &'static str) -> impl FnOnce(CryptokiError) -> EnrolmentError {
    move |error| EnrolmentError::Hsm {
        doing,
        reason: error.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Dealer side: encrypt a share to an enrolment public key (software, `ring`).

/// AES-256-GCM of `plaintext` to `recipient` (ECIES of the module doc); `aad` is computed from
/// the ephemeral public key. Returns `(ephemeral public key, IV, ciphertext || tag)`.
pub(crate) fn encrypt_to(
    recipient: &EnrolmentPublicKey,
    plaintext: &[u8],
    aad_for: impl FnOnce(&EnrolmentPublicKey) -> Vec<u8>,
) -> Result<(EnrolmentPublicKey, [u8; PACKAGE_IV_LEN], Vec<u8>), EnrolmentError> {
    let rng = SystemRandom::new();
    let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &rng)
        .map_err(|_| EnrolmentError::Crypto("generating the ephemeral key"))?;
    let ephemeral_public = ephemeral
        .compute_public_key()
        .map_err(|_| EnrolmentError::Crypto("computing the ephemeral public key"))?;
    let ephemeral_public = EnrolmentPublicKey::from_sec1(ephemeral_public.as_ref())?;
    let key = agreement::agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&ECDH_P256, recipient.as_sec1()),
        |z| Zeroizing::new(z.to_vec()),
    )
    .map_err(|_| EnrolmentError::InvalidRecipient {
        fingerprint: recipient.fingerprint(),
    })?;
    let mut iv = [0u8; PACKAGE_IV_LEN];
    rng.fill(&mut iv)
        .map_err(|_| EnrolmentError::Crypto("drawing the IV"))?;
    let aead = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, key.as_slice())
            .map_err(|_| EnrolmentError::Crypto("AES-256-GCM key"))?,
    );
    // Room for the tag from the start: growing the vector would leave a plaintext copy behind.
    let mut buffer = Zeroizing::new(Vec::with_capacity(plaintext.len() + 16));
    buffer.extend_from_slice(plaintext);
    let aad = aad_for(&ephemeral_public);
    aead.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(iv),
        Aad::from(aad.as_slice()),
        &mut *buffer,
    )
    .map_err(|_| EnrolmentError::Crypto("AES-256-GCM"))?;
    Ok((ephemeral_public, iv, buffer.to_vec()))
}

/// The package of `share` for the appliance `recipient`, bound to `manifest` (which must give
/// this share to this recipient).
pub fn seal_package(
    share: &SecretShare,
    manifest: &VerifiedManifest,
    recipient: &EnrolmentPublicKey,
) -> Result<SharePackage, EnrolmentError> {
    let index = share.index();
    let listed = manifest.share(index)?;
    let fingerprint = recipient.fingerprint();
    if listed.operator.fingerprint != fingerprint {
        return Err(ManifestError::RecipientMismatch {
            index,
            package: fingerprint,
            manifest: listed.operator.fingerprint,
        }
        .into());
    }
    let plaintext = share.secret_key().to_bytes();
    let (ephemeral_public_key, iv, ciphertext) =
        encrypt_to(recipient, plaintext.as_slice(), |e| {
            manifest::package_aad(index, manifest, &fingerprint, e)
        })?;
    Ok(SharePackage {
        format: PACKAGE_FORMAT.to_owned(),
        recipient: fingerprint,
        index,
        manifest_sha256: manifest.hash(),
        manifest: manifest.manifest().clone(),
        ephemeral_public_key: ephemeral_public_key.as_sec1().to_vec(),
        iv: iv.to_vec(),
        ciphertext,
    })
}

// ---------------------------------------------------------------------------------------------
// Appliance side: the key pair in the token.

/// The enrolment key pair as found on the token.
struct KeyPair {
    private: ObjectHandle,
    public: EnrolmentPublicKey,
}

fn find_labelled(
    session: &Session,
    class: ObjectClass,
) -> Result<Vec<ObjectHandle>, EnrolmentError> {
    session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(ENROLMENT_KEY_LABEL.as_bytes().to_vec()),
        ])
        .map_err(hsm("searching for the enrolment key"))
}

fn inconsistent(reason: impl Into<String>) -> EnrolmentError {
    EnrolmentError::Inconsistent {
        label: ENROLMENT_KEY_LABEL.to_owned(),
        reason: reason.into(),
    }
}

/// Find the pair; `None` when neither half exists.
fn find_key_pair(session: &Session) -> Result<Option<KeyPair>, EnrolmentError> {
    let all = session
        .find_objects(&[Attribute::Label(ENROLMENT_KEY_LABEL.as_bytes().to_vec())])
        .map_err(hsm("searching for the enrolment key"))?;
    let private = find_labelled(session, ObjectClass::PRIVATE_KEY)?;
    let public = find_labelled(session, ObjectClass::PUBLIC_KEY)?;
    match (private.as_slice(), public.as_slice()) {
        ([], []) if all.is_empty() => Ok(None),
        ([private], [public]) if all.len() == 2 => {
            verify_private_key(session, *private)?;
            Ok(Some(KeyPair {
                private: *private,
                public: read_public_key(session, *public)?,
            }))
        }
        _ => Err(inconsistent(format!(
            "expected one private and one public key with this label, found {} private, {} public, {} objects in all",
            private.len(),
            public.len(),
            all.len()
        ))),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the SEC1 point (some tokens give the bare point).
fn read_public_key(
    session: &Session,
    public: ObjectHandle,
) -> Result<EnrolmentPublicKey, EnrolmentError> {
    let attributes = session
        .get_attributes(public, &[AttributeType::EcParams, AttributeType::EcPoint])
        .map_err(hsm("reading the enrolment public key"))?;
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
        return Err(inconsistent("the public key is not on P-256"));
    }
    let point = point.ok_or_else(|| inconsistent("the public key has no CKA_EC_POINT"))?;
    let sec1 = match point.as_slice() {
        [0x04, len, rest @ ..]
            if usize::from(*len) == P256_POINT_LEN && rest.len() == P256_POINT_LEN =>
        {
            rest
        }
        bare if bare.len() == P256_POINT_LEN => bare,
        _ => {
            return Err(inconsistent(
                "CKA_EC_POINT is not an uncompressed P-256 point",
            ))
        }
    };
    Ok(EnrolmentPublicKey::from_sec1(sec1)?)
}

/// The enrolment private key: a P-256 key that never left the token and can only derive (ECDH).
fn private_key_profile() -> pkcs11::KeyProfile {
    pkcs11::KeyProfile {
        kind: "a P-256 EC private key",
        exact: vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC),
            Attribute::EcParams(P256_EC_PARAMS.to_vec()),
        ],
        required: &[(AttributeType::Derive, "cannot derive (ECDH)")],
        forbidden: &[
            (AttributeType::Sign, "may sign"),
            (AttributeType::Decrypt, "may decrypt"),
            (AttributeType::Unwrap, "may unwrap"),
        ],
    }
}

/// Refuse a private key that could leave the token, was ever readable, or may do more than
/// ECDH derivation (the check the sealing key gets too: [`pkcs11::check_key`]).
fn verify_private_key(session: &Session, key: ObjectHandle) -> Result<(), EnrolmentError> {
    pkcs11::check_key(session, key, &private_key_profile()).map_err(|error| match error {
        pkcs11::KeyCheckError::Hsm(e) => hsm("reading the enrolment key's attributes")(e),
        pkcs11::KeyCheckError::Unsuitable(reason) => EnrolmentError::Unsuitable {
            label: ENROLMENT_KEY_LABEL.to_owned(),
            reason,
        },
    })
}

fn generate_key_pair(session: &Session) -> Result<(), EnrolmentError> {
    let label = Attribute::Label(ENROLMENT_KEY_LABEL.as_bytes().to_vec());
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
    // Class, type and curve come from the mechanism and the public template.
    let mut private_template = vec![label];
    private_template.extend(private_key_profile().generation_template());
    session
        .generate_key_pair(
            &Mechanism::EccKeyPairGen,
            &public_template,
            &private_template,
        )
        .map_err(hsm("generating the enrolment key pair"))?;
    Ok(())
}

/// Open a package's ciphertext inside the token: derive the AES key from the private key and
/// the ephemeral public key (a sensitive, non-extractable session object), decrypt, destroy the
/// derived key. Returns the 32 plaintext bytes.
fn open_in_token(
    session: &Session,
    private: ObjectHandle,
    ephemeral_public_key: &EnrolmentPublicKey,
    iv: &[u8; PACKAGE_IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, EnrolmentError> {
    let params = Ecdh1DeriveParams::new(EcKdf::null(), ephemeral_public_key.as_sec1());
    let template = [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(32u64.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Encrypt(false),
    ];
    let key = session
        .derive_key(&Mechanism::Ecdh1Derive(params), private, &template)
        .map_err(|error| match error {
            // A point the token refuses (off the curve) cannot be ours: the package is bad.
            CryptokiError::Pkcs11(
                RvError::MechanismParamInvalid | RvError::DomainParamsInvalid,
                _,
            ) => EnrolmentError::Integrity,
            other => hsm("deriving the package key")(other),
        })?;
    let mut iv = *iv;
    let result = GcmParams::new(&mut iv, aad, TAG_BITS.into())
        .map_err(hsm("preparing AES-GCM"))
        .and_then(|params| {
            session
                .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
                .map(Zeroizing::new)
                .map_err(|error| match error {
                    CryptokiError::Pkcs11(rv, _) if is_tag_failure(&rv) => {
                        EnrolmentError::Integrity
                    }
                    other => hsm("decrypting the package")(other),
                })
        });
    // A session object dies with the session anyway; destroy it now all the same.
    let _ = session.destroy_object(key);
    result
}

/// How tokens report a failed GCM tag check (SoftHSM2 2.6: `CKR_GENERAL_ERROR`).
fn is_tag_failure(rv: &RvError) -> bool {
    match rv {
        RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError => {
            true
        }
        RvError::UnknownErrorCode(code) => *code == CKR_AEAD_DECRYPT_FAILED,
        _ => false,
    }
}

/// The enrolment key of a PKCS#11 token: ECDH and AES-GCM inside the token (the derived key
/// never leaves it), on one logged-in session.
pub struct Pkcs11EnrolmentKey {
    session: Session,
    pair: KeyPair,
    token_label: String,
}

impl std::fmt::Debug for Pkcs11EnrolmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11EnrolmentKey({})", self.pair.public.fingerprint())
    }
}

impl Pkcs11EnrolmentKey {
    /// Log in to the configured token and find (and check) the enrolment key pair.
    pub fn open(config: &Pkcs11Config, user_pin: &SecretString) -> Result<Self, EnrolmentError> {
        let session = pkcs11::user_session(config, user_pin)?;
        let pair = existing_key_pair(&session)?;
        Ok(Self {
            session,
            pair,
            token_label: config.token_label.clone(),
        })
    }
}

impl EnrolmentKey for Pkcs11EnrolmentKey {
    fn public_key(&self) -> EnrolmentPublicKey {
        self.pair.public
    }

    fn open(
        &self,
        ephemeral_public_key: &EnrolmentPublicKey,
        iv: &[u8; PACKAGE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnrolmentError> {
        open_in_token(
            &self.session,
            self.pair.private,
            ephemeral_public_key,
            iv,
            aad,
            ciphertext,
        )
    }

    fn describe(&self) -> String {
        format!(
            "enrolment key '{ENROLMENT_KEY_LABEL}' in pkcs11 token '{}'",
            self.token_label
        )
    }
}

/// Seal a random value to the key's public half in software and open it with the key: proves
/// the two halves belong together and the backend can derive and decrypt.
pub(crate) fn self_test(key: &dyn EnrolmentKey) -> Result<(), EnrolmentError> {
    let mut probe = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(probe.as_mut_slice())
        .map_err(|_| EnrolmentError::Crypto("drawing the self-test value"))?;
    let aad = b"keystake-enrolment-self-test".to_vec();
    let (ephemeral, iv, ciphertext) =
        encrypt_to(&key.public_key(), probe.as_slice(), |_| aad.clone())?;
    let opened = key
        .open(&ephemeral, &iv, &aad, &ciphertext)
        .map_err(|e| inconsistent(format!("self-test failed: {e}")))?;
    if opened.as_slice() != probe.as_slice() {
        return Err(inconsistent("self-test: the key opened a different value"));
    }
    Ok(())
}

/// `init`: create the enrolment key pair unless it exists; check it either way (attributes and
/// a sealed round trip). Idempotent. Returns the public key.
pub fn ensure_key_pair(
    config: &Pkcs11Config,
    user_pin: &SecretString,
) -> Result<EnrolmentPublicKey, EnrolmentError> {
    let session = pkcs11::user_session(config, user_pin)?;
    let pair = match find_key_pair(&session)? {
        Some(pair) => pair,
        None => {
            generate_key_pair(&session)?;
            find_key_pair(&session)?.ok_or_else(|| EnrolmentError::Missing {
                label: ENROLMENT_KEY_LABEL.to_owned(),
            })?
        }
    };
    let key = Pkcs11EnrolmentKey {
        session,
        pair,
        token_label: config.token_label.clone(),
    };
    self_test(&key)?;
    Ok(key.public_key())
}

fn existing_key_pair(session: &Session) -> Result<KeyPair, EnrolmentError> {
    find_key_pair(session)?.ok_or_else(|| EnrolmentError::Missing {
        label: ENROLMENT_KEY_LABEL.to_owned(),
    })
}

/// `enrolment show`: the public half of this appliance's enrolment key.
pub fn public_key(
    config: &Pkcs11Config,
    user_pin: &SecretString,
) -> Result<EnrolmentPublicKey, EnrolmentError> {
    let session = pkcs11::user_session(config, user_pin)?;
    Ok(existing_key_pair(&session)?.public)
}

/// Open a checked package with this appliance's PKCS#11 enrolment key (see [`open_package_with`]).
pub fn open_package(
    config: &Pkcs11Config,
    user_pin: &SecretString,
    package: &CheckedPackage,
) -> Result<SecretShare, EnrolmentError> {
    open_package_with(&Pkcs11EnrolmentKey::open(config, user_pin)?, package)
}

/// Open a checked package with `key` and check the share it holds against the manifest's
/// Feldman commitments and share public key. Refuses a package addressed to another key before
/// the backend is asked. The share exists only in memory (zeroized on drop).
pub fn open_package_with(
    key: &dyn EnrolmentKey,
    package: &CheckedPackage,
) -> Result<SecretShare, EnrolmentError> {
    let appliance = key.public_key().fingerprint();
    if package.recipient != appliance {
        return Err(EnrolmentError::WrongRecipient {
            package: package.recipient,
            appliance,
        });
    }
    decrypt_and_check(key, package)
}

/// The cryptographic part of opening, without the recipient pre-check (so tests can show that a
/// foreign key cannot open a package even when the check is bypassed).
pub(crate) fn decrypt_and_check(
    key: &dyn EnrolmentKey,
    package: &CheckedPackage,
) -> Result<SecretShare, EnrolmentError> {
    let aad = manifest::package_aad(
        package.index,
        &package.manifest,
        &package.recipient,
        &package.ephemeral_public_key,
    );
    let plaintext = key.open(
        &package.ephemeral_public_key,
        &package.iv,
        &aad,
        &package.ciphertext[..],
    )?;
    debug_assert_eq!(package.ciphertext.len(), PACKAGE_CIPHERTEXT_LEN);
    // Copied straight into the zeroizing buffer: `try_into` would make an unwiped stack copy.
    if plaintext.len() != 32 {
        return Err(EnrolmentError::Integrity);
    }
    let mut bytes: Zeroizing<[u8; 32]> = Zeroizing::new([0u8; 32]);
    bytes.copy_from_slice(&plaintext);
    let secret = SecretKey::from_zeroizing(bytes).map_err(|e| EnrolmentError::ShareMismatch {
        index: package.index,
        source: ThresholdError::Bls(e),
    })?;
    let share = SecretShare::new(package.index, secret);
    let mismatch = |source| EnrolmentError::ShareMismatch {
        index: package.index,
        source,
    };
    threshold::verify_share(package.manifest.commitments(), &share).map_err(mismatch)?;
    let listed = package.manifest.share(package.index)?;
    if listed.public_key != share.public_key() {
        return Err(mismatch(ThresholdError::ShareFailsFeldmanCheck {
            culprit: package.index,
        }));
    }
    Ok(share)
}

// ---------------------------------------------------------------------------------------------
// DKG: the recipient side of a ceremony's encrypted shares (issue 12).

/// Opens the shares a DKG ceremony encrypted to this appliance's enrolment key, exactly as for
/// a share package (on a PKCS#11 token the derived key never leaves it); only the 32-byte share
/// comes out, zeroized on drop. One backend handle for the whole ceremony.
pub struct EnrolmentDecryptor {
    key: Box<dyn EnrolmentKey>,
}

impl std::fmt::Debug for EnrolmentDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EnrolmentDecryptor({})",
            self.key.public_key().fingerprint()
        )
    }
}

impl EnrolmentDecryptor {
    /// The PKCS#11 token's enrolment key.
    pub fn open(config: &Pkcs11Config, user_pin: &SecretString) -> Result<Self, EnrolmentError> {
        Ok(Self::new(Box::new(Pkcs11EnrolmentKey::open(
            config, user_pin,
        )?)))
    }

    /// Any backend's enrolment key.
    pub fn new(key: Box<dyn EnrolmentKey>) -> Self {
        Self { key }
    }

    pub fn public_key(&self) -> EnrolmentPublicKey {
        self.key.public_key()
    }
}

impl keystake_core::dkg::ShareDecryptor for EnrolmentDecryptor {
    fn open(
        &self,
        ephemeral: &EnrolmentPublicKey,
        iv: &[u8; keystake_core::dkg::SHARE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; 32]>>, keystake_core::dkg::SignerError> {
        match self.key.open(ephemeral, iv, aad, ciphertext) {
            Ok(plain) => Ok(<[u8; 32]>::try_from(plain.as_slice())
                .ok()
                .map(Zeroizing::new)),
            // Not authentic (or a point the backend refuses): the dealer is to answer for it.
            Err(EnrolmentError::Integrity) => Ok(None),
            Err(other) => Err(keystake_core::dkg::SignerError(other.to_string())),
        }
    }
}

/// Test bodies every backend's [`EnrolmentKey`] runs (SoftHSM2 in `tests` below, the YubiHSM2
/// mock in `hsm::yubihsm_enrolment`).
#[cfg(test)]
pub(crate) mod contract_tests {
    use super::*;
    use keystake_core::manifest::Manifest;
    use keystake_core::types::{BlsPublicKey, Threshold};

    /// A 2-of-2 split to `key` and `other`, the package for `key` opened by it and refused by
    /// `other` (by address and cryptographically), tampering refused, an off-curve ephemeral
    /// key refused, and the self-test passing; the key stays usable after every refusal.
    pub(crate) fn opens_only_what_was_made_for_it(
        key: &dyn EnrolmentKey,
        other: &dyn EnrolmentKey,
    ) {
        self_test(key).unwrap();
        let mut rng = rand::rngs::OsRng;
        let secret = SecretKey::random(&mut rng);
        let split = threshold::split(&secret, Threshold::new(2).unwrap(), 2, &mut rng).unwrap();
        let share_keys: Vec<BlsPublicKey> = split.shares.iter().map(|s| s.public_key()).collect();
        let manifest = Manifest::for_split(
            split.commitments.clone(),
            &share_keys,
            &[key.public_key(), other.public_key()],
        )
        .unwrap();
        let package = seal_package(&split.shares[0], &manifest, &key.public_key()).unwrap();
        let checked = package.clone().check(Some(&manifest)).unwrap();
        let opened = open_package_with(key, &checked).unwrap();
        assert_eq!(opened.public_key(), share_keys[0]);
        assert_eq!(
            opened.secret_key().to_bytes().as_slice(),
            split.shares[0].secret_key().to_bytes().as_slice()
        );

        assert!(matches!(
            open_package_with(other, &checked),
            Err(EnrolmentError::WrongRecipient { .. })
        ));
        assert!(matches!(
            decrypt_and_check(other, &checked),
            Err(EnrolmentError::Integrity)
        ));

        let mut flipped = package.clone();
        flipped.ciphertext[3] ^= 0x10;
        assert!(matches!(
            open_package_with(key, &flipped.check(None).unwrap()),
            Err(EnrolmentError::Integrity)
        ));
        let mut bad_iv = package.clone();
        bad_iv.iv[11] ^= 1;
        assert!(matches!(
            open_package_with(key, &bad_iv.check(None).unwrap()),
            Err(EnrolmentError::Integrity)
        ));
        let mut off_curve = package.clone();
        off_curve.ephemeral_public_key[40] ^= 1;
        assert!(matches!(
            open_package_with(key, &off_curve.check(None).unwrap()),
            Err(EnrolmentError::Integrity) | Err(EnrolmentError::Hsm { .. })
        ));
        assert!(open_package_with(key, &checked).is_ok());
        assert!(!key.describe().is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::pkcs11::test_support::*;
    use crate::hsm::pkcs11::Pkcs11Sealer;
    use keystake_core::manifest::Manifest;
    use keystake_core::types::{BlsPublicKey, Threshold};

    /// A fresh token with its sealing key and enrolment key pair.
    fn fresh_appliance(purpose: &str) -> (Pkcs11Config, EnrolmentPublicKey) {
        let config = fresh_config(purpose);
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let public = ensure_key_pair(&config, &user_pin()).unwrap();
        (config, public)
    }

    fn split_for(
        operators: &[EnrolmentPublicKey],
        t: u32,
    ) -> (SecretKey, Vec<SecretShare>, VerifiedManifest) {
        let mut rng = rand::rngs::OsRng;
        let secret = SecretKey::random(&mut rng);
        let n = operators.len() as u32;
        let split = threshold::split(&secret, Threshold::new(t).unwrap(), n, &mut rng).unwrap();
        let keys: Vec<BlsPublicKey> = split.shares.iter().map(|s| s.public_key()).collect();
        let manifest = Manifest::for_split(split.commitments, &keys, operators).unwrap();
        (secret, split.shares, manifest)
    }

    fn round_trip_json(package: &SharePackage) -> SharePackage {
        serde_json::from_str(&serde_json::to_string_pretty(package).unwrap()).unwrap()
    }

    #[test]
    fn key_pair_is_created_once_and_is_locked_down() {
        let (config, public) = fresh_appliance("enrol-idem");
        assert_eq!(ensure_key_pair(&config, &user_pin()).unwrap(), public);
        assert_eq!(self::public_key(&config, &user_pin()).unwrap(), public);
        let session = pkcs11::user_session(&config, &user_pin()).unwrap();
        let pair = existing_key_pair(&session).unwrap();
        // The private value cannot be read, and the key cannot be made extractable.
        let value = session
            .get_attributes(pair.private, &[AttributeType::Value])
            .unwrap();
        assert!(
            value.is_empty(),
            "CKA_VALUE of the enrolment key was returned"
        );
        assert!(session
            .update_attributes(pair.private, &[Attribute::Extractable(true)])
            .is_err());
        // Exactly one pair with the label.
        let all = session
            .find_objects(&[Attribute::Label(ENROLMENT_KEY_LABEL.as_bytes().to_vec())])
            .unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn a_package_opens_only_on_its_appliance() {
        let (config_a, key_a) = fresh_appliance("enrol-a");
        let (config_b, key_b) = fresh_appliance("enrol-b");
        let (_, shares, manifest) = split_for(&[key_a, key_b], 2);

        let package = seal_package(&shares[0], &manifest, &key_a).unwrap();
        let text = serde_json::to_string(&package).unwrap();
        // The share's bytes are nowhere in the package.
        let share_hex = hex::encode(shares[0].secret_key().to_bytes().as_slice());
        assert!(!text.contains(&share_hex));

        let checked = round_trip_json(&package).check(Some(&manifest)).unwrap();
        let opened = open_package(&config_a, &user_pin(), &checked).unwrap();
        assert_eq!(opened.public_key(), shares[0].public_key());
        assert_eq!(opened.index(), shares[0].index());

        // On appliance B: refused by address, and also cryptographically when forced.
        match open_package(&config_b, &user_pin(), &checked) {
            Err(EnrolmentError::WrongRecipient { package, appliance }) => {
                assert_eq!(package, key_a.fingerprint());
                assert_eq!(appliance, key_b.fingerprint());
            }
            other => panic!("expected WrongRecipient, got {other:?}"),
        }
        let key_b_in_token = Pkcs11EnrolmentKey::open(&config_b, &user_pin()).unwrap();
        assert!(matches!(
            decrypt_and_check(&key_b_in_token, &checked),
            Err(EnrolmentError::Integrity)
        ));

        // A package sealed to B for share 1 is refused: the manifest gives share 1 to A.
        assert!(matches!(
            seal_package(&shares[0], &manifest, &key_b),
            Err(EnrolmentError::Manifest(
                ManifestError::RecipientMismatch { .. }
            ))
        ));
    }

    #[test]
    fn the_enrolment_key_contract_on_softhsm2() {
        let (config_a, _) = fresh_appliance("enrol-contract-a");
        let (config_b, _) = fresh_appliance("enrol-contract-b");
        let a = Pkcs11EnrolmentKey::open(&config_a, &user_pin()).unwrap();
        let b = Pkcs11EnrolmentKey::open(&config_b, &user_pin()).unwrap();
        contract_tests::opens_only_what_was_made_for_it(&a, &b);
    }

    #[test]
    fn tampering_is_detected() {
        let (config, key) = fresh_appliance("enrol-tamper");
        let (_, other_key) = fresh_appliance("enrol-tamper-2");
        let (_, shares, manifest) = split_for(&[key, other_key], 2);
        let package = seal_package(&shares[0], &manifest, &key).unwrap();

        let mut flipped = package.clone();
        flipped.ciphertext[5] ^= 1;
        let checked = flipped.check(None).unwrap();
        assert!(matches!(
            open_package(&config, &user_pin(), &checked),
            Err(EnrolmentError::Integrity)
        ));

        let mut bad_iv = package.clone();
        bad_iv.iv[0] ^= 1;
        assert!(matches!(
            open_package(&config, &user_pin(), &bad_iv.check(None).unwrap()),
            Err(EnrolmentError::Integrity)
        ));

        // Another index in the header: the manifest gives share 2 to the other appliance.
        let mut other_index = package.clone();
        other_index.index = shares[1].index();
        assert!(matches!(
            other_index.check(None),
            Err(ManifestError::RecipientMismatch { .. })
        ));

        // A different (valid) manifest in the package: the hash no longer matches…
        let (_, _, other_manifest) = split_for(&[key, other_key], 2);
        let mut swapped = package.clone();
        swapped.manifest = other_manifest.manifest().clone();
        assert!(matches!(
            swapped.clone().check(None),
            Err(ManifestError::ManifestHashMismatch { .. })
        ));
        // …and with the hash rewritten too, the AAD no longer matches.
        swapped.manifest_sha256 = other_manifest.hash();
        assert!(matches!(
            open_package(&config, &user_pin(), &swapped.check(None).unwrap()),
            Err(EnrolmentError::Integrity)
        ));

        // Checked against another manifest than the one it was made with.
        assert!(matches!(
            package.clone().check(Some(&other_manifest)),
            Err(ManifestError::ManifestHashMismatch { .. })
        ));

        // An ephemeral key off the curve is refused by the token, not trusted.
        let mut off_curve = package.clone();
        off_curve.ephemeral_public_key[40] ^= 1;
        assert!(matches!(
            open_package(&config, &user_pin(), &off_curve.check(None).unwrap()),
            Err(EnrolmentError::Integrity) | Err(EnrolmentError::Hsm { .. })
        ));
        // The untouched package still opens.
        assert!(open_package(&config, &user_pin(), &package.check(None).unwrap()).is_ok());
    }

    #[test]
    fn a_private_key_that_may_sign_is_refused() {
        // A pair someone else put on the token under our label, with the shared lock-down but
        // also allowed to sign: the check shared with the sealing key refuses it.
        let config = fresh_config("enrol-weak");
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let session = pkcs11::user_session(&config, &user_pin()).unwrap();
        let label = Attribute::Label(ENROLMENT_KEY_LABEL.as_bytes().to_vec());
        let mut private_template = vec![label.clone(), Attribute::Sign(true)];
        private_template.extend(
            private_key_profile()
                .generation_template()
                .into_iter()
                .filter(|a| a.attribute_type() != AttributeType::Sign),
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
        match ensure_key_pair(&config, &user_pin()) {
            Err(EnrolmentError::Unsuitable { reason, .. }) => assert_eq!(reason, "may sign"),
            other => panic!("expected Unsuitable, got {other:?}"),
        }
    }

    #[test]
    fn a_recipient_key_off_the_curve_is_refused() {
        let mut point = [0x11u8; P256_POINT_LEN];
        point[0] = 0x04;
        let bogus = EnrolmentPublicKey::from_sec1(&point).unwrap();
        assert!(matches!(
            encrypt_to(&bogus, &[0u8; 32], |_| Vec::new()),
            Err(EnrolmentError::InvalidRecipient { .. })
        ));
    }

    #[test]
    fn the_token_refuses_hashed_kdfs_so_the_null_kdf_is_used() {
        // Pins the reason for the construction in the module doc: if a future SoftHSM2 accepts
        // CKD_SHA256_KDF, this fails and the package format can gain a KDF.
        let (config, _) = fresh_appliance("enrol-kdf");
        let session = pkcs11::user_session(&config, &user_pin()).unwrap();
        let pair = existing_key_pair(&session).unwrap();
        let ephemeral = EphemeralPrivateKey::generate(&ECDH_P256, &SystemRandom::new()).unwrap();
        let ephemeral = ephemeral.compute_public_key().unwrap();
        let info = b"keystake".to_vec();
        let params = Ecdh1DeriveParams::new(EcKdf::sha256(&info), ephemeral.as_ref());
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32u64.into()),
            Attribute::Token(false),
        ];
        assert!(matches!(
            session.derive_key(&Mechanism::Ecdh1Derive(params), pair.private, &template),
            Err(CryptokiError::Pkcs11(RvError::MechanismParamInvalid, _))
        ));
    }
}
