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
//! A message that many keys sign gets more: after [`DEFAULT_TABLE_AFTER`] signatures its point's
//! fixed-base [`MessageTable`] is built (by the request that reached the count, once; the others
//! keep signing on the point meanwhile), and every later signature on it takes about 40 % of the
//! time of a signature on the point alone (`benches/bls.rs`: `sign_with_table` against
//! `sign_hashed`). A table costs about ten signatures to build and [`MessageTable::BYTES`]
//! (160 KiB) to keep, so only messages that keep being signed get one, and at most
//! [`DEFAULT_MAX_TABLES`] tables exist at once (the oldest is dropped first): under 3 MiB. On
//! mainnet an operator's hot messages per slot are one attestation data, one slot (selection
//! proofs) and one block root (sync committee), so that holds the last few slots' tables.
//!
//! What is cached is public: a function of the message only (the signing root a client sent or
//! the appliance computed), never of a key. Bounded: least-recently-used eviction at
//! [`MessageCache::capacity`] entries; each entry takes about [`ENTRY_BYTES`] bytes, so the
//! default ([`DEFAULT_CAPACITY`], 4,096) is under 2 MiB, plus the tables.
//!
//! Refuses: nothing — a message that is not in the cache is hashed. Messages are 32-byte signing
//! roots (the only thing the appliance signs); DSTs are `'static` constants, so a client cannot
//! grow a key.
//!
//! Pure: `std::sync` only (a `Mutex` held for the map operation, never while hashing or building
//! a table; the wait of the single flight is a `OnceLock`), no I/O. Callers on an async runtime
//! call it from the blocking pool, where the signing itself runs.
#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{BlsSignature, MessagePoint, MessageTable, SecretKey};

/// Default number of cached messages.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Default number of signatures on one message after which its table is built. A table costs
/// about ten signatures on the point and saves about 60 % of each later one, so a message signed
/// fewer than about 35 times does not repay it; a mainnet attestation data of an operator with
/// 10,000 keys is signed about 313 times per slot.
pub const DEFAULT_TABLE_AFTER: u32 = 16;

/// Default number of tables kept at once.
pub const DEFAULT_MAX_TABLES: usize = 16;

/// Approximate memory per entry without its table: the point (288-byte Jacobian G2 point), the
/// counters and the table slot in an `Arc` (~360 B), the LRU node (72 B) and the hash-map slot
/// (~64 B).
pub const ENTRY_BYTES: usize = 500;

/// A message ready to be signed by any key: its point, or its table once it has one.
// The point is returned by value on every signature: boxing it would add an allocation per
// request to save copying 288 bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum HashedMessage {
    Point(MessagePoint),
    Table(Arc<MessageTable>),
}

impl HashedMessage {
    /// The signature of `key` on this message, the same bytes either way (and the same as
    /// [`SecretKey::sign`] of the message).
    pub fn sign(&self, key: &SecretKey) -> BlsSignature {
        match self {
            Self::Point(point) => key.sign_hashed(point),
            Self::Table(table) => key.sign_with_table(table),
        }
    }
}

impl std::fmt::Debug for HashedMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Point(_) => "HashedMessage::Point(..)",
            Self::Table(_) => "HashedMessage::Table(..)",
        })
    }
}

/// One cached message.
#[derive(Default)]
struct Entry {
    /// Filled once, by the first request (the single flight).
    point: OnceLock<MessagePoint>,
    /// Signatures asked for on this message so far.
    uses: AtomicU32,
    /// Set by the one request that builds the table, never cleared: a table dropped to keep the
    /// bound is not rebuilt for the same entry (a message that old has had its burst).
    building: AtomicBool,
    table: Mutex<Option<Arc<MessageTable>>>,
}

impl Entry {
    fn table(&self) -> MutexGuard<'_, Option<Arc<MessageTable>>> {
        // Only an assignment happens under this lock; a poisoned one is still consistent.
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

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
    cell: Arc<Entry>,
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
    /// The entries that hold a table, oldest first (at most `max_tables`).
    tables: VecDeque<Arc<Entry>>,
    max_tables: usize,
}

impl Lru {
    fn new(capacity: usize, max_tables: usize) -> Self {
        Self {
            map: HashMap::with_capacity(capacity),
            nodes: Vec::with_capacity(capacity),
            newest: NIL,
            oldest: NIL,
            capacity,
            tables: VecDeque::with_capacity(max_tables + 1),
            max_tables,
        }
    }

    /// Give `entry` its table, dropping the oldest table beyond the bound.
    fn install_table(&mut self, entry: &Arc<Entry>, table: Arc<MessageTable>) {
        *entry.table() = Some(table);
        self.tables.push_back(entry.clone());
        while self.tables.len() > self.max_tables {
            if let Some(oldest) = self.tables.pop_front() {
                // A signer holding this table keeps its own `Arc` until it is done.
                *oldest.table() = None;
            }
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
    fn cell(&mut self, key: Key) -> (Arc<Entry>, bool) {
        if let Some(&i) = self.map.get(&key) {
            if self.newest != i {
                self.unlink(i);
                self.push_newest(i);
            }
            return (self.nodes[i].cell.clone(), true);
        }
        let cell = Arc::new(Entry::default());
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
    /// Fixed-base tables built.
    pub tables: u64,
}

/// The cache (see the module documentation). Shared by reference (`Arc`) between threads.
pub struct MessageCache {
    lru: Mutex<Lru>,
    table_after: u32,
    max_tables: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    hashes: AtomicU64,
    tables: AtomicU64,
}

impl Default for MessageCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl MessageCache {
    /// A cache of at most `capacity` messages (at least one), with the default table policy.
    pub fn new(capacity: usize) -> Self {
        Self::with_tables(capacity, DEFAULT_TABLE_AFTER, DEFAULT_MAX_TABLES)
    }

    /// A cache of at most `capacity` messages that builds a message's table when it is about to
    /// be signed the `table_after`-th time (at least the second), keeping at most `max_tables`
    /// (0: never build one).
    pub fn with_tables(capacity: usize, table_after: u32, max_tables: usize) -> Self {
        Self {
            lru: Mutex::new(Lru::new(capacity.max(1), max_tables)),
            table_after: table_after.max(2),
            max_tables,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            hashes: AtomicU64::new(0),
            tables: AtomicU64::new(0),
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
            tables: self.tables.load(Ordering::Relaxed),
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
        let (entry, point) = self.entry_with(message, dst, MessagePoint::hash);
        drop(entry);
        point
    }

    /// The message ready for one more signature: its table if it has one, a new table if this
    /// is the signature that reaches the count (built here, on the caller's thread), else its
    /// point.
    pub fn message(&self, message: &[u8; 32], dst: &'static [u8]) -> HashedMessage {
        self.message_with(message, dst, MessagePoint::hash)
    }

    /// [`MessageCache::message`] with the hash function passed in (tests count its calls).
    fn message_with(
        &self,
        message: &[u8; 32],
        dst: &'static [u8],
        hash: impl FnOnce(&[u8], &[u8]) -> MessagePoint,
    ) -> HashedMessage {
        let (entry, point) = self.entry_with(message, dst, hash);
        let uses = entry.uses.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if uses < self.table_after {
            return HashedMessage::Point(point);
        }
        if let Some(table) = entry.table().clone() {
            return HashedMessage::Table(table);
        }
        if self.max_tables == 0 || entry.building.swap(true, Ordering::AcqRel) {
            // Being built by another request (or dropped from the bound): sign on the point.
            return HashedMessage::Point(point);
        }
        // Outside the lock, like the hashing: the other requests keep signing meanwhile.
        let table = Arc::new(MessageTable::build(&point));
        self.tables.fetch_add(1, Ordering::Relaxed);
        self.lock().install_table(&entry, table.clone());
        HashedMessage::Table(table)
    }

    /// The entry of `message` (marked most recently used) and its point, hashed by the first
    /// request that needs it.
    fn entry_with(
        &self,
        message: &[u8; 32],
        dst: &'static [u8],
        hash: impl FnOnce(&[u8], &[u8]) -> MessagePoint,
    ) -> (Arc<Entry>, MessagePoint) {
        let key = Key {
            message: *message,
            dst,
        };
        let (entry, present) = self.lock().cell(key);
        let counter = if present { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        // Outside the lock: other messages proceed while this one is hashed, and requests for
        // this one block here until the first has stored its point.
        let point = *entry.point.get_or_init(|| {
            self.hashes.fetch_add(1, Ordering::Relaxed);
            hash(message, dst)
        });
        (entry, point)
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
                hashes: 3,
                tables: 0
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
                    let (_, point) = cache.entry_with(&root(7), DST, |message, dst| {
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

    fn keys(count: u8) -> Vec<SecretKey> {
        (1..=count)
            .map(|i| SecretKey::from_bytes(&[i; 32]).unwrap())
            .collect()
    }

    fn entries_with_tables(cache: &MessageCache) -> usize {
        let lru = cache.lock();
        lru.nodes
            .iter()
            .filter(|n| n.cell.table().is_some())
            .count()
    }

    #[test]
    fn a_hot_message_gets_one_table_and_signs_the_same_bytes() {
        let cache = MessageCache::with_tables(8, 4, 2);
        for (i, key) in keys(20).iter().enumerate() {
            let message = cache.message(&root(5), DST);
            let uses = i + 1;
            assert_eq!(
                matches!(message, HashedMessage::Table(_)),
                uses >= 4,
                "use {uses}: {message:?}"
            );
            assert_eq!(message.sign(key), key.sign(&root(5)), "use {uses}");
        }
        let stats = cache.stats();
        assert_eq!((stats.hashes, stats.tables), (1, 1));
    }

    #[test]
    fn at_most_max_tables_exist_and_the_oldest_goes_first() {
        let cache = MessageCache::with_tables(8, 2, 2);
        let key = SecretKey::from_bytes(&[0x55; 32]).unwrap();
        for byte in 1..=3u8 {
            for _ in 0..3 {
                let message = cache.message(&root(byte), DST);
                assert_eq!(message.sign(&key), key.sign(&root(byte)));
            }
            assert!(entries_with_tables(&cache) <= 2);
        }
        assert_eq!(cache.stats().tables, 3);
        // Root 1's table was dropped for root 3's, and is not rebuilt for the same entry.
        assert!(matches!(
            cache.message(&root(1), DST),
            HashedMessage::Point(_)
        ));
        assert!(matches!(
            cache.message(&root(3), DST),
            HashedMessage::Table(_)
        ));
        assert_eq!(cache.stats().tables, 3);
    }

    #[test]
    fn no_tables_when_the_bound_is_zero() {
        let cache = MessageCache::with_tables(8, 2, 0);
        for _ in 0..10 {
            assert!(matches!(
                cache.message(&root(1), DST),
                HashedMessage::Point(_)
            ));
        }
        assert_eq!(cache.stats().tables, 0);
    }

    #[test]
    fn a_burst_on_a_hot_message_builds_its_table_once() {
        let cache = MessageCache::with_tables(16, 2, 4);
        let threads = 8;
        let barrier = Barrier::new(threads);
        let keys = keys(threads as u8);
        let expected: Vec<_> = keys.iter().map(|k| k.sign(&root(3))).collect();
        std::thread::scope(|scope| {
            for (key, expected) in keys.iter().zip(&expected) {
                let (cache, barrier) = (&cache, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for _ in 0..4 {
                        assert_eq!(&cache.message(&root(3), DST).sign(key), expected);
                    }
                });
            }
        });
        let stats = cache.stats();
        assert_eq!((stats.hashes, stats.tables), (1, 1));
        assert_eq!(entries_with_tables(&cache), 1);
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
