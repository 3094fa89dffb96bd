//! The unseal policy (issue 14): an optional, bounded cache of unsealed shares, so a slow HSM (a
//! YubiHSM2 operation takes tens of milliseconds) is not asked once per signature.
//!
//! **Off by default**: without `[hsm] unseal_cache` every signature unseals its share in the HSM
//! and drops the plaintext right after (design.md §3). With it, a share stays in memory for at
//! most `ttl_secs` after it was unsealed (counted from the unseal, not refreshed by use, so a
//! busy key is still unsealed again every TTL) and at most `max_entries` shares are held; the
//! oldest goes first when the cache is full. Every entry is zeroized when it expires, is
//! evicted, is replaced, is dropped because its key was deleted or re-imported, when the HSM
//! health probe fails, and when the cache itself is dropped; [`UnsealCacheStats::zeroized`]
//! counts those wipes.
//!
//! A hit is only a hit when the sealed blob and the sealing context are exactly those the
//! plaintext was unsealed from: a key re-imported with another blob is unsealed again.
//!
//! What it refuses: a policy with a zero TTL or zero entries, a TTL above [`MAX_TTL`] or more
//! than [`MAX_ENTRIES`] entries (configuration errors). It never prints a share: no `Debug` of an
//! entry exists, the cache's own `Debug` shows its policy and size.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zeroize::{Zeroize, Zeroizing};

use crate::hsm::{SealContext, SealedShare, SHARE_LEN};
use keystake_core::types::BlsPublicKey;

/// How often `app::serve` sweeps expired shares out of an idle cache.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// Longest TTL accepted: a day. Anything longer is a share kept in memory for good.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Most entries accepted (≈ 200 bytes each with the blob and context kept for the hit check).
pub const MAX_ENTRIES: usize = 1_000_000;

/// How long and how many unsealed shares may be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsealCachePolicy {
    pub ttl: Duration,
    pub max_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsealPolicyError {
    #[error("hsm.unseal_cache.ttl_secs must be between 1 and {max} (got {0})", max = MAX_TTL.as_secs())]
    Ttl(u64),
    #[error("hsm.unseal_cache.max_entries must be between 1 and {MAX_ENTRIES} (got {0})")]
    Entries(usize),
}

impl UnsealCachePolicy {
    pub fn new(ttl_secs: u64, max_entries: usize) -> Result<Self, UnsealPolicyError> {
        if ttl_secs == 0 || ttl_secs > MAX_TTL.as_secs() {
            return Err(UnsealPolicyError::Ttl(ttl_secs));
        }
        if max_entries == 0 || max_entries > MAX_ENTRIES {
            return Err(UnsealPolicyError::Entries(max_entries));
        }
        Ok(UnsealCachePolicy {
            ttl: Duration::from_secs(ttl_secs),
            max_entries,
        })
    }
}

/// Counters since the cache was made (no secret in them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnsealCacheStats {
    /// Shares held right now.
    pub entries: usize,
    pub hits: u64,
    pub misses: u64,
    pub inserted: u64,
    /// Dropped because their TTL ran out.
    pub expired: u64,
    /// Dropped to make room (the cache was full).
    pub evicted: u64,
    /// Dropped because the key was deleted, re-imported, or the HSM probe failed.
    pub removed: u64,
    /// Entries whose plaintext was overwritten with zeros (every entry that left the cache).
    pub zeroized: u64,
}

/// The time source: the system's monotonic clock, or (tests) a hand-moved one.
enum Clock {
    System,
    #[cfg(test)]
    Manual(std::sync::Arc<Mutex<Instant>>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::System => Instant::now(),
            #[cfg(test)]
            Clock::Manual(now) => *now.lock().unwrap(),
        }
    }
}

/// One unsealed share. Deliberately without `Debug`.
struct Entry {
    /// Boxed so the plaintext never moves: the map relocates its entries when it grows and
    /// frees the old table without zeroizing it; only the pointer is copied then.
    secret: Box<Zeroizing<[u8; SHARE_LEN]>>,
    /// What it was unsealed from: a hit must match both exactly.
    sealed: SealedShare,
    context: SealContext,
    expires: Instant,
    /// Matches the entry's item in the expiry queue (older items of the key are stale).
    generation: u64,
}

struct Inner {
    entries: HashMap<BlsPublicKey, Entry>,
    /// Insertion order = expiry order (one TTL for all): (key, generation, expiry).
    queue: VecDeque<(BlsPublicKey, u64, Instant)>,
    next_generation: u64,
    stats: UnsealCacheStats,
}

impl Inner {
    /// Take an entry out and overwrite its plaintext.
    fn wipe(&mut self, key: &BlsPublicKey) -> bool {
        match self.entries.remove(key) {
            Some(mut entry) => {
                entry.secret.zeroize();
                self.stats.zeroized += 1;
                true
            }
            None => false,
        }
    }

    /// Drop every entry whose TTL has run out (they are at the front of the queue).
    fn expire(&mut self, now: Instant) {
        while let Some(&(key, generation, expires)) = self.queue.front() {
            if expires > now {
                break;
            }
            self.queue.pop_front();
            if self.entries.get(&key).map(|e| e.generation) == Some(generation) && self.wipe(&key) {
                self.stats.expired += 1;
            }
        }
    }

    /// Drop the oldest live entry (the cache is full).
    fn evict_oldest(&mut self) {
        while let Some((key, generation, _)) = self.queue.pop_front() {
            if self.entries.get(&key).map(|e| e.generation) == Some(generation) {
                self.wipe(&key);
                self.stats.evicted += 1;
                return;
            }
        }
    }

    /// Keep the queue within a constant factor of the entries: removals leave stale items.
    fn compact(&mut self) {
        if self.queue.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.queue.retain(|(key, generation, _)| {
                entries.get(key).map(|e| e.generation) == Some(*generation)
            });
        }
    }
}

/// A bounded, expiring cache of unsealed shares (see the module documentation).
pub struct UnsealCache {
    policy: UnsealCachePolicy,
    clock: Clock,
    inner: Mutex<Inner>,
}

impl fmt::Debug for UnsealCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealCache")
            .field("policy", &self.policy)
            .field("entries", &self.lock().entries.len())
            .finish_non_exhaustive()
    }
}

impl UnsealCache {
    pub fn new(policy: UnsealCachePolicy) -> Self {
        Self::with_clock(policy, Clock::System)
    }

    /// A cache whose clock the test moves by hand (expiry without sleeping).
    #[cfg(test)]
    pub(crate) fn with_manual_clock(
        policy: UnsealCachePolicy,
        now: std::sync::Arc<Mutex<Instant>>,
    ) -> Self {
        Self::with_clock(policy, Clock::Manual(now))
    }

    fn with_clock(policy: UnsealCachePolicy, clock: Clock) -> Self {
        UnsealCache {
            policy,
            clock,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                queue: VecDeque::new(),
                next_generation: 0,
                stats: UnsealCacheStats::default(),
            }),
        }
    }

    pub fn policy(&self) -> UnsealCachePolicy {
        self.policy
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves `Inner` consistent before anything that could panic.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The share unsealed from exactly `sealed` under `context`, if it is held and not expired:
    /// a fresh zeroizing copy.
    pub fn get(
        &self,
        public_key: &BlsPublicKey,
        sealed: &SealedShare,
        context: &SealContext,
    ) -> Option<Zeroizing<[u8; SHARE_LEN]>> {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.expire(now);
        let found = inner
            .entries
            .get(public_key)
            // `expire` removed what ran out; the check stays next to the copy all the same.
            .filter(|e| e.expires > now && e.sealed == *sealed && e.context == *context)
            .map(|e| {
                let mut copy = Zeroizing::new([0u8; SHARE_LEN]);
                copy.copy_from_slice(e.secret.as_slice());
                copy
            });
        if found.is_some() {
            inner.stats.hits += 1;
        } else {
            inner.stats.misses += 1;
        }
        found
    }

    /// Hold `secret`, just unsealed from `sealed` under `context`, for the TTL.
    pub fn insert(
        &self,
        public_key: BlsPublicKey,
        sealed: &SealedShare,
        context: &SealContext,
        secret: &Zeroizing<[u8; SHARE_LEN]>,
    ) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.expire(now);
        if inner.wipe(&public_key) {
            inner.stats.removed += 1;
        }
        while inner.entries.len() >= self.policy.max_entries {
            inner.evict_oldest();
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        let expires = now + self.policy.ttl;
        let mut copy = Box::new(Zeroizing::new([0u8; SHARE_LEN]));
        copy.copy_from_slice(secret.as_slice());
        inner.entries.insert(
            public_key,
            Entry {
                secret: copy,
                sealed: sealed.clone(),
                context: context.clone(),
                expires,
                generation,
            },
        );
        inner.queue.push_back((public_key, generation, expires));
        inner.stats.inserted += 1;
        inner.compact();
    }

    /// Drop (and zeroize) every share whose TTL has run out. `get` and `insert` do this too, but
    /// an idle appliance calls neither: `app::serve` runs this on a timer ([`SWEEP_INTERVAL`]),
    /// so a share leaves memory at most that long after its TTL even when no request comes.
    pub fn sweep(&self) {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.expire(now);
        inner.compact();
    }

    /// Drop (and zeroize) the share of `public_key`, if held. Returns whether it was.
    pub fn remove(&self, public_key: &BlsPublicKey) -> bool {
        let mut inner = self.lock();
        let removed = inner.wipe(public_key);
        if removed {
            inner.stats.removed += 1;
        }
        inner.compact();
        removed
    }

    /// Drop every share whose key `keep` refuses (keys no longer loaded, blobs replaced).
    pub fn retain(&self, keep: impl Fn(&BlsPublicKey, &SealedShare) -> bool) {
        let mut inner = self.lock();
        let gone: Vec<BlsPublicKey> = inner
            .entries
            .iter()
            .filter(|(key, entry)| !keep(key, &entry.sealed))
            .map(|(key, _)| *key)
            .collect();
        for key in gone {
            inner.wipe(&key);
            inner.stats.removed += 1;
        }
        inner.compact();
    }

    /// Drop every share (the HSM probe failed: signing must stop with the HSM, not at the TTL).
    pub fn clear(&self) {
        self.retain(|_, _| false);
    }

    pub fn stats(&self) -> UnsealCacheStats {
        let inner = self.lock();
        UnsealCacheStats {
            entries: inner.entries.len(),
            ..inner.stats
        }
    }

    /// The expiry of `public_key`'s entry, for tests of the policy.
    #[cfg(test)]
    fn expiry_of(&self, public_key: &BlsPublicKey) -> Option<Instant> {
        self.lock().entries.get(public_key).map(|e| e.expires)
    }
}

impl Drop for UnsealCache {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|p| p.into_inner());
        for (_, mut entry) in inner.entries.drain() {
            entry.secret.zeroize();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::hsm::contract_tests::{context, secret};

    fn clock() -> Arc<Mutex<Instant>> {
        Arc::new(Mutex::new(Instant::now()))
    }

    fn advance(clock: &Mutex<Instant>, by: Duration) {
        *clock.lock().unwrap() += by;
    }

    fn blob(seed: u8) -> SealedShare {
        SealedShare(vec![1, 1, seed, seed, seed])
    }

    fn cache(ttl_secs: u64, max_entries: usize, now: &Arc<Mutex<Instant>>) -> UnsealCache {
        UnsealCache::with_manual_clock(
            UnsealCachePolicy::new(ttl_secs, max_entries).unwrap(),
            now.clone(),
        )
    }

    fn put(cache: &UnsealCache, seed: u8) {
        let ctx = context(seed);
        cache.insert(ctx.share_public_key, &blob(seed), &ctx, &secret(seed));
    }

    fn fetch(cache: &UnsealCache, seed: u8) -> Option<[u8; SHARE_LEN]> {
        let ctx = context(seed);
        cache
            .get(&ctx.share_public_key, &blob(seed), &ctx)
            .map(|s| *s)
    }

    #[test]
    fn policy_bounds_are_enforced() {
        assert_eq!(
            UnsealCachePolicy::new(0, 10),
            Err(UnsealPolicyError::Ttl(0))
        );
        assert_eq!(
            UnsealCachePolicy::new(MAX_TTL.as_secs() + 1, 10),
            Err(UnsealPolicyError::Ttl(MAX_TTL.as_secs() + 1))
        );
        assert_eq!(
            UnsealCachePolicy::new(1, 0),
            Err(UnsealPolicyError::Entries(0))
        );
        assert!(UnsealCachePolicy::new(1, MAX_ENTRIES + 1).is_err());
        assert!(UnsealCachePolicy::new(MAX_TTL.as_secs(), MAX_ENTRIES).is_ok());
    }

    #[test]
    fn entries_expire_at_the_ttl_from_the_unseal_and_are_zeroized() {
        let now = clock();
        let cache = cache(30, 8, &now);
        put(&cache, 1);
        let ctx = context(1);
        let unsealed_at = *now.lock().unwrap();
        assert_eq!(
            cache.expiry_of(&ctx.share_public_key),
            Some(unsealed_at + Duration::from_secs(30))
        );
        advance(&now, Duration::from_secs(29));
        // Used just before the TTL: still the same expiry (use does not refresh it).
        assert_eq!(fetch(&cache, 1), Some(*secret(1)));
        assert_eq!(
            cache.expiry_of(&ctx.share_public_key),
            Some(unsealed_at + Duration::from_secs(30))
        );
        advance(&now, Duration::from_secs(1));
        assert_eq!(fetch(&cache, 1), None);
        let stats = cache.stats();
        assert_eq!(
            (
                stats.entries,
                stats.hits,
                stats.misses,
                stats.expired,
                stats.zeroized
            ),
            (0, 1, 1, 1, 1)
        );
        // Unsealed again, it lives another full TTL.
        put(&cache, 1);
        advance(&now, Duration::from_secs(29));
        assert_eq!(fetch(&cache, 1), Some(*secret(1)));
    }

    #[test]
    fn an_idle_cache_is_emptied_by_the_sweep_alone() {
        let now = clock();
        let cache = cache(30, 8, &now);
        put(&cache, 1);
        put(&cache, 2);
        advance(&now, Duration::from_secs(29));
        cache.sweep();
        assert_eq!(cache.stats().entries, 2, "nothing expired yet");
        advance(&now, Duration::from_secs(1));
        // No get, no insert: only the timer's sweep runs on an idle appliance.
        cache.sweep();
        let stats = cache.stats();
        assert_eq!(
            (
                stats.entries,
                stats.expired,
                stats.zeroized,
                stats.hits + stats.misses
            ),
            (0, 2, 2, 0)
        );
    }

    #[test]
    fn the_bound_is_respected_and_the_oldest_goes_first() {
        let now = clock();
        let cache = cache(3600, 3, &now);
        for seed in 0..10u8 {
            put(&cache, seed);
            advance(&now, Duration::from_millis(1));
            assert!(cache.stats().entries <= 3);
        }
        for seed in 0..7u8 {
            assert_eq!(fetch(&cache, seed), None, "seed {seed} should be evicted");
        }
        for seed in 7..10u8 {
            assert_eq!(fetch(&cache, seed), Some(*secret(seed)));
        }
        let stats = cache.stats();
        assert_eq!((stats.inserted, stats.evicted, stats.zeroized), (10, 7, 7));
        // Churn with removals keeps the bookkeeping bounded too.
        for round in 0..1000u32 {
            let seed = (round % 50) as u8;
            put(&cache, seed);
            cache.remove(&context(seed).share_public_key);
        }
        let entries = cache.stats().entries;
        let queued = cache.lock().queue.len();
        assert!(queued <= 2 * entries + 64, "{queued} queued for {entries}");
        assert!(cache.stats().entries <= 3);
    }

    #[test]
    fn a_hit_needs_the_same_blob_and_context() {
        let now = clock();
        let cache = cache(60, 8, &now);
        put(&cache, 2);
        let ctx = context(2);
        assert!(cache.get(&ctx.share_public_key, &blob(3), &ctx).is_none());
        let mut other = ctx.clone();
        other.share_index = None;
        assert!(cache.get(&ctx.share_public_key, &blob(2), &other).is_none());
        assert!(cache.get(&ctx.share_public_key, &blob(2), &ctx).is_some());
    }

    #[test]
    fn removed_retained_and_cleared_entries_are_zeroized() {
        let now = clock();
        let cache = cache(60, 8, &now);
        for seed in 0..4u8 {
            put(&cache, seed);
        }
        assert!(cache.remove(&context(0).share_public_key));
        assert!(!cache.remove(&context(0).share_public_key));
        assert_eq!(fetch(&cache, 0), None);
        let keep = context(1).share_public_key;
        cache.retain(|key, _| *key == keep || *key == context(2).share_public_key);
        assert_eq!(fetch(&cache, 3), None);
        assert_eq!(fetch(&cache, 1), Some(*secret(1)));
        cache.clear();
        let stats = cache.stats();
        assert_eq!((stats.entries, stats.removed, stats.zeroized), (0, 4, 4));
        assert_eq!(fetch(&cache, 1), None);
    }

    #[test]
    fn debug_shows_no_share() {
        let now = clock();
        let cache = cache(60, 8, &now);
        put(&cache, 5);
        let printed = format!("{cache:?}");
        assert!(printed.contains("entries: 1"), "{printed}");
        assert!(
            !printed.contains(&hex::encode(&secret(5)[..4])),
            "{printed}"
        );
        assert!(
            !printed.contains(&format!("{:?}", &secret(5)[..4])),
            "{printed}"
        );
    }
}

/// The policy on the signing path, with a real SoftHSM2 token and a real SQLite store.
#[cfg(test)]
mod service_tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::hsm::pkcs11::test_support::{fresh_sealer, log_out_token};
    use crate::hsm::SealError;
    use crate::service::{ServiceError, SigningService};
    use crate::store::{ShareOrigin, Store};
    use keystake_core::bls::SecretKey;

    /// The vector key, its attestation request and the expected signature.
    fn vector() -> (SecretKey, Vec<u8>, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/vectors/web3signer/attestation__key0.json");
        let case: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let text = |field: &str| case[field].as_str().unwrap().to_owned();
        let secret = SecretKey::from_bytes(
            &hex::decode(text("secret_key").trim_start_matches("0x")).unwrap(),
        )
        .unwrap();
        (
            secret,
            serde_json::to_vec(&case["request"]).unwrap(),
            text("signature"),
        )
    }

    struct Setup {
        _dir: tempfile::TempDir,
        token: crate::hsm::pkcs11::Pkcs11Config,
        service: Arc<SigningService>,
        now: Arc<Mutex<Instant>>,
        key: BlsPublicKey,
        body: Vec<u8>,
        expected: String,
    }

    fn setup(purpose: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let (token, sealer) = fresh_sealer(purpose);
        let store = Arc::new(Store::open(&dir.path().join("signer.sqlite")).unwrap());
        let now = Arc::new(Mutex::new(Instant::now()));
        let cache =
            UnsealCache::with_manual_clock(UnsealCachePolicy::new(60, 16).unwrap(), now.clone());
        let service = SigningService::new(
            store,
            Arc::new(sealer),
            keystake_core::consensus::Network::mainnet(),
        )
        .unwrap()
        .with_unseal_cache(Arc::new(cache));
        let (secret, body, expected) = vector();
        service
            .import_key(&secret, ShareOrigin::Keystore, None)
            .unwrap();
        Setup {
            _dir: dir,
            token,
            service: Arc::new(service),
            now,
            key: secret.public_key(),
            body,
            expected,
        }
    }

    impl Setup {
        /// Sign the vector request again (the same data is answered again, so it signs each time).
        async fn sign(&self) -> Result<String, ServiceError> {
            self.service
                .sign_as(
                    &crate::service::authz::Caller::local(),
                    &self.key.to_hex(),
                    &self.body,
                )
                .await
                .map(|signed| signed.signature.to_hex())
        }

        fn stats(&self) -> UnsealCacheStats {
            self.service.unseal_cache_stats().unwrap()
        }
    }

    fn is_hsm_503(result: &Result<String, ServiceError>) -> bool {
        matches!(result, Err(error @ ServiceError::Seal(SealError::Unavailable(_)))
            if crate::net::error::status_of(error) == axum::http::StatusCode::SERVICE_UNAVAILABLE)
    }

    #[tokio::test]
    async fn a_cached_share_signs_like_the_hsm_and_a_deleted_key_leaves_the_cache() {
        let s = setup("cache-delete");
        assert_eq!(s.sign().await.unwrap(), s.expected);
        assert_eq!(s.sign().await.unwrap(), s.expected, "from the cache");
        let stats = s.stats();
        assert_eq!((stats.entries, stats.misses, stats.hits), (1, 1, 1));

        // Keymanager DELETE: the key stops signing and its share leaves memory at once.
        assert!(s.service.deactivate(&s.key).await.unwrap());
        let stats = s.stats();
        assert_eq!((stats.entries, stats.zeroized), (0, 1));
        assert!(matches!(
            s.sign().await,
            Err(ServiceError::UnknownKey { .. })
        ));

        // Imported again, it is unsealed in the HSM again before it is cached again.
        let (secret, _, _) = vector();
        s.service
            .import_key(&secret, ShareOrigin::Keystore, None)
            .unwrap();
        assert_eq!(s.sign().await.unwrap(), s.expected);
        let stats = s.stats();
        assert_eq!((stats.entries, stats.misses, stats.hits), (1, 2, 1));
    }

    #[tokio::test]
    async fn an_hsm_fault_answers_503_once_the_ttl_has_run_out() {
        let s = setup("cache-ttl-fault");
        assert_eq!(s.sign().await.unwrap(), s.expected);
        log_out_token(&s.token);
        *s.now.lock().unwrap() += Duration::from_secs(60);
        let refused = s.sign().await;
        assert!(is_hsm_503(&refused), "{refused:?}");
        let stats = s.stats();
        assert_eq!((stats.entries, stats.expired, stats.zeroized), (0, 1, 1));
        // The sealer logs in again on the next call: signing recovers by itself.
        assert_eq!(s.sign().await.unwrap(), s.expected);
    }

    #[tokio::test]
    async fn a_failed_hsm_probe_empties_the_cache_before_the_ttl() {
        let s = setup("cache-probe");
        assert_eq!(s.sign().await.unwrap(), s.expected);
        assert_eq!(s.stats().entries, 1);
        log_out_token(&s.token);
        let report = s.service.probe_health().await;
        assert!(report.hsm.is_err());
        let stats = s.stats();
        assert_eq!((stats.entries, stats.removed, stats.zeroized), (0, 1, 1));
        // Well inside the TTL, the next signature needs the HSM again (the probe's failure
        // discarded the sealer's sessions; this call logs in afresh, so it signs).
        assert_eq!(s.sign().await.unwrap(), s.expected);
        let stats = s.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (0, 2, 1));
    }
}
