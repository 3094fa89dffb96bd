//! Shamir t-of-n threshold BLS over the BLS12-381 scalar field, with Feldman commitments
//! (design.md §4).
//!
//! A validator secret `s` becomes the constant term of a random polynomial `f` of degree `t-1`;
//! share `i` (1-based) is `f(i)`, its public key `f(i)·G1`, and the Feldman commitments are
//! `a_k·G1` (so `[0]` is the group public key). A partial signature is an ordinary BLS signature
//! by a share; any `t` of them combine, by Lagrange interpolation at zero in G2, into the group
//! signature, which is checked under the group public key before it is returned.
//!
//! What it refuses: `t` outside `[1, n]` or `n` above [`MAX_SHARES`]; a combine with `t`, shares or
//! partials above [`MAX_COMBINE_SHARES`], or more partials than shares; duplicate indices (never
//! silently merged); fewer than `t` distinct partials, or fewer than `t` that verify; a combined
//! signature that does not verify; a share that does not match the commitments; commitments with
//! an invalid or infinite point. Errors that blame participants name them
//! ([`ThresholdError::culprits`]), as ZcashFoundation/frost does.
//!
//! Pure: the RNG is passed in. Polynomial coefficients and shares are held in [`bls::Scalar`] and
//! [`bls::SecretKey`], both wiped on drop, and evaluated with constant-time field arithmetic.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::bls::{self, BlsError, Scalar, SecretKey};
use crate::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};

mod bounds;
pub mod share_keys_cache;
pub use bounds::SafetyBounds;
pub use share_keys_cache::ShareKeysCache;

/// Largest number of shares a split may produce (and of commitments accepted).
pub const MAX_SHARES: u32 = u16::MAX as u32;

/// Why a threshold operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThresholdError {
    #[error("threshold {t} must be between 1 and the number of shares {n}")]
    InvalidThreshold { t: u32, n: u32 },
    #[error("{n} shares requested, at most {MAX_SHARES} are supported")]
    TooManyShares { n: u32 },
    #[error("share index {0} appears more than once")]
    DuplicateIndex(ShareIndex),
    #[error("no share indices given")]
    NoIndices,
    #[error("{got} distinct partial signatures given, {needed} needed")]
    NotEnoughPartials { needed: u32, got: usize },
    #[error("only {valid} partial signatures verify, {needed} needed; invalid partials from shares {culprits:?}")]
    NotEnoughValidPartials {
        needed: u32,
        valid: usize,
        culprits: Vec<ShareIndex>,
    },
    #[error("the combined signature does not verify under the group public key (the share public keys do not belong to it)")]
    CombinedSignatureInvalid,
    #[error("share {culprit} does not match the Feldman commitments")]
    ShareFailsFeldmanCheck { culprit: ShareIndex },
    #[error("{got} share public keys given, {needed} needed")]
    NotEnoughSharePublicKeys { needed: u32, got: usize },
    #[error("share public keys {mismatched:?} do not lie on the polynomial through the first t")]
    InconsistentSharePublicKeys { mismatched: Vec<ShareIndex> },
    #[error("Feldman commitments must be between 1 and {MAX_SHARES} points, got {0}")]
    CommitmentCount(usize),
    #[error("Feldman commitment {position} is not a valid G1 point: {source}")]
    InvalidCommitment { position: usize, source: BlsError },
    #[error("invalid group public key: {0}")]
    InvalidGroupPublicKey(BlsError),
    #[error("{got} {what} given, at most {max} are accepted")]
    CombineTooLarge {
        what: &'static str,
        got: usize,
        max: usize,
    },
    #[error("{got} partial signatures for {shares} shares")]
    TooManyPartials { got: usize, shares: usize },
    #[error(
        "the share public keys interpolate to {interpolated}, not to the group public key {group}"
    )]
    GroupKeyMismatch {
        interpolated: BlsPublicKey,
        group: BlsPublicKey,
    },
    #[error("BLS arithmetic failed: {0}")]
    Bls(#[from] BlsError),
}

impl ThresholdError {
    /// The share indices whose share or partial signature failed verification (empty when the
    /// error blames nobody in particular).
    pub fn culprits(&self) -> &[ShareIndex] {
        match self {
            ThresholdError::NotEnoughValidPartials { culprits, .. } => culprits,
            ThresholdError::ShareFailsFeldmanCheck { culprit } => std::slice::from_ref(culprit),
            _ => &[],
        }
    }
}

/// One share `f(index)` of a split secret. `Debug` prints the index only.
pub struct SecretShare {
    index: ShareIndex,
    key: SecretKey,
}

impl SecretShare {
    pub fn new(index: ShareIndex, key: SecretKey) -> Self {
        Self { index, key }
    }

    pub fn index(&self) -> ShareIndex {
        self.index
    }

    /// The share as a BLS secret key (for sealing and for signing partials).
    pub fn secret_key(&self) -> &SecretKey {
        &self.key
    }

    /// `f(index)·G1`.
    pub fn public_key(&self) -> BlsPublicKey {
        self.key.public_key()
    }

    /// This share's partial signature of `message`.
    pub fn sign(&self, message: &[u8]) -> BlsSignature {
        self.key.sign(message)
    }
}

impl fmt::Debug for SecretShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretShare")
            .field("index", &self.index)
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

/// Feldman commitments `a_k·G1`, `k = 0..t-1`: `[0]` is the group public key and the count is
/// the threshold. Every point is a valid, non-infinity G1 point (checked on construction and
/// deserialization). Serialized as a JSON list of `0x` hex public keys.
///
/// The decoded points are kept beside the bytes (decoding and the subgroup check are most of
/// the cost of using a commitment; they are done once, here).
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "Vec<BlsPublicKey>", into = "Vec<BlsPublicKey>")]
pub struct FeldmanCommitments {
    commitments: Vec<BlsPublicKey>,
    #[serde(skip)]
    decoded: Vec<bls::ValidPublicKey>,
    threshold: Threshold,
}

impl PartialEq for FeldmanCommitments {
    fn eq(&self, other: &Self) -> bool {
        // The decoded points are a function of the bytes.
        self.commitments == other.commitments
    }
}

impl Eq for FeldmanCommitments {}

impl fmt::Debug for FeldmanCommitments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeldmanCommitments")
            .field("commitments", &self.commitments)
            .field("threshold", &self.threshold)
            .finish()
    }
}

fn commitment_threshold(count: usize) -> Result<Threshold, ThresholdError> {
    u32::try_from(count)
        .ok()
        .filter(|t| *t <= MAX_SHARES)
        .and_then(|t| Threshold::new(t).ok())
        .ok_or(ThresholdError::CommitmentCount(count))
}

impl FeldmanCommitments {
    pub fn new(commitments: Vec<BlsPublicKey>) -> Result<Self, ThresholdError> {
        let threshold = commitment_threshold(commitments.len())?;
        let decoded = commitments
            .iter()
            .enumerate()
            .map(|(position, commitment)| {
                bls::ValidPublicKey::decode(commitment)
                    .map_err(|source| ThresholdError::InvalidCommitment { position, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            commitments,
            decoded,
            threshold,
        })
    }

    /// Commitments that are already points (sums of validated commitments): no decoding.
    /// Refuses a point at infinity like [`FeldmanCommitments::new`].
    pub fn from_points(points: &[bls::G1Point]) -> Result<Self, ThresholdError> {
        let threshold = commitment_threshold(points.len())?;
        let decoded = points
            .iter()
            .enumerate()
            .map(|(position, point)| {
                bls::ValidPublicKey::from_point(point)
                    .map_err(|source| ThresholdError::InvalidCommitment { position, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let commitments =
            bls::g1_compress_all(points).map_err(|source| ThresholdError::InvalidCommitment {
                position: 0,
                source,
            })?;
        Ok(Self {
            commitments,
            decoded,
            threshold,
        })
    }

    /// The validated points, `[k]` = `a_k·G1`.
    pub fn points(&self) -> &[bls::ValidPublicKey] {
        &self.decoded
    }

    /// `Σ_k C_k · index^k` as a point, by Horner's rule with the small public index (a few
    /// doublings per commitment instead of a full multi-scalar multiplication).
    pub fn evaluate(&self, index: ShareIndex) -> bls::G1Point {
        let x = u64::from(index.get());
        self.decoded
            .iter()
            .rev()
            .fold(bls::G1Point::infinity(), |acc, c| {
                acc.mul_u64(x).add(&c.point())
            })
    }

    /// `a_0·G1 = s·G1`, the validator's public key.
    pub fn group_public_key(&self) -> BlsPublicKey {
        self.commitments[0]
    }

    /// `t`: the number of commitments.
    pub fn threshold(&self) -> Threshold {
        self.threshold
    }

    pub fn as_slice(&self) -> &[BlsPublicKey] {
        &self.commitments
    }
}

impl TryFrom<Vec<BlsPublicKey>> for FeldmanCommitments {
    type Error = ThresholdError;
    fn try_from(commitments: Vec<BlsPublicKey>) -> Result<Self, ThresholdError> {
        Self::new(commitments)
    }
}

impl From<FeldmanCommitments> for Vec<BlsPublicKey> {
    fn from(commitments: FeldmanCommitments) -> Self {
        commitments.commitments
    }
}

/// The result of [`split`]: shares `1..=n` in index order, and the commitments to check them.
#[derive(Debug)]
pub struct Split {
    pub shares: Vec<SecretShare>,
    pub commitments: FeldmanCommitments,
}

/// A combined group signature, with the shares whose partial signatures were discarded because
/// they failed verification (enough others were valid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Combined {
    pub signature: BlsSignature,
    pub culprits: Vec<ShareIndex>,
}

/// Split `secret` into `n` shares, any `t` of which can sign for it.
pub fn split<R: rand_core::RngCore + rand_core::CryptoRng>(
    secret: &SecretKey,
    t: Threshold,
    n: u32,
    rng: &mut R,
) -> Result<Split, ThresholdError> {
    if n > MAX_SHARES {
        return Err(ThresholdError::TooManyShares { n });
    }
    if t.get() > n {
        return Err(ThresholdError::InvalidThreshold { t: t.get(), n });
    }
    loop {
        let mut coefficients = Vec::with_capacity(t.get() as usize);
        coefficients.push(secret.to_scalar());
        // Random non-zero coefficients: the polynomial has exactly degree t-1.
        coefficients.extend((1..t.get()).map(|_| SecretKey::random(rng).to_scalar()));
        // A share equal to zero (probability about n/2^255) cannot be a key: draw again.
        if let Some(split) = deal(&coefficients, n)? {
            return Ok(split);
        }
    }
}

/// Shares `f(1..=n)` and commitments of the polynomial with these coefficients (`a_0` first), or
/// `None` when some `f(i)` is zero.
fn deal(coefficients: &[Scalar], n: u32) -> Result<Option<Split>, ThresholdError> {
    let commitments = coefficients
        .iter()
        .map(|a| SecretKey::from_scalar(a).map(|key| key.public_key()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut shares = Vec::with_capacity(n as usize);
    for i in 1..=n {
        let value = evaluate_polynomial(coefficients, &Scalar::from_u64(u64::from(i)));
        let Ok(key) = SecretKey::from_scalar(&value) else {
            return Ok(None);
        };
        shares.push(SecretShare::new(share_index(i)?, key));
    }
    Ok(Some(Split {
        shares,
        commitments: FeldmanCommitments::new(commitments)?,
    }))
}

/// `f(x)` by Horner's rule (constant-time field operations: the coefficients are secret).
fn evaluate_polynomial(coefficients: &[Scalar], x: &Scalar) -> Scalar {
    coefficients
        .iter()
        .rev()
        .fold(Scalar::zero(), |acc, coefficient| {
            acc.mul(x).add(coefficient)
        })
}

fn share_index(i: u32) -> Result<ShareIndex, ThresholdError> {
    // Only reached with i >= 1; a zero would be refused here rather than used.
    ShareIndex::new(i).map_err(|_| ThresholdError::NoIndices)
}

fn index_scalar(index: ShareIndex) -> Scalar {
    Scalar::from_u64(u64::from(index.get()))
}

/// The public key share `index` must have: `Σ_k C_k · index^k`.
pub fn share_public_key_from_commitments(
    commitments: &FeldmanCommitments,
    index: ShareIndex,
) -> Result<BlsPublicKey, ThresholdError> {
    let point = commitments.evaluate(index);
    Ok(bls::ValidPublicKey::from_point(&point)?.to_bytes())
}

/// Feldman check: `share·G1 == Σ_k C_k · index^k`.
pub fn verify_share(
    commitments: &FeldmanCommitments,
    share: &SecretShare,
) -> Result<(), ThresholdError> {
    let expected = share_public_key_from_commitments(commitments, share.index)?;
    if share.public_key() != expected {
        return Err(ThresholdError::ShareFailsFeldmanCheck {
            culprit: share.index,
        });
    }
    Ok(())
}

/// Lagrange basis coefficients at `x` for the given distinct indices:
/// `λ_i(x) = Π_{j≠i} (x - j) / (i - j)`.
fn lagrange_coefficients_at(
    x: &Scalar,
    indices: &[ShareIndex],
) -> Result<Vec<Scalar>, ThresholdError> {
    if indices.is_empty() {
        return Err(ThresholdError::NoIndices);
    }
    let mut seen = BTreeSet::new();
    for index in indices {
        if !seen.insert(*index) {
            return Err(ThresholdError::DuplicateIndex(*index));
        }
    }
    let points: Vec<Scalar> = indices.iter().map(|i| index_scalar(*i)).collect();
    let mut coefficients = Vec::with_capacity(indices.len());
    for (position, x_i) in points.iter().enumerate() {
        let mut numerator = Scalar::one();
        let mut denominator = Scalar::one();
        for (other, x_j) in points.iter().enumerate() {
            if other != position {
                numerator = numerator.mul(&x.sub(x_j));
                denominator = denominator.mul(&x_i.sub(x_j));
            }
        }
        // Distinct indices below 2^32 are distinct mod r, so the denominator is never zero.
        let inverse = denominator
            .invert()
            .ok_or(ThresholdError::DuplicateIndex(indices[position]))?;
        coefficients.push(numerator.mul(&inverse));
    }
    Ok(coefficients)
}

/// `λ_i(0) = Π_{j≠i} j / (j - i) mod r` for each index, as 32-byte big-endian scalars.
pub fn lagrange_coefficients_at_zero(
    indices: &[ShareIndex],
) -> Result<Vec<[u8; 32]>, ThresholdError> {
    Ok(lagrange_coefficients_at(&Scalar::zero(), indices)?
        .iter()
        .map(|coefficient| *coefficient.to_be_bytes())
        .collect())
}

/// `Σ λ_i(0) · σ_i` over exactly the given partials.
#[cfg(test)]
fn interpolate_signature(
    partials: &[(ShareIndex, BlsSignature)],
) -> Result<BlsSignature, ThresholdError> {
    let indices: Vec<ShareIndex> = partials.iter().map(|(index, _)| *index).collect();
    let signatures: Vec<BlsSignature> = partials.iter().map(|(_, signature)| *signature).collect();
    let coefficients = lagrange_coefficients_at(&Scalar::zero(), &indices)?;
    Ok(bls::g2_linear_combination(&signatures, &coefficients)?)
}

/// Check partial signatures of one `message` at once: `partials[i]` is `(share public key,
/// partial signature)`. One random-linear-combination check ([`bls::verify_same_message_batch`],
/// weights from `rng`) covers all of them; only when it fails are they checked one by one, so
/// the answer still names every bad one: `Err` lists the positions (into `partials`, ascending)
/// of the pairs that are not valid signatures of `message` — undecodable or off-subgroup points
/// included. An empty slice is `Ok`. Cost grows linearly; callers bound the count.
pub fn verify_partials_batch<R: rand_core::RngCore + rand_core::CryptoRng>(
    message: &[u8],
    partials: &[(BlsPublicKey, BlsSignature)],
    rng: &mut R,
) -> Result<(), Vec<usize>> {
    let mut bad = Vec::new();
    let mut positions = Vec::with_capacity(partials.len());
    let mut keys = Vec::with_capacity(partials.len());
    let mut signatures = Vec::with_capacity(partials.len());
    for (position, (public_key, signature)) in partials.iter().enumerate() {
        match (
            bls::ValidPublicKey::decode(public_key),
            bls::ValidSignature::decode(signature),
        ) {
            (Ok(key), Ok(signature)) => {
                positions.push(position);
                keys.push(key);
                signatures.push(signature);
            }
            _ => bad.push(position),
        }
    }
    if !positions.is_empty() && !bls::verify_same_message_batch(message, &keys, &signatures, rng) {
        for ((position, key), signature) in positions.iter().zip(&keys).zip(&signatures) {
            if !bls::verify_valid(key, message, signature) {
                bad.push(*position);
            }
        }
        bad.sort_unstable();
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(bad)
    }
}

/// Largest threshold, share count and partial count [`combine`] accepts. Interpolation is
/// O(t²) field operations (about 50 ms at this bound on one core) and the checks O(t) point
/// operations; anything larger is refused before any of that work. Far above any real cluster.
pub const MAX_COMBINE_SHARES: usize = 1024;

/// The cheap checks that bound [`combine`]'s work, before any point is decoded.
fn check_combine_bounds(
    t: Threshold,
    shares: usize,
    partials: usize,
) -> Result<(), ThresholdError> {
    let too_large = |what: &'static str, got: usize| ThresholdError::CombineTooLarge {
        what,
        got,
        max: MAX_COMBINE_SHARES,
    };
    if t.get() as usize > MAX_COMBINE_SHARES {
        return Err(too_large("threshold", t.get() as usize));
    }
    if shares > MAX_COMBINE_SHARES {
        return Err(too_large("share public keys", shares));
    }
    if partials > MAX_COMBINE_SHARES {
        return Err(too_large("partial signatures", partials));
    }
    if t.get() as usize > shares {
        return Err(ThresholdError::InvalidThreshold {
            t: t.get(),
            n: u32::try_from(shares).unwrap_or(u32::MAX),
        });
    }
    if partials > shares {
        return Err(ThresholdError::TooManyPartials {
            got: partials,
            shares,
        });
    }
    Ok(())
}

/// A partial whose points decoded: its index, its decoded signature and its
/// share's public key (decoded), when known.
struct Candidate {
    index: ShareIndex,
    decoded: bls::ValidSignature,
    public_key: Option<bls::ValidPublicKey>,
}

/// `Σ λ_i(0) · σ_i` over the first `t` candidates.
fn interpolate_candidates(chosen: &[&Candidate]) -> Result<bls::ValidSignature, ThresholdError> {
    let indices: Vec<ShareIndex> = chosen.iter().map(|c| c.index).collect();
    let points: Vec<bls::ValidSignature> = chosen.iter().map(|c| c.decoded).collect();
    let coefficients = lagrange_coefficients_at(&Scalar::zero(), &indices)?;
    Ok(bls::ValidSignature::linear_combination(
        &points,
        &coefficients,
    )?)
}

/// Combine partial signatures of `message` into the group signature.
///
/// Bounded first ([`MAX_COMBINE_SHARES`]; `t` and the number of partials at most the number of
/// share public keys), then every point is decoded and validated (O(t)) before the O(t²)
/// interpolation. Needs at least `t` partials with distinct indices (a repeated index is
/// refused, not merged).
///
/// With `verify_partials`, every partial is checked against its share public key: the first `t`
/// are interpolated and one random-linear-combination check (weights from `rng`) covers all
/// partials *and* the result under `group_public_key` — two pairings whatever the count, and
/// for fewer than 32 partials one table of multiples serves both the interpolation and the
/// check's sum ([`bls::interpolate_and_verify_batch`] says why that is sound). Only if
/// that fails is each partial checked alone: a partial that fails, or whose index has no public
/// key, is set aside and named in [`Combined::culprits`] as long as `t` valid ones remain
/// (otherwise [`ThresholdError::NotEnoughValidPartials`] names them). Without it, the first `t`
/// partials by index are combined optimistically, and only if that result fails to verify are
/// the partials checked one by one as above — so a bad partial never yields a bad signature
/// either way. The result verifies under `group_public_key`: on its own check, or in the batch
/// check, which a wrong result passes with probability below 2^-64 (fresh 64-bit weights drawn
/// after the partials are fixed).
///
/// Callers that combine many signatures of one validator should check its share keys once
/// ([`ShareKeys::verify`]) and use [`combine_with_keys`].
pub fn combine<R: rand_core::RngCore + rand_core::CryptoRng>(
    t: Threshold,
    share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
    group_public_key: &BlsPublicKey,
    message: &[u8],
    partials: &[(ShareIndex, BlsSignature)],
    verify_partials: bool,
    rng: &mut R,
) -> Result<Combined, ThresholdError> {
    check_combine_bounds(t, share_public_keys.len(), partials.len())?;
    let group = bls::ValidPublicKey::decode(group_public_key)
        .map_err(ThresholdError::InvalidGroupPublicKey)?;
    let key_of = |index: &ShareIndex| {
        share_public_keys
            .get(index)
            .and_then(|key| bls::ValidPublicKey::decode(key).ok())
    };
    combine_decoded(t, &key_of, &group, message, partials, verify_partials, rng)
}

/// Share public keys checked once against their group key — what a verified DKG lock or a
/// verified manifest guarantees: every key decoded and validated (on curve, in G1, not
/// infinity), at least `t` of them, all on one polynomial of degree below `t` (the keys beyond
/// the first `t` are interpolated from those), and that polynomial's value at zero equal to
/// the group public key.
#[derive(Clone)]
pub struct ShareKeys {
    t: Threshold,
    group: bls::ValidPublicKey,
    /// By index, ascending (the order of the map they were checked from).
    keys: Vec<(ShareIndex, bls::ValidPublicKey)>,
}

impl ShareKeys {
    /// Check `share_public_keys` against `group_public_key` (see the type). Refuses undecodable
    /// keys, too few or too many keys, keys off the polynomial, and a polynomial whose value at
    /// zero is another key. Every key is decoded once; the keys beyond the first `t` and the
    /// group key are compared with the interpolation of the first `t` (O(n·t) point work, plus
    /// O(n·t²) field operations for the coefficients).
    pub fn verify(
        t: Threshold,
        share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
        group_public_key: &BlsPublicKey,
    ) -> Result<Self, ThresholdError> {
        check_combine_bounds(t, share_public_keys.len(), 0)?;
        let group = bls::ValidPublicKey::decode(group_public_key)
            .map_err(ThresholdError::InvalidGroupPublicKey)?;
        let keys = share_public_keys
            .iter()
            .map(|(index, key)| Ok((*index, bls::ValidPublicKey::decode(key)?)))
            .collect::<Result<Vec<_>, BlsError>>()?;
        let needed = t.get() as usize;
        let (base_indices, base_keys): (Vec<ShareIndex>, Vec<bls::ValidPublicKey>) =
            keys.iter().take(needed).copied().unzip();
        let interpolate_at = |x: &Scalar| -> Result<BlsPublicKey, ThresholdError> {
            let coefficients = lagrange_coefficients_at(x, &base_indices)?;
            Ok(bls::ValidPublicKey::linear_combination(&base_keys, &coefficients)?.to_bytes())
        };
        let interpolated = interpolate_at(&Scalar::zero())?;
        let mut mismatched = Vec::new();
        for (index, key) in keys.iter().skip(needed) {
            // An interpolated point at infinity cannot equal a valid key: also a mismatch.
            if interpolate_at(&index_scalar(*index)).ok() != Some(key.to_bytes()) {
                mismatched.push(*index);
            }
        }
        if !mismatched.is_empty() {
            return Err(ThresholdError::InconsistentSharePublicKeys { mismatched });
        }
        if interpolated != *group_public_key {
            return Err(ThresholdError::GroupKeyMismatch {
                interpolated,
                group: *group_public_key,
            });
        }
        Ok(ShareKeys { t, group, keys })
    }

    pub fn threshold(&self) -> Threshold {
        self.t
    }

    fn key_of(&self, index: &ShareIndex) -> Option<bls::ValidPublicKey> {
        self.keys
            .binary_search_by_key(index, |(i, _)| *i)
            .ok()
            .map(|position| self.keys[position].1)
    }
}

/// [`combine`] with share keys checked once ([`ShareKeys::verify`]): no key is decoded again;
/// the checks and what a result guarantees are [`combine`]'s.
///
/// With `verify_partials` the one batch check ([`bls::interpolate_and_verify_batch`]) covers
/// every keyed partial and the result under the group key, as in [`combine`]; the result
/// costs that check one G1 and one G2 addition, not a multiplication, so it stays in even
/// though [`ShareKeys`] already implies it (the partials verified, their keys on one
/// polynomial whose value at zero is the group key: `Σ λ_i f(i)·H(m) = f(0)·H(m)`).
pub fn combine_with_keys<R: rand_core::RngCore + rand_core::CryptoRng>(
    keys: &ShareKeys,
    message: &[u8],
    partials: &[(ShareIndex, BlsSignature)],
    verify_partials: bool,
    rng: &mut R,
) -> Result<Combined, ThresholdError> {
    check_combine_bounds(keys.t, keys.keys.len(), partials.len())?;
    let key_of = |index: &ShareIndex| keys.key_of(index);
    combine_decoded(
        keys.t,
        &key_of,
        &keys.group,
        message,
        partials,
        verify_partials,
        rng,
    )
}

/// The body of [`combine`] and [`combine_with_keys`], after the bounds: `key_of` gives the
/// validated share key of an index.
fn combine_decoded<R: rand_core::RngCore + rand_core::CryptoRng>(
    t: Threshold,
    key_of: &dyn Fn(&ShareIndex) -> Option<bls::ValidPublicKey>,
    group: &bls::ValidPublicKey,
    message: &[u8],
    partials: &[(ShareIndex, BlsSignature)],
    verify_partials: bool,
    rng: &mut R,
) -> Result<Combined, ThresholdError> {
    let mut by_index = BTreeMap::new();
    for (index, signature) in partials {
        if by_index.insert(*index, *signature).is_some() {
            return Err(ThresholdError::DuplicateIndex(*index));
        }
    }
    let needed = t.get() as usize;
    if by_index.len() < needed {
        return Err(ThresholdError::NotEnoughPartials {
            needed: t.get(),
            got: by_index.len(),
        });
    }

    // Decode every point once, before any interpolation.
    let mut culprits = Vec::new();
    let mut candidates = Vec::with_capacity(by_index.len());
    for (index, signature) in &by_index {
        match bls::ValidSignature::decode(signature) {
            Ok(decoded) => candidates.push(Candidate {
                index: *index,
                decoded,
                public_key: if verify_partials { key_of(index) } else { None },
            }),
            Err(_) => culprits.push(*index),
        }
    }

    if !verify_partials && culprits.is_empty() {
        let chosen: Vec<&Candidate> = candidates.iter().take(needed).collect();
        if let Ok(signature) = interpolate_candidates(&chosen) {
            if bls::verify_valid(group, message, &signature) {
                return Ok(Combined {
                    signature: signature.to_bytes(),
                    culprits: Vec::new(),
                });
            }
        }
    }

    if verify_partials {
        let (keyed, unkeyed): (Vec<&Candidate>, Vec<&Candidate>) =
            candidates.iter().partition(|c| c.public_key.is_some());
        if keyed.len() >= needed {
            // Every keyed partial and the interpolation of the first t in one check
            // ([`bls::interpolate_and_verify_batch`]: one table of multiples for both sums, the
            // result under the group key at no extra multiplication).
            let indices: Vec<ShareIndex> = keyed[..needed].iter().map(|c| c.index).collect();
            let coefficients = lagrange_coefficients_at(&Scalar::zero(), &indices)?;
            let keys: Vec<bls::ValidPublicKey> =
                keyed.iter().filter_map(|c| c.public_key).collect();
            let signatures: Vec<bls::ValidSignature> = keyed.iter().map(|c| c.decoded).collect();
            if let Some(signature) = bls::interpolate_and_verify_batch(
                message,
                group,
                &keys,
                &signatures,
                &coefficients,
                rng,
            ) {
                culprits.extend(unkeyed.iter().map(|c| c.index));
                culprits.sort_unstable();
                return Ok(Combined {
                    signature: signature.to_bytes(),
                    culprits,
                });
            }
        }
    }

    // One by one: name every partial that does not verify.
    let mut valid = Vec::with_capacity(candidates.len());
    for candidate in &candidates {
        let verifies = candidate
            .public_key
            .or_else(|| key_of(&candidate.index))
            .is_some_and(|public_key| bls::verify_valid(&public_key, message, &candidate.decoded));
        if verifies {
            valid.push(candidate);
        } else {
            culprits.push(candidate.index);
        }
    }
    culprits.sort_unstable();
    if valid.len() < needed {
        return Err(ThresholdError::NotEnoughValidPartials {
            needed: t.get(),
            valid: valid.len(),
            culprits,
        });
    }
    // Any t valid partials give the same signature; more would only cost time.
    let signature = interpolate_candidates(&valid[..needed])?;
    if !bls::verify_valid(group, message, &signature) {
        return Err(ThresholdError::CombinedSignatureInvalid);
    }
    Ok(Combined {
        signature: signature.to_bytes(),
        culprits,
    })
}

/// The group public key `Σ λ_i(0) · P_i` from the first `t` share public keys (by index). Every
/// further share public key must lie on the same polynomial, or
/// [`ThresholdError::InconsistentSharePublicKeys`] lists those that do not.
pub fn interpolate_group_public_key(
    share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
    t: Threshold,
) -> Result<BlsPublicKey, ThresholdError> {
    let needed = t.get() as usize;
    if share_public_keys.len() < needed {
        return Err(ThresholdError::NotEnoughSharePublicKeys {
            needed: t.get(),
            got: share_public_keys.len(),
        });
    }
    let (base_indices, base_keys): (Vec<ShareIndex>, Vec<BlsPublicKey>) = share_public_keys
        .iter()
        .take(needed)
        .map(|(i, k)| (*i, *k))
        .unzip();
    let interpolate_at = |x: &Scalar| -> Result<BlsPublicKey, ThresholdError> {
        let coefficients = lagrange_coefficients_at(x, &base_indices)?;
        Ok(bls::g1_linear_combination(&base_keys, &coefficients)?)
    };
    let group_public_key = interpolate_at(&Scalar::zero())?;
    let mut mismatched = Vec::new();
    for (index, public_key) in share_public_keys.iter().skip(needed) {
        // An interpolated point at infinity cannot equal a valid key: also a mismatch.
        if interpolate_at(&index_scalar(*index)).ok() != Some(*public_key) {
            mismatched.push(*index);
        }
    }
    if !mismatched.is_empty() {
        return Err(ThresholdError::InconsistentSharePublicKeys { mismatched });
    }
    Ok(group_public_key)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::Value;

    use super::*;

    fn idx(i: u32) -> ShareIndex {
        ShareIndex::new(i).unwrap()
    }

    /// The batch checks' weights: any RNG works for correctness.
    fn test_rng() -> StdRng {
        StdRng::seed_from_u64(0x5eed)
    }

    fn threshold(t: u32) -> Threshold {
        Threshold::new(t).unwrap()
    }

    fn hex_field<T: std::str::FromStr>(value: &Value) -> T
    where
        T::Err: fmt::Debug,
    {
        value.as_str().unwrap().parse().unwrap()
    }

    /// A vector's list of share indices.
    fn indices_of(value: &Value) -> Vec<ShareIndex> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|i| idx(i.as_u64().unwrap() as u32))
            .collect()
    }

    fn scalar_of(value: &Value) -> Scalar {
        let bytes: [u8; 32] = crate::types::decode_hex_array(value.as_str().unwrap()).unwrap();
        Scalar::from_be_bytes_canonical(&bytes).unwrap()
    }

    fn load_vectors() -> Vec<(String, Value)> {
        let files = crate::test_vectors::load_folder("threshold");
        assert!(files.len() >= 3, "threshold vectors missing");
        files
    }

    /// Every index subset of size `size` drawn from `1..=n`.
    fn subsets(n: u32, size: u32) -> Vec<Vec<ShareIndex>> {
        (0u32..(1 << n))
            .filter(|mask| mask.count_ones() == size)
            .map(|mask| {
                (1..=n)
                    .filter(|i| mask & (1 << (i - 1)) != 0)
                    .map(idx)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn vectors() {
        for (name, case) in load_vectors() {
            let t = threshold(case["t"].as_u64().unwrap() as u32);
            let n = case["n"].as_u64().unwrap() as u32;
            let message =
                crate::types::decode_hex_prefixed(case["signing_root"].as_str().unwrap()).unwrap();
            let master_public_key: BlsPublicKey = hex_field(&case["master_pubkey"]);
            let master_signature: BlsSignature = hex_field(&case["master_signature"]);
            let master_key = SecretKey::from_bytes(
                &crate::types::decode_hex_prefixed(case["master_secret_key"].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(master_key.public_key(), master_public_key, "{name}");
            assert_eq!(master_key.sign(&message), master_signature, "{name}");

            // Dealing with the vector's coefficients reproduces every share and commitment.
            let coefficients: Vec<Scalar> = case["polynomial_coefficients"]
                .as_array()
                .unwrap()
                .iter()
                .map(scalar_of)
                .collect();
            assert_eq!(
                coefficients[0].to_be_bytes(),
                master_key.to_scalar().to_be_bytes()
            );
            let split = deal(&coefficients, n).unwrap().unwrap();
            let expected_commitments: Vec<BlsPublicKey> = case["feldman_commitments"]
                .as_array()
                .unwrap()
                .iter()
                .map(hex_field)
                .collect();
            assert_eq!(
                split.commitments.as_slice(),
                expected_commitments.as_slice(),
                "{name}"
            );
            assert_eq!(split.commitments.threshold(), t);
            assert_eq!(split.commitments.group_public_key(), master_public_key);

            let vector_shares = case["shares"].as_array().unwrap();
            assert_eq!(vector_shares.len(), n as usize);
            assert_eq!(split.shares.len(), n as usize);
            let mut share_public_keys = BTreeMap::new();
            let mut partials = BTreeMap::new();
            for (share, expected) in split.shares.iter().zip(vector_shares) {
                let index = idx(expected["index"].as_u64().unwrap() as u32);
                assert_eq!(share.index(), index);
                assert_eq!(
                    share.secret_key().to_scalar().to_be_bytes(),
                    scalar_of(&expected["secret_share"]).to_be_bytes(),
                    "{name} share {index}"
                );
                let public_key: BlsPublicKey = hex_field(&expected["pubkey"]);
                assert_eq!(share.public_key(), public_key);
                let partial: BlsSignature = hex_field(&expected["partial_signature"]);
                assert_eq!(share.sign(&message), partial);
                verify_share(&split.commitments, share).unwrap();
                assert_eq!(
                    share_public_key_from_commitments(&split.commitments, index).unwrap(),
                    public_key
                );
                share_public_keys.insert(index, public_key);
                partials.insert(index, partial);
            }
            assert_eq!(
                interpolate_group_public_key(&share_public_keys, t).unwrap(),
                master_public_key
            );

            // Combine the listed partials both with and without checking each one first.
            let combine_both_ways = |listed: &[(ShareIndex, BlsSignature)]| {
                [true, false].map(|verify_partials| {
                    combine(
                        t,
                        &share_public_keys,
                        &master_public_key,
                        &message,
                        listed,
                        verify_partials,
                        &mut test_rng(),
                    )
                })
            };

            let combinations = case["combinations"].as_array().unwrap();
            assert!(combinations.len() >= 3);
            for combination in combinations {
                let indices = indices_of(&combination["indices"]);
                let expected_coefficients: Vec<[u8; 32]> = combination["lagrange_coefficients"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| crate::types::decode_hex_array(c.as_str().unwrap()).unwrap())
                    .collect();
                assert_eq!(
                    lagrange_coefficients_at_zero(&indices).unwrap(),
                    expected_coefficients,
                    "{name}"
                );
                let expected: BlsSignature = hex_field(&combination["combined_signature"]);
                assert_eq!(expected, master_signature);
                let chosen: Vec<(ShareIndex, BlsSignature)> =
                    indices.iter().map(|i| (*i, partials[i])).collect();
                for combined in combine_both_ways(&chosen) {
                    let combined = combined.unwrap();
                    assert_eq!(combined.signature, expected, "{name} {indices:?}");
                    assert!(combined.culprits.is_empty());
                }
                let combined_key: BlsPublicKey = hex_field(&combination["combined_pubkey"]);
                let chosen_keys: BTreeMap<ShareIndex, BlsPublicKey> =
                    indices.iter().map(|i| (*i, share_public_keys[i])).collect();
                assert_eq!(
                    interpolate_group_public_key(&chosen_keys, t).unwrap(),
                    combined_key
                );
            }

            let invalid = case["invalid_combinations"].as_array().unwrap();
            assert_eq!(invalid.len(), 3, "{name}");
            for case in invalid {
                let reason = case["reason"].as_str().unwrap();
                if case.get("secret_share").is_some() {
                    let index = idx(case["index"].as_u64().unwrap() as u32);
                    let key = SecretKey::from_scalar(&scalar_of(&case["secret_share"])).unwrap();
                    let pubkey: BlsPublicKey = hex_field(&case["pubkey"]);
                    assert_eq!(key.public_key(), pubkey);
                    let share = SecretShare::new(index, key);
                    let error = verify_share(&split.commitments, &share).unwrap_err();
                    assert_eq!(
                        error,
                        ThresholdError::ShareFailsFeldmanCheck { culprit: index },
                        "{reason}"
                    );
                    assert_eq!(error.culprits(), &[index]);
                    let expected: BlsPublicKey = hex_field(&case["feldman_expected_pubkey"]);
                    assert_eq!(
                        share_public_key_from_commitments(&split.commitments, index).unwrap(),
                        expected
                    );
                    continue;
                }
                let indices = indices_of(&case["indices"]);
                let used: Vec<BlsSignature> = match case.get("partial_signatures_used") {
                    Some(list) => list.as_array().unwrap().iter().map(hex_field).collect(),
                    None => indices.iter().map(|i| partials[i]).collect(),
                };
                let listed: Vec<(ShareIndex, BlsSignature)> =
                    indices.iter().copied().zip(used.iter().copied()).collect();
                // The listed wrong result is what plain interpolation gives, and it does not verify.
                let wrong: BlsSignature = hex_field(&case["combined_signature"]);
                assert_eq!(interpolate_signature(&listed).unwrap(), wrong, "{reason}");
                assert!(!bls::verify(&master_public_key, &message, &wrong));
                assert!(!case["verifies_under_master_pubkey"].as_bool().unwrap());
                for error in combine_both_ways(&listed) {
                    let error = error.unwrap_err();
                    if indices.len() < t.get() as usize {
                        assert_eq!(
                            error,
                            ThresholdError::NotEnoughPartials {
                                needed: t.get(),
                                got: indices.len()
                            },
                            "{reason}"
                        );
                    } else {
                        // Exactly the partials whose signature is not their own share's.
                        let culprits: Vec<ShareIndex> = listed
                            .iter()
                            .filter(|(i, s)| partials[i] != *s)
                            .map(|(i, _)| *i)
                            .collect();
                        assert!(!culprits.is_empty());
                        assert!(
                            matches!(&error, ThresholdError::NotEnoughValidPartials { .. }),
                            "{reason}: {error}"
                        );
                        assert_eq!(error.culprits(), culprits.as_slice(), "{reason}");
                    }
                }
            }
        }
    }

    #[test]
    fn split_then_any_t_of_n_combine_to_the_key_signature() {
        let mut rng = StdRng::seed_from_u64(11);
        for (t, n) in [(1, 1), (1, 3), (2, 2), (2, 3), (3, 5), (4, 6)] {
            let secret = SecretKey::random(&mut rng);
            let split = split(&secret, threshold(t), n, &mut rng).unwrap();
            assert_eq!(split.shares.len(), n as usize);
            assert_eq!(split.commitments.threshold(), threshold(t));
            assert_eq!(split.commitments.group_public_key(), secret.public_key());
            let message = [t as u8; 32];
            let expected = secret.sign(&message);
            let mut share_public_keys = BTreeMap::new();
            let mut partials = BTreeMap::new();
            for (position, share) in split.shares.iter().enumerate() {
                assert_eq!(share.index(), idx(position as u32 + 1));
                verify_share(&split.commitments, share).unwrap();
                if t == 1 {
                    assert_eq!(share.secret_key().to_bytes(), secret.to_bytes());
                }
                share_public_keys.insert(share.index(), share.public_key());
                partials.insert(share.index(), share.sign(&message));
            }
            assert_eq!(
                interpolate_group_public_key(&share_public_keys, threshold(t)).unwrap(),
                secret.public_key()
            );
            for size in t..=n {
                for subset in subsets(n, size) {
                    let mut chosen: Vec<(ShareIndex, BlsSignature)> =
                        subset.iter().map(|i| (*i, partials[i])).collect();
                    chosen.reverse();
                    for verify_partials in [true, false] {
                        let combined = combine(
                            threshold(t),
                            &share_public_keys,
                            &secret.public_key(),
                            &message,
                            &chosen,
                            verify_partials,
                            &mut test_rng(),
                        )
                        .unwrap();
                        assert_eq!(combined.signature, expected, "t={t} n={n} {subset:?}");
                    }
                }
            }
            if t > 1 {
                for subset in subsets(n, t - 1) {
                    let chosen: Vec<_> = subset.iter().map(|i| (*i, partials[i])).collect();
                    assert!(matches!(
                        combine(
                            threshold(t),
                            &share_public_keys,
                            &secret.public_key(),
                            &message,
                            &chosen,
                            true,
                            &mut test_rng()
                        ),
                        Err(ThresholdError::NotEnoughPartials { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn bad_partials_are_named_and_skipped_when_enough_remain() {
        let mut rng = StdRng::seed_from_u64(12);
        let secret = SecretKey::random(&mut rng);
        let split = split(&secret, threshold(2), 4, &mut rng).unwrap();
        let message = [9u8; 32];
        let keys: BTreeMap<_, _> = split
            .shares
            .iter()
            .map(|s| (s.index(), s.public_key()))
            .collect();
        let mut partials: Vec<(ShareIndex, BlsSignature)> = split
            .shares
            .iter()
            .map(|s| (s.index(), s.sign(&message)))
            .collect();
        // Share 1 signs another message; share 2's partial is not even a curve point.
        partials[0].1 = split.shares[0].sign(&[8u8; 32]);
        partials[1].1 .0[10] ^= 0xff;
        for verify_partials in [true, false] {
            let combined = combine(
                threshold(2),
                &keys,
                &secret.public_key(),
                &message,
                &partials,
                verify_partials,
                &mut test_rng(),
            )
            .unwrap();
            assert_eq!(combined.signature, secret.sign(&message));
            assert_eq!(combined.culprits, vec![idx(1), idx(2)]);
        }
        // Only one good partial left: refused, culprits named.
        let error = combine(
            threshold(2),
            &keys,
            &secret.public_key(),
            &message,
            &partials[..3],
            true,
            &mut test_rng(),
        )
        .unwrap_err();
        assert_eq!(error.culprits(), &[idx(1), idx(2)]);
        // A partial from an index without a public key is a culprit too (no more partials
        // than shares are accepted).
        let mut unknown = partials.clone();
        unknown[3] = (idx(9), split.shares[3].sign(&message));
        unknown.push((idx(4), split.shares[3].sign(&message)));
        assert_eq!(
            combine(
                threshold(2),
                &keys,
                &secret.public_key(),
                &message,
                &unknown,
                true,
                &mut test_rng()
            )
            .unwrap_err(),
            ThresholdError::TooManyPartials { got: 5, shares: 4 }
        );
        unknown.remove(0);
        let combined = combine(
            threshold(2),
            &keys,
            &secret.public_key(),
            &message,
            &unknown,
            true,
            &mut test_rng(),
        )
        .unwrap();
        assert_eq!(combined.culprits, vec![idx(2), idx(9)]);
        // Duplicates are refused even when they are identical.
        let duplicated = vec![partials[2], partials[3], partials[3]];
        assert_eq!(
            combine(
                threshold(2),
                &keys,
                &secret.public_key(),
                &message,
                &duplicated,
                true,
                &mut test_rng()
            )
            .unwrap_err(),
            ThresholdError::DuplicateIndex(idx(4))
        );
        // Valid partials under a different group key: the final check refuses.
        let other = SecretKey::random(&mut rng);
        assert_eq!(
            combine(
                threshold(2),
                &keys,
                &other.public_key(),
                &message,
                &partials[2..],
                true,
                &mut test_rng()
            )
            .unwrap_err(),
            ThresholdError::CombinedSignatureInvalid
        );
        let mut infinity = [0u8; 48];
        infinity[0] = 0xc0;
        assert!(matches!(
            combine(
                threshold(2),
                &keys,
                &BlsPublicKey(infinity),
                &message,
                &partials[2..],
                true,
                &mut test_rng()
            ),
            Err(ThresholdError::InvalidGroupPublicKey(BlsError::Infinity))
        ));
    }

    #[test]
    fn refusals() {
        let mut rng = StdRng::seed_from_u64(13);
        let secret = SecretKey::random(&mut rng);
        assert_eq!(
            split(&secret, threshold(4), 3, &mut rng).unwrap_err(),
            ThresholdError::InvalidThreshold { t: 4, n: 3 }
        );
        assert_eq!(
            split(&secret, threshold(1), MAX_SHARES + 1, &mut rng).unwrap_err(),
            ThresholdError::TooManyShares { n: MAX_SHARES + 1 }
        );
        assert_eq!(
            lagrange_coefficients_at_zero(&[]),
            Err(ThresholdError::NoIndices)
        );
        assert_eq!(
            lagrange_coefficients_at_zero(&[idx(1), idx(3), idx(1)]),
            Err(ThresholdError::DuplicateIndex(idx(1)))
        );
        assert_eq!(
            FeldmanCommitments::new(Vec::new()).unwrap_err(),
            ThresholdError::CommitmentCount(0)
        );
        let mut bad = secret.public_key();
        bad.0[7] ^= 1;
        assert!(matches!(
            FeldmanCommitments::new(vec![secret.public_key(), bad]),
            Err(ThresholdError::InvalidCommitment { position: 1, .. })
        ));
        assert!(serde_json::from_str::<FeldmanCommitments>("[]").is_err());

        let split = split(&secret, threshold(3), 5, &mut rng).unwrap();
        let json = serde_json::to_string(&split.commitments).unwrap();
        assert_eq!(
            serde_json::from_str::<FeldmanCommitments>(&json).unwrap(),
            split.commitments
        );
        let mut keys: BTreeMap<_, _> = split
            .shares
            .iter()
            .map(|s| (s.index(), s.public_key()))
            .collect();
        assert_eq!(
            interpolate_group_public_key(
                &keys.iter().take(2).map(|(i, k)| (*i, *k)).collect(),
                threshold(3)
            )
            .unwrap_err(),
            ThresholdError::NotEnoughSharePublicKeys { needed: 3, got: 2 }
        );
        // A fifth key that is not on the polynomial through the first three.
        keys.insert(idx(5), SecretKey::random(&mut rng).public_key());
        assert_eq!(
            interpolate_group_public_key(&keys, threshold(3)).unwrap_err(),
            ThresholdError::InconsistentSharePublicKeys {
                mismatched: vec![idx(5)]
            }
        );
        // A share moved to another index fails the Feldman check.
        let moved = SecretShare::new(
            idx(2),
            SecretKey::from_zeroizing(split.shares[0].secret_key().to_bytes()).unwrap(),
        );
        assert_eq!(
            verify_share(&split.commitments, &moved)
                .unwrap_err()
                .culprits(),
            &[idx(2)]
        );
        let printed = format!("{:?}", split.shares[0]);
        assert!(
            printed.contains("<redacted>") && printed.contains("index"),
            "{printed}"
        );
        let secret_hex = hex::encode(split.shares[0].secret_key().to_bytes());
        assert!(!format!("{split:?}").contains(&secret_hex));
    }

    /// A t-of-n split, the share public keys and every share's partial of `message`.
    fn dealt(
        seed: u64,
        t: u32,
        n: u32,
        message: &[u8],
    ) -> (
        SecretKey,
        BTreeMap<ShareIndex, BlsPublicKey>,
        Vec<(ShareIndex, BlsSignature)>,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = SecretKey::random(&mut rng);
        let split = split(&secret, threshold(t), n, &mut rng).unwrap();
        let keys = split
            .shares
            .iter()
            .map(|s| (s.index(), s.public_key()))
            .collect();
        let partials = split
            .shares
            .iter()
            .map(|s| (s.index(), s.sign(message)))
            .collect();
        (secret, keys, partials)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Valid batches are accepted; any single bad partial (another message, another
        /// share's partial, a corrupted encoding) is named, and only it.
        #[test]
        fn batch_verification_names_any_single_bad_partial(
            seed in proptest::prelude::any::<u64>(),
            n in 1u32..8,
            bad in proptest::prelude::any::<proptest::sample::Index>(),
            how in 0u8..3,
        ) {
            let message = [0x61u8; 32];
            let (_, keys, partials) = dealt(seed, 1, n, &message);
            let pairs: Vec<(BlsPublicKey, BlsSignature)> =
                partials.iter().map(|(i, s)| (keys[i], *s)).collect();
            let mut rng = StdRng::seed_from_u64(seed ^ 1);
            proptest::prop_assert_eq!(verify_partials_batch(&message, &pairs, &mut rng), Ok(()));
            let position = bad.index(pairs.len());
            let mut tampered = pairs.clone();
            match how {
                0 => tampered[position].1 = SecretKey::random(&mut rng).sign(&message),
                1 => tampered[position].1 = pairs[(position + 1) % pairs.len()].1,
                _ => tampered[position].1 .0[7] ^= 0x40,
            }
            if tampered[position].1 != pairs[position].1 {
                proptest::prop_assert_eq!(
                    verify_partials_batch(&message, &tampered, &mut rng),
                    Err(vec![position])
                );
            }
        }

        /// Through `combine`: a single bad partial among more than t is named and the result
        /// is still the group signature; valid sets are accepted with no culprit.
        #[test]
        fn combine_names_any_single_bad_partial(
            seed in proptest::prelude::any::<u64>(),
            t in 1u32..5,
            extra in 1u32..3,
            bad in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let message = [0x62u8; 32];
            let n = t + extra;
            let (secret, keys, mut partials) = dealt(seed, t, n, &message);
            let mut rng = StdRng::seed_from_u64(seed ^ 2);
            let ok = combine(threshold(t), &keys, &secret.public_key(), &message, &partials, true, &mut rng).unwrap();
            proptest::prop_assert_eq!(ok.signature, secret.sign(&message));
            proptest::prop_assert!(ok.culprits.is_empty());
            let position = bad.index(partials.len());
            partials[position].1 = SecretKey::random(&mut rng).sign(&message);
            let combined = combine(threshold(t), &keys, &secret.public_key(), &message, &partials, true, &mut rng).unwrap();
            proptest::prop_assert_eq!(combined.signature, secret.sign(&message));
            proptest::prop_assert_eq!(combined.culprits, vec![partials[position].0]);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// With share keys checked once, both modes give the key's signature and the verified
        /// one still names any single bad partial.
        #[test]
        fn combine_with_checked_keys_names_any_single_bad_partial(
            seed in proptest::prelude::any::<u64>(),
            t in 1u32..5,
            extra in 1u32..3,
            bad in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let message = [0x63u8; 32];
            let (secret, keys, mut partials) = dealt(seed, t, t + extra, &message);
            let checked = ShareKeys::verify(threshold(t), &keys, &secret.public_key()).unwrap();
            let mut rng = StdRng::seed_from_u64(seed ^ 3);
            for verify in [true, false] {
                let ok = combine_with_keys(&checked, &message, &partials, verify, &mut rng).unwrap();
                proptest::prop_assert_eq!(ok.signature, secret.sign(&message));
                proptest::prop_assert!(ok.culprits.is_empty());
            }
            let position = bad.index(partials.len());
            partials[position].1 = SecretKey::random(&mut rng).sign(&message);
            let combined = combine_with_keys(&checked, &message, &partials, true, &mut rng);
            if partials.len() > t as usize {
                let combined = combined.unwrap();
                proptest::prop_assert_eq!(combined.signature, secret.sign(&message));
                proptest::prop_assert_eq!(combined.culprits, vec![partials[position].0]);
            } else {
                let refused = combined.unwrap_err();
                proptest::prop_assert_eq!(refused.culprits(), &[partials[position].0][..]);
            }
        }
    }

    /// Two bad partials whose errors cancel in the interpolation (σ'_1 = σ_1 + D,
    /// σ'_2 = σ_2 + 2D: with λ_1 = 2, λ_2 = -1 the result is still the group signature, so a
    /// check of the result alone passes) are both named, by both entry points, and the result
    /// comes from the valid ones.
    #[test]
    fn cancelling_bad_partials_are_both_named() {
        let message = [0x64u8; 32];
        let (secret, keys, partials) = dealt(21, 2, 4, &message);
        let mut rng = test_rng();
        let d = SecretKey::random(&mut rng).sign(&message);
        let mut tampered = partials.clone();
        tampered[0].1 =
            bls::g2_linear_combination(&[partials[0].1, d], &[Scalar::one(), Scalar::one()])
                .unwrap();
        tampered[1].1 =
            bls::g2_linear_combination(&[partials[1].1, d], &[Scalar::one(), Scalar::from_u64(2)])
                .unwrap();
        assert_eq!(
            interpolate_signature(&tampered[..2]).unwrap(),
            secret.sign(&message)
        );
        let checked = ShareKeys::verify(threshold(2), &keys, &secret.public_key()).unwrap();
        let results = [
            combine(
                threshold(2),
                &keys,
                &secret.public_key(),
                &message,
                &tampered,
                true,
                &mut rng,
            )
            .unwrap(),
            combine_with_keys(&checked, &message, &tampered, true, &mut rng).unwrap(),
        ];
        for combined in results {
            assert_eq!(combined.signature, secret.sign(&message));
            assert_eq!(combined.culprits, vec![idx(1), idx(2)]);
        }
    }

    #[test]
    fn share_keys_refuse_keys_of_another_polynomial_or_group() {
        let message = [0x64u8; 32];
        let (secret, keys, _) = dealt(7, 3, 5, &message);
        assert!(ShareKeys::verify(threshold(3), &keys, &secret.public_key()).is_ok());
        // Another validator's group key.
        let other = SecretKey::random(&mut test_rng()).public_key();
        assert!(matches!(
            ShareKeys::verify(threshold(3), &keys, &other),
            Err(ThresholdError::GroupKeyMismatch { .. })
        ));
        // One share key replaced by a key off the polynomial.
        let mut swapped = keys.clone();
        swapped.insert(idx(5), other);
        assert!(matches!(
            ShareKeys::verify(threshold(3), &swapped, &secret.public_key()),
            Err(ThresholdError::InconsistentSharePublicKeys { .. })
        ));
        // Within the first t the polynomial changes: its value at zero is then another key.
        let mut first = keys.clone();
        first.insert(idx(1), other);
        assert!(ShareKeys::verify(threshold(3), &first, &secret.public_key()).is_err());
        // Not a point at all; too few keys for t.
        let mut garbage = keys.clone();
        garbage.insert(idx(2), BlsPublicKey([0x11; 48]));
        assert!(matches!(
            ShareKeys::verify(threshold(3), &garbage, &secret.public_key()),
            Err(ThresholdError::Bls(_))
        ));
        let few: BTreeMap<_, _> = keys.iter().take(2).map(|(i, k)| (*i, *k)).collect();
        assert!(ShareKeys::verify(threshold(3), &few, &secret.public_key()).is_err());
    }

    #[test]
    fn batch_of_nothing_is_ok_and_bad_points_are_named() {
        let mut rng = test_rng();
        assert_eq!(verify_partials_batch(&[1; 32], &[], &mut rng), Ok(()));
        let (_, keys, partials) = dealt(5, 2, 3, &[1; 32]);
        let mut pairs: Vec<(BlsPublicKey, BlsSignature)> =
            partials.iter().map(|(i, s)| (keys[i], *s)).collect();
        pairs[0].0 .0[3] ^= 0x10;
        pairs[2].1 = BlsSignature([0; 96]);
        assert_eq!(
            verify_partials_batch(&[1; 32], &pairs, &mut rng),
            Err(vec![0, 2])
        );
    }

    /// Issue 17 item 8: sizes are refused before any point is decoded or any Lagrange work.
    #[test]
    fn combine_refuses_oversized_input_at_once() {
        let (secret, keys, partials) = dealt(6, 2, 3, &[2; 32]);
        let group = secret.public_key();
        let run = |t: u32,
                   keys: &BTreeMap<ShareIndex, BlsPublicKey>,
                   partials: &[(ShareIndex, BlsSignature)]| {
            combine(
                threshold(t),
                keys,
                &group,
                &[2; 32],
                partials,
                true,
                &mut test_rng(),
            )
        };
        let started = std::time::Instant::now();
        assert_eq!(
            run(30_000, &keys, &partials).unwrap_err(),
            ThresholdError::CombineTooLarge {
                what: "threshold",
                got: 30_000,
                max: MAX_COMBINE_SHARES
            }
        );
        // 30,000 partials (garbage points, never decoded) and as many keys.
        let many_partials: Vec<(ShareIndex, BlsSignature)> = (1..=30_000)
            .map(|i| (idx(i), BlsSignature([0xaa; 96])))
            .collect();
        let many_keys: BTreeMap<ShareIndex, BlsPublicKey> = (1..=30_000)
            .map(|i| (idx(i), BlsPublicKey([0xbb; 48])))
            .collect();
        assert!(matches!(
            run(2, &keys, &many_partials).unwrap_err(),
            ThresholdError::CombineTooLarge {
                what: "partial signatures",
                ..
            }
        ));
        assert!(matches!(
            run(2, &many_keys, &partials).unwrap_err(),
            ThresholdError::CombineTooLarge {
                what: "share public keys",
                ..
            }
        ));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "refused at once"
        );
        // t above the share count, more partials than shares.
        assert_eq!(
            run(4, &keys, &partials).unwrap_err(),
            ThresholdError::InvalidThreshold { t: 4, n: 3 }
        );
        let mut four = partials.clone();
        four.push((idx(4), partials[0].1));
        assert_eq!(
            run(2, &keys, &four).unwrap_err(),
            ThresholdError::TooManyPartials { got: 4, shares: 3 }
        );
        // At the bound, accepted (and correct).
        assert!(run(2, &keys, &partials).is_ok());
    }
}
