//! A bounded cache of checked share-key sets ([`ShareKeys`]) for combiners whose callers send
//! the share public keys with every request (gRPC `Combine`).
//!
//! A DVT middleware combines every signature of a validator with the same `t`, group key and
//! share keys. Decoding and subgroup-checking those keys is the part of a verified combine the
//! optimistic one never does (about 0.6 M instructions per key, a fifth of a 16-partial combine):
//! here a key set is checked once ([`ShareKeys::verify`], which also requires every key on one
//! polynomial through the group key) and later combines of it go through
//! [`combine_with_keys`].
//!
//! Keyed by a SHA-256 digest of (t, group key, share keys in index order), so two different sets
//! never share an entry. Only sets of at most [`MAX_CACHED_SET_KEYS`] keys are cached (far above
//! any real cluster): a larger set is combined the stateless way ([`combine`]) without being
//! checked first, so a client cannot make a call cost more than the stateless combine by more
//! than the check of a small set. A set that fails the check (a key that does not decode, keys
//! off one polynomial, fewer than `t`) is combined statelessly too, with exactly [`combine`]'s
//! answers, and its digest is remembered (at most [`MAX_REFUSED_SETS`]) so that sending it again
//! does not repeat the check.
//!
//! Bounded by the memory held: each set counts its keys plus [`SET_OVERHEAD_KEYS`] for its
//! entry, against [`ShareKeysCache::max_keys`] ([`BYTES_PER_KEY`] bytes per unit, about); the
//! least recently used sets are dropped first (O(log n) per insertion).
//!
//! Refuses: nothing of its own — the bounds and errors are [`combine`]'s and
//! [`combine_with_keys`]'s. Pure: `std::sync` only, no I/O; everything cached is public.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{combine, combine_with_keys, Combined, ShareKeys, ThresholdError};
use crate::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};

/// Default bound on what is held, in keys (see [`SET_OVERHEAD_KEYS`]): 65,536, about 7 MiB —
/// 5,900 validators with four shares each, or 2,800 with sixteen.
pub const DEFAULT_MAX_KEYS: usize = 65_536;

/// Memory one counted key takes, about: the decoded affine point (96 bytes) and its index.
pub const BYTES_PER_KEY: usize = 104;

/// What a set's own entry costs, counted as this many keys: the shared `ShareKeys` (threshold,
/// group key, vector header, reference counts), its map entry and its place in the age order —
/// about 700 bytes measured (resident memory of a full cache of one-key sets).
pub const SET_OVERHEAD_KEYS: usize = 7;

/// Largest set that is checked and cached (more operators than any real cluster has); larger
/// sets get the stateless combine directly. The first combine of a set pays its check: at this
/// size (11-of-16, release build) a consistent set's check took 4.4 ms against 5.3 ms for a
/// stateless combine, and a first call with an inconsistent set 9–12 ms against 4.6–4.8 ms, so a
/// client that sends ever new sets costs the appliance at most two to three times what a
/// stateless combine costs.
pub const MAX_CACHED_SET_KEYS: usize = 16;

/// Digests of sets that failed the check, remembered at most (32 bytes each, plus the map).
pub const MAX_REFUSED_SETS: usize = 4_096;

/// See the module documentation.
pub struct ShareKeysCache {
    inner: Mutex<Inner>,
}

struct Inner {
    checked: Lru<Arc<ShareKeys>>,
    refused: Lru<()>,
}

/// Entries by digest, each with a size; the least recently used dropped beyond `capacity`.
struct Lru<V> {
    capacity: usize,
    held: usize,
    tick: u64,
    entries: HashMap<[u8; 32], (V, usize, u64)>,
    by_age: BTreeMap<u64, [u8; 32]>,
}

impl<V: Clone> Lru<V> {
    fn new(capacity: usize) -> Self {
        Lru {
            capacity,
            held: 0,
            tick: 0,
            entries: HashMap::new(),
            by_age: BTreeMap::new(),
        }
    }

    fn get(&mut self, digest: &[u8; 32]) -> Option<V> {
        self.tick += 1;
        let (value, _, last_used) = self.entries.get_mut(digest)?;
        self.by_age.remove(last_used);
        *last_used = self.tick;
        self.by_age.insert(self.tick, *digest);
        Some(value.clone())
    }

    /// Keep `value` (if it fits at all), dropping the least recently used entries as needed.
    fn insert(&mut self, digest: [u8; 32], value: V, size: usize) {
        if size > self.capacity || self.entries.contains_key(&digest) {
            return;
        }
        while self.held + size > self.capacity {
            let Some((_, oldest)) = self.by_age.pop_first() else {
                break;
            };
            if let Some((_, dropped, _)) = self.entries.remove(&oldest) {
                self.held -= dropped;
            }
        }
        self.tick += 1;
        self.held += size;
        self.by_age.insert(self.tick, digest);
        self.entries.insert(digest, (value, size, self.tick));
    }

    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.entries.contains_key(digest)
    }
}

impl Default for ShareKeysCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl ShareKeysCache {
    /// A cache holding at most `max_keys` (counted as in [`SET_OVERHEAD_KEYS`]).
    pub fn new(max_keys: usize) -> Self {
        ShareKeysCache {
            inner: Mutex::new(Inner {
                checked: Lru::new(max_keys),
                refused: Lru::new(MAX_REFUSED_SETS),
            }),
        }
    }

    pub fn max_keys(&self) -> usize {
        self.lock().checked.capacity
    }

    /// Number of checked key sets held now.
    pub fn len(&self) -> usize {
        self.lock().checked.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`combine`] with the same arguments and answers; with `verify_partials`, a key set of at
    /// most [`MAX_CACHED_SET_KEYS`] keys that passes [`ShareKeys::verify`] is checked once and
    /// then combined through [`combine_with_keys`].
    #[allow(clippy::too_many_arguments)]
    pub fn combine<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        t: Threshold,
        share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
        group_public_key: &BlsPublicKey,
        message: &[u8],
        partials: &[(ShareIndex, BlsSignature)],
        verify_partials: bool,
        rng: &mut R,
    ) -> Result<Combined, ThresholdError> {
        if verify_partials && share_public_keys.len() <= MAX_CACHED_SET_KEYS {
            if let Some(keys) = self.checked(t, share_public_keys, group_public_key) {
                return combine_with_keys(&keys, message, partials, true, rng);
            }
        }
        combine(
            t,
            share_public_keys,
            group_public_key,
            message,
            partials,
            verify_partials,
            rng,
        )
    }

    /// The checked set, from the cache or checked now (and kept); `None` when it fails the check
    /// (now or before).
    fn checked(
        &self,
        t: Threshold,
        share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
        group_public_key: &BlsPublicKey,
    ) -> Option<Arc<ShareKeys>> {
        let digest = set_digest(t, share_public_keys, group_public_key);
        {
            let mut inner = self.lock();
            if let Some(keys) = inner.checked.get(&digest) {
                return Some(keys);
            }
            if inner.refused.contains(&digest) {
                return None;
            }
        }
        // Checked without the lock; two first combines of one set may both check it, and
        // either result is the same.
        match ShareKeys::verify(t, share_public_keys, group_public_key) {
            Ok(keys) => {
                let keys = Arc::new(keys);
                let size = keys.len() + SET_OVERHEAD_KEYS;
                self.lock().checked.insert(digest, Arc::clone(&keys), size);
                Some(keys)
            }
            Err(_) => {
                self.lock().refused.insert(digest, (), 1);
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps and the counts consistent at each step that
        // can panic (only allocation can), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// SHA-256 of (t, group key, then index and key of every share in index order), each field of
/// fixed width, so that no two different sets have the same encoding.
fn set_digest(
    t: Threshold,
    share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
    group_public_key: &BlsPublicKey,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(b"keystake share keys v1");
    hasher.update(t.get().to_be_bytes());
    hasher.update(group_public_key.0);
    for (index, key) in share_public_keys {
        hasher.update(index.get().to_be_bytes());
        hasher.update(key.0);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::*;
    use crate::bls::SecretKey;
    use crate::threshold::{split, SecretShare};

    fn setup(
        t: u32,
        n: u32,
        seed: u64,
    ) -> (
        SecretKey,
        Vec<SecretShare>,
        BTreeMap<ShareIndex, BlsPublicKey>,
    ) {
        let mut rng = StdRng::seed_from_u64(seed);
        let secret = SecretKey::random(&mut rng);
        let shares = split(&secret, Threshold::new(t).unwrap(), n, &mut rng)
            .unwrap()
            .shares;
        let keys = shares.iter().map(|s| (s.index(), s.public_key())).collect();
        (secret, shares, keys)
    }

    fn partials(shares: &[SecretShare], message: &[u8]) -> Vec<(ShareIndex, BlsSignature)> {
        shares
            .iter()
            .map(|s| (s.index(), s.sign(message)))
            .collect()
    }

    #[test]
    fn answers_as_combine_does_and_checks_a_set_once() {
        let (secret, shares, keys) = setup(3, 5, 1);
        let group = secret.public_key();
        let t = Threshold::new(3).unwrap();
        let cache = ShareKeysCache::default();
        let mut rng = StdRng::seed_from_u64(2);
        for round in 0u8..3 {
            let message = [round; 32];
            let mut sent = partials(&shares, &message);
            // Share 2 signs another message: named as the culprit, the rest still combine.
            sent[1].1 = shares[1].sign(b"other");
            let cached = cache
                .combine(t, &keys, &group, &message, &sent, true, &mut rng)
                .unwrap();
            let stateless = combine(t, &keys, &group, &message, &sent, true, &mut rng).unwrap();
            assert_eq!(cached, stateless);
            assert_eq!(cached.signature, secret.sign(&message));
            assert_eq!(cached.culprits, vec![ShareIndex::new(2).unwrap()]);
            assert_eq!(cache.len(), 1);
        }
    }

    #[test]
    fn a_set_that_fails_the_check_is_combined_statelessly_and_not_kept() {
        let (secret, shares, mut keys) = setup(2, 3, 3);
        let group = secret.public_key();
        let t = Threshold::new(2).unwrap();
        // Share 3's key replaced by another key: off the polynomial, so ShareKeys refuses the
        // set; the stateless combine still uses the two good keys and names share 3.
        keys.insert(
            ShareIndex::new(3).unwrap(),
            SecretKey::random(&mut StdRng::seed_from_u64(9)).public_key(),
        );
        let cache = ShareKeysCache::default();
        let message = [7u8; 32];
        let sent = partials(&shares, &message);
        let mut rng = StdRng::seed_from_u64(4);
        let cached = cache.combine(t, &keys, &group, &message, &sent, true, &mut rng);
        let stateless = combine(t, &keys, &group, &message, &sent, true, &mut rng);
        assert_eq!(cached, stateless);
        assert!(cache.is_empty());
        // Remembered as refused: sent again, it is not checked again, with the same answer.
        let digest = set_digest(t, &keys, &group);
        assert!(cache.lock().refused.contains(&digest));
        let again = cache.combine(t, &keys, &group, &message, &sent, true, &mut rng);
        assert_eq!(again, stateless);
        assert!(cache.is_empty());
        // And a set with fewer keys than the threshold.
        let few: BTreeMap<_, _> = keys.iter().take(1).map(|(i, k)| (*i, *k)).collect();
        assert_eq!(
            cache.combine(t, &few, &group, &message, &sent, true, &mut rng),
            combine(t, &few, &group, &message, &sent, true, &mut rng)
        );
        assert!(cache.is_empty());
    }

    #[test]
    fn the_key_bound_drops_the_least_recently_used_set() {
        let t = Threshold::new(2).unwrap();
        // Room for two sets of three keys (each counts 3 + SET_OVERHEAD_KEYS).
        let cache = ShareKeysCache::new(2 * (3 + SET_OVERHEAD_KEYS));
        let sets: Vec<_> = (0..3).map(|seed| setup(2, 3, 10 + seed)).collect();
        let mut rng = StdRng::seed_from_u64(5);
        let message = [1u8; 32];
        let mut use_set = |i: usize| {
            let (secret, shares, keys) = &sets[i];
            let combined = cache
                .combine(
                    t,
                    keys,
                    &secret.public_key(),
                    &message,
                    &partials(shares, &message),
                    true,
                    &mut rng,
                )
                .unwrap();
            assert_eq!(combined.signature, secret.sign(&message));
        };
        use_set(0);
        use_set(1);
        use_set(0); // set 1 is now the least recently used
        use_set(2);
        let held = |i: usize| {
            let (secret, _, keys) = &sets[i];
            let digest = set_digest(t, keys, &secret.public_key());
            cache.lock().checked.contains(&digest)
        };
        assert!(held(0) && !held(1) && held(2));
        {
            let inner = cache.lock();
            assert_eq!(inner.checked.held, 2 * (3 + SET_OVERHEAD_KEYS));
            assert_eq!(inner.checked.by_age.len(), inner.checked.entries.len());
        }
        // A set larger than the whole bound is checked and used, never kept.
        let (secret, shares, keys) = setup(3, (2 * 3 + SET_OVERHEAD_KEYS + 1) as u32, 20);
        let combined = cache
            .combine(
                Threshold::new(3).unwrap(),
                &keys,
                &secret.public_key(),
                &message,
                &partials(&shares, &message),
                true,
                &mut rng,
            )
            .unwrap();
        assert_eq!(combined.signature, secret.sign(&message));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_set_above_the_size_limit_is_combined_statelessly_unchecked() {
        let n = MAX_CACHED_SET_KEYS as u32 + 1;
        let (secret, shares, keys) = setup(3, n, 40);
        let cache = ShareKeysCache::default();
        let message = [2u8; 32];
        let mut rng = StdRng::seed_from_u64(6);
        let combined = cache
            .combine(
                Threshold::new(3).unwrap(),
                &keys,
                &secret.public_key(),
                &message,
                &partials(&shares[..3], &message),
                true,
                &mut rng,
            )
            .unwrap();
        assert_eq!(combined.signature, secret.sign(&message));
        let inner = cache.lock();
        assert!(inner.checked.entries.is_empty() && inner.refused.entries.is_empty());
    }

    #[test]
    fn different_sets_never_share_a_digest() {
        let (secret, _, keys) = setup(2, 3, 30);
        let group = secret.public_key();
        let t2 = Threshold::new(2).unwrap();
        let base = set_digest(t2, &keys, &group);
        assert_ne!(base, set_digest(Threshold::new(3).unwrap(), &keys, &group));
        let mut swapped = keys.clone();
        let one = swapped[&ShareIndex::new(1).unwrap()];
        let two = swapped[&ShareIndex::new(2).unwrap()];
        swapped.insert(ShareIndex::new(1).unwrap(), two);
        swapped.insert(ShareIndex::new(2).unwrap(), one);
        assert_ne!(base, set_digest(t2, &swapped, &group));
        let mut reindexed = keys.clone();
        let three = reindexed.remove(&ShareIndex::new(3).unwrap()).unwrap();
        reindexed.insert(ShareIndex::new(4).unwrap(), three);
        assert_ne!(base, set_digest(t2, &reindexed, &group));
    }
}
