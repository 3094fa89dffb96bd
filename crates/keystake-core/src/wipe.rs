//! Overwriting the stack below the caller after secret work (issue 17 item 14).
//!
//! Moving a value in Rust is a `memcpy` that leaves the old bytes behind; constructors that
//! return a secret by value (blst's `SecretKey::from_bytes`, `to_bytes`, the scalar arithmetic)
//! and the callee frames of signing and decryption leave copies of key material in stack slots
//! that nothing wipes. Those frames sit *below* the caller once the work returns, so a call here,
//! made right after the work, overwrites them with zeros (volatile writes, which the optimiser
//! may not drop).
//!
//! What it refuses: nothing; it cannot reach frames above its caller, so callers wipe at the
//! shallowest point where the secret work is over (the end of a blocking-pool closure, a worker
//! thread's loop body).
#![forbid(unsafe_code)]

use zeroize::Zeroize;

/// How much stack below the caller is overwritten: the deepest secret-handling call chain
/// (keystore decryption with scrypt/PBKDF2, blst signing) stays well inside it.
pub const STACK_WIPE_BYTES: usize = 64 * 1024;

/// Overwrite [`STACK_WIPE_BYTES`] of stack below the caller's frame with zeros.
#[inline(never)]
pub fn wipe_stack() {
    // Words, not bytes: the same bytes overwritten with an eighth of the volatile stores
    // (zeroize writes element by element), ~8× faster on the signing path's every request.
    let mut scratch = [u64::MAX; STACK_WIPE_BYTES / 8];
    scratch.zeroize();
    std::hint::black_box(&scratch);
}

#[cfg(test)]
mod tests {
    #[test]
    fn wiping_returns() {
        super::wipe_stack();
    }
}
