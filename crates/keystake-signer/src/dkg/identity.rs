//! This appliance's DKG identity key: a P-256 key whose public half is pinned in ceremony
//! definitions and whose private half signs every broadcast.
//!
//! Until the token holds a sign-only P-256 identity key (HSM issue 14), the key is generated on
//! the host, **sealed at once by the HSM's sealing key** (AES-256-GCM in the token, AAD bound to
//! the `keystake-dkg-identity-v1` context) and stored sealed in the database; it is unsealed into
//! zeroizing memory only while `dkg run` or `dkg identity` runs. That is the best HSM-held key
//! available today — it is at rest under the HSM, but, unlike a token-resident key, it exists in
//! host memory during a ceremony (docs/dkg.md, "Identity key").
//!
//! Refuses: a stored identity that does not unseal under this HSM or whose public key does not
//! match the sealed private key.
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::hsm::{SealContext, SealedShare, Sealer};
use crate::store::dkg::DkgStore;
use keystake_core::dkg::{
    BroadcastSigner, CeremonyId, IdentityPublicKey, IdentitySignature, SignerError, SoftwareSigner,
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

const IDENTITY_PURPOSE: &[u8] = b"keystake-dkg-identity-v1";

/// The sealing context of a ceremony's seed.
pub(crate) fn seed_context(ceremony: &CeremonyId) -> SealContext {
    secret_context(&[b"keystake-dkg-seed-v1:".as_slice(), &ceremony.0].concat())
}

/// The identity key, unsealed for the duration of a command.
pub struct SealedIdentity {
    signer: SoftwareSigner,
}

impl std::fmt::Debug for SealedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedIdentity({:?})", self.signer.identity())
    }
}

impl SealedIdentity {
    /// The stored identity, created (and sealed, and stored) on first use.
    pub fn load_or_create(store: &DkgStore, sealer: &dyn Sealer) -> Result<Self, DkgAdapterError> {
        if store.identity()?.is_none() {
            let fresh = SoftwareSigner::random(&mut rand::rngs::OsRng);
            let sealed = sealer.seal(&fresh.secret_bytes(), &secret_context(IDENTITY_PURPOSE))?;
            store.insert_identity(&fresh.identity().0, &sealed.0)?;
        }
        let (public, sealed) = store
            .identity()?
            .ok_or_else(|| DkgAdapterError::Identity("no identity row".into()))?;
        let secret: Zeroizing<[u8; 32]> =
            sealer.unseal(&SealedShare(sealed), &secret_context(IDENTITY_PURPOSE))?;
        let signer = SoftwareSigner::from_secret_bytes(&secret)
            .map_err(|e| DkgAdapterError::Identity(e.to_string()))?;
        if signer.identity().0.as_slice() != public.as_slice() {
            return Err(DkgAdapterError::Identity(
                "the stored identity public key does not match its sealed private key".into(),
            ));
        }
        Ok(Self { signer })
    }
}

impl BroadcastSigner for SealedIdentity {
    fn identity(&self) -> IdentityPublicKey {
        self.signer.identity()
    }

    fn sign_digest(&self, digest: &[u8; 32]) -> Result<IdentitySignature, SignerError> {
        self.signer.sign_digest(digest)
    }
}
