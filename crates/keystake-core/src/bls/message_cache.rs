//! A bounded, shared cache of hash-to-G2 points ([`MessagePoint`]), keyed by (message, DST).
//!
//! On mainnet almost every signing root repeats across keys within a slot (every attester of a
//! slot signs the same `AttestationData`, every selection proof the same slot, every sync
//! committee message the same block root, every RANDAO reveal the same epoch), and hashing the
//! message to G2 is about half the cost of a BLS signature. The cache keeps the point of recent
//! messages so the appliance hashes each of them once, and is *single-flight*: when a burst of
//! requests for one new root arrives at once, one of them hashes it and the others wait for
//! that result instead of hashing it too.
//!
//! What is cached is public: a function of the message only (the signing root a client sent or
//! the appliance computed), never of a key. Bounded: least-recently-used eviction at
//! [`MessageCache::capacity`] entries; each entry takes about [`ENTRY_BYTES`] bytes, so the
//! default ([`DEFAULT_CAPACITY`], 4,096) is under 2 MiB.
//!
//! Refuses: nothing — a message that is not in the cache is hashed. Messages are 32-byte signing
//! roots (the only thing the appliance signs); DSTs are `'static` constants, so a client cannot
//! grow a key.
//!
//! Pure: `std::sync` only (a `Mutex` held for the map operation, never while hashing; the wait
//! of the single flight is a `OnceLock`), no I/O. Callers on an async runtime call it from the
//! blocking pool, where the signing itself runs.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::MessagePoint;

/// Default number of cached messages.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Approximate memory per entry: the point (288-byte Jacobian G2 point) in an `Arc<OnceLock>`
/// (~312 B), the LRU node (72 B) and the hash-map slot (~64 B).
pub const ENTRY_BYTES: usize = 450;

/// What identifies a cached point.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    message: [u8; 32],
    dst: &'static [u8],
}

/// "No node": the end of the recency list.
const NIL: usize = usize::MAX;

struct Node {
    key: Key,
    cell: Arc<OnceLock<MessagePoint>>,
    /// Toward the most recently used end.
    newer: usize,
    /// Toward the least recently used end.
    older: usize,
}

/// A least-recently-used map over a slab of nodes linked by index (no per-access allocation).
struct Lru {
    map: HashMap<Key, usize>,
    nodes: Vec<Node>,
    newest: usize,
    oldest: usize,
    capacity: usize,
}

impl Lru {
    fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity),
            nodes: Vec::with_capacity(capacity),
            newest: NIL,
            oldest: NIL,
            capacity,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (newer, older) = (self.nodes[i].newer, self.nodes[i].older);
        match newer {
            NIL => self.newest = older,
            n => self.nodes[n].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.nodes[o].newer = newer,
        }
    }

    fn push_newest(&mut self, i: usize) {
        self.nodes[i].newer = NIL;
        self.nodes[i].older = self.newest;
        match self.newest {
            NIL => self.oldest = i,
            n => self.nodes[n].newer = i,
        }
        self.newest = i;
    }

    /// The cell of `key`, marked most recently used; a new empty cell (evicting the least
    /// recently used entry when full) if absent. The bool says whether it was present.
    fn cell(&mut self, key: Key) -> (Arc<OnceLock<MessagePoint>>, bool) {
        if let Some(&i) = self.map.get(&key) {
            if self.newest != i {
                self.unlink(i);
                self.push_newest(i);
            }
            return (self.nodes[i].cell.clone(), true);
        }
        let cell = Arc::new(OnceLock::new());
        let node = Node {
            key,
            cell: cell.clone(),
            newer: NIL,
            older: NIL,
        };
        let i = if self.nodes.len() < self.capacity {
            self.nodes.push(node);
            self.nodes.len() - 1
        } else {
            // Evict: a request still waiting on the evicted cell keeps its own `Arc`.
            let i = self.oldest;
            self.unlink(i);
            self.map.remove(&self.nodes[i].key);
            self.nodes[i] = node;
            i
        };
        self.push_newest(i);
        self.map.insert(key, i);
        (cell, false)
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Lookups that found the message (including ones that waited for a flight in progress).
    pub hits: u64,
    /// Lookups that added the message.
    pub misses: u64,
    /// Hash-to-G2 computations performed.
    pub hashes: u64,
}

/// The cache (see the module documentation). Shared by reference (`Arc`) between threads.
pub struct MessageCache {
    lru: Mutex<Lru>,
    hits: AtomicU64,
    misses: AtomicU64,
    hashes: AtomicU64,
}

impl Default for MessageCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MessageCache {
    /// A cache of at most `capacity` messages (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::new(capacity.max(1))),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hashes: AtomicU64::new(0),
        }
    }

    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Number of messages cached now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            hashes: self.hashes.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The critical sections leave the list consistent at every step that can panic (only
        // allocation can), so a poisoned lock is still usable.
        self.lru
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `hash_to_G2(message)` under `dst`, from the cache or computed (once, however many threads
    /// ask for the same new message at the same time).
    pub fn point(&self, message: &[u8; 32], dst: &'static [u8]) -> MessagePoint {
        self.point_with(message, dst, MessagePoint::hash)
    }

    /// [`MessageCache::point`] with the hash function passed in (tests count its calls).
    fn point_with(
        &self,
        message: &[u8; 32],
        dst: &'static [u8],
        hash: impl FnOnce(&[u8], &[u8]) -> MessagePoint,
    ) -> MessagePoint {
        let key = Key {
            message: *message,
            dst,
        };
        let (cell, present) = self.lock().cell(key);
        let counter = if present { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        // Outside the lock: other messages proceed while this one is hashed, and requests for
        // this one block here until the first has stored its point.
        *cell.get_or_init(|| {
            self.hashes.fetch_add(1, Ordering::Relaxed);
            hash(message, dst)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Barrier;

    use super::*;
    use crate::bls::{SecretKey, DST};

    fn root(byte: u8) -> [u8; 32] {
        [byte; 32]
    }

    #[test]
    fn cached_points_sign_like_blst() {
        let cache = MessageCache::new(4);
        let key = SecretKey::from_bytes(&[0x22; 32]).unwrap();
        for round in 0..2 {
            for byte in 0..3u8 {
                let point = cache.point(&root(byte), DST);
                assert_eq!(
                    key.sign_hashed(&point),
                    key.sign(&root(byte)),
                    "{round} {byte}"
                );
            }
        }
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 3,
                misses: 3,
                hashes: 3
            }
        );
    }

    #[test]
    fn least_recently_used_is_evicted_first() {
        let cache = MessageCache::new(2);
        cache.point(&root(1), DST);
        cache.point(&root(2), DST);
        // 1 becomes the most recently used, so 3 evicts 2.
        cache.point(&root(1), DST);
        cache.point(&root(3), DST);
        assert_eq!(cache.len(), 2);
        let before = cache.stats().hashes;
        cache.point(&root(1), DST);
        cache.point(&root(3), DST);
        assert_eq!(cache.stats().hashes, before, "1 and 3 are cached");
        cache.point(&root(2), DST);
        assert_eq!(cache.stats().hashes, before + 1, "2 was evicted");
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_dst_is_part_of_the_key() {
        static OTHER: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_NUL_";
        let cache = MessageCache::new(8);
        let a = cache.point(&root(9), DST);
        let b = cache.point(&root(9), OTHER);
        assert_eq!(cache.stats().hashes, 2);
        let key = SecretKey::from_bytes(&[0x33; 32]).unwrap();
        assert_ne!(key.sign_hashed(&a), key.sign_hashed(&b));
    }

    #[test]
    fn a_burst_for_one_root_hashes_it_once() {
        let cache = MessageCache::new(16);
        let threads = 16;
        let barrier = Barrier::new(threads);
        let calls = AtomicU64::new(0);
        let key = SecretKey::from_bytes(&[0x44; 32]).unwrap();
        let expected = key.sign(&root(7));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    barrier.wait();
                    let point = cache.point_with(&root(7), DST, |message, dst| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Long enough that the other threads arrive while it is in flight.
                        std::thread::sleep(std::time::Duration::from_millis(50));
                        MessagePoint::hash(message, dst)
                    });
                    assert_eq!(key.sign_hashed(&point), expected);
                });
            }
        });
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let stats = cache.stats();
        assert_eq!((stats.misses, stats.hits, stats.hashes), (1, 15, 1));
    }

    #[test]
    fn churn_keeps_the_bound_and_the_list_consistent() {
        let cache = MessageCache::new(5);
        for i in 0..200u32 {
            let byte = (i * 7 % 11) as u8;
            cache.point(&root(byte), DST);
            assert!(cache.len() <= 5);
        }
        let lru = cache.lock();
        // Walk the list both ways: every node exactly once.
        let mut seen = 0;
        let mut i = lru.newest;
        while i != NIL {
            seen += 1;
            assert_eq!(lru.map[&lru.nodes[i].key], i);
            i = lru.nodes[i].older;
        }
        assert_eq!(seen, lru.map.len());
        let mut back = 0;
        let mut i = lru.oldest;
        while i != NIL {
            back += 1;
            i = lru.nodes[i].newer;
        }
        assert_eq!(back, seen);
    }
}
