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
//! never share an entry. Only sets that pass the check are kept; a set that fails it (a key that
//! does not decode, keys off one polynomial, fewer than `t`) is combined the stateless way
//! ([`combine`]), with exactly [`combine`]'s answers. Bounded by the number of keys held
//! ([`ShareKeysCache::max_keys`], about [`BYTES_PER_KEY`] bytes each): the least recently used
//! sets are dropped first, and a set larger than the bound is never kept.
//!
//! Refuses: nothing of its own — the bounds and errors are [`combine`]'s and
//! [`combine_with_keys`]'s. Pure: `std::sync` only, no I/O; everything cached is public.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{combine, combine_with_keys, Combined, ShareKeys, ThresholdError};
use crate::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};

/// Default bound on the keys held: 65,536 (a cluster of 16,384 validators with four shares
/// each, or 4,096 with sixteen), about 10 MiB.
pub const DEFAULT_MAX_KEYS: usize = 65_536;

/// Memory one cached key takes, about: the decoded affine point (96 bytes), its index and the
/// map's node overhead.
pub const BYTES_PER_KEY: usize = 160;

/// See the module documentation.
pub struct ShareKeysCache {
    max_keys: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    sets: HashMap<[u8; 32], Entry>,
    /// Keys held over all sets (at most `max_keys`).
    keys: usize,
    /// Lookups so far: the clock of [`Entry::last_used`].
    tick: u64,
}

struct Entry {
    keys: Arc<ShareKeys>,
    size: usize,
    last_used: u64,
}

impl Default for ShareKeysCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl ShareKeysCache {
    /// A cache holding at most `max_keys` share keys over all its sets.
    pub fn new(max_keys: usize) -> Self {
        ShareKeysCache {
            max_keys,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Number of key sets held now.
    pub fn len(&self) -> usize {
        self.lock().sets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`combine`] with the same arguments and answers; with `verify_partials`, a key set that
    /// passes [`ShareKeys::verify`] is checked once and then combined through
    /// [`combine_with_keys`].
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
        if verify_partials {
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

    /// The checked set, from the cache or checked now (and kept); `None` when it fails the check.
    fn checked(
        &self,
        t: Threshold,
        share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
        group_public_key: &BlsPublicKey,
    ) -> Option<Arc<ShareKeys>> {
        let digest = set_digest(t, share_public_keys, group_public_key);
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(entry) = inner.sets.get_mut(&digest) {
                entry.last_used = tick;
                return Some(Arc::clone(&entry.keys));
            }
        }
        // Checked without the lock (milliseconds for a large set); two first combines of one
        // set may both check it, and either result is the same.
        let keys = Arc::new(ShareKeys::verify(t, share_public_keys, group_public_key).ok()?);
        let size = share_public_keys.len().max(1);
        if size <= self.max_keys {
            let mut inner = self.lock();
            if !inner.sets.contains_key(&digest) {
                while inner.keys + size > self.max_keys {
                    let Some(oldest) = inner
                        .sets
                        .iter()
                        .min_by_key(|(_, entry)| entry.last_used)
                        .map(|(digest, _)| *digest)
                    else {
                        break;
                    };
                    if let Some(dropped) = inner.sets.remove(&oldest) {
                        inner.keys -= dropped.size;
                    }
                }
                let last_used = inner.tick;
                inner.keys += size;
                inner.sets.insert(
                    digest,
                    Entry {
                        keys: Arc::clone(&keys),
                        size,
                        last_used,
                    },
                );
            }
        }
        Some(keys)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the map and the count consistent at each step that can
        // panic (only allocation can), so a poisoned lock is still usable.
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
        // Room for two sets of three keys.
        let cache = ShareKeysCache::new(6);
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
            cache.lock().sets.contains_key(&digest)
        };
        assert!(held(0) && !held(1) && held(2));
        assert_eq!(cache.lock().keys, 6);
        // A set larger than the whole bound is checked and used, never kept.
        let (secret, shares, keys) = setup(3, 7, 20);
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
