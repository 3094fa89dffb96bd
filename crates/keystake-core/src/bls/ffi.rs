//! Arithmetic in the BLS12-381 scalar field F_r, and signing split into its two halves — the
//! only raw `blst` FFI in the crate.
//!
//! blst's safe Rust API offers signing, verification and multi-scalar multiplication of points, but
//! no addition, multiplication or inversion of scalars, which Shamir splitting (evaluating a secret
//! polynomial) and Lagrange interpolation need. This module wraps the few `blst_fr_*` and
//! `blst_scalar_*` C functions it needs behind the safe [`Scalar`] type; no pointer leaves it.
//!
//! The safe API also signs only in one step (hash-to-G2 of the message, then the scalar
//! multiplication). [`MessagePoint`] holds the first half (`blst_hash_to_g2`, public data, so it
//! can be shared between keys signing the same root) and [`sign_message_point`] does the second
//! (`blst_sign_pk2_in_g1`), exactly the two calls blst's own `SecretKey::sign` makes, so the
//! signature is byte-identical.
//!
//! Refuses: non-canonical encodings (a big-endian value `>= r`) in
//! [`Scalar::from_be_bytes_canonical`]; inverting zero ([`Scalar::invert`] returns `None`).
//!
//! Every C function used here is constant-time in its inputs (blst's `blst_fr_inverse` is the
//! constant-time inversion; the faster `blst_fr_eucl_inverse` is deliberately not used), so a
//! [`Scalar`] may hold secret material such as polynomial coefficients and key shares.
#![allow(unsafe_code)]

use std::fmt;

use blst::{blst_fr, blst_p1, blst_p1_affine, blst_p2, blst_p2_affine, blst_scalar};
use zeroize::{Zeroize, Zeroizing};

/// An element of the scalar field F_r of BLS12-381 (`r` = the G1/G2 subgroup order).
///
/// It may hold a secret (a polynomial coefficient, a key share), so it is zeroized on drop, its
/// `Debug` is redacted and it is not `Copy`. Equality is deliberately not implemented; compare
/// [`Scalar::to_be_bytes`] where a test needs it.
pub struct Scalar {
    /// Montgomery form, always fully reduced below `r` (every blst `fr` operation keeps it so).
    value: blst_fr,
}

impl Scalar {
    /// The additive identity.
    pub fn zero() -> Self {
        Self {
            value: blst_fr::default(),
        }
    }

    /// The multiplicative identity.
    pub fn one() -> Self {
        Self::from_u64(1)
    }

    /// `value mod r` (a `u64` is always below `r`).
    pub fn from_u64(value: u64) -> Self {
        let limbs: [u64; 4] = [value, 0, 0, 0];
        let mut out = blst_fr::default();
        // SAFETY: `out` is a valid, exclusively borrowed `blst_fr`; `limbs` is a live array of the
        // four little-endian 64-bit limbs the C function reads.
        unsafe { blst::blst_fr_from_uint64(&mut out, limbs.as_ptr()) };
        Self { value: out }
    }

    /// Decode a 32-byte big-endian value, refusing anything `>= r` (zero is accepted).
    pub fn from_be_bytes_canonical(bytes: &[u8; 32]) -> Option<Self> {
        let mut raw = blst_scalar::default();
        // SAFETY: `raw` is a valid, exclusively borrowed `blst_scalar`; `bytes` points to exactly
        // the 32 readable bytes the C function reads.
        unsafe { blst::blst_scalar_from_bendian(&mut raw, bytes.as_ptr()) };
        // SAFETY: `raw` is a valid, initialised `blst_scalar`, only read.
        let canonical = unsafe { blst::blst_scalar_fr_check(&raw) };
        let result = if canonical {
            let mut out = blst_fr::default();
            // SAFETY: both pointers refer to valid, distinct, initialised values; `raw < r` was
            // just checked, which `blst_fr_from_scalar` expects.
            unsafe { blst::blst_fr_from_scalar(&mut out, &raw) };
            Some(Self { value: out })
        } else {
            None
        };
        raw.zeroize();
        result
    }

    /// The scalar of a secret key (always in `[1, r)`), without a round trip through bytes.
    pub(super) fn from_secret_key(key: &blst::min_pk::SecretKey) -> Self {
        // blst's safe conversion: a borrowed view of the key's canonical scalar, no copy.
        let raw: &blst_scalar = key.into();
        let mut out = blst_fr::default();
        // SAFETY: `out` is a valid, exclusively borrowed `blst_fr`; `raw` is a valid scalar below
        // `r` (blst only constructs secret keys in `[1, r)`).
        unsafe { blst::blst_fr_from_scalar(&mut out, raw) };
        Self { value: out }
    }

    /// 32-byte big-endian encoding (the form keys and the test vectors use).
    pub fn to_be_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut raw = blst_scalar::default();
        let mut out = Zeroizing::new([0u8; 32]);
        // SAFETY: all pointers refer to valid, initialised, distinct values; `out` has the 32
        // writable bytes `blst_bendian_from_scalar` writes.
        unsafe {
            blst::blst_scalar_from_fr(&mut raw, &self.value);
            blst::blst_bendian_from_scalar(out.as_mut_ptr(), &raw);
        }
        raw.zeroize();
        out
    }

    /// 32-byte little-endian encoding (the form blst's multi-scalar multiplication reads).
    pub fn to_le_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut raw = blst_scalar::default();
        // SAFETY: both pointers refer to valid, initialised, distinct values.
        unsafe { blst::blst_scalar_from_fr(&mut raw, &self.value) };
        // `blst_scalar` stores its value as little-endian bytes.
        let out = Zeroizing::new(raw.b);
        raw.zeroize();
        out
    }

    pub fn is_zero(&self) -> bool {
        // Fully reduced Montgomery form: zero is exactly the all-zero limbs.
        self.value.l.iter().fold(0u64, |acc, limb| acc | limb) == 0
    }

    /// `self + other mod r`.
    pub fn add(&self, other: &Scalar) -> Scalar {
        let mut out = blst_fr::default();
        // SAFETY: all three pointers refer to valid, initialised `blst_fr` values; `out` is
        // exclusively borrowed and distinct from the inputs.
        unsafe { blst::blst_fr_add(&mut out, &self.value, &other.value) };
        Scalar { value: out }
    }

    /// `self - other mod r`.
    pub fn sub(&self, other: &Scalar) -> Scalar {
        let mut out = blst_fr::default();
        // SAFETY: as in `add`.
        unsafe { blst::blst_fr_sub(&mut out, &self.value, &other.value) };
        Scalar { value: out }
    }

    /// `self * other mod r`.
    pub fn mul(&self, other: &Scalar) -> Scalar {
        let mut out = blst_fr::default();
        // SAFETY: as in `add`.
        unsafe { blst::blst_fr_mul(&mut out, &self.value, &other.value) };
        Scalar { value: out }
    }

    /// `self^-1 mod r`, or `None` for zero (which has no inverse).
    pub fn invert(&self) -> Option<Scalar> {
        if self.is_zero() {
            return None;
        }
        let mut out = blst_fr::default();
        // SAFETY: both pointers refer to valid, initialised, distinct `blst_fr` values.
        unsafe { blst::blst_fr_inverse(&mut out, &self.value) };
        Some(Scalar { value: out })
    }
}

impl Clone for Scalar {
    fn clone(&self) -> Self {
        // Both copies zeroize themselves on drop.
        Self { value: self.value }
    }
}

impl Drop for Scalar {
    fn drop(&mut self) {
        self.value.l.zeroize();
    }
}

impl fmt::Debug for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scalar(<redacted>)")
    }
}

/// `hash_to_G2(message)` under a domain separation tag (RFC 9380 `hash_to_curve`, the
/// `BLS12381G2_XMD:SHA-256_SSWU_RO_` suite blst implements): the message half of a signature.
/// Public data (it depends only on the message), about half the cost of a signature.
#[derive(Clone, Copy)]
pub struct MessagePoint {
    /// Jacobian coordinates, the form `blst_sign_pk2_in_g1` reads.
    point: blst_p2,
}

impl MessagePoint {
    /// Hash `message` to G2 under `dst`, with no augmentation (as `SecretKey::sign` does).
    pub fn hash(message: &[u8], dst: &[u8]) -> Self {
        let mut point = blst_p2::default();
        // SAFETY: `point` is a valid, exclusively borrowed `blst_p2`; `message` and `dst` are live
        // slices whose pointers and lengths are passed together; the augmentation is the empty
        // slice (a dangling-but-aligned pointer with length 0, which blst never reads).
        unsafe {
            blst::blst_hash_to_g2(
                &mut point,
                message.as_ptr(),
                message.len(),
                dst.as_ptr(),
                dst.len(),
                [].as_ptr(),
                0,
            )
        };
        Self { point }
    }
}

impl fmt::Debug for MessagePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessagePoint(..)")
    }
}

/// `key · point`: the signature of the message `point` was hashed from, as blst's
/// `SecretKey::sign` computes it (same C function, same affine conversion).
pub(super) fn sign_message_point(
    key: &blst::min_pk::SecretKey,
    point: &MessagePoint,
) -> blst::min_pk::Signature {
    // blst's safe conversion: a borrowed view of the key's canonical scalar, no copy.
    let raw: &blst_scalar = key.into();
    let mut signature = blst_p2_affine::default();
    // SAFETY: `signature` is a valid, exclusively borrowed `blst_p2_affine`; the serialized
    // output is not requested (null, which blst checks before writing); `point.point` is an
    // initialised `blst_p2` produced by `blst_hash_to_g2`; `raw` is a valid scalar in `[1, r)`.
    // blst's scalar multiplication here is constant-time in the key.
    unsafe { blst::blst_sign_pk2_in_g1(std::ptr::null_mut(), &mut signature, &point.point, raw) };
    blst::min_pk::Signature::from(signature)
}

/// A G1 point in projective coordinates, for the public-key arithmetic of Feldman commitments
/// (sums, evaluation "in the exponent" at a small index, random linear combinations).
///
/// Why here and not blst's safe `MultiPoint`: that API has no point addition or small-scalar
/// multiplication, and every `mult` call locks blst's global thread-pool mutex and, for fewer
/// than 32 points, fans the work out to every CPU and waits on a barrier — on a machine whose
/// cores are all busy (n appliances on two cores) that costs more than the arithmetic. Every
/// function here runs on the calling thread.
///
/// Only public values belong here: [`G1Point::mul_u64`] and [`g1_msm`] are variable-time in
/// their scalars. [`G1Point::mul`] (blst's constant-time ladder) is for a secret-free but full
/// 255-bit scalar such as a proof response.
#[derive(Clone, Copy)]
pub struct G1Point {
    point: blst_p1,
}

impl G1Point {
    /// The point at infinity (blst's all-zero projective point).
    pub fn infinity() -> Self {
        Self {
            point: blst_p1::default(),
        }
    }

    /// The generator of G1.
    pub fn generator() -> Self {
        // SAFETY: blst returns a pointer to its static, initialised generator.
        Self {
            point: unsafe { *blst::blst_p1_generator() },
        }
    }

    pub(super) fn from_affine(affine: &blst_p1_affine) -> Self {
        let mut point = blst_p1::default();
        // SAFETY: both are valid, initialised blst structures; `point` is exclusively borrowed.
        unsafe { blst::blst_p1_from_affine(&mut point, affine) };
        Self { point }
    }

    pub(super) fn to_affine(self) -> blst_p1_affine {
        let mut affine = blst_p1_affine::default();
        // SAFETY: as above.
        unsafe { blst::blst_p1_to_affine(&mut affine, &self.point) };
        affine
    }

    /// `self + other` (doubling when they are equal, as the formula requires).
    pub fn add(&self, other: &G1Point) -> G1Point {
        let mut out = blst_p1::default();
        // SAFETY: valid, initialised inputs; `out` is a distinct, exclusively borrowed output.
        unsafe { blst::blst_p1_add_or_double(&mut out, &self.point, &other.point) };
        Self { point: out }
    }

    /// `-self`.
    pub fn neg(&self) -> G1Point {
        let mut out = *self;
        // SAFETY: `out.point` is a valid, exclusively borrowed point negated in place.
        unsafe { blst::blst_p1_cneg(&mut out.point, true) };
        out
    }

    /// `x·self` for a small public `x` (a share index): as many doublings as `x` has bits.
    pub fn mul_u64(&self, x: u64) -> G1Point {
        let bits = (64 - x.leading_zeros()) as usize;
        if bits == 0 {
            return Self::infinity();
        }
        let bytes = x.to_le_bytes();
        let mut out = blst_p1::default();
        // SAFETY: `bytes` holds at least `bits` bits, little-endian, as blst reads them.
        unsafe { blst::blst_p1_mult(&mut out, &self.point, bytes.as_ptr(), bits) };
        Self { point: out }
    }

    /// `s·self` with blst's constant-time ladder over all 255 bits.
    pub fn mul(&self, s: &Scalar) -> G1Point {
        let bytes = s.to_le_bytes();
        let mut out = blst_p1::default();
        // SAFETY: `bytes` is 32 little-endian bytes, covering the 255 bits read.
        unsafe { blst::blst_p1_mult(&mut out, &self.point, bytes.as_ptr(), 255) };
        Self { point: out }
    }

    pub fn is_infinity(&self) -> bool {
        // SAFETY: a valid, initialised point.
        unsafe { blst::blst_p1_is_inf(&self.point) }
    }

    /// The 48-byte compressed encoding (infinity included: `0xc0 00…`).
    pub fn compress(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        // SAFETY: `out` is 48 writable bytes, the size of a compressed G1 point.
        unsafe { blst::blst_p1_compress(out.as_mut_ptr(), &self.point) };
        out
    }
}

impl PartialEq for G1Point {
    fn eq(&self, other: &Self) -> bool {
        // SAFETY: valid, initialised points; compares in projective coordinates.
        unsafe { blst::blst_p1_is_equal(&self.point, &other.point) }
    }
}

impl fmt::Debug for G1Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G1Point({})", hex::encode(self.compress()))
    }
}

/// Affine forms of many projective points with one field inversion (blst's batch conversion).
pub(super) fn g1_batch_affine(points: &[G1Point]) -> Vec<blst_p1_affine> {
    let mut out = vec![blst_p1_affine::default(); points.len()];
    if points.is_empty() {
        return out;
    }
    let pointers: Vec<*const blst_p1> = points.iter().map(|p| &p.point as *const blst_p1).collect();
    let mut terminated = pointers;
    terminated.push(std::ptr::null());
    // SAFETY: `terminated` lists `points.len()` valid points then a null (blst's array-of-
    // pointers convention); `out` has room for exactly that many affine points.
    unsafe { blst::blst_p1s_to_affine(out.as_mut_ptr(), terminated.as_ptr(), points.len()) };
    out
}

/// `Σ scalars[i]·points[i]` on the calling thread (blst's Pippenger with its own scratch), the
/// scalars `nbits` wide, little-endian, `(nbits+7)/8` bytes each. Variable-time: public
/// scalars (or random batch weights) only.
pub(super) fn g1_msm(points: &[blst_p1_affine], scalars: &[u8], nbits: usize) -> G1Point {
    let nbytes = nbits.div_ceil(8);
    assert!(scalars.len() >= nbytes * points.len(), "scalar bytes");
    match points.len() {
        0 => G1Point::infinity(),
        1 => {
            let mut out = blst_p1::default();
            let base = G1Point::from_affine(&points[0]);
            // SAFETY: `scalars` holds at least `nbits` bits for the one point.
            unsafe { blst::blst_p1_mult(&mut out, &base.point, scalars.as_ptr(), nbits) };
            G1Point { point: out }
        }
        npoints => {
            let p: [*const blst_p1_affine; 2] = [points.as_ptr(), std::ptr::null()];
            let s: [*const u8; 2] = [scalars.as_ptr(), std::ptr::null()];
            // SAFETY: blst's sizing function for the scratch of `npoints` points.
            let words = unsafe { blst::blst_p1s_mult_pippenger_scratch_sizeof(npoints) } / 8;
            let mut scratch = vec![0u64; words.max(1)];
            let mut out = blst_p1::default();
            // SAFETY: `p` and `s` are null-terminated one-element arrays pointing at `npoints`
            // contiguous affine points and `npoints·nbytes` contiguous scalar bytes (asserted);
            // `scratch` has the size blst asked for; `out` is exclusively borrowed.
            unsafe {
                blst::blst_p1s_mult_pippenger(
                    &mut out,
                    p.as_ptr(),
                    npoints,
                    s.as_ptr(),
                    nbits,
                    scratch.as_mut_ptr(),
                )
            };
            G1Point { point: out }
        }
    }
}

/// `Σ scalars[i]·points[i]` in G2 on the calling thread, the G2 twin of [`g1_msm`] (same scalar
/// layout, same reason for not using blst's pooled `MultiPoint::mult`: combining a handful of
/// partial signatures must not fan out to every CPU and wait on a barrier). Variable-time:
/// public scalars (Lagrange coefficients) or random batch weights only. Returns the affine sum;
/// [`g2_is_infinity`] tells whether it is the point at infinity.
pub(super) fn g2_msm(points: &[blst_p2_affine], scalars: &[u8], nbits: usize) -> blst_p2_affine {
    let nbytes = nbits.div_ceil(8);
    assert!(scalars.len() >= nbytes * points.len(), "scalar bytes");
    let mut out = blst_p2::default();
    match points.len() {
        0 => {}
        1 => {
            let mut base = blst_p2::default();
            // SAFETY: valid, initialised affine input; `base` is exclusively borrowed.
            unsafe { blst::blst_p2_from_affine(&mut base, &points[0]) };
            // SAFETY: `scalars` holds at least `nbits` bits for the one point (asserted).
            unsafe { blst::blst_p2_mult(&mut out, &base, scalars.as_ptr(), nbits) };
        }
        npoints => {
            let p: [*const blst_p2_affine; 2] = [points.as_ptr(), std::ptr::null()];
            let s: [*const u8; 2] = [scalars.as_ptr(), std::ptr::null()];
            // SAFETY: blst's sizing function for the scratch of `npoints` points.
            let words = unsafe { blst::blst_p2s_mult_pippenger_scratch_sizeof(npoints) } / 8;
            let mut scratch = vec![0u64; words.max(1)];
            // SAFETY: `p` and `s` are null-terminated one-element arrays pointing at `npoints`
            // contiguous affine points and `npoints·nbytes` contiguous scalar bytes (asserted);
            // `scratch` has the size blst asked for; `out` is exclusively borrowed.
            unsafe {
                blst::blst_p2s_mult_pippenger(
                    &mut out,
                    p.as_ptr(),
                    npoints,
                    s.as_ptr(),
                    nbits,
                    scratch.as_mut_ptr(),
                )
            };
        }
    }
    let mut affine = blst_p2_affine::default();
    // SAFETY: `out` is a valid, initialised point; `affine` is exclusively borrowed.
    unsafe { blst::blst_p2_to_affine(&mut affine, &out) };
    affine
}

/// Whether an affine G2 point is the point at infinity.
pub(super) fn g2_is_infinity(point: &blst_p2_affine) -> bool {
    // SAFETY: a valid, initialised affine point.
    unsafe { blst::blst_p2_affine_is_inf(point) }
}

/// Property tests: every operation agrees with arbitrary-precision arithmetic mod `r`
/// (`num-bigint`), so a wrong limb, a wrong modulus or a Montgomery slip shows up here.
#[cfg(test)]
mod tests {
    use num_bigint::BigUint;
    use proptest::prelude::*;

    use super::Scalar;

    /// The BLS12-381 subgroup order, written out independently of blst.
    const R_HEX: &str = "73eda753299d7d483339d80809a1d80553bda402fffe5bfeffffffff00000001";

    fn r() -> BigUint {
        BigUint::parse_bytes(R_HEX.as_bytes(), 16).unwrap()
    }

    fn big(bytes: &[u8; 32]) -> BigUint {
        BigUint::from_bytes_be(bytes)
    }

    /// 32 big-endian bytes of `value` (which must be below 2^256).
    fn be32(value: &BigUint) -> [u8; 32] {
        let digits = value.to_bytes_be();
        let mut out = [0u8; 32];
        out[32 - digits.len()..].copy_from_slice(&digits);
        out
    }

    fn to_big(scalar: &Scalar) -> BigUint {
        big(&scalar.to_be_bytes())
    }

    /// A reference value in `[0, r)` and the scalar decoded from it.
    fn scalar(value: &BigUint) -> Scalar {
        Scalar::from_be_bytes_canonical(&be32(value)).expect("a value below r decodes")
    }

    /// Field elements: uniform-ish values reduced mod r, mixed with the edges 0, 1, r-1, r-2.
    fn element() -> impl Strategy<Value = BigUint> {
        prop_oneof![
            4 => any::<[u8; 32]>().prop_map(|bytes| big(&bytes) % r()),
            1 => (0u64..4).prop_map(|k| (r() - 1u32 - k) % r()),
            1 => (0u64..4).prop_map(BigUint::from),
        ]
    }

    /// 32-byte strings around and above `r` as well as arbitrary ones.
    fn encoding() -> impl Strategy<Value = [u8; 32]> {
        let max = (BigUint::from(1u32) << 256u32) - 1u32;
        prop_oneof![
            2 => any::<[u8; 32]>(),
            1 => (0u64..8).prop_map(|k| be32(&(r() - 4u32 + k))),
            1 => (0u64..4).prop_map(move |k| be32(&(&max - k))),
        ]
    }

    proptest! {
        #[test]
        fn add_matches_reference(a in element(), b in element()) {
            prop_assert_eq!(to_big(&scalar(&a).add(&scalar(&b))), (&a + &b) % r());
        }

        #[test]
        fn sub_matches_reference(a in element(), b in element()) {
            prop_assert_eq!(to_big(&scalar(&a).sub(&scalar(&b))), (&a + r() - &b) % r());
        }

        #[test]
        fn mul_matches_reference(a in element(), b in element()) {
            prop_assert_eq!(to_big(&scalar(&a).mul(&scalar(&b))), (&a * &b) % r());
        }

        #[test]
        fn inverse_matches_reference(a in element()) {
            let x = scalar(&a);
            match x.invert() {
                None => prop_assert_eq!(&a, &BigUint::from(0u32)),
                Some(inverse) => {
                    // Fermat: a^(r-2) is the inverse of a non-zero a.
                    prop_assert_eq!(to_big(&inverse), a.modpow(&(r() - 2u32), &r()));
                    prop_assert_eq!(to_big(&x.mul(&inverse)), BigUint::from(1u32));
                }
            }
        }

        #[test]
        fn from_u64_matches_reference(value in any::<u64>()) {
            prop_assert_eq!(to_big(&Scalar::from_u64(value)), BigUint::from(value));
        }

        #[test]
        fn canonical_decoding_round_trips_below_r_only(bytes in encoding()) {
            let decoded = Scalar::from_be_bytes_canonical(&bytes);
            if big(&bytes) < r() {
                let decoded = decoded.expect("a value below r decodes");
                prop_assert_eq!(*decoded.to_be_bytes(), bytes);
                let mut little = bytes;
                little.reverse();
                prop_assert_eq!(*decoded.to_le_bytes(), little);
                prop_assert_eq!(decoded.is_zero(), big(&bytes) == BigUint::from(0u32));
            } else {
                prop_assert!(decoded.is_none(), "accepted {}", hex::encode(bytes));
            }
        }
    }

    #[test]
    fn decoding_edges() {
        let order = be32(&r());
        assert!(Scalar::from_be_bytes_canonical(&order).is_none());
        assert!(Scalar::from_be_bytes_canonical(&[0xff; 32]).is_none());
        let below = be32(&(r() - 1u32));
        let decoded = Scalar::from_be_bytes_canonical(&below).expect("r - 1 decodes");
        assert_eq!(*decoded.to_be_bytes(), below);
        // (r - 1) + 1 wraps to zero; zero has no inverse.
        assert!(decoded.add(&Scalar::one()).is_zero());
        assert!(Scalar::zero().invert().is_none());
    }
}
