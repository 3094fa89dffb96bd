//! The checks the DKG ([`super::Ceremony`]) and the reshare ([`super::Reshare`]) share, written
//! once: opening the shares dealt to a participant and the Feldman check of all of them, the
//! public judgement of a complaint from a revealed key, the group commitments and public shares
//! derived from the dealers' commitments, and the body hashes an echo is compared against.
//!
//! Speed without weakening: a participant's shares (all dealers, all validators) are checked in
//! one random linear combination — with secret random 64-bit weights `ρ` (from the
//! participant's seed stream, unknown to the dealers) `(Σ ρ·s)·G == Σ ρ·E`, where `E` is the
//! dealer's commitments evaluated at the recipient's index — and, only when that fails, share
//! by share, so the culprit is still named exactly (a bad share passes the batch with
//! probability at most 2^-64). Evaluations use the commitments decoded once
//! ([`FeldmanCommitments::points`]) and Horner's rule with the small index.
//!
//! Refuses (reports as bad): a share that is not a canonical scalar, a zero share, a share off
//! its dealer's commitments.
#![forbid(unsafe_code)]

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::bls::{self, G1Point, Scalar};
use crate::manifest::EnrolmentPublicKey;
use crate::threshold::FeldmanCommitments;
use crate::types::{BlsPublicKey, ShareIndex};

use super::ceremony::{BodyHash, Complaint, ComplaintReason, SignedMessage};
use super::crypto::{self, share_aad, ShareDecryptor};
use super::deal::{self, EncryptedShare};
use super::definition::{CeremonyId, Definition};
use super::evidence::{Abort, Fault};
use super::{DkgError, ParticipantIndex};

/// One received share to check: the dealer's commitments and the opened share `f_i(j)`.
pub(crate) struct Received<'a> {
    pub commitments: &'a FeldmanCommitments,
    pub share: &'a [u8; 32],
}

fn nonzero_weight<R: RngCore>(rng: &mut R) -> u64 {
    loop {
        let weight = rng.next_u64();
        if weight != 0 {
            return weight;
        }
    }
}

/// For each received share, whether it is `f_i(recipient)` for its commitments (module doc):
/// one batch check, and share-by-share checks only when the batch fails. The result is the
/// same as checking every share alone (up to the batch's 2^-64 error).
pub(crate) fn check_received_shares<R: RngCore + CryptoRng>(
    recipient: ShareIndex,
    received: &[Received<'_>],
    rng: &mut R,
) -> Vec<bool> {
    let scalars: Vec<Option<Scalar>> = received
        .iter()
        .map(|r| Scalar::from_be_bytes_canonical(r.share).filter(|s| !s.is_zero()))
        .collect();
    let evaluations: Vec<G1Point> = received
        .iter()
        .map(|r| r.commitments.evaluate(recipient))
        .collect();
    let mut ok: Vec<bool> = scalars.iter().map(Option::is_some).collect();
    let candidates: Vec<usize> = (0..received.len()).filter(|i| ok[*i]).collect();
    if candidates.is_empty() {
        return ok;
    }
    let weights: Vec<u64> = candidates.iter().map(|_| nonzero_weight(rng)).collect();
    let mut weighted = Scalar::zero();
    for (i, weight) in candidates.iter().zip(&weights) {
        if let Some(s) = &scalars[*i] {
            weighted = weighted.add(&Scalar::from_u64(*weight).mul(s));
        }
    }
    let points: Vec<G1Point> = candidates.iter().map(|i| evaluations[*i]).collect();
    let batch = bls::g1_weighted_sum(&points, &weights)
        .is_ok_and(|sum| G1Point::generator().mul(&weighted) == sum);
    if batch {
        return ok;
    }
    for i in candidates {
        ok[i] = scalars[i]
            .as_ref()
            .is_some_and(|s| G1Point::generator().mul(s) == evaluations[i]);
    }
    ok
}

/// The group's commitments from the dealers' (`Σ_i C_ik`, or `Σ_i λ_i·C_ik` when resharing).
pub(crate) fn combine_commitments(
    dealt: &[&FeldmanCommitments],
    weights: Option<&[Scalar]>,
) -> Result<FeldmanCommitments, DkgError> {
    let t = dealt
        .first()
        .map(|c| c.points().len())
        .ok_or(DkgError::Message("no dealers".into()))?;
    if dealt.iter().any(|c| c.points().len() != t) {
        return Err(DkgError::Message(
            "dealers committed to different degrees".into(),
        ));
    }
    let group = (0..t)
        .map(|k| match weights {
            None => Ok(dealt.iter().fold(G1Point::infinity(), |acc, c| {
                acc.add(&c.points()[k].point())
            })),
            Some(weights) => {
                let points: Vec<bls::ValidPublicKey> =
                    dealt.iter().map(|c| c.points()[k]).collect();
                bls::g1_combine_valid(&points, weights)
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DkgError::Message(format!("group commitment: {e}")))?;
    FeldmanCommitments::from_points(&group)
        .map_err(|e| DkgError::Message(format!("group commitment: {e}")))
}

/// Public shares `1..=n` of `group` (share `j` at position `j−1`), one inversion for all.
pub(crate) fn public_shares(
    group: &FeldmanCommitments,
    n: u32,
) -> Result<Vec<BlsPublicKey>, DkgError> {
    let points: Vec<G1Point> = (1..=n)
        .map(|j| {
            ShareIndex::new(j)
                .map(|index| group.evaluate(index))
                .map_err(|e| DkgError::Message(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    bls::g1_compress_all(&points).map_err(|e| DkgError::Message(format!("public share: {e}")))
}

/// Hashes of the bodies held for one phase, computed once (an echo phase compares each of n
/// echoes' n entries against them).
pub(crate) fn body_hashes<'a>(
    held: impl Iterator<Item = &'a SignedMessage>,
) -> std::collections::BTreeMap<ShareIndex, BodyHash> {
    held.map(|m| (m.sender, m.body_hash())).collect()
}

/// One share dealt to this participant, opened with its enrolment key (`None`: it does not
/// decrypt).
pub(crate) struct Opened {
    pub dealer: ParticipantIndex,
    pub validator: usize,
    pub share: Option<Zeroizing<[u8; 32]>>,
}

/// Open the share `dealer` dealt to share index `index` for `validator` (AAD as dealt).
pub(crate) fn open_share(
    decryptor: &dyn ShareDecryptor,
    id: &CeremonyId,
    dealer: ParticipantIndex,
    index: ShareIndex,
    validator: usize,
    encrypted: &EncryptedShare,
) -> Result<Opened, DkgError> {
    let iv = encrypted
        .iv_array()
        .ok_or(DkgError::Message("iv length".into()))?;
    let aad = share_aad(
        id,
        dealer,
        index,
        validator as u32,
        &encrypted.ephemeral_public_key,
    );
    let share = decryptor.open(
        &encrypted.ephemeral_public_key,
        &iv,
        &aad,
        &encrypted.ciphertext,
    )?;
    Ok(Opened {
        dealer,
        validator,
        share,
    })
}

/// The complaints about `opened` (undecryptable, or off the dealer's commitments — all checked
/// in one batch by [`check_received_shares`]) in their order, and for each opened share whether
/// it is accepted.
pub(crate) fn complaints_about<'a, R: RngCore + CryptoRng>(
    index: ShareIndex,
    opened: &[Opened],
    commitments: impl Fn(&Opened) -> &'a FeldmanCommitments,
    rng: &mut R,
) -> (Vec<Complaint>, Vec<bool>) {
    let received: Vec<Received<'_>> = opened
        .iter()
        .filter_map(|o| {
            o.share.as_ref().map(|share| Received {
                commitments: commitments(o),
                share,
            })
        })
        .collect();
    let mut verdicts = check_received_shares(index, &received, rng).into_iter();
    let mut complaints = Vec::new();
    let mut accepted = Vec::with_capacity(opened.len());
    for o in opened {
        let reason = match &o.share {
            None => Some(ComplaintReason::Undecryptable),
            Some(_) if !verdicts.next().unwrap_or(false) => Some(ComplaintReason::FeldmanMismatch),
            Some(_) => None,
        };
        accepted.push(reason.is_none());
        if let Some(reason) = reason {
            complaints.push(Complaint {
                dealer: o.dealer,
                validator: o.validator as u32,
                reason,
            });
        }
    }
    (complaints, accepted)
}

/// Who a judged complaint blames.
pub(crate) enum Verdict {
    /// The dealer revealed a secret that is not the share's ephemeral key.
    InvalidReveal,
    /// The revealed share does not decrypt or is off the dealer's commitments.
    BadShare(String),
    /// The revealed share is good: the complainer lied.
    FalseComplaint,
}

/// A complained-about share: `dealer` dealt `encrypted` to share index `index` for
/// `validator`, against `commitments`.
pub(crate) struct Dealt<'a> {
    pub dealer: ParticipantIndex,
    pub index: ShareIndex,
    pub validator: u32,
    pub encrypted: &'a EncryptedShare,
    pub commitments: &'a FeldmanCommitments,
}

/// Judge a complaint about `dealt` from the dealer's revealed ephemeral `secret`, as anyone can
/// (module doc of `dkg`).
pub(crate) fn judge_revealed_share(
    id: &CeremonyId,
    dealt: Dealt<'_>,
    secret: &[u8],
    recipient_key: &EnrolmentPublicKey,
) -> Verdict {
    let encrypted = dealt.encrypted;
    let secret: Option<[u8; 32]> = secret.try_into().ok();
    let valid_secret = secret
        .filter(|s| crypto::ephemeral_public(s).as_ref() == Some(&encrypted.ephemeral_public_key));
    let Some(secret) = valid_secret.map(Zeroizing::new) else {
        return Verdict::InvalidReveal;
    };
    let aad = share_aad(
        id,
        dealt.dealer,
        dealt.index,
        dealt.validator,
        &encrypted.ephemeral_public_key,
    );
    let opened = encrypted.iv_array().and_then(|iv| {
        crypto::open_revealed(&secret, recipient_key, &iv, &aad, &encrypted.ciphertext)
    });
    match opened {
        None => Verdict::BadShare("the share does not decrypt".to_owned()),
        Some(share) if !deal::share_matches(dealt.commitments, dealt.index, &share) => {
            Verdict::BadShare("the share is not on the dealer's commitments".to_owned())
        }
        Some(_) => Verdict::FalseComplaint,
    }
}

impl Verdict {
    /// Blame whoever the verdict names (`recipient`: the complainer, by seat).
    pub(crate) fn blame(
        self,
        abort: &mut Abort,
        definition: &Definition,
        dealer: ParticipantIndex,
        recipient: ParticipantIndex,
        validator: u32,
        evidence: Vec<SignedMessage>,
    ) {
        let (culprit, fault) = match self {
            Verdict::InvalidReveal => (
                dealer,
                Fault::InvalidReveal {
                    recipient,
                    validator,
                },
            ),
            Verdict::BadShare(reason) => (
                dealer,
                Fault::BadShare {
                    recipient,
                    validator,
                    reason,
                },
            ),
            Verdict::FalseComplaint => (recipient, Fault::FalseComplaint { dealer, validator }),
        };
        abort.blame(definition, culprit, fault, evidence);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bls::SecretKey;
    use crate::dkg::deal;
    use crate::threshold;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// `count` random degree-2 polynomials: commitments and the share each deals to `j`.
    fn dealings(count: usize, j: u32, rng: &mut StdRng) -> Vec<(FeldmanCommitments, [u8; 32])> {
        (0..count)
            .map(|_| {
                let coefficients: Vec<Scalar> =
                    (0..3).map(|_| SecretKey::random(rng).to_scalar()).collect();
                let commitments = FeldmanCommitments::new(
                    coefficients
                        .iter()
                        .map(|a| SecretKey::from_scalar(a).unwrap().public_key())
                        .collect(),
                )
                .unwrap();
                let share: Zeroizing<[u8; 32]> = deal::evaluate(&coefficients, j).to_be_bytes();
                (commitments, *share)
            })
            .collect()
    }

    fn check(items: &[(FeldmanCommitments, [u8; 32])], j: u32, rng: &mut StdRng) -> Vec<bool> {
        let received: Vec<Received<'_>> = items
            .iter()
            .map(|(commitments, share)| Received { commitments, share })
            .collect();
        check_received_shares(ShareIndex::new(j).unwrap(), &received, rng)
    }

    #[test]
    fn the_batch_accepts_good_shares_and_names_exactly_the_bad_ones() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut items = dealings(6, 4, &mut rng);
        assert_eq!(check(&items, 4, &mut rng), vec![true; 6]);
        // The same shares are not shares of index 5.
        assert_eq!(check(&items, 5, &mut rng), vec![false; 6]);
        // Two errors that cancel in an unweighted sum: +1 on one share, −1 on another.
        let one = Scalar::one();
        let bump = |share: &[u8; 32], up: bool| {
            let s = Scalar::from_be_bytes_canonical(share).unwrap();
            *(if up { s.add(&one) } else { s.sub(&one) }).to_be_bytes()
        };
        items[1].1 = bump(&items[1].1, true);
        items[4].1 = bump(&items[4].1, false);
        assert_eq!(
            check(&items, 4, &mut rng),
            vec![true, false, true, true, false, true]
        );
        // A zero share and a non-canonical encoding are refused, the others still pass.
        let mut items = dealings(3, 2, &mut rng);
        items[0].1 = [0u8; 32];
        items[2].1 = [0xff; 32];
        assert_eq!(check(&items, 2, &mut rng), vec![false, true, false]);
        assert!(check(&[], 2, &mut rng).is_empty());
        // Agrees with the one-share check.
        for (commitments, share) in &items {
            let alone = deal::share_matches(commitments, ShareIndex::new(2).unwrap(), share);
            assert_eq!(
                check(&[(commitments.clone(), *share)], 2, &mut rng),
                vec![alone]
            );
        }
    }

    #[test]
    fn group_commitments_and_public_shares_match_the_reference_arithmetic() {
        let mut rng = StdRng::seed_from_u64(8);
        let items = dealings(4, 1, &mut rng);
        let dealt: Vec<&FeldmanCommitments> = items.iter().map(|(c, _)| c).collect();
        let group = combine_commitments(&dealt, None).unwrap();
        let ones: Vec<Scalar> = (0..4).map(|_| Scalar::one()).collect();
        for k in 0..3 {
            let points: Vec<BlsPublicKey> = dealt.iter().map(|c| c.as_slice()[k]).collect();
            assert_eq!(
                group.as_slice()[k],
                bls::g1_linear_combination(&points, &ones).unwrap()
            );
        }
        let weights: Vec<Scalar> = (0..4).map(|i| Scalar::from_u64(i + 2)).collect();
        let weighted = combine_commitments(&dealt, Some(&weights)).unwrap();
        let points: Vec<BlsPublicKey> = dealt.iter().map(|c| c.as_slice()[0]).collect();
        assert_eq!(
            weighted.as_slice()[0],
            bls::g1_linear_combination(&points, &weights).unwrap()
        );
        let shares = public_shares(&group, 5).unwrap();
        for (j, share) in shares.iter().enumerate() {
            let index = ShareIndex::new(j as u32 + 1).unwrap();
            // The reference: Σ_k C_k · j^k as a full multi-scalar multiplication.
            let x = Scalar::from_u64(j as u64 + 1);
            let powers = [Scalar::one(), x.clone(), x.mul(&x)];
            assert_eq!(
                *share,
                bls::g1_linear_combination(group.as_slice(), &powers).unwrap()
            );
            assert_eq!(
                *share,
                threshold::share_public_key_from_commitments(&group, index).unwrap()
            );
        }
    }
}
