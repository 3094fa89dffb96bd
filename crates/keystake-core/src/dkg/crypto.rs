//! The P-256 side of a ceremony: identity signatures on broadcasts (ECDSA over a 32-byte digest)
//! and the encryption of shares to enrolment keys (ECIES as `hsm::enrolment` does it: fresh
//! ephemeral key `e`, AES-256 key = x-coordinate of `e·P`, AES-256-GCM with a binding AAD).
//!
//! Only the public halves live here: verifying a signature, encrypting to a public key with
//! randomness passed in, and opening a ciphertext with a **revealed** ephemeral secret (a
//! complaint's public check). Signing with an identity key and decrypting with an enrolment key
//! need the token: [`BroadcastSigner`] and [`ShareDecryptor`] are implemented by the adapter.
//!
//! Refuses: public keys that are not uncompressed SEC1 points on P-256; signatures that are not
//! 64 bytes `r ‖ s` in range; a revealed secret whose public key is not the published one.
#![forbid(unsafe_code)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use p256::ecdsa::signature::hazmat::PrehashVerifier;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{NonZeroScalar, PublicKey};
use zeroize::Zeroizing;

use crate::manifest::{EnrolmentPublicKey, P256_POINT_LEN};
use crate::types::fixed_bytes;

use super::definition::CeremonyId;
use super::ParticipantIndex;

fixed_bytes!(
    /// A participant's identity public key: an uncompressed SEC1 P-256 point (65 bytes) whose
    /// private half signs broadcasts inside the participant's HSM.
    IdentityPublicKey,
    65
);

fixed_bytes!(
    /// An ECDSA P-256 signature, `r ‖ s` (64 bytes), over a 32-byte digest.
    IdentitySignature,
    64
);

/// IV length of the share AEAD.
pub const SHARE_IV_LEN: usize = 12;
/// Ciphertext length of one encrypted share: 32 bytes and the 16-byte GCM tag.
pub const SHARE_CIPHERTEXT_LEN: usize = 48;

/// Why the token (or the test double) could not sign or decrypt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SignerError(pub String);

/// "Sign this broadcast digest with my identity key / what is my identity public key" — the
/// adapter implements it with the HSM-held identity key.
pub trait BroadcastSigner {
    fn identity(&self) -> IdentityPublicKey;
    fn sign_digest(&self, digest: &[u8; 32]) -> Result<IdentitySignature, SignerError>;
}

/// Opens a share encrypted to this appliance's enrolment key (ECDH and AES-GCM inside the token;
/// the derived key never leaves it). `Ok(None)` means the ciphertext does not authenticate.
pub trait ShareDecryptor {
    fn open(
        &self,
        ephemeral: &EnrolmentPublicKey,
        iv: &[u8; SHARE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; 32]>>, SignerError>;
}

impl IdentityPublicKey {
    /// Refuses bytes that are not an uncompressed point on P-256.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() != 65 || bytes[0] != 0x04 {
            return Err("an identity key is a 65-byte uncompressed SEC1 P-256 point".into());
        }
        p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes)
            .map_err(|_| "the identity key is not a point on P-256".to_owned())?;
        let mut out = [0u8; 65];
        out.copy_from_slice(bytes);
        Ok(Self(out))
    }

    /// Whether `signature` is this key's ECDSA signature of `digest`.
    pub fn verify(&self, digest: &[u8; 32], signature: &IdentitySignature) -> bool {
        let Ok(key) = p256::ecdsa::VerifyingKey::from_sec1_bytes(&self.0) else {
            return false;
        };
        let Ok(signature) = p256::ecdsa::Signature::from_slice(&signature.0) else {
            return false;
        };
        // Accept either s (PKCS#11 tokens do not normalize); the digest, not the signature
        // bytes, is what equivocation is judged on.
        let signature = signature.normalize_s().unwrap_or(signature);
        key.verify_prehash(digest, &signature).is_ok()
    }
}

/// AAD of the share dealt by `dealer` to `recipient` for `validator` (0-based):
/// `"keystake-dkg-share-v1" ‖ ceremony id ‖ dealer ‖ recipient ‖ validator ‖ E`.
pub fn share_aad(
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    recipient: ParticipantIndex,
    validator: u32,
    ephemeral: &EnrolmentPublicKey,
) -> Vec<u8> {
    let mut aad = Vec::with_capacity(21 + 32 + 12 + P256_POINT_LEN);
    aad.extend_from_slice(b"keystake-dkg-share-v1");
    aad.extend_from_slice(&ceremony.0);
    aad.extend_from_slice(&dealer.get().to_be_bytes());
    aad.extend_from_slice(&recipient.get().to_be_bytes());
    aad.extend_from_slice(&validator.to_be_bytes());
    aad.extend_from_slice(ephemeral.as_sec1());
    aad
}

/// An ephemeral P-256 secret drawn from `rng` (its 32 big-endian bytes) and its public key.
pub(crate) fn ephemeral_key<R: rand_core::RngCore + rand_core::CryptoRng>(
    rng: &mut R,
) -> (Zeroizing<[u8; 32]>, EnrolmentPublicKey) {
    let secret = NonZeroScalar::random(rng);
    let public = PublicKey::from_secret_scalar(&secret);
    let bytes = Zeroizing::new(<[u8; 32]>::from(secret.to_bytes()));
    (bytes, enrolment_key(&public))
}

fn enrolment_key(public: &PublicKey) -> EnrolmentPublicKey {
    let encoded = public.to_encoded_point(false);
    EnrolmentPublicKey::from_sec1(encoded.as_bytes())
        .unwrap_or_else(|_| unreachable!("an uncompressed P-256 point is 65 bytes"))
}

fn scalar_from(secret: &[u8; 32]) -> Option<NonZeroScalar> {
    Option::from(NonZeroScalar::from_repr((*secret).into()))
}

/// The public key of an ephemeral secret, or `None` when the bytes are not a scalar in [1, n).
pub(crate) fn ephemeral_public(secret: &[u8; 32]) -> Option<EnrolmentPublicKey> {
    scalar_from(secret).map(|s| enrolment_key(&PublicKey::from_secret_scalar(&s)))
}

/// `x(e·P)`: the AES-256 key of a share, or `None` when `P` is not on the curve or `e` is out of
/// range.
fn shared_key(secret: &[u8; 32], recipient: &EnrolmentPublicKey) -> Option<Zeroizing<[u8; 32]>> {
    let scalar = scalar_from(secret)?;
    let point = PublicKey::from_sec1_bytes(recipient.as_sec1()).ok()?;
    let shared = (point.to_projective() * *scalar).to_affine();
    Some(Zeroizing::new(<[u8; 32]>::from(shared.x())))
}

/// AES-256-GCM of a 32-byte share under `x(e·P)`. `None` when the recipient key is invalid.
pub(crate) fn encrypt_share(
    secret: &[u8; 32],
    recipient: &EnrolmentPublicKey,
    iv: &[u8; SHARE_IV_LEN],
    aad: &[u8],
    share: &[u8; 32],
) -> Option<Vec<u8>> {
    let key = shared_key(secret, recipient)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).ok()?;
    cipher
        .encrypt(&Nonce::from(*iv), Payload { msg: share, aad })
        .ok()
}

/// Open a share with the dealer's revealed ephemeral secret (anyone can: the complaint check).
/// `None` when it does not authenticate or is not 32 bytes.
pub(crate) fn open_revealed(
    secret: &[u8; 32],
    recipient: &EnrolmentPublicKey,
    iv: &[u8; SHARE_IV_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<[u8; 32]>> {
    let key = shared_key(secret, recipient)?;
    let cipher = Aes256Gcm::new_from_slice(key.as_slice()).ok()?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &Nonce::from(*iv),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()?,
    );
    let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
    Some(Zeroizing::new(bytes))
}

/// A software [`ShareDecryptor`] holding a P-256 secret: for the pure tests and for tools; an
/// appliance uses its token instead.
pub struct SoftwareDecryptor {
    secret: Zeroizing<[u8; 32]>,
    public: EnrolmentPublicKey,
}

impl SoftwareDecryptor {
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        let (secret, public) = ephemeral_key(rng);
        Self { secret, public }
    }

    pub fn public_key(&self) -> EnrolmentPublicKey {
        self.public
    }
}

impl std::fmt::Debug for SoftwareDecryptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareDecryptor({:?})", self.public)
    }
}

impl ShareDecryptor for SoftwareDecryptor {
    fn open(
        &self,
        ephemeral: &EnrolmentPublicKey,
        iv: &[u8; SHARE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Option<Zeroizing<[u8; 32]>>, SignerError> {
        Ok(open_revealed(&self.secret, ephemeral, iv, aad, ciphertext))
    }
}

/// A software [`BroadcastSigner`] (P-256 ECDSA in memory): for the pure tests and tools.
pub struct SoftwareSigner {
    key: p256::ecdsa::SigningKey,
}

impl SoftwareSigner {
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        Self {
            key: p256::ecdsa::SigningKey::random(rng),
        }
    }
}

impl std::fmt::Debug for SoftwareSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SoftwareSigner({:?})", self.identity())
    }
}

impl BroadcastSigner for SoftwareSigner {
    fn identity(&self) -> IdentityPublicKey {
        let point = self.key.verifying_key().to_encoded_point(false);
        IdentityPublicKey::parse(point.as_bytes())
            .unwrap_or_else(|_| unreachable!("an uncompressed P-256 point"))
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<IdentitySignature, SignerError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let signature: p256::ecdsa::Signature = self
            .key
            .sign_prehash(digest)
            .map_err(|e| SignerError(e.to_string()))?;
        let mut out = [0u8; 64];
        out.copy_from_slice(&signature.to_bytes());
        Ok(IdentitySignature(out))
    }
}
