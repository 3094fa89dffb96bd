//! BLS12-381 signatures as Ethereum uses them — the one module that touches `blst`.
//!
//! Ciphersuite: "min_pk" (public keys are 48-byte compressed G1 points, signatures 96-byte
//! compressed G2 points) with the proof-of-possession domain separation tag
//! [`DST`] = `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`, exactly as the consensus specs.
//!
//! What it refuses:
//! * secret keys that are not 32 big-endian bytes in `[1, r)`;
//! * public keys and signatures that are not canonical compressed encodings, not on the curve,
//!   not in the prime-order subgroup, or the point at infinity ([`validate_public_key`],
//!   [`validate_signature`]; [`verify`] applies the same checks and answers `false`).
//!
//! [`SecretKey`] wraps `blst::min_pk::SecretKey` (which derives a `Debug` that prints the key):
//! the wrapper prints `<redacted>`, is zeroized on drop by blst, and hands its bytes out only
//! through [`SecretKey::to_bytes`], inside `Zeroizing`.
//!
//! Beyond signing, it offers the field and group arithmetic threshold signing needs: [`Scalar`]
//! (F_r, in the FFI submodule — the crate's only `unsafe`) and multi-scalar multiplication in G1
//! and G2 through blst's safe `MultiPoint` API ([`g1_linear_combination`],
//! [`g2_linear_combination`]).
//!
//! For the request path it also signs in two halves: [`MessagePoint::hash`] (hash-to-G2, public,
//! shareable between keys signing the same root — see [`message_cache`]) and
//! [`SecretKey::sign_hashed`], byte-identical to [`SecretKey::sign`]. For threshold combining it
//! checks many signatures of one message at once ([`verify_same_message_batch`], a random linear
//! combination: two pairings and two multi-scalar multiplications for any number of signatures),
//! over points decoded and validated once ([`ValidPublicKey`], [`ValidSignature`]), and
//! interpolates and checks in one pass over one table of multiples
//! ([`interpolate_and_verify_batch`]).
// `deny`, not `forbid`: the `ffi` child module must be able to `allow` unsafe code.
#![deny(unsafe_code)]

mod ffi;
pub mod message_cache;

use std::fmt;

use blst::min_pk;
use blst::BLST_ERROR;
use zeroize::Zeroizing;

pub use self::ffi::{G1Point, MessagePoint, MessageTable, Scalar};
use crate::types::{BlsPublicKey, BlsSignature};

/// Domain separation tag of Ethereum's BLS signatures (proof-of-possession scheme, G2 signatures).
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// Bits of a scalar below `r` (r < 2^255), the width passed to blst's multi-scalar multiplication.
const SCALAR_BITS: usize = 255;

/// Why a key, point or signature was refused. Messages never contain secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlsError {
    #[error("a secret key must be 32 big-endian bytes encoding a value in [1, r)")]
    InvalidSecretKey,
    #[error("not a valid compressed point encoding")]
    BadEncoding,
    #[error("point is not on the BLS12-381 curve")]
    NotOnCurve,
    #[error("point is not in the prime-order subgroup")]
    NotInSubgroup,
    #[error("point is the point at infinity")]
    Infinity,
    #[error("{points} points but {scalars} scalars")]
    LengthMismatch { points: usize, scalars: usize },
    #[error("a linear combination needs at least one point")]
    NoPoints,
    #[error("blst refused the input: {0:?}")]
    Other(BLST_ERROR),
}

impl From<BLST_ERROR> for BlsError {
    fn from(error: BLST_ERROR) -> Self {
        match error {
            BLST_ERROR::BLST_BAD_ENCODING => BlsError::BadEncoding,
            BLST_ERROR::BLST_POINT_NOT_ON_CURVE => BlsError::NotOnCurve,
            BLST_ERROR::BLST_POINT_NOT_IN_GROUP => BlsError::NotInSubgroup,
            BLST_ERROR::BLST_PK_IS_INFINITY => BlsError::Infinity,
            other => BlsError::Other(other),
        }
    }
}

/// A BLS secret key (a scalar in `[1, r)`). Not `Clone`: a copy of a secret must be deliberate
/// (`SecretKey::from_zeroizing(key.to_bytes())`).
pub struct SecretKey {
    /// blst zeroizes its `SecretKey` on drop. Boxed so the scalar stays at one heap address for
    /// the key's whole life: moving a `SecretKey` (into a `Vec` that grows, through a sort, out
    /// of a function) moves the pointer, not the secret, and leaves no unwiped copy behind.
    inner: Box<min_pk::SecretKey>,
}

impl SecretKey {
    /// From 32 big-endian bytes encoding a value in `[1, r)`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BlsError> {
        if bytes.len() != 32 {
            return Err(BlsError::InvalidSecretKey);
        }
        min_pk::SecretKey::from_bytes(bytes)
            .map(|inner| Self {
                inner: Box::new(inner),
            })
            .map_err(|_| BlsError::InvalidSecretKey)
    }

    /// Like [`SecretKey::from_bytes`], taking ownership of a buffer that is wiped when dropped.
    pub fn from_zeroizing(bytes: Zeroizing<[u8; 32]>) -> Result<Self, BlsError> {
        Self::from_bytes(bytes.as_slice())
    }

    /// The 32 big-endian bytes of the key: the one named way a secret key leaves this type
    /// (for sealing by the HSM and for keystore encryption).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.inner.to_bytes())
    }

    /// A key uniformly distributed in `[1, r)`, by rejection sampling.
    pub fn random<R: rand_core::RngCore + rand_core::CryptoRng>(rng: &mut R) -> Self {
        let mut candidate = Zeroizing::new([0u8; 32]);
        loop {
            rng.fill_bytes(candidate.as_mut_slice());
            // r is just below 2^255: clearing the top bit makes about 9 in 10 candidates valid.
            candidate[0] &= 0x7f;
            if let Ok(key) = Self::from_bytes(candidate.as_slice()) {
                return key;
            }
        }
    }

    /// The scalar this key is, for threshold arithmetic.
    pub fn to_scalar(&self) -> Scalar {
        Scalar::from_secret_key(&self.inner)
    }

    /// The key whose scalar is `scalar`; refuses zero.
    pub fn from_scalar(scalar: &Scalar) -> Result<Self, BlsError> {
        Self::from_zeroizing(scalar.to_be_bytes())
    }

    /// `sk·G1`, compressed.
    pub fn public_key(&self) -> BlsPublicKey {
        BlsPublicKey(self.inner.sk_to_pk().compress())
    }

    /// Sign `message` (callers pass the 32-byte signing root) under [`DST`].
    pub fn sign(&self, message: &[u8]) -> BlsSignature {
        BlsSignature(self.inner.sign(message, DST, &[]).compress())
    }

    /// Sign the message `point` was hashed from ([`MessagePoint::hash`] under [`DST`]): the same
    /// bytes as [`SecretKey::sign`] of that message, at about half the cost.
    pub fn sign_hashed(&self, point: &MessagePoint) -> BlsSignature {
        BlsSignature(ffi::sign_message_point(&self.inner, point).compress())
    }

    /// Sign the message `table` was built for ([`MessageTable::build`] of its point): the same
    /// bytes as [`SecretKey::sign`] of that message, without a scalar multiplication. Like every
    /// signature, it leaves secret-dependent values in the stack frames below the caller (blst's
    /// and the compiler's spills): a caller that must leave no trace calls
    /// [`crate::wipe::wipe_stack`] afterwards, as the appliance's signing path does.
    pub fn sign_with_table(&self, table: &MessageTable) -> BlsSignature {
        BlsSignature(ffi::sign_with_table(&self.inner, table).compress())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Decompress and fully validate a public key (on curve, in subgroup, not infinity).
fn decode_public_key(public_key: &BlsPublicKey) -> Result<min_pk::PublicKey, BlsError> {
    let point = min_pk::PublicKey::from_bytes(public_key.as_bytes())?;
    point.validate()?;
    Ok(point)
}

/// Decompress and fully validate a signature (on curve, in subgroup, not infinity).
fn decode_signature(signature: &BlsSignature) -> Result<min_pk::Signature, BlsError> {
    let point = min_pk::Signature::from_bytes(signature.as_bytes())?;
    // `true`: refuse infinity; the subgroup check is always done.
    point.validate(true)?;
    Ok(point)
}

/// `Ok` when `public_key` is a canonical compressed G1 point in the subgroup, not infinity.
pub fn validate_public_key(public_key: &BlsPublicKey) -> Result<(), BlsError> {
    decode_public_key(public_key).map(|_| ())
}

/// `Ok` when `signature` is a canonical compressed G2 point in the subgroup, not infinity.
pub fn validate_signature(signature: &BlsSignature) -> Result<(), BlsError> {
    decode_signature(signature).map(|_| ())
}

/// Whether `signature` is a valid signature of `message` under `public_key`. Invalid encodings,
/// points outside the subgroup and infinity (key or signature) all answer `false`.
pub fn verify(public_key: &BlsPublicKey, message: &[u8], signature: &BlsSignature) -> bool {
    let (Ok(public_key), Ok(signature)) =
        (decode_public_key(public_key), decode_signature(signature))
    else {
        return false;
    };
    // Both points were validated just above, so blst need not check them again.
    signature.verify(false, message, DST, &[], &public_key, false) == BLST_ERROR::BLST_SUCCESS
}

/// Concatenated little-endian scalars, the layout blst's `MultiPoint::mult` reads.
fn scalar_bytes(scalars: &[Scalar]) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(32 * scalars.len()));
    for scalar in scalars {
        bytes.extend_from_slice(scalar.to_le_bytes().as_slice());
    }
    bytes
}

fn check_lengths(points: usize, scalars: usize) -> Result<(), BlsError> {
    if points == 0 {
        return Err(BlsError::NoPoints);
    }
    if points != scalars {
        return Err(BlsError::LengthMismatch { points, scalars });
    }
    Ok(())
}

/// `Σ scalars[i]·points[i]` in G1. Every point is validated first; a result at infinity is
/// refused (it is never a usable public key). Variable-time in the scalars: pass public scalars
/// only (Lagrange coefficients, powers of a share index).
pub fn g1_linear_combination(
    points: &[BlsPublicKey],
    scalars: &[Scalar],
) -> Result<BlsPublicKey, BlsError> {
    // On the calling thread (see [`G1Point`] for why not blst's pooled `MultiPoint::mult`).
    let sum = |decoded: &[min_pk::PublicKey], scalars: &[u8]| {
        let affine: Vec<blst::blst_p1_affine> = decoded.iter().map(|p| (*p).into()).collect();
        BlsPublicKey(ffi::g1_msm(&affine, scalars, SCALAR_BITS).compress())
    };
    linear_combination(points, scalars, decode_public_key, sum, validate_public_key)
}

/// `Σ scalars[i]·points[i]` in G2 (combining partial signatures). Same rules as
/// [`g1_linear_combination`].
pub fn g2_linear_combination(
    points: &[BlsSignature],
    scalars: &[Scalar],
) -> Result<BlsSignature, BlsError> {
    let sum = |decoded: &[min_pk::Signature], scalars: &[u8]| {
        let affine: Vec<blst::blst_p2_affine> = decoded.iter().map(|p| (*p).into()).collect();
        BlsSignature(min_pk::Signature::from(ffi::g2_msm(&affine, scalars, SCALAR_BITS)).compress())
    };
    linear_combination(points, scalars, decode_signature, sum, validate_signature)
}

/// The steps both groups share: check the lengths, decode (and so validate) every point, let
/// `sum` multiply-add them with the scalars' bytes and compress, then validate the result.
fn linear_combination<P, D>(
    points: &[P],
    scalars: &[Scalar],
    decode: impl Fn(&P) -> Result<D, BlsError>,
    sum: impl FnOnce(&[D], &[u8]) -> P,
    validate: impl FnOnce(&P) -> Result<(), BlsError>,
) -> Result<P, BlsError> {
    check_lengths(points.len(), scalars.len())?;
    let decoded = points.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
    let combined = sum(&decoded, &scalar_bytes(scalars));
    validate(&combined)?;
    Ok(combined)
}

/// Bits of the random weights of a batch check: a forged batch passes with probability at most
/// 2^-64 per attempt (the weights are drawn after the signatures are fixed).
const BATCH_WEIGHT_BITS: usize = 64;

/// A public key decoded and validated once (on curve, in subgroup, not infinity), for checks
/// that use it more than once.
#[derive(Clone, Copy)]
pub struct ValidPublicKey(min_pk::PublicKey);

impl ValidPublicKey {
    pub fn decode(public_key: &BlsPublicKey) -> Result<Self, BlsError> {
        decode_public_key(public_key).map(Self)
    }

    /// The point, for arithmetic.
    pub fn point(&self) -> G1Point {
        G1Point::from_affine(&self.0.into())
    }

    /// A key from the result of point arithmetic. Every [`G1Point`] is built from the generator
    /// and validated keys, so it is on the curve and in the subgroup; only infinity (never a
    /// usable key) is refused.
    pub fn from_point(point: &G1Point) -> Result<Self, BlsError> {
        if point.is_infinity() {
            return Err(BlsError::Infinity);
        }
        Ok(Self(min_pk::PublicKey::from(point.to_affine())))
    }

    pub fn to_bytes(&self) -> BlsPublicKey {
        BlsPublicKey(self.0.compress())
    }

    /// `Σ scalars[i]·points[i]` over validated keys; refuses a result at infinity. Same rules as
    /// [`g1_linear_combination`], without decoding the points again.
    pub fn linear_combination(
        points: &[ValidPublicKey],
        scalars: &[Scalar],
    ) -> Result<Self, BlsError> {
        check_lengths(points.len(), scalars.len())?;
        let affine: Vec<blst::blst_p1_affine> = points.iter().map(|p| p.0.into()).collect();
        // A combination of subgroup points is in the subgroup: `from_point` refuses infinity.
        Self::from_point(&ffi::g1_msm(&affine, &scalar_bytes(scalars), SCALAR_BITS))
    }
}

/// `Σ weights[i]·points[i]` with 64-bit public weights (random batch weights): one conversion
/// to affine and one multi-scalar multiplication, on the calling thread.
pub fn g1_weighted_sum(points: &[G1Point], weights: &[u64]) -> Result<G1Point, BlsError> {
    check_lengths(points.len(), weights.len())?;
    let affine = ffi::g1_batch_affine(points);
    let bytes: Vec<u8> = weights.iter().flat_map(|w| w.to_le_bytes()).collect();
    Ok(ffi::g1_msm(&affine, &bytes, 64))
}

/// `Σ scalars[i]·points[i]` over validated keys with full public scalars (Lagrange
/// coefficients), on the calling thread; the result may be infinity (the caller decides).
pub fn g1_combine_valid(
    points: &[ValidPublicKey],
    scalars: &[Scalar],
) -> Result<G1Point, BlsError> {
    check_lengths(points.len(), scalars.len())?;
    let affine: Vec<blst::blst_p1_affine> = points.iter().map(|p| p.0.into()).collect();
    Ok(ffi::g1_msm(&affine, &scalar_bytes(scalars), SCALAR_BITS))
}

/// Compressed encodings of many points with one field inversion; infinity is refused.
pub fn g1_compress_all(points: &[G1Point]) -> Result<Vec<BlsPublicKey>, BlsError> {
    if points.iter().any(G1Point::is_infinity) {
        return Err(BlsError::Infinity);
    }
    Ok(ffi::g1_batch_affine(points)
        .into_iter()
        .map(|affine| BlsPublicKey(min_pk::PublicKey::from(affine).compress()))
        .collect())
}

/// A signature decoded and validated once (on curve, in subgroup, not infinity).
#[derive(Clone, Copy)]
pub struct ValidSignature(min_pk::Signature);

impl ValidSignature {
    pub fn decode(signature: &BlsSignature) -> Result<Self, BlsError> {
        decode_signature(signature).map(Self)
    }

    pub fn to_bytes(&self) -> BlsSignature {
        BlsSignature(self.0.compress())
    }

    /// `Σ scalars[i]·points[i]` over validated points; refuses a result at infinity. Same rules
    /// as [`g2_linear_combination`], without decoding the points again.
    pub fn linear_combination(
        points: &[ValidSignature],
        scalars: &[Scalar],
    ) -> Result<Self, BlsError> {
        check_lengths(points.len(), scalars.len())?;
        let affine: Vec<blst::blst_p2_affine> = points.iter().map(|p| p.0.into()).collect();
        // On the calling thread (see [`G1Point`] for why not blst's pooled `MultiPoint::mult`).
        let sum = ffi::g2_msm(&affine, &scalar_bytes(scalars), SCALAR_BITS);
        // A combination of subgroup points is in the subgroup; only infinity needs a check (a
        // second subgroup check here cost as much as a third of a combine).
        if ffi::g2_is_infinity(&sum) {
            return Err(BlsError::Infinity);
        }
        Ok(Self(min_pk::Signature::from(sum)))
    }
}

/// [`verify`] over points already decoded and validated.
pub fn verify_valid(
    public_key: &ValidPublicKey,
    message: &[u8],
    signature: &ValidSignature,
) -> bool {
    signature
        .0
        .verify(false, message, DST, &[], &public_key.0, false)
        == BLST_ERROR::BLST_SUCCESS
}

/// Whether `signatures[i]` is a valid signature of `message` under `public_keys[i]` for every i,
/// checked at once: with fresh random 64-bit weights `r_i` from `rng`,
/// `e(Σ r_i·σ_i, G1) == e(H(m), Σ r_i·P_i)`. `true` means all are valid except with
/// probability 2^-64; `false` means at least one is invalid (or the lengths differ / are zero)
/// — check them one by one ([`verify`]) to find which.
pub fn verify_same_message_batch<R: rand_core::RngCore + rand_core::CryptoRng>(
    message: &[u8],
    public_keys: &[ValidPublicKey],
    signatures: &[ValidSignature],
    rng: &mut R,
) -> bool {
    if public_keys.is_empty() || public_keys.len() != signatures.len() {
        return false;
    }
    let weights = batch_weights(public_keys.len(), rng);
    // Both sums on the calling thread (see [`G1Point`]): for the handful of partials of one
    // combine, blst's pooled `MultiPoint::mult` cost more in hand-offs than in arithmetic.
    let keys: Vec<blst::blst_p1_affine> = public_keys.iter().map(|k| k.0.into()).collect();
    let sigs: Vec<blst::blst_p2_affine> = signatures.iter().map(|s| s.0.into()).collect();
    let key_sum =
        min_pk::PublicKey::from(ffi::g1_msm(&keys, &weights, BATCH_WEIGHT_BITS).to_affine());
    let signature_sum = min_pk::Signature::from(ffi::g2_msm(&sigs, &weights, BATCH_WEIGHT_BITS));
    // Every input point was validated; the sums are in the subgroups by construction. A sum at
    // infinity (negligible probability) makes blst answer an error: reported as a failed batch,
    // and the caller's one-by-one check decides.
    signature_sum.verify(false, message, DST, &[], &key_sum, false) == BLST_ERROR::BLST_SUCCESS
}

/// `count` fresh non-zero 64-bit batch weights from `rng`, concatenated little-endian (the
/// layout the multi-scalar multiplications read).
fn batch_weights<R: rand_core::RngCore + rand_core::CryptoRng>(
    count: usize,
    rng: &mut R,
) -> Vec<u8> {
    let mut weights = Vec::with_capacity(BATCH_WEIGHT_BITS / 8 * count);
    for _ in 0..count {
        // A zero weight would drop its pair from the check.
        let weight = loop {
            let candidate = rng.next_u64();
            if candidate != 0 {
                break candidate;
            }
        };
        weights.extend_from_slice(&weight.to_le_bytes());
    }
    weights
}

/// Interpolate and check at once, for threshold combining: `σ = Σ coefficients[j]·signatures[j]`
/// over the first `coefficients.len()` signatures, returned only if `σ` is a valid signature of
/// `message` under `group` *and* every `signatures[i]` is one under `public_keys[i]` (except
/// with probability 2^-64). `None` when any is invalid, `σ` is infinity, or the lengths are
/// wrong (no signature, more coefficients than signatures, keys and signatures of different
/// counts) — the caller checks one by one to find which.
///
/// The check: with fresh non-zero 64-bit weights `r_i` from `rng`,
/// `e(σ + Σ r_i·σ_i, G1) == e(H(m), group + Σ r_i·P_i)`. Writing `σ_i = s_i·H(m)`,
/// `P_i = p_i·G1`, `group = p·G1` (every point validated, so in the prime-order groups), it
/// holds iff `(Σ λ_j s_j − p) + Σ r_i (s_i − p_i) = 0 mod r`. If some `s_i ≠ p_i`, the weights
/// are drawn after everything else is fixed, so at most one value of that `r_i` (of 2^64 − 1)
/// satisfies it; if every `s_i = p_i`, it says `σ` is the group signature. So the result pair
/// needs no random weight of its own: weight 1 costs no multiplication at all.
///
/// Why one function and not [`ValidSignature::linear_combination`] plus
/// [`verify_same_message_batch`]: both multiplications run over the same points, so for fewer
/// than 32 of them one table of multiples ([`ffi::G2Table`]) serves both, and the result enters
/// the check as one addition instead of one more point in each sum. Above that, blst's
/// Pippenger runs each sum as before.
pub fn interpolate_and_verify_batch<R: rand_core::RngCore + rand_core::CryptoRng>(
    message: &[u8],
    group: &ValidPublicKey,
    public_keys: &[ValidPublicKey],
    signatures: &[ValidSignature],
    coefficients: &[Scalar],
    rng: &mut R,
) -> Option<ValidSignature> {
    let count = signatures.len();
    if count == 0
        || public_keys.len() != count
        || coefficients.is_empty()
        || coefficients.len() > count
    {
        return None;
    }
    let weights = batch_weights(count, rng);
    let coefficient_bytes = scalar_bytes(coefficients);
    let points: Vec<blst::blst_p2_affine> = signatures.iter().map(|s| s.0.into()).collect();
    let (interpolated, weighted) = if count < ffi::G2_TABLE_MAX_POINTS {
        let table = ffi::G2Table::build(&points);
        (
            table.msm(coefficients.len(), &coefficient_bytes, SCALAR_BITS),
            table.msm(count, &weights, BATCH_WEIGHT_BITS),
        )
    } else {
        (
            ffi::G2Projective::from_affine(&ffi::g2_msm(
                &points[..coefficients.len()],
                &coefficient_bytes,
                SCALAR_BITS,
            )),
            ffi::G2Projective::from_affine(&ffi::g2_msm(&points, &weights, BATCH_WEIGHT_BITS)),
        )
    };
    let combined = interpolated.to_affine();
    // A combination of subgroup points is in the subgroup; only infinity needs a check.
    if ffi::g2_is_infinity(&combined) {
        return None;
    }
    let signature_sum = min_pk::Signature::from(interpolated.add(&weighted).to_affine());
    let keys: Vec<blst::blst_p1_affine> = public_keys.iter().map(|k| k.0.into()).collect();
    let key_sum = min_pk::PublicKey::from(
        ffi::g1_msm(&keys, &weights, BATCH_WEIGHT_BITS)
            .add(&group.point())
            .to_affine(),
    );
    // Every input point was validated; the sums are in the subgroups by construction. A sum at
    // infinity (negligible probability) makes blst answer an error: a failed batch, and the
    // caller's one-by-one check decides.
    let verifies =
        signature_sum.verify(false, message, DST, &[], &key_sum, false) == BLST_ERROR::BLST_SUCCESS;
    verifies.then(|| ValidSignature(min_pk::Signature::from(combined)))
}

/// Bits of the weights of [`verify_distinct_batch`]: enough that weights derived from a hash
/// of the inputs (Fiat–Shamir, no randomness at hand) leave no room for grinding.
const DISTINCT_BATCH_WEIGHT_BITS: usize = 128;

/// Whether `signatures[i]` is a valid signature of `messages[i]` under `public_keys[i]` for every
/// i (messages may repeat or differ), checked at once with non-zero 128-bit weights from `rng`:
/// one Miller loop per pair and a single final exponentiation. `false` when the lengths differ
/// or are zero, or when any is invalid — check them one by one ([`verify`]) to find which.
pub fn verify_distinct_batch<R: rand_core::RngCore + rand_core::CryptoRng>(
    messages: &[&[u8]],
    public_keys: &[ValidPublicKey],
    signatures: &[ValidSignature],
    rng: &mut R,
) -> bool {
    let count = messages.len();
    if count == 0 || public_keys.len() != count || signatures.len() != count {
        return false;
    }
    let weights: Vec<blst::blst_scalar> = (0..count)
        .map(|_| loop {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b[..DISTINCT_BATCH_WEIGHT_BITS / 8]);
            if b.iter().any(|byte| *byte != 0) {
                break blst::blst_scalar { b };
            }
        })
        .collect();
    let keys: Vec<&min_pk::PublicKey> = public_keys.iter().map(|k| &k.0).collect();
    let sigs: Vec<&min_pk::Signature> = signatures.iter().map(|s| &s.0).collect();
    // Every point was validated on decoding: no second subgroup check.
    min_pk::Signature::verify_multiple_aggregate_signatures(
        messages,
        DST,
        &keys,
        false,
        &sigs,
        false,
        &weights,
        DISTINCT_BATCH_WEIGHT_BITS,
    ) == BLST_ERROR::BLST_SUCCESS
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngCore, SeedableRng};
    use serde_json::Value;

    use super::*;
    use crate::test_vectors::{self, unhex};

    /// Every `(file stem, JSON)` of one `bls/` vector folder.
    fn load_vectors(name: &str) -> Vec<(String, Value)> {
        test_vectors::load_folder(&format!("bls/{name}"))
    }

    #[test]
    fn sign_vectors() {
        let cases = load_vectors("sign");
        for (name, case) in &cases {
            let key_bytes = unhex(case["input"]["privkey"].as_str().unwrap());
            let message = unhex(case["input"]["message"].as_str().unwrap());
            match case["output"].as_str() {
                Some(expected) => {
                    let key = SecretKey::from_bytes(&key_bytes).unwrap();
                    let signature = key.sign(&message);
                    assert_eq!(signature.0.to_vec(), unhex(expected), "{name}");
                    let hashed = key.sign_hashed(&MessagePoint::hash(&message, DST));
                    assert_eq!(hashed, signature, "{name}: sign_hashed");
                    assert!(verify(&key.public_key(), &message, &signature), "{name}");
                }
                None => assert_eq!(
                    SecretKey::from_bytes(&key_bytes).unwrap_err(),
                    BlsError::InvalidSecretKey,
                    "{name}"
                ),
            }
        }
    }

    /// The Web3Signer vectors' signatures (one per request type and key) through the cache
    /// path, and every vector key signing every vector root through the cache (one hash per
    /// root) byte-identical to blst's one-step `sign`.
    #[test]
    fn web3signer_vectors_sign_hashed() {
        let cache = message_cache::MessageCache::new(256);
        let cases = test_vectors::load_folder("web3signer");
        let mut keys = Vec::new();
        let mut roots = std::collections::BTreeSet::new();
        for (name, case) in &cases {
            let secret = unhex(case["secret_key"].as_str().unwrap());
            let key = SecretKey::from_bytes(&secret).unwrap();
            let root: [u8; 32] = unhex(case["signing_root"].as_str().unwrap())
                .try_into()
                .unwrap();
            let expected = unhex(case["signature"].as_str().unwrap());
            assert_eq!(
                key.sign_hashed(&cache.point(&root, DST)).0.to_vec(),
                expected,
                "{name}"
            );
            roots.insert(root);
            if !keys.contains(&secret) {
                keys.push(secret);
            }
        }
        assert!(cases.len() > 50 && keys.len() >= 3);
        for secret in &keys {
            let key = SecretKey::from_bytes(secret).unwrap();
            for root in &roots {
                assert_eq!(key.sign_hashed(&cache.point(root, DST)), key.sign(root));
            }
        }
        assert_eq!(
            cache.stats().hashes as usize,
            roots.len(),
            "{:?}",
            cache.stats()
        );
    }

    #[test]
    fn batch_verification_accepts_valid_and_refuses_any_bad_signature() {
        let mut rng = StdRng::seed_from_u64(11);
        let message = [0x17u8; 32];
        let keys: Vec<SecretKey> = (0..6).map(|_| SecretKey::random(&mut rng)).collect();
        let public_keys: Vec<ValidPublicKey> = keys
            .iter()
            .map(|k| ValidPublicKey::decode(&k.public_key()).unwrap())
            .collect();
        let signatures: Vec<ValidSignature> = keys
            .iter()
            .map(|k| ValidSignature::decode(&k.sign(&message)).unwrap())
            .collect();
        assert!(verify_same_message_batch(
            &message,
            &public_keys,
            &signatures,
            &mut rng
        ));
        assert!(!verify_same_message_batch(
            &[0x18; 32],
            &public_keys,
            &signatures,
            &mut rng
        ));
        // Swapping two signatures breaks two pairs.
        let mut swapped = signatures.clone();
        swapped.swap(0, 1);
        assert!(!verify_same_message_batch(
            &message,
            &public_keys,
            &swapped,
            &mut rng
        ));
        // A signature of another message.
        let mut other = signatures.clone();
        other[3] = ValidSignature::decode(&keys[3].sign(&[0x19; 32])).unwrap();
        assert!(!verify_same_message_batch(
            &message,
            &public_keys,
            &other,
            &mut rng
        ));
        assert!(!verify_same_message_batch(&message, &[], &[], &mut rng));
        assert!(!verify_same_message_batch(
            &message,
            &public_keys[..2],
            &signatures,
            &mut rng
        ));
    }

    /// `count` keys, their public keys and signatures of `message`.
    fn signed(
        rng: &mut StdRng,
        count: usize,
        message: &[u8],
    ) -> (Vec<SecretKey>, Vec<ValidPublicKey>, Vec<ValidSignature>) {
        let keys: Vec<SecretKey> = (0..count).map(|_| SecretKey::random(rng)).collect();
        let public_keys = keys
            .iter()
            .map(|k| ValidPublicKey::decode(&k.public_key()).unwrap())
            .collect();
        let signatures = keys
            .iter()
            .map(|k| ValidSignature::decode(&k.sign(message)).unwrap())
            .collect();
        (keys, public_keys, signatures)
    }

    fn random_scalar(rng: &mut StdRng) -> Scalar {
        SecretKey::random(rng).to_scalar()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(12))]

        /// The shared table's sums are blst's Pippenger sums (full scalars and 64-bit weights,
        /// any prefix of the rows).
        #[test]
        fn table_sums_are_blsts(seed in proptest::prelude::any::<u64>(), count in 1usize..20) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (_, _, signatures) = signed(&mut rng, count, &[0x21; 32]);
            let points: Vec<blst::blst_p2_affine> =
                signatures.iter().map(|s| s.0.into()).collect();
            let table = ffi::G2Table::build(&points);
            let scalars: Vec<Scalar> = (0..count).map(|_| random_scalar(&mut rng)).collect();
            let full = scalar_bytes(&scalars);
            let weights = batch_weights(count, &mut rng);
            for prefix in [1, count.div_ceil(2), count] {
                proptest::prop_assert_eq!(
                    table.msm(prefix, &full, SCALAR_BITS).to_affine(),
                    ffi::g2_msm(&points[..prefix], &full, SCALAR_BITS)
                );
                proptest::prop_assert_eq!(
                    table.msm(prefix, &weights, BATCH_WEIGHT_BITS).to_affine(),
                    ffi::g2_msm(&points[..prefix], &weights, BATCH_WEIGHT_BITS)
                );
            }
        }

        /// Interpolating and checking at once gives exactly the generic combination and accepts
        /// every valid set, on both sides of the table / Pippenger switch; a bad signature, a
        /// wrong group key, or two bad partials whose errors cancel in the result are refused.
        #[test]
        fn interpolate_and_verify_batch_is_the_generic_combination(
            seed in proptest::prelude::any::<u64>(),
            count in 2usize..40,
            prefix in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let message = [0x22u8; 32];
            let mut rng = StdRng::seed_from_u64(seed);
            let (_, public_keys, signatures) = signed(&mut rng, count, &message);
            let prefix = 1 + prefix.index(count);
            let coefficients: Vec<Scalar> = (0..prefix).map(|_| random_scalar(&mut rng)).collect();
            // The group key the coefficients make of the first `prefix` keys, so the
            // combination of their signatures is its signature.
            let group = ValidPublicKey::from_point(
                &g1_combine_valid(&public_keys[..prefix], &coefficients).unwrap(),
            )
            .unwrap();
            let expected =
                ValidSignature::linear_combination(&signatures[..prefix], &coefficients).unwrap();
            let combined = interpolate_and_verify_batch(
                &message, &group, &public_keys, &signatures, &coefficients, &mut rng,
            );
            proptest::prop_assert_eq!(combined.map(|s| s.to_bytes()), Some(expected.to_bytes()));

            let position = rng.next_u64() as usize % count;
            let mut bad = signatures.clone();
            bad[position] = signed(&mut rng, 1, &[0x23; 32]).2[0];
            proptest::prop_assert!(interpolate_and_verify_batch(
                &message, &group, &public_keys, &bad, &coefficients, &mut rng,
            ).is_none());
            let other = ValidPublicKey::decode(&SecretKey::random(&mut rng).public_key()).unwrap();
            proptest::prop_assert!(interpolate_and_verify_batch(
                &message, &other, &public_keys, &signatures, &coefficients, &mut rng,
            ).is_none());

            if prefix >= 2 {
                // σ'_0 = σ_0 + D, σ'_1 = σ_1 - (c_0/c_1)·D: the combination is unchanged (a
                // check of the result alone passes), both partials are wrong.
                let d = signed(&mut rng, 1, &message).2[0];
                let ratio = Scalar::zero()
                    .sub(&coefficients[0].mul(&coefficients[1].invert().unwrap()));
                let mut cancelling = signatures.clone();
                cancelling[0] = ValidSignature::linear_combination(
                    &[signatures[0], d], &[Scalar::one(), Scalar::one()],
                ).unwrap();
                cancelling[1] = ValidSignature::linear_combination(
                    &[signatures[1], d], &[Scalar::one(), ratio],
                ).unwrap();
                let result = ValidSignature::linear_combination(
                    &cancelling[..prefix], &coefficients,
                ).unwrap();
                proptest::prop_assert_eq!(result.to_bytes(), expected.to_bytes());
                proptest::prop_assert!(verify_valid(&group, &message, &result));
                proptest::prop_assert!(interpolate_and_verify_batch(
                    &message, &group, &public_keys, &cancelling, &coefficients, &mut rng,
                ).is_none());
            }
        }
    }

    #[test]
    fn interpolate_and_verify_batch_refuses_wrong_lengths() {
        let message = [0x24u8; 32];
        let mut rng = StdRng::seed_from_u64(12);
        let (keys, public_keys, signatures) = signed(&mut rng, 3, &message);
        let group = public_keys[0];
        let one = [Scalar::one()];
        // The valid base case: coefficient 1 on the first signature, its key as the group.
        assert_eq!(
            interpolate_and_verify_batch(
                &message,
                &group,
                &public_keys,
                &signatures,
                &one,
                &mut rng
            )
            .map(|s| s.to_bytes()),
            Some(keys[0].sign(&message))
        );
        let four: Vec<Scalar> = (0..4).map(|_| Scalar::one()).collect();
        for (keys, signatures, coefficients) in [
            (&public_keys[..], &signatures[..], &[][..]),
            (&public_keys[..], &signatures[..], &four[..]),
            (&public_keys[..2], &signatures[..], &one[..]),
            (&[][..], &[][..], &one[..]),
        ] {
            assert!(interpolate_and_verify_batch(
                &message,
                &group,
                keys,
                signatures,
                coefficients,
                &mut rng
            )
            .is_none());
        }
    }

    #[test]
    fn verify_vectors() {
        let cases = load_vectors("verify");
        let mut valid = 0;
        for (name, case) in &cases {
            let public_key =
                BlsPublicKey::from_slice(&unhex(case["input"]["pubkey"].as_str().unwrap()))
                    .unwrap();
            let message = unhex(case["input"]["message"].as_str().unwrap());
            let signature =
                BlsSignature::from_slice(&unhex(case["input"]["signature"].as_str().unwrap()))
                    .unwrap();
            let expected = case["output"].as_bool().unwrap();
            assert_eq!(
                verify(&public_key, &message, &signature),
                expected,
                "{name}"
            );
            valid += usize::from(expected);
        }
        assert!(valid > 0 && valid < cases.len());
    }

    /// The vectors say whether *deserialization* succeeds; infinity deserializes but our
    /// validation refuses it, so "succeeds" means `Ok` or exactly `Infinity`.
    fn check_deserialization(
        folder: &str,
        field: &str,
        validate: impl Fn(&[u8]) -> Result<(), BlsError>,
    ) {
        for (name, case) in load_vectors(folder) {
            let bytes = hex::decode(case["input"][field].as_str().unwrap()).unwrap();
            let expected = case["output"].as_bool().unwrap();
            let result = validate(&bytes);
            let deserialized = matches!(result, Ok(()) | Err(BlsError::Infinity));
            assert_eq!(deserialized, expected, "{name}: {result:?}");
            if name.starts_with("deserialization_succeeds_infinity") {
                assert_eq!(result, Err(BlsError::Infinity), "{name}");
            }
        }
    }

    #[test]
    fn deserialization_g1_vectors() {
        check_deserialization("deserialization_G1", "pubkey", |bytes| {
            let key = BlsPublicKey::from_slice(bytes).map_err(|_| BlsError::BadEncoding)?;
            validate_public_key(&key)
        });
    }

    #[test]
    fn deserialization_g2_vectors() {
        check_deserialization("deserialization_G2", "signature", |bytes| {
            let signature = BlsSignature::from_slice(bytes).map_err(|_| BlsError::BadEncoding)?;
            validate_signature(&signature)
        });
    }

    #[test]
    fn secret_key_range() {
        let order = unhex("73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001");
        assert!(SecretKey::from_bytes(&order).is_err());
        assert!(SecretKey::from_bytes(&[0u8; 32]).is_err());
        assert!(SecretKey::from_bytes(&[1u8; 31]).is_err());
        assert!(SecretKey::from_bytes(&[1u8; 33]).is_err());
        let mut order_minus_one = order.clone();
        order_minus_one[31] = 0;
        let key = SecretKey::from_bytes(&order_minus_one).unwrap();
        assert_eq!(key.to_bytes().to_vec(), order_minus_one);
        let mut one = [0u8; 32];
        one[31] = 1;
        let key = SecretKey::from_zeroizing(Zeroizing::new(one)).unwrap();
        // 1·G1 is the generator.
        assert_eq!(
            key.public_key().to_hex(),
            "0x97f1d3a73197d7942695638c4fa9ac0fc3688c4f9774b905a14e3a3f171bac586c55e83ff97a1aeffb3af00adb22c6bb"
        );
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let key = SecretKey::from_bytes(&[0x11; 32]).unwrap();
        let printed = format!("{key:?} {:?}", key.to_scalar());
        assert!(!printed.contains("11"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn random_keys_sign_and_verify() {
        let mut rng = StdRng::seed_from_u64(7);
        let first = SecretKey::random(&mut rng);
        let second = SecretKey::random(&mut rng);
        assert_ne!(first.to_bytes(), second.to_bytes());
        let message = [0x42u8; 32];
        let signature = first.sign(&message);
        assert!(verify(&first.public_key(), &message, &signature));
        assert!(!verify(&second.public_key(), &message, &signature));
        assert!(!verify(&first.public_key(), &[0x43u8; 32], &signature));
        validate_public_key(&first.public_key()).unwrap();
        validate_signature(&signature).unwrap();
    }

    #[test]
    fn scalar_arithmetic() {
        let two = Scalar::from_u64(2);
        let three = Scalar::from_u64(3);
        assert_eq!(
            two.add(&three).to_be_bytes(),
            Scalar::from_u64(5).to_be_bytes()
        );
        assert_eq!(
            two.mul(&three).to_be_bytes(),
            Scalar::from_u64(6).to_be_bytes()
        );
        // 2 - 3 = r - 1
        let minus_one = two.sub(&three);
        let mut expected =
            unhex("73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000000");
        assert_eq!(minus_one.to_be_bytes().to_vec(), expected);
        expected.reverse();
        assert_eq!(minus_one.to_le_bytes().to_vec(), expected);
        let inverse = three.invert().unwrap();
        assert_eq!(
            inverse.mul(&three).to_be_bytes(),
            Scalar::one().to_be_bytes()
        );
        assert!(Scalar::zero().invert().is_none());
        assert!(Scalar::zero().is_zero());
        assert!(!Scalar::one().is_zero());
        assert!(three.sub(&three).is_zero());
        let bytes = *minus_one.to_be_bytes();
        let decoded = Scalar::from_be_bytes_canonical(&bytes).unwrap();
        assert_eq!(decoded.to_be_bytes(), minus_one.to_be_bytes());
        let order: [u8; 32] =
            unhex("73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001")
                .try_into()
                .unwrap();
        assert!(Scalar::from_be_bytes_canonical(&order).is_none());
        assert!(Scalar::from_be_bytes_canonical(&[0u8; 32])
            .unwrap()
            .is_zero());
        let key = SecretKey::from_bytes(&bytes).unwrap();
        assert_eq!(key.to_scalar().to_be_bytes(), minus_one.to_be_bytes());
        assert!(SecretKey::from_scalar(&Scalar::zero()).is_err());
    }

    #[test]
    fn linear_combinations_match_scalar_arithmetic() {
        let mut rng = StdRng::seed_from_u64(9);
        let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::random(&mut rng)).collect();
        let weights: Vec<Scalar> = [5u64, 7, 11].iter().map(|w| Scalar::from_u64(*w)).collect();
        let mut combined = Scalar::zero();
        for (key, weight) in keys.iter().zip(&weights) {
            combined = combined.add(&key.to_scalar().mul(weight));
        }
        let combined_key = SecretKey::from_scalar(&combined).unwrap();
        let public_keys: Vec<BlsPublicKey> = keys.iter().map(SecretKey::public_key).collect();
        assert_eq!(
            g1_linear_combination(&public_keys, &weights).unwrap(),
            combined_key.public_key()
        );
        let message = [1u8; 32];
        let signatures: Vec<BlsSignature> = keys.iter().map(|k| k.sign(&message)).collect();
        assert_eq!(
            g2_linear_combination(&signatures, &weights).unwrap(),
            combined_key.sign(&message)
        );
        // One point.
        assert_eq!(
            g1_linear_combination(&public_keys[..1], &[Scalar::one()]).unwrap(),
            public_keys[0]
        );
        // P + (r-1)·P is infinity: refused.
        let minus_one = Scalar::zero().sub(&Scalar::one());
        assert_eq!(
            g1_linear_combination(
                &[public_keys[0], public_keys[0]],
                &[Scalar::one(), minus_one]
            ),
            Err(BlsError::Infinity)
        );
        assert_eq!(g1_linear_combination(&[], &[]), Err(BlsError::NoPoints));
        assert_eq!(
            g2_linear_combination(&signatures, &weights[..2]),
            Err(BlsError::LengthMismatch {
                points: 3,
                scalars: 2
            })
        );
        let mut bad = public_keys.clone();
        bad[1].0[5] ^= 1;
        assert!(g1_linear_combination(&bad, &weights).is_err());
    }
}
