//! Envelope sealing of key shares by a hardware security module.
//!
//! No HSM signs BLS12-381, so the HSM guards the *share* instead of using it: a sealing key that
//! never leaves the token encrypts each 32-byte share; only the sealed blob and public metadata are
//! stored. To sign, the share is unsealed into a [`Zeroizing`] buffer, used and dropped.
//!
//! Every blob is bound to its identity by [`SealContext::aad`] (share public key, share index,
//! group public key): a blob copied to another key's row does not open ([`SealError::Integrity`]).
//!
//! Backends, one file each: [`pkcs11`] (any PKCS#11 token, AES-256-GCM inside the token) and
//! `yubihsm` (YubiHSM2 through the `yubihsm` crate, behind the cargo feature `yubihsm`, on by
//! default). The service only sees `dyn Sealer`; `app::open_sealer` picks the backend from
//! `[hsm] backend`. The enrolment key that opens share packages ([`enrolment`]) exists on
//! both: a key pair in the PKCS#11 token, a scalar derived from an on-device HMAC key on a
//! YubiHSM2 (`yubihsm_enrolment`).
//!
//! Blob layout ([`SealedShare`]): `format version (1) || backend tag (1) || backend body`, where the
//! body carries its own IV/nonce, the ciphertext and the authentication tag. This module refuses
//! blobs of an unknown format version or backend, and never returns plaintext other than as the
//! `Zeroizing<[u8; 32]>` of [`Sealer::unseal`]; errors never carry secret bytes.
#![forbid(unsafe_code)]

pub mod check;
pub mod enrolment;
pub mod pkcs11;
pub mod signing_key;
#[cfg(feature = "yubihsm")]
pub mod yubihsm;
#[cfg(feature = "yubihsm")]
pub mod yubihsm_enrolment;

use std::fmt;

use zeroize::Zeroizing;

use keystake_core::types::{BlsPublicKey, ShareIndex};

/// Version byte that starts every [`SealedShare`].
pub const SEALED_FORMAT_VERSION: u8 = 1;

/// Domain-separation prefix of the additional authenticated data (see [`SealContext::aad`]).
pub const AAD_PREFIX: &[u8; 16] = b"keystake-seal-v1";

/// Length of a share (a BLS12-381 scalar, big-endian).
pub const SHARE_LEN: usize = 32;

/// Which backend (and construction) sealed a blob: byte 1 of every [`SealedShare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SealBackend {
    /// PKCS#11 token, `CKM_AES_GCM` with a 96-bit IV and a 128-bit tag.
    Pkcs11AesGcm,
    /// YubiHSM2: per-blob key derived by HMAC-SHA256 inside the device (see `yubihsm`).
    YubiHsmHmacSha256,
}

impl SealBackend {
    pub fn tag(self) -> u8 {
        match self {
            SealBackend::Pkcs11AesGcm => 0x01,
            SealBackend::YubiHsmHmacSha256 => 0x02,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            0x01 => Some(SealBackend::Pkcs11AesGcm),
            0x02 => Some(SealBackend::YubiHsmHmacSha256),
            _ => None,
        }
    }
}

impl fmt::Display for SealBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SealBackend::Pkcs11AesGcm => "pkcs11-aes-256-gcm",
            SealBackend::YubiHsmHmacSha256 => "yubihsm2-hmac-sha256",
        })
    }
}

/// The public identity a sealed share is bound to. All fields are public values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SealContext {
    /// The share's own public key (for a full, non-threshold key: the validator public key).
    pub share_public_key: BlsPublicKey,
    /// The 1-based share index, for a threshold share.
    pub share_index: Option<ShareIndex>,
    /// The group (validator) public key, for a threshold share.
    pub group_public_key: Option<BlsPublicKey>,
}

impl SealContext {
    /// The additional authenticated data of a seal: an unambiguous, versioned encoding
    ///
    /// ```text
    /// "keystake-seal-v1"                      16 bytes
    /// share_public_key                        48 bytes
    /// 0x00 | 0x01 || share_index (u32 BE)     1 or 5 bytes
    /// 0x00 | 0x01 || group_public_key         1 or 49 bytes
    /// ```
    ///
    /// Every field has a fixed length behind its presence byte, so two different contexts never
    /// encode to the same bytes.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + BlsPublicKey::LEN * 2 + 7);
        aad.extend_from_slice(AAD_PREFIX);
        aad.extend_from_slice(self.share_public_key.as_bytes());
        match self.share_index {
            Some(index) => {
                aad.push(0x01);
                aad.extend_from_slice(&index.get().to_be_bytes());
            }
            None => aad.push(0x00),
        }
        match &self.group_public_key {
            Some(group) => {
                aad.push(0x01);
                aad.extend_from_slice(group.as_bytes());
            }
            None => aad.push(0x00),
        }
        aad
    }
}

/// A sealed share: `format version || backend tag || backend body` (self-describing, safe to
/// store and to show; it is ciphertext).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedShare(pub Vec<u8>);

impl SealedShare {
    /// Length of the `version || backend` header.
    pub const HEADER_LEN: usize = 2;

    /// Assemble a blob from its backend and body.
    pub(crate) fn assemble(backend: SealBackend, body_parts: &[&[u8]]) -> Self {
        let body_len: usize = body_parts.iter().map(|part| part.len()).sum();
        let mut blob = Vec::with_capacity(Self::HEADER_LEN + body_len);
        blob.push(SEALED_FORMAT_VERSION);
        blob.push(backend.tag());
        for part in body_parts {
            blob.extend_from_slice(part);
        }
        SealedShare(blob)
    }

    /// The header bytes every backend authenticates along with the context.
    pub(crate) fn header_for(backend: SealBackend) -> [u8; Self::HEADER_LEN] {
        [SEALED_FORMAT_VERSION, backend.tag()]
    }

    /// Which backend sealed this blob; refuses an unknown version or backend.
    pub fn backend(&self) -> Result<SealBackend, SealError> {
        let (&version, rest) = self
            .0
            .split_first()
            .ok_or_else(|| SealError::MalformedBlob("empty blob".to_string()))?;
        if version != SEALED_FORMAT_VERSION {
            return Err(SealError::MalformedBlob(format!(
                "unknown format version {version} (expected {SEALED_FORMAT_VERSION})"
            )));
        }
        let &tag = rest
            .first()
            .ok_or_else(|| SealError::MalformedBlob("blob ends after the version".to_string()))?;
        SealBackend::from_tag(tag)
            .ok_or_else(|| SealError::MalformedBlob(format!("unknown backend tag {tag:#04x}")))
    }

    /// The backend body after checking the header names `expected`, and that the body is exactly
    /// `body_len` bytes long.
    pub(crate) fn body_for(
        &self,
        expected: SealBackend,
        body_len: usize,
    ) -> Result<&[u8], SealError> {
        let backend = self.backend()?;
        if backend != expected {
            return Err(SealError::MalformedBlob(format!(
                "blob was sealed by backend {backend}, this sealer is {expected}"
            )));
        }
        let body = &self.0[Self::HEADER_LEN..];
        if body.len() != body_len {
            return Err(SealError::MalformedBlob(format!(
                "{expected} body is {} bytes, expected {body_len}",
                body.len()
            )));
        }
        Ok(body)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Ciphertext is not secret, but printing it helps nobody: show its shape.
impl fmt::Debug for SealedShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend() {
            Ok(backend) => write!(f, "SealedShare({backend}, {} bytes)", self.0.len()),
            Err(_) => write!(f, "SealedShare(unrecognised, {} bytes)", self.0.len()),
        }
    }
}

/// Seals and unseals 32-byte shares with a key held by an HSM.
///
/// Implementations are safe to call from many threads at once; `unseal` is on the signing path.
pub trait Sealer: Send + Sync {
    /// Encrypt `secret` under the HSM's sealing key, bound to `context`.
    fn seal(
        &self,
        secret: &Zeroizing<[u8; SHARE_LEN]>,
        context: &SealContext,
    ) -> Result<SealedShare, SealError>;

    /// Decrypt a blob sealed for exactly this `context` by this HSM's sealing key.
    fn unseal(
        &self,
        sealed: &SealedShare,
        context: &SealContext,
    ) -> Result<Zeroizing<[u8; SHARE_LEN]>, SealError>;

    /// Cheap liveness probe (for `/healthcheck`): the HSM session is still usable.
    fn health_check(&self) -> Result<(), SealError>;

    /// Human-readable identity of the backend (no secrets), e.g. `pkcs11 token 'keystake' slot 3`.
    fn describe(&self) -> String;
}

/// Why sealing, unsealing or opening an HSM failed. Messages never contain secret material.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot load the PKCS#11 module {module}: {reason}")]
    ModuleLoad { module: String, reason: String },
    #[error("no initialized token labelled '{label}'")]
    TokenNotFound { label: String },
    #[error(
        "{count} tokens are labelled '{label}'; refusing to guess which one holds the sealing key"
    )]
    AmbiguousToken { label: String, count: usize },
    #[error("no free (uninitialized) token slot to initialize token '{label}'")]
    NoFreeSlot { label: String },
    #[error("the HSM refused the PIN or password")]
    WrongPin,
    #[error("the HSM PIN is locked after too many failed attempts")]
    PinLocked,
    #[error("no key labelled '{label}' on the HSM (run `keystake-signer init`)")]
    KeyNotFound { label: String },
    #[error(
        "{count} objects are labelled '{label}'; refusing to guess which one is the sealing key"
    )]
    DuplicateKey { label: String, count: usize },
    #[error("the HSM key '{label}' is not fit for use: {reason}")]
    UnsuitableKey { label: String, reason: String },
    #[error("invalid HSM configuration: {0}")]
    InvalidConfig(String),
    #[error("HSM unavailable: {0}")]
    Unavailable(String),
    #[error("HSM error: {0}")]
    Backend(String),
    #[error("sealed share failed authentication (wrong key context, tampered, or sealed by another HSM key)")]
    Integrity,
    #[error("malformed sealed share: {0}")]
    MalformedBlob(String),
}

impl SealError {
    /// True when the HSM (or the session to it) is down: the caller should answer 503 and retry.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SealError::Unavailable(_))
    }
}

/// Shared test bodies, run against every backend (see `pkcs11::tests`, `yubihsm::tests` and
/// `cross_backend_tests` below; the signing path over both backends is in `app::tests`).
#[cfg(test)]
pub(crate) mod contract_tests {
    use std::sync::Arc;

    use super::*;

    pub(crate) fn context(seed: u8) -> SealContext {
        SealContext {
            share_public_key: BlsPublicKey([seed; 48]),
            share_index: Some(ShareIndex::new(u32::from(seed) + 1).unwrap()),
            group_public_key: Some(BlsPublicKey([seed.wrapping_add(100); 48])),
        }
    }

    pub(crate) fn secret(seed: u8) -> Zeroizing<[u8; SHARE_LEN]> {
        let mut bytes = [0u8; SHARE_LEN];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = seed.wrapping_mul(31).wrapping_add(i as u8).wrapping_mul(7) ^ 0x5a;
        }
        Zeroizing::new(bytes)
    }

    pub(crate) fn round_trip(sealer: &dyn Sealer) {
        for seed in 0..4u8 {
            let ctx = context(seed);
            let share = secret(seed);
            let sealed = sealer.seal(&share, &ctx).unwrap();
            let opened = sealer.unseal(&sealed, &ctx).unwrap();
            assert_eq!(*opened, *share);
        }
        // A full (non-threshold) key has neither index nor group key.
        let ctx = SealContext {
            share_public_key: BlsPublicKey([9; 48]),
            share_index: None,
            group_public_key: None,
        };
        let sealed = sealer.seal(&secret(9), &ctx).unwrap();
        assert_eq!(*sealer.unseal(&sealed, &ctx).unwrap(), *secret(9));
    }

    pub(crate) fn seals_are_randomised(sealer: &dyn Sealer) {
        let ctx = context(1);
        let first = sealer.seal(&secret(1), &ctx).unwrap();
        let second = sealer.seal(&secret(1), &ctx).unwrap();
        assert_ne!(first, second, "each seal must use a fresh IV/nonce");
    }

    pub(crate) fn context_is_bound(sealer: &dyn Sealer) {
        let ctx = context(3);
        let sealed = sealer.seal(&secret(3), &ctx).unwrap();
        let mut other_pubkey = ctx.clone();
        other_pubkey.share_public_key = BlsPublicKey([0xee; 48]);
        let mut other_index = ctx.clone();
        other_index.share_index = Some(ShareIndex::new(99).unwrap());
        let mut no_index = ctx.clone();
        no_index.share_index = None;
        let mut other_group = ctx.clone();
        other_group.group_public_key = Some(BlsPublicKey([0xdd; 48]));
        let mut no_group = ctx.clone();
        no_group.group_public_key = None;
        for wrong in [other_pubkey, other_index, no_index, other_group, no_group] {
            match sealer.unseal(&sealed, &wrong) {
                Err(SealError::Integrity) => {}
                other => panic!("unseal under {wrong:?}: expected Integrity, got {other:?}"),
            }
        }
        // The right context still opens it.
        assert_eq!(*sealer.unseal(&sealed, &ctx).unwrap(), *secret(3));
    }

    pub(crate) fn tampering_is_detected(sealer: &dyn Sealer) {
        let ctx = context(4);
        let sealed = sealer.seal(&secret(4), &ctx).unwrap();
        for bit in 0..sealed.0.len() * 8 {
            let mut tampered = sealed.clone();
            tampered.0[bit / 8] ^= 1 << (bit % 8);
            match sealer.unseal(&tampered, &ctx) {
                Err(SealError::Integrity) | Err(SealError::MalformedBlob(_)) => {}
                other => {
                    panic!("bit {bit} flipped: expected Integrity/MalformedBlob, got {other:?}")
                }
            }
        }
        let mut truncated = sealed.clone();
        truncated.0.pop();
        assert!(matches!(
            sealer.unseal(&truncated, &ctx),
            Err(SealError::MalformedBlob(_))
        ));
        let mut extended = sealed.clone();
        extended.0.push(0);
        assert!(matches!(
            sealer.unseal(&extended, &ctx),
            Err(SealError::MalformedBlob(_))
        ));
        assert!(matches!(
            sealer.unseal(&SealedShare(Vec::new()), &ctx),
            Err(SealError::MalformedBlob(_))
        ));
        // The untouched blob still opens: failures left the backend usable.
        assert_eq!(*sealer.unseal(&sealed, &ctx).unwrap(), *secret(4));
    }

    pub(crate) fn foreign_key_cannot_open(sealer_a: &dyn Sealer, sealer_b: &dyn Sealer) {
        let ctx = context(5);
        let sealed = sealer_a.seal(&secret(5), &ctx).unwrap();
        match sealer_b.unseal(&sealed, &ctx) {
            Err(SealError::Integrity) => {}
            other => panic!("blob of another sealing key: expected Integrity, got {other:?}"),
        }
        assert_eq!(*sealer_a.unseal(&sealed, &ctx).unwrap(), *secret(5));
    }

    /// A blob sealed by another backend (`other`) is refused as malformed — by its header, before
    /// the HSM is asked — and the sealer stays usable.
    pub(crate) fn other_backends_blob_is_refused(sealer: &dyn Sealer, other: &dyn Sealer) {
        let ctx = context(8);
        let foreign = other.seal(&secret(8), &ctx).unwrap();
        let own = sealer.seal(&secret(8), &ctx).unwrap();
        assert_ne!(foreign.backend().unwrap(), own.backend().unwrap());
        match sealer.unseal(&foreign, &ctx) {
            Err(SealError::MalformedBlob(message)) => {
                assert!(message.contains("sealed by backend"), "{message}")
            }
            other => panic!("blob of another backend: expected MalformedBlob, got {other:?}"),
        }
        // The other backend's body behind this backend's header: the body length or the tag
        // gives it away.
        let mut relabelled = foreign.clone();
        relabelled.0[1] = own.0[1];
        assert!(matches!(
            sealer.unseal(&relabelled, &ctx),
            Err(SealError::MalformedBlob(_)) | Err(SealError::Integrity)
        ));
        assert_eq!(*sealer.unseal(&own, &ctx).unwrap(), *secret(8));
    }

    pub(crate) fn blob_hides_plaintext(sealer: &dyn Sealer) {
        let ctx = context(6);
        let share = secret(6);
        let sealed = sealer.seal(&share, &ctx).unwrap();
        // No 8-byte window of the share appears in the blob (a chance match is ~2^-58).
        for window in share.windows(8) {
            assert!(
                !sealed.0.windows(8).any(|candidate| candidate == window),
                "sealed blob contains plaintext bytes"
            );
        }
        assert!(!format!("{sealed:?}").contains(&hex::encode(&share[..8])));
    }

    pub(crate) fn parallel_unseals(sealer: Arc<dyn Sealer>, threads: usize, per_thread: usize) {
        let sealed: Vec<(SealContext, SealedShare)> = (0..threads as u8)
            .map(|seed| {
                let ctx = context(seed);
                let blob = sealer.seal(&secret(seed), &ctx).unwrap();
                (ctx, blob)
            })
            .collect();
        let sealed = Arc::new(sealed);
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let sealer = Arc::clone(&sealer);
                let sealed = Arc::clone(&sealed);
                std::thread::spawn(move || {
                    for round in 0..per_thread {
                        let pick = (thread + round) % sealed.len();
                        let (ctx, blob) = &sealed[pick];
                        let opened = sealer.unseal(blob, ctx).unwrap();
                        assert_eq!(*opened, *secret(pick as u8));
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    }

    pub(crate) fn health_and_description(sealer: &dyn Sealer, must_mention: &str) {
        sealer.health_check().unwrap();
        let description = sealer.describe();
        assert!(
            description.contains(must_mention),
            "describe() = {description:?} should mention {must_mention:?}"
        );
    }

    /// The contract above as `#[test]`s (one a property) for a backend's test module.
    /// `$fresh_sealer` makes a new sealer from a label unique to the test (a backend without
    /// separate tokens may ignore it); `$description` is what its `describe()` must mention.
    macro_rules! sealer_contract_tests {
        ($fresh_sealer:expr, $description:expr) => {
            #[test]
            fn contract_round_trip() {
                let sealer = ($fresh_sealer)("roundtrip");
                $crate::hsm::contract_tests::round_trip(&sealer);
                $crate::hsm::contract_tests::seals_are_randomised(&sealer);
                $crate::hsm::contract_tests::health_and_description(&sealer, $description);
            }

            #[test]
            fn contract_context_is_bound() {
                let sealer = ($fresh_sealer)("context");
                $crate::hsm::contract_tests::context_is_bound(&sealer);
            }

            #[test]
            fn contract_tampering_is_detected() {
                let sealer = ($fresh_sealer)("tamper");
                $crate::hsm::contract_tests::tampering_is_detected(&sealer);
            }

            #[test]
            fn contract_foreign_key_cannot_open() {
                let sealer_a = ($fresh_sealer)("token-a");
                let sealer_b = ($fresh_sealer)("token-b");
                $crate::hsm::contract_tests::foreign_key_cannot_open(&sealer_a, &sealer_b);
            }

            #[test]
            fn contract_blob_hides_plaintext() {
                let sealer = ($fresh_sealer)("hides");
                $crate::hsm::contract_tests::blob_hides_plaintext(&sealer);
            }

            #[test]
            fn contract_parallel_unseals() {
                let sealer = ($fresh_sealer)("parallel");
                $crate::hsm::contract_tests::parallel_unseals(std::sync::Arc::new(sealer), 8, 200);
            }
        };
    }
    pub(crate) use sealer_contract_tests;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_is_unambiguous_and_versioned() {
        let base = contract_tests::context(1);
        let aad = base.aad();
        assert!(aad.starts_with(AAD_PREFIX));
        assert_eq!(aad.len(), 16 + 48 + 5 + 49);

        let mut variants = vec![aad];
        let mut no_index = base.clone();
        no_index.share_index = None;
        let mut no_group = base.clone();
        no_group.group_public_key = None;
        let mut neither = no_index.clone();
        neither.group_public_key = None;
        let mut index_one_more = base.clone();
        index_one_more.share_index = Some(ShareIndex::new(3).unwrap());
        for ctx in [no_index, no_group, neither, index_one_more] {
            variants.push(ctx.aad());
        }
        for (i, a) in variants.iter().enumerate() {
            for b in &variants[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(variants[3].len(), 16 + 48 + 1 + 1);
    }

    #[test]
    fn blob_header_is_checked() {
        let blob = SealedShare::assemble(SealBackend::Pkcs11AesGcm, &[&[7u8; 4]]);
        assert_eq!(blob.0, vec![1, 1, 7, 7, 7, 7]);
        assert_eq!(blob.backend().unwrap(), SealBackend::Pkcs11AesGcm);
        assert_eq!(
            blob.body_for(SealBackend::Pkcs11AesGcm, 4).unwrap(),
            &[7; 4]
        );
        assert!(matches!(
            blob.body_for(SealBackend::Pkcs11AesGcm, 5),
            Err(SealError::MalformedBlob(_))
        ));
        assert!(matches!(
            blob.body_for(SealBackend::YubiHsmHmacSha256, 4),
            Err(SealError::MalformedBlob(_))
        ));
        assert!(matches!(
            SealedShare(vec![2, 1]).backend(),
            Err(SealError::MalformedBlob(_))
        ));
        assert!(matches!(
            SealedShare(vec![1, 0x7f]).backend(),
            Err(SealError::MalformedBlob(_))
        ));
        assert!(matches!(
            SealedShare(vec![1]).backend(),
            Err(SealError::MalformedBlob(_))
        ));
        assert_eq!(
            format!("{blob:?}"),
            "SealedShare(pkcs11-aes-256-gcm, 6 bytes)"
        );
    }
}

/// Bodies that need one sealer of each backend: SoftHSM2 and the YubiHSM2 mock.
#[cfg(all(test, feature = "yubihsm"))]
mod cross_backend_tests {
    use super::{contract_tests, pkcs11, yubihsm};

    #[test]
    fn each_backend_refuses_the_other_backends_blobs() {
        let (_, softhsm) = pkcs11::test_support::fresh_sealer("cross-backend");
        let (_, mock) = yubihsm::test_support::fresh_sealer();
        contract_tests::other_backends_blob_is_refused(&softhsm, &mock);
        contract_tests::other_backends_blob_is_refused(&mock, &softhsm);
    }
}
