//! This appliance's DKG identity key: the P-256 sign-only `Identity` key that `init` generates
//! inside the token (`hsm::signing_key`, `CKM_ECDSA` over a digest; never leaves the HSM). Its
//! public half is pinned in ceremony definitions; it signs every broadcast and the lock hash.
//!
//! Also the sealing contexts of the one secret of a running ceremony, its seed, which is sealed
//! by the sealing key before anything is derived from it.
//!
//! Refuses: an identity key whose public half is not an uncompressed P-256 point.
#![forbid(unsafe_code)]

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::hsm::signing_key::{HsmSigningKey, KeyRole};
use crate::hsm::SealContext;
use keystake_core::dkg::{
    BroadcastSigner, CeremonyId, IdentityPublicKey, IdentitySignature, SignerError,
};
use keystake_core::types::BlsPublicKey;

use super::DkgAdapterError;

/// The sealing context of a non-share secret: a 48-byte label in the share-key slot, so its AAD
/// can never equal that of a real share (whose slot holds a point on the curve, which a SHA-256
/// based label is not with overwhelming probability) or of another purpose.
pub(crate) fn secret_context(purpose: &[u8]) -> SealContext {
    let first = Sha256::digest([b"keystake-sealed-secret-v1:".as_slice(), purpose].concat());
    let second = Sha256::digest(first);
    let mut label = [0u8; 48];
    label[..32].copy_from_slice(&first);
    label[32..].copy_from_slice(&second[..16]);
    SealContext {
        share_public_key: BlsPublicKey(label),
        share_index: None,
        group_public_key: None,
    }
}

/// The sealing context of a ceremony's seed.
pub(crate) fn seed_context(ceremony: &CeremonyId) -> SealContext {
    secret_context(&[b"keystake-dkg-seed-v1:".as_slice(), &ceremony.0].concat())
}

/// The HSM-held identity key as the core's [`BroadcastSigner`].
pub struct HsmIdentity {
    key: Arc<dyn HsmSigningKey>,
    public: IdentityPublicKey,
}

impl std::fmt::Debug for HsmIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmIdentity({})", self.key.describe())
    }
}

impl HsmIdentity {
    /// Wrap the token's identity key (`app::open_signing_key(config, KeyRole::Identity)`).
    pub fn new(key: Arc<dyn HsmSigningKey>) -> Result<Self, DkgAdapterError> {
        if key.role() != KeyRole::Identity {
            return Err(DkgAdapterError::Identity(format!(
                "{} is not the identity key",
                key.describe()
            )));
        }
        let public = IdentityPublicKey::parse(key.public_key().as_sec1())
            .map_err(DkgAdapterError::Identity)?;
        Ok(Self { key, public })
    }
}

impl BroadcastSigner for HsmIdentity {
    fn identity(&self) -> IdentityPublicKey {
        self.public
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<IdentitySignature, SignerError> {
        let signature = self
            .key
            .sign_digest(digest)
            .map_err(|e| SignerError(e.to_string()))?;
        Ok(IdentitySignature(*signature.as_bytes()))
    }
}
