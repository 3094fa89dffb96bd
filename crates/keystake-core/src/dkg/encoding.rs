//! Canonical binary encoding (for hashes that independent parties must agree on: the ceremony id,
//! the lock hash, message digests) and a deterministic stream of randomness from a sealed seed.
//!
//! The encoding is a domain tag followed by length-prefixed fields (u32 big-endian lengths, u64
//! big-endian integers), so no two different field lists encode alike. JSON is never hashed: two
//! writers of the same definition may order or space it differently.
//!
//! [`SeedStream`] expands a 32-byte seed into a labelled stream: block `k` of label `L` is
//! `SHA-256("keystake-dkg-seed-v1" ‖ seed ‖ len(L) ‖ L ‖ k)`. Every secret a dealer draws (each
//! polynomial, each proof nonce, each ephemeral key) comes from its own label, so a restarted
//! appliance re-derives identical deals from the one sealed seed, and revealing one ephemeral key
//! reveals nothing about another or about the polynomials (SHA-256 as a PRF).
#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// Builder of a canonical encoding, hashed with SHA-256.
pub(crate) struct Canonical {
    hasher: Sha256,
}

impl Canonical {
    pub(crate) fn new(tag: &str) -> Self {
        let mut out = Self {
            hasher: Sha256::new(),
        };
        out.bytes(tag.as_bytes());
        out
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        // Lengths are bounded by the message size limits far below 4 GiB.
        let len = u32::try_from(value.len()).unwrap_or(u32::MAX);
        self.hasher.update(len.to_be_bytes());
        self.hasher.update(value);
        self
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.hasher.update(value.to_be_bytes());
        self
    }

    pub(crate) fn u32(&mut self, value: u32) -> &mut Self {
        self.hasher.update(value.to_be_bytes());
        self
    }

    pub(crate) fn finish(&self) -> [u8; 32] {
        self.hasher.clone().finalize().into()
    }
}

/// A deterministic, labelled randomness stream from a secret seed (a `CryptoRng`: SHA-256 in
/// counter mode keyed by the seed). Not `Clone`, not `Debug`-printable, wiped on drop.
pub struct SeedStream {
    seed: Zeroizing<[u8; 32]>,
    label: Vec<u8>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl SeedStream {
    pub fn new(seed: &[u8; 32], label: &[u8]) -> Self {
        Self {
            seed: Zeroizing::new(*seed),
            label: label.to_vec(),
            counter: 0,
            block: Zeroizing::new([0u8; 32]),
            used: 32,
        }
    }

    fn refill(&mut self) {
        let mut hasher = Sha256::new();
        hasher.update(b"keystake-dkg-seed-v1");
        hasher.update(self.seed.as_slice());
        hasher.update((self.label.len() as u64).to_be_bytes());
        hasher.update(&self.label);
        hasher.update(self.counter.to_be_bytes());
        let mut digest: [u8; 32] = hasher.finalize().into();
        self.block.copy_from_slice(&digest);
        digest.zeroize();
        self.counter += 1;
        self.used = 0;
    }
}

impl std::fmt::Debug for SeedStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SeedStream(<redacted>)")
    }
}

impl rand_core::RngCore for SeedStream {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest.iter_mut() {
            if self.used == 32 {
                self.refill();
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for SeedStream {}

/// SHA-256 of `bytes`.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}
