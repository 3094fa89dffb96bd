//! One dealer's contribution for one validator: Feldman commitments of a polynomial of degree
//! `t−1`, a Schnorr proof of knowledge of its constant term, and every share encrypted to its
//! recipient — and the checks every participant runs on them.
//!
//! The proof of knowledge (in G1, generator `G`): nonce `k`, `R = k·G`,
//! `c = H("keystake-dkg-pok-v1", ceremony id, dealer, validator, C_0, R)`, `z = k + c·a_0`;
//! it verifies when `z·G = R + c·C_0`. Binding the ceremony id, dealer and validator makes a
//! proof copied from another ceremony, dealer or validator fail (the rogue-key defence of
//! Joint-Feldman, which Dirk lacks).
//!
//! Every secret comes from the dealer's [`SeedStream`] under its own label, so the same seed
//! gives the same deal after a restart. A resharing dealer passes its old share as the constant
//! term ([`deal_validator`]'s `constant`).
//!
//! Refuses (in [`check_validator_deal`]): a number of commitments other than `t`, invalid or
//! infinite points, a proof that does not verify, a share list not of length `n`, an ephemeral
//! key off the curve, a ciphertext of the wrong length.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::bls::{self, Scalar, SecretKey};
use crate::manifest::EnrolmentPublicKey;
use crate::threshold::FeldmanCommitments;
use crate::types::{BlsPublicKey, ShareIndex};

use super::crypto::{self, share_aad, SHARE_CIPHERTEXT_LEN, SHARE_IV_LEN};
use super::definition::{CeremonyId, Definition};
use super::encoding::SeedStream;
use super::ParticipantIndex;

/// Schnorr proof of knowledge of `a_0` (module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeProof {
    pub nonce_commitment: BlsPublicKey,
    #[serde(with = "crate::manifest::hex_bytes")]
    pub response: Vec<u8>,
}

/// One share `f_i(j)` encrypted to participant `j`'s enrolment key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptedShare {
    pub ephemeral_public_key: EnrolmentPublicKey,
    #[serde(with = "crate::manifest::hex_bytes")]
    pub iv: Vec<u8>,
    #[serde(with = "crate::manifest::hex_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Dealer `i`'s public deal for one validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidatorDeal {
    pub commitments: Vec<BlsPublicKey>,
    pub proof: KnowledgeProof,
    /// `shares[j-1]` is for participant `j`.
    pub shares: Vec<EncryptedShare>,
}

/// A dealer's deal for every validator (the body of its `Deal` message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dealing {
    pub validators: Vec<ValidatorDeal>,
}

fn label(purpose: &str, ceremony: &CeremonyId, validator: u32, recipient: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(purpose.len() + 40);
    out.extend_from_slice(purpose.as_bytes());
    out.extend_from_slice(&ceremony.0);
    out.extend_from_slice(&validator.to_be_bytes());
    out.extend_from_slice(&recipient.to_be_bytes());
    out
}

/// The ephemeral secret `e_ij` of the share to `recipient` for `validator`: what a dealer reveals
/// to answer a complaint (its own label: it says nothing about the polynomial or other shares).
pub(crate) fn ephemeral_secret(
    seed: &[u8; 32],
    ceremony: &CeremonyId,
    validator: u32,
    recipient: ParticipantIndex,
) -> (Zeroizing<[u8; 32]>, EnrolmentPublicKey) {
    let mut rng = SeedStream::new(
        seed,
        &label("ephemeral", ceremony, validator, recipient.get()),
    );
    crypto::ephemeral_key(&mut rng)
}

/// Hash to a scalar below `r` by rejection (deterministic; about 2 tries in 1 need a second).
pub(crate) fn hash_to_scalar(tag: &[u8], parts: &[&[u8]]) -> Scalar {
    for counter in 0u32.. {
        let mut hasher = Sha256::new();
        hasher.update(tag);
        hasher.update(counter.to_be_bytes());
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let mut digest: [u8; 32] = hasher.finalize().into();
        digest[0] &= 0x7f;
        if let Some(scalar) = Scalar::from_be_bytes_canonical(&digest) {
            return scalar;
        }
    }
    unreachable!("a 255-bit value is below r with probability about 1/2")
}

fn challenge(
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    validator: u32,
    constant_commitment: &BlsPublicKey,
    nonce_commitment: &BlsPublicKey,
) -> Scalar {
    hash_to_scalar(
        b"keystake-dkg-pok-v1",
        &[
            &ceremony.0,
            &dealer.get().to_be_bytes(),
            &validator.to_be_bytes(),
            constant_commitment.as_bytes(),
            nonce_commitment.as_bytes(),
        ],
    )
}

/// `f(x)` by Horner's rule (constant-time field operations: the coefficients are secret).
pub(crate) fn evaluate(coefficients: &[Scalar], x: u32) -> Scalar {
    let x = Scalar::from_u64(u64::from(x));
    coefficients
        .iter()
        .rev()
        .fold(Scalar::zero(), |acc, coefficient| {
            acc.mul(&x).add(coefficient)
        })
}

/// The polynomial of `dealer` for `validator`, drawn from its seed: `t` coefficients, `a_0` =
/// `constant` when given (resharing), all others uniformly random and non-zero.
pub(crate) fn polynomial(
    seed: &[u8; 32],
    ceremony: &CeremonyId,
    validator: u32,
    t: u32,
    constant: Option<&Scalar>,
) -> Vec<Scalar> {
    let mut rng = SeedStream::new(seed, &label("polynomial", ceremony, validator, 0));
    let mut coefficients = Vec::with_capacity(t as usize);
    coefficients.push(match constant {
        Some(constant) => constant.clone(),
        None => SecretKey::random(&mut rng).to_scalar(),
    });
    coefficients.extend((1..t).map(|_| SecretKey::random(&mut rng).to_scalar()));
    coefficients
}

/// Dealer `dealer`'s deal for `validator` (0-based), derived from `seed` (module doc). Refuses
/// (with a message) a zero constant term and a recipient enrolment key off the curve.
pub fn deal_validator(
    seed: &[u8; 32],
    definition: &Definition,
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    validator: u32,
    constant: Option<&Scalar>,
) -> Result<ValidatorDeal, String> {
    let t = definition.threshold.get();
    let coefficients = polynomial(seed, ceremony, validator, t, constant);
    let commitments = coefficients
        .iter()
        .map(|a| SecretKey::from_scalar(a).map(|key| key.public_key()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "a zero polynomial coefficient cannot be committed to".to_owned())?;

    let mut nonce_rng = SeedStream::new(seed, &label("proof", ceremony, validator, 0));
    let proof = loop {
        let nonce = SecretKey::random(&mut nonce_rng);
        let nonce_commitment = nonce.public_key();
        let c = challenge(
            ceremony,
            dealer,
            validator,
            &commitments[0],
            &nonce_commitment,
        );
        let response = nonce.to_scalar().add(&c.mul(&coefficients[0]));
        // z = 0 cannot be checked as z·G (probability 2^-255): draw another nonce.
        if !response.is_zero() {
            break KnowledgeProof {
                nonce_commitment,
                response: response.to_be_bytes().to_vec(),
            };
        }
    };

    let mut shares = Vec::with_capacity(definition.participants.len());
    for recipient in definition.indices() {
        let participant = definition
            .participant(recipient)
            .ok_or_else(|| "participant out of range".to_owned())?;
        let (secret, ephemeral) = ephemeral_secret(seed, ceremony, validator, recipient);
        let mut iv = [0u8; SHARE_IV_LEN];
        rand_core::RngCore::fill_bytes(
            &mut SeedStream::new(seed, &label("iv", ceremony, validator, recipient.get())),
            &mut iv,
        );
        let share = evaluate(&coefficients, recipient.get()).to_be_bytes();
        let aad = share_aad(ceremony, dealer, recipient, validator, &ephemeral);
        let ciphertext = crypto::encrypt_share(
            &secret,
            &participant.enrolment_public_key,
            &iv,
            &aad,
            &share,
        )
        .ok_or_else(|| format!("participant {recipient}'s enrolment key is not on P-256"))?;
        shares.push(EncryptedShare {
            ephemeral_public_key: ephemeral,
            iv: iv.to_vec(),
            ciphertext,
        });
    }
    Ok(ValidatorDeal {
        commitments,
        proof,
        shares,
    })
}

/// Verify a proof of knowledge of `commitments[0]`'s discrete log for (ceremony, dealer,
/// validator).
#[cfg(test)]
pub(crate) fn verify_proof(
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    validator: u32,
    constant_commitment: &BlsPublicKey,
    proof: &KnowledgeProof,
) -> bool {
    bls::ValidPublicKey::decode(constant_commitment).is_ok_and(|c0| {
        verify_proof_decoded(ceremony, dealer, validator, constant_commitment, &c0, proof)
    })
}

/// [`verify_proof`] with the constant commitment already decoded. `z·G = R + c·C_0` is checked
/// as `compress(z·G − c·C_0) == R` (and not infinity): the same equation without decoding `R`
/// (a canonical encoding equal to that of a subgroup point is that point).
fn verify_proof_decoded(
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    validator: u32,
    constant_commitment: &BlsPublicKey,
    c0: &bls::ValidPublicKey,
    proof: &KnowledgeProof,
) -> bool {
    let Ok(response) = <[u8; 32]>::try_from(proof.response.as_slice()) else {
        return false;
    };
    let Some(z) = Scalar::from_be_bytes_canonical(&response).filter(|z| !z.is_zero()) else {
        return false;
    };
    let c = challenge(
        ceremony,
        dealer,
        validator,
        constant_commitment,
        &proof.nonce_commitment,
    );
    let Ok(generator) = bls::ValidPublicKey::from_point(&bls::G1Point::generator()) else {
        return false;
    };
    bls::g1_combine_valid(&[generator, *c0], &[z, Scalar::zero().sub(&c)]).is_ok_and(|r| {
        !r.is_infinity() && r.compress().as_slice() == proof.nonce_commitment.as_bytes()
    })
}

/// The public checks of a deal any participant (or third party) runs (module doc). `Err` says
/// what is wrong; the dealer is to blame.
pub(crate) fn check_validator_deal(
    definition: &Definition,
    ceremony: &CeremonyId,
    dealer: ParticipantIndex,
    validator: u32,
    deal: &ValidatorDeal,
) -> Result<FeldmanCommitments, String> {
    let t = definition.threshold.get() as usize;
    if deal.commitments.len() != t {
        return Err(format!(
            "validator {validator}: {} commitments, the threshold is {t}",
            deal.commitments.len()
        ));
    }
    let commitments = FeldmanCommitments::new(deal.commitments.clone())
        .map_err(|e| format!("validator {validator}: {e}"))?;
    if !verify_proof_decoded(
        ceremony,
        dealer,
        validator,
        &deal.commitments[0],
        &commitments.points()[0],
        &deal.proof,
    ) {
        return Err(format!(
            "validator {validator}: the proof of knowledge of the constant term does not verify"
        ));
    }
    if deal.shares.len() != definition.participants.len() {
        return Err(format!(
            "validator {validator}: {} encrypted shares for {} participants",
            deal.shares.len(),
            definition.participants.len()
        ));
    }
    for (position, share) in deal.shares.iter().enumerate() {
        if share.iv.len() != SHARE_IV_LEN || share.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
            return Err(format!(
                "validator {validator}: the share for participant {} has a malformed IV or ciphertext",
                position + 1
            ));
        }
        if p256::PublicKey::from_sec1_bytes(share.ephemeral_public_key.as_sec1()).is_err() {
            return Err(format!(
                "validator {validator}: the ephemeral key of the share for participant {} is not on P-256",
                position + 1
            ));
        }
    }
    Ok(commitments)
}

/// Whether `share` (32 big-endian bytes) is `f(index)` for these commitments (one share; a
/// participant's own shares are checked together by `verify::check_received_shares`).
pub(crate) fn share_matches(
    commitments: &FeldmanCommitments,
    index: ShareIndex,
    share: &[u8; 32],
) -> bool {
    let Some(scalar) = Scalar::from_be_bytes_canonical(share).filter(|s| !s.is_zero()) else {
        return false;
    };
    bls::G1Point::generator().mul(&scalar) == commitments.evaluate(index)
}

impl EncryptedShare {
    pub fn iv_array(&self) -> Option<[u8; SHARE_IV_LEN]> {
        self.iv.as_slice().try_into().ok()
    }
}
