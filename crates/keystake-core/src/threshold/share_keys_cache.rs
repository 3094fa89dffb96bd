//! A bounded cache of decoded share-key sets for combiners whose callers send the share public
//! keys with every request (gRPC `Combine`).
//!
//! A DVT middleware combines every signature of a validator with the same `t`, group key and
//! share keys. Decoding and subgroup-checking those keys is the part of a verified combine the
//! optimistic one never does (about 0.6 M instructions per key, a fifth of a 16-partial combine).
//! The cache remembers, per set, each key as [`combine`] decodes it — on its first use, and
//! only the keys a combine actually uses — and combines through [`combine`]'s own body with
//! those keys. So its answers are [`combine`]'s by construction (a key that does not decode is
//! missing, exactly as there; no other check is added), and a call costs at most what the
//! stateless combine costs plus a SHA-256 over the set: sending ever new sets gains a client
//! nothing.
//!
//! Keyed by a SHA-256 digest of (t, group key, share keys in index order), so two different sets
//! never share an entry. Bounded by the memory held: each set counts its keys plus
//! [`SET_OVERHEAD_KEYS`] for its entry, against [`ShareKeysCache::max_keys`] ([`BYTES_PER_KEY`]
//! bytes per unit, about); the least recently used sets are dropped first (O(log n) per
//! insertion), and a set larger than the whole bound is never kept.
//!
//! Refuses: nothing of its own — the bounds and errors are [`combine`]'s (checked before the
//! cache is consulted). Pure: `std::sync` only, no I/O; everything cached is public.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::{check_combine_bounds, combine, combine_decoded, Combined, ThresholdError};
use crate::bls;
use crate::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};

/// Default bound on what is held, in keys (see [`SET_OVERHEAD_KEYS`]): 65,536, about 10 MiB —
/// 7,200 validators with four shares each, or 3,100 with sixteen.
pub const DEFAULT_MAX_KEYS: usize = 65_536;

/// Memory one counted key takes, about: its bytes (48), its decoded affine point (96, once
/// used) and its index.
pub const BYTES_PER_KEY: usize = 160;

/// What a set's own entry costs, counted as this many keys: the shared set (threshold, group
/// key, vector header, reference counts), its map entry and its place in the age order — about
/// 700 bytes measured (resident memory of a full cache of one-key sets).
pub const SET_OVERHEAD_KEYS: usize = 5;

/// See the module documentation.
pub struct ShareKeysCache {
    inner: Mutex<Lru>,
}

/// One set: the group key decoded, and each share key decoded on its first use (`None` when it
/// does not decode, as in [`combine`]).
struct KeySet {
    group: bls::ValidPublicKey,
    keys: Vec<(
        ShareIndex,
        BlsPublicKey,
        OnceLock<Option<bls::ValidPublicKey>>,
    )>,
}

impl KeySet {
    fn key_of(&self, index: &ShareIndex) -> Option<bls::ValidPublicKey> {
        let position = self.keys.binary_search_by_key(index, |(i, _, _)| *i).ok()?;
        let (_, bytes, decoded) = &self.keys[position];
        *decoded.get_or_init(|| bls::ValidPublicKey::decode(bytes).ok())
    }
}

/// Sets by digest, each with a size; the least recently used dropped beyond `capacity`.
struct Lru {
    capacity: usize,
    held: usize,
    tick: u64,
    entries: HashMap<[u8; 32], (Arc<KeySet>, usize, u64)>,
    by_age: BTreeMap<u64, [u8; 32]>,
}

impl Lru {
    fn get(&mut self, digest: &[u8; 32]) -> Option<Arc<KeySet>> {
        self.tick += 1;
        let (set, _, last_used) = self.entries.get_mut(digest)?;
        self.by_age.remove(last_used);
        *last_used = self.tick;
        self.by_age.insert(self.tick, *digest);
        Some(Arc::clone(set))
    }

    /// Keep `set` (if it fits at all), dropping the least recently used sets as needed.
    fn insert(&mut self, digest: [u8; 32], set: Arc<KeySet>, size: usize) {
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
        self.entries.insert(digest, (set, size, self.tick));
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
            inner: Mutex::new(Lru {
                capacity: max_keys,
                held: 0,
                tick: 0,
                entries: HashMap::new(),
                by_age: BTreeMap::new(),
            }),
        }
    }

    pub fn max_keys(&self) -> usize {
        self.lock().capacity
    }

    /// Number of key sets held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`combine`] with the same arguments and answers; with `verify_partials`, the set's keys
    /// are decoded once across calls (see the module documentation).
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
        let stateless = |rng: &mut R| {
            combine(
                t,
                share_public_keys,
                group_public_key,
                message,
                partials,
                verify_partials,
                rng,
            )
        };
        // Without verification the keys are used only when the optimistic result fails; the
        // bounds come first, as in `combine`, so nothing is hashed or kept for refused input.
        if !verify_partials
            || check_combine_bounds(t, share_public_keys.len(), partials.len()).is_err()
        {
            return stateless(rng);
        }
        let Some(set) = self.set(t, share_public_keys, group_public_key) else {
            // The group key does not decode: `combine`'s error.
            return stateless(rng);
        };
        combine_decoded(
            t,
            &|index| set.key_of(index),
            &set.group,
            message,
            partials,
            true,
            rng,
        )
    }

    /// The set, from the cache or made now (and kept); `None` when the group key does not decode.
    fn set(
        &self,
        t: Threshold,
        share_public_keys: &BTreeMap<ShareIndex, BlsPublicKey>,
        group_public_key: &BlsPublicKey,
    ) -> Option<Arc<KeySet>> {
        let digest = set_digest(t, share_public_keys, group_public_key);
        if let Some(set) = self.lock().get(&digest) {
            return Some(set);
        }
        let set = Arc::new(KeySet {
            group: bls::ValidPublicKey::decode(group_public_key).ok()?,
            keys: share_public_keys
                .iter()
                .map(|(index, key)| (*index, *key, OnceLock::new()))
                .collect(),
        });
        let size = share_public_keys.len() + SET_OVERHEAD_KEYS;
        self.lock().insert(digest, Arc::clone(&set), size);
        Some(set)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // Every critical section leaves the maps and the count consistent at each step that can
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

    fn decoded(cache: &ShareKeysCache, digest: &[u8; 32]) -> Option<usize> {
        let inner = cache.lock();
        let (set, _, _) = inner.entries.get(digest)?;
        Some(
            set.keys
                .iter()
                .filter(|(_, _, d)| d.get().is_some())
                .count(),
        )
    }

    #[test]
    fn answers_as_combine_does_and_decodes_a_set_once() {
        let (secret, shares, keys) = setup(3, 5, 1);
        let group = secret.public_key();
        let t = Threshold::new(3).unwrap();
        let cache = ShareKeysCache::default();
        let mut rng = StdRng::seed_from_u64(2);
        for round in 0u8..3 {
            let message = [round; 32];
            let mut sent = partials(&shares[..4], &message);
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
            // Only the keys of the partials sent were decoded (share 5 never signed).
            assert_eq!(decoded(&cache, &set_digest(t, &keys, &group)), Some(4));
        }
    }

    #[test]
    fn inconsistent_or_undecodable_keys_get_combines_answers() {
        let (secret, shares, keys) = setup(2, 3, 3);
        let group = secret.public_key();
        let t = Threshold::new(2).unwrap();
        let message = [7u8; 32];
        let sent = partials(&shares, &message);
        let mut rng = StdRng::seed_from_u64(4);
        let mut off_polynomial = keys.clone();
        off_polynomial.insert(
            ShareIndex::new(3).unwrap(),
            SecretKey::random(&mut StdRng::seed_from_u64(9)).public_key(),
        );
        let mut undecodable = keys.clone();
        undecodable.insert(ShareIndex::new(1).unwrap(), BlsPublicKey([0x11; 48]));
        let few: BTreeMap<_, _> = keys.iter().take(1).map(|(i, k)| (*i, *k)).collect();
        let cases = [
            (off_polynomial, group),
            (undecodable, group),
            (few, group),
            (keys.clone(), BlsPublicKey([0x22; 48])),
            (
                keys,
                SecretKey::random(&mut StdRng::seed_from_u64(8)).public_key(),
            ),
        ];
        for (keys, group) in &cases {
            let cache = ShareKeysCache::default();
            for _ in 0..2 {
                assert_eq!(
                    cache.combine(t, keys, group, &message, &sent, true, &mut rng),
                    combine(t, keys, group, &message, &sent, true, &mut rng),
                );
            }
        }
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
            cache.lock().entries.contains_key(&digest)
        };
        assert!(held(0) && !held(1) && held(2));
        {
            let inner = cache.lock();
            assert_eq!(inner.held, 2 * (3 + SET_OVERHEAD_KEYS));
            assert_eq!(inner.by_age.len(), inner.entries.len());
        }
        // A set larger than the whole bound is used, never kept.
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
    fn refused_input_and_optimistic_combines_keep_nothing() {
        let (secret, shares, keys) = setup(2, 3, 40);
        let t = Threshold::new(2).unwrap();
        let message = [2u8; 32];
        let sent = partials(&shares, &message);
        let cache = ShareKeysCache::default();
        let mut rng = StdRng::seed_from_u64(6);
        // Optimistic: the keys are not needed when the result verifies.
        let combined = cache
            .combine(
                t,
                &keys,
                &secret.public_key(),
                &message,
                &sent,
                false,
                &mut rng,
            )
            .unwrap();
        assert_eq!(combined.signature, secret.sign(&message));
        // More partials than keys: refused by the bounds before anything is kept.
        let mut too_many = sent.clone();
        too_many.push((ShareIndex::new(4).unwrap(), sent[0].1));
        assert!(matches!(
            cache.combine(
                t,
                &keys,
                &secret.public_key(),
                &message,
                &too_many,
                true,
                &mut rng
            ),
            Err(ThresholdError::TooManyPartials { .. })
        ));
        // An undecodable group key: combine's error, nothing kept.
        assert!(matches!(
            cache.combine(
                t,
                &keys,
                &BlsPublicKey([0x33; 48]),
                &message,
                &sent,
                true,
                &mut rng
            ),
            Err(ThresholdError::InvalidGroupPublicKey(_))
        ));
        assert!(cache.is_empty());
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
