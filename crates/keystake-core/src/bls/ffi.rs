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
//! For combining partial signatures it also exposes blst's two-step Straus multiplication
//! ([`G2Table`]: the table of multiples built once, read by several sums over the same points),
//! which the safe API hides inside `MultiPoint::mult`.
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

/// Width of one window of the fixed-base table, in bits: 5 balances the table's size (52 rows of
/// 16 points, 160 KiB), its build cost (about eight signatures) and the constant-time scan of a
/// row on every signature (16 points).
const TABLE_WINDOW_BITS: usize = 5;
/// Points per row: the multiples `1..=2^(w-1)` of the row's base (signed digits cover the rest).
const TABLE_ROW: usize = 1 << (TABLE_WINDOW_BITS - 1);
/// Rows: enough windows for a 255-bit scalar plus the carry out of its top signed digit.
const TABLE_WINDOWS: usize = 256 / TABLE_WINDOW_BITS + 1;

/// The first windows, whose additions use blst's mixed addition without the doubling case
/// (7M+4S instead of 8M+5S, about a tenth of a signature): it handles either input at infinity
/// by masks but computes garbage for `acc = ±entry`, which cannot happen there. Before window
/// `i` the accumulator is `S·H` with `|S| = |Σ_{k<i} d_k·2^(5k)| ≤ 16·(2^(5i)-1)/31 < 2^(5i)`
/// and the entry is `d_i·2^(5i)·H` with `2^(5i) ≤ |d_i·2^(5i)| ≤ 2^(5i+4)`; while
/// `2^(5i+5) < r` (`i ≤ 49`: `2^250 < r ≈ 2^254.9`) both sides are integers below r/2 in
/// absolute value, so `S ≡ ±d_i·2^(5i) (mod r)` would need `S = ±d_i·2^(5i)`, impossible as
/// `|S| < 2^(5i) ≤ |d_i·2^(5i)|` (a zero digit is the point at infinity, which is handled;
/// `the_incomplete_addition_bound_holds` checks the inequality for every such window). The two
/// top windows are safe too by a finer argument (window 50: `|S| + |e| < 2^254.05 < r`; window
/// 51 holds the carry only), but keep the complete addition, which does not depend on it and
/// costs two additions' difference. Whether the cheaper addition is used depends only on the
/// (public) window index.
const TABLE_INCOMPLETE_ADD_WINDOWS: usize = 50;

/// A fixed-base table for one message point `H`: row `i` holds `j·2^(5i)·H` for `j = 1..=16`,
/// in affine form. With it a signature costs one constant-time row scan and one complete
/// point addition per 5 bits of the key — no doublings — instead of a full variable-base
/// scalar multiplication: the table is built once per message and then shared by every key
/// that signs it (on mainnet, every attester of a slot).
///
/// Public data, like the point it comes from. What must not leak is which entry a signature
/// uses (that is the key), so [`sign_with_table`] reads every entry of every row and combines
/// them with masks; the addition is blst's complete, constant-time mixed addition.
pub struct MessageTable {
    /// `TABLE_WINDOWS` rows of `TABLE_ROW` points, row-major.
    entries: Box<[blst_p2_affine]>,
}

impl MessageTable {
    /// Heap bytes one table takes.
    pub const BYTES: usize = TABLE_WINDOWS * TABLE_ROW * std::mem::size_of::<blst_p2_affine>();

    /// The table of `point`.
    pub fn build(point: &MessagePoint) -> Self {
        let mut projective = Vec::with_capacity(TABLE_WINDOWS * TABLE_ROW);
        let mut base = point.point;
        for _ in 0..TABLE_WINDOWS {
            let mut multiple = base;
            projective.push(multiple);
            for _ in 1..TABLE_ROW {
                let mut next = blst_p2::default();
                // SAFETY: valid, initialised points; `next` is exclusively borrowed.
                unsafe { blst::blst_p2_add_or_double(&mut next, &multiple, &base) };
                multiple = next;
                projective.push(multiple);
            }
            // The next row's base is 2^w·base = 2·(2^(w-1)·base), the last multiple doubled.
            // SAFETY: valid, initialised point; `base` is exclusively borrowed.
            unsafe { blst::blst_p2_double(&mut base, &multiple) };
        }
        let mut entries = vec![blst_p2_affine::default(); projective.len()].into_boxed_slice();
        let mut pointers: Vec<*const blst_p2> =
            projective.iter().map(|p| p as *const blst_p2).collect();
        pointers.push(std::ptr::null());
        // SAFETY: `pointers` lists `projective.len()` valid points then a null (blst's
        // array-of-pointers convention); `entries` has room for exactly that many.
        unsafe {
            blst::blst_p2s_to_affine(entries.as_mut_ptr(), pointers.as_ptr(), projective.len())
        };
        Self { entries }
    }

    fn row(&self, window: usize) -> &[blst_p2_affine] {
        &self.entries[window * TABLE_ROW..(window + 1) * TABLE_ROW]
    }
}

impl fmt::Debug for MessageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageTable(..)")
    }
}

/// The key's signed radix-2^w digits `d_i ∈ [-2^(w-1), 2^(w-1))`, `Σ d_i·2^(wi) = key`, computed
/// without a branch or a secret-indexed access (shifts and adds on the key's bits only).
fn signed_digits(key: &blst_scalar) -> Zeroizing<[i8; TABLE_WINDOWS]> {
    let mut limbs = Zeroizing::new([0u64; 5]);
    for (limb, bytes) in limbs.iter_mut().zip(key.b.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(bytes);
        *limb = u64::from_le_bytes(word);
        word.zeroize();
    }
    let mut digits = Zeroizing::new([0i8; TABLE_WINDOWS]);
    let mut carry: i64 = 0;
    let mask = (1u64 << TABLE_WINDOW_BITS) - 1;
    for (i, digit) in digits.iter_mut().enumerate() {
        // Bit positions are public; only the bits' values are secret.
        let bit = i * TABLE_WINDOW_BITS;
        let (limb, shift) = (bit / 64, bit % 64);
        let mut window = limbs[limb] >> shift;
        if shift + TABLE_WINDOW_BITS > 64 {
            window |= limbs[limb + 1] << (64 - shift);
        }
        let value = (window & mask) as i64 + carry;
        carry = (value + (1 << (TABLE_WINDOW_BITS - 1))) >> TABLE_WINDOW_BITS;
        *digit = (value - (carry << TABLE_WINDOW_BITS)) as i8;
    }
    // A scalar below 2^255 leaves no carry out of the top row (the extra row absorbs it).
    debug_assert_eq!(carry, 0);
    digits
}

/// Copy into `out` the entry `index` (1-based) of `row`, or the point at infinity (all zero)
/// for index 0, reading every entry: the memory access pattern does not depend on `index`.
fn select_entry(out: &mut blst_p2_affine, row: &[blst_p2_affine], index: u8) {
    use subtle::{ConditionallySelectable, ConstantTimeEq};
    let mut acc = [[0u64; 6]; 4];
    for (j, entry) in row.iter().enumerate() {
        let hit = (j as u8 + 1).ct_eq(&index);
        let mask = u64::conditional_select(&0, &u64::MAX, hit);
        let limbs = [
            &entry.x.fp[0].l,
            &entry.x.fp[1].l,
            &entry.y.fp[0].l,
            &entry.y.fp[1].l,
        ];
        for (a, l) in acc.iter_mut().zip(limbs) {
            for (a, l) in a.iter_mut().zip(l.iter()) {
                *a |= l & mask;
            }
        }
    }
    out.x.fp[0].l = acc[0];
    out.x.fp[1].l = acc[1];
    out.y.fp[0].l = acc[2];
    out.y.fp[1].l = acc[3];
    acc.zeroize();
}

/// `key · H` through `H`'s [`MessageTable`]: the same signature as [`sign_message_point`] on
/// `H` (a point has one affine form), in roughly half its time. Constant-time in the key: the
/// digits are recoded without branches, every row is scanned whole, the conditional negation
/// is blst's masked `cneg`, and blst's mixed addition is complete (it handles the point at
/// infinity, doubling and `P + (-P)` by masks, not branches).
pub(super) fn sign_with_table(
    key: &blst::min_pk::SecretKey,
    table: &MessageTable,
) -> blst::min_pk::Signature {
    let raw: &blst_scalar = key.into();
    let digits = signed_digits(raw);
    let mut acc = blst_p2::default(); // Z = 0: the point at infinity
    let mut entry = blst_p2_affine::default();
    for (window, &digit) in digits.iter().enumerate() {
        let negative = (digit >> 7) & 1; // 1 when the digit is negative, by arithmetic shift
        let magnitude = ((digit ^ -negative) + negative) as u8; // |digit| without a branch
        select_entry(&mut entry, table.row(window), magnitude);
        let y: *mut blst::blst_fp2 = &mut entry.y;
        // SAFETY: `entry.y` is a valid field element, negated in place (blst reads each limb
        // before writing it; one raw pointer, no Rust reference live across the call, and no
        // copy of the selected coordinate left behind); negating zero (the infinity entry) is
        // never asked for, since a zero digit is never negative.
        unsafe { blst::blst_fp2_cneg(y, y, negative == 1) };
        let acc_ptr: *mut blst_p2 = &mut acc;
        if window < TABLE_INCOMPLETE_ADD_WINDOWS {
            // SAFETY: as below. The addition without the doubling case is correct here:
            // see `TABLE_INCOMPLETE_ADD_WINDOWS` for why `acc = ±entry` cannot happen.
            unsafe { blst::blst_p2_add_affine(acc_ptr, acc_ptr, &entry) };
        } else {
            // SAFETY: `acc` and `entry` are valid, initialised points; blst's addition writes
            // its output only after reading its inputs, so `acc` may be both input and output
            // (passed as the same raw pointer, no Rust reference to it is live across the call).
            unsafe { blst::blst_p2_add_or_double_affine(acc_ptr, acc_ptr, &entry) };
        }
    }
    // `blst_p2_to_affine` skips the inversion when Z is already one, which happens for keys
    // with a single nonzero digit: a branch on the key. The Jacobian conversion always inverts
    // (constant-time inversion), as blst's own signing does.
    let mut normalized = blst_p2::default();
    // SAFETY: `acc` is a valid, initialised point; `normalized` is exclusively borrowed.
    unsafe { blst::blst_p2_from_jacobian(&mut normalized, &acc) };
    let signature = blst_p2_affine {
        x: normalized.x,
        y: normalized.y,
    };
    wipe_p2(&mut acc);
    for fp in entry.x.fp.iter_mut().chain(entry.y.fp.iter_mut()) {
        fp.l.zeroize();
    }
    blst::min_pk::Signature::from(signature)
}

/// Zero a projective G2 point that held a secret-dependent intermediate.
fn wipe_p2(point: &mut blst_p2) {
    for fp in point
        .x
        .fp
        .iter_mut()
        .chain(point.y.fp.iter_mut())
        .chain(point.z.fp.iter_mut())
    {
        fp.l.zeroize();
    }
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

/// Width of the windows of a [`G2Table`]: 5 bits (16 multiples per point). The table is
/// built once and read by two multiplications (the 255-bit interpolation and the 64-bit batch
/// weights, [`crate::bls::interpolate_and_verify_batch`]); against blst's own choice for a
/// single multiplication of fewer than 32 points (4 bits, 8 multiples) the wider window costs
/// 8 more additions per point to build and saves about a fifth of the additions of both.
pub(super) const G2_TABLE_WBITS: usize = 5;

/// Below this many points a [`G2Table`] (Straus, shared doublings) beats blst's bucket
/// Pippenger; blst switches at the same count.
pub(super) const G2_TABLE_MAX_POINTS: usize = 32;

/// The multiples `1..=2^(w-1)` of each of a few G2 points, affine, one row per point (blst's
/// `blst_p2s_mult_wbits_precompute`): the part of a Straus multi-scalar multiplication that
/// depends on the points only, so several multiplications over the same points build it once.
pub(super) struct G2Table {
    entries: Vec<blst_p2_affine>,
    npoints: usize,
}

impl G2Table {
    /// The table of `points` (every one a valid, initialised affine point).
    pub(super) fn build(points: &[blst_p2_affine]) -> Self {
        let npoints = points.len();
        let mut entries = vec![blst_p2_affine::default(); npoints << (G2_TABLE_WBITS - 1)];
        if npoints > 0 {
            let p: [*const blst_p2_affine; 2] = [points.as_ptr(), std::ptr::null()];
            // SAFETY: `p` is a null-terminated one-element array pointing at `npoints`
            // contiguous affine points (blst then reads them consecutively); `entries` holds
            // exactly the `npoints << (wbits-1)` affine points blst writes; wbits is in blst's
            // range [2, 14].
            unsafe {
                blst::blst_p2s_mult_wbits_precompute(
                    entries.as_mut_ptr(),
                    G2_TABLE_WBITS,
                    p.as_ptr(),
                    npoints,
                )
            };
        }
        Self { entries, npoints }
    }

    /// `Σ scalars[i]·points[i]` over the first `npoints` points of the table, the scalars
    /// `nbits` wide, little-endian, `(nbits+7)/8` bytes each, as a projective point (infinity
    /// possible). Variable-time: public scalars or random batch weights only.
    pub(super) fn msm(&self, npoints: usize, scalars: &[u8], nbits: usize) -> G2Projective {
        assert!(npoints <= self.npoints, "table rows");
        assert!(scalars.len() >= nbits.div_ceil(8) * npoints, "scalar bytes");
        let mut out = blst_p2::default();
        if npoints > 0 {
            let s: [*const u8; 2] = [scalars.as_ptr(), std::ptr::null()];
            // SAFETY: `entries` holds the rows of at least `npoints` points (asserted) built by
            // `blst_p2s_mult_wbits_precompute` with the same wbits; `s` is a null-terminated
            // one-element array pointing at `npoints·nbytes` contiguous scalar bytes
            // (asserted); a null scratch makes blst use its own stack scratch; `out` is
            // exclusively borrowed.
            unsafe {
                blst::blst_p2s_mult_wbits(
                    &mut out,
                    self.entries.as_ptr(),
                    G2_TABLE_WBITS,
                    npoints,
                    s.as_ptr(),
                    nbits,
                    std::ptr::null_mut(),
                )
            };
        }
        G2Projective { point: out }
    }
}

/// A G2 point in projective (Jacobian) coordinates, as a multiplication leaves it: added to
/// another before the one conversion to affine a pairing needs.
#[derive(Clone, Copy)]
pub(super) struct G2Projective {
    point: blst_p2,
}

impl G2Projective {
    pub(super) fn from_affine(affine: &blst_p2_affine) -> Self {
        let mut point = blst_p2::default();
        // SAFETY: a valid, initialised affine input; `point` is exclusively borrowed.
        unsafe { blst::blst_p2_from_affine(&mut point, affine) };
        Self { point }
    }

    /// `self + other` (doubling when they are equal).
    pub(super) fn add(&self, other: &G2Projective) -> G2Projective {
        let mut out = blst_p2::default();
        // SAFETY: valid, initialised inputs; `out` is a distinct, exclusively borrowed output.
        unsafe { blst::blst_p2_add_or_double(&mut out, &self.point, &other.point) };
        G2Projective { point: out }
    }

    pub(super) fn to_affine(self) -> blst_p2_affine {
        let mut affine = blst_p2_affine::default();
        // SAFETY: `self.point` is a valid, initialised point; `affine` is exclusively borrowed.
        unsafe { blst::blst_p2_to_affine(&mut affine, &self.point) };
        affine
    }
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
    use super::{signed_digits, MessagePoint, MessageTable, TABLE_WINDOWS, TABLE_WINDOW_BITS};
    use crate::bls::{SecretKey, DST};

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

    /// `Σ d_i·2^(5i)` over the recoded digits, in signed arbitrary precision.
    fn from_digits(digits: &[i8]) -> num_bigint::BigInt {
        digits
            .iter()
            .rev()
            .fold(num_bigint::BigInt::from(0), |acc, &d| {
                (acc << TABLE_WINDOW_BITS) + num_bigint::BigInt::from(d)
            })
    }

    fn blst_scalar_of(value: &BigUint) -> blst::blst_scalar {
        let mut little = be32(value);
        little.reverse();
        blst::blst_scalar { b: little }
    }

    /// Keys whose digits hit every edge of the recoding: the smallest, the largest, runs of
    /// zero digits, digits of exactly ±16 and carries rippling into the extra top row.
    fn edge_keys() -> Vec<BigUint> {
        let one = BigUint::from(1u32);
        let mut keys = vec![
            one.clone(),
            BigUint::from(2u32),
            BigUint::from(15u32),
            BigUint::from(16u32),
            BigUint::from(17u32),
            BigUint::from(31u32),
            BigUint::from(32u32),
            BigUint::from(33u32),
            r() - 1u32,
            r() - 2u32,
            (one.clone() << 255u32) - r(),
            (one.clone() << 256u32) % r(),
            one.clone() << 250u32,
            one.clone() << 254u32,
            (one.clone() << 254u32) - 1u32,
        ];
        // Every window 0b10000 (digit +16 becomes -16 with a carry), and every window 0b11111.
        let mut sixteen = BigUint::from(0u32);
        let mut ones = BigUint::from(0u32);
        for i in 0..50u32 {
            sixteen |= BigUint::from(16u32) << (5 * i);
            ones |= BigUint::from(31u32) << (5 * i);
        }
        keys.push(sixteen);
        keys.push(ones);
        keys
    }

    fn table_signature_matches_blst(table: &MessageTable, root: &[u8; 32], key: &BigUint) {
        let key = SecretKey::from_bytes(&be32(key)).expect("a valid key");
        assert_eq!(key.sign_with_table(table), key.sign(root), "{key:?}");
    }

    #[test]
    fn table_signatures_are_blsts_on_the_edges() {
        let root = [0x3c; 32];
        let table = MessageTable::build(&MessagePoint::hash(&root, DST));
        for key in edge_keys() {
            let digits = signed_digits(&blst_scalar_of(&key));
            assert_eq!(from_digits(&digits[..]), key.clone().into(), "{key:x}");
            table_signature_matches_blst(&table, &root, &key);
        }
    }

    /// The inequality `TABLE_INCOMPLETE_ADD_WINDOWS` rests on: before window `i`, the largest
    /// accumulator multiple plus the largest entry multiple stays below r, and the accumulator
    /// stays below the smallest nonzero entry.
    #[test]
    fn the_incomplete_addition_bound_holds() {
        for i in 0..super::TABLE_INCOMPLETE_ADD_WINDOWS as u32 {
            let base = BigUint::from(1u32) << (TABLE_WINDOW_BITS as u32 * i);
            let half_row = BigUint::from(1u32 << (TABLE_WINDOW_BITS - 1));
            let accumulator = (&base - 1u32) * &half_row / ((1u32 << TABLE_WINDOW_BITS) - 1);
            let entry = &base * &half_row;
            assert!(accumulator < base, "window {i}");
            assert!(&accumulator + &entry < r(), "window {i}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn signed_digits_recompose_the_key(key in element()) {
            let digits = signed_digits(&blst_scalar_of(&key));
            prop_assert_eq!(digits.len(), TABLE_WINDOWS);
            prop_assert!(digits.iter().all(|&d| (-16..16).contains(&d)), "{:?}", &digits[..]);
            prop_assert_eq!(from_digits(&digits[..]), key.into());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn table_signatures_are_blsts(root in any::<[u8; 32]>(), keys in proptest::collection::vec(element(), 4)) {
            let table = MessageTable::build(&MessagePoint::hash(&root, DST));
            for key in keys.iter().filter(|k| **k != BigUint::from(0u32)) {
                table_signature_matches_blst(&table, &root, key);
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
