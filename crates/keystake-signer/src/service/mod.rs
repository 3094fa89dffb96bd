//! The signing path (design.md §1), composed from the pure core and the adapters:
//! resolve the key → decode and validate the request → slashing check and durable record →
//! unseal the share in the HSM → BLS sign → zeroize → return the (partial) signature.
//!
//! Refuses: unknown keys, malformed requests, `signingRoot` mismatches, anything the slashing
//! rules forbid or that cannot be recorded durably first, and every request when the HSM or the
//! database is unavailable. A refused request records nothing and signs nothing.
#![forbid(unsafe_code)]

pub mod authz;
pub mod health;
pub mod keymanager;
pub mod observe;
pub mod sign;
mod slashable;
mod slashing_admin;
pub mod unseal_cache;
pub use slashable::SlashableAnswer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::hsm::{SealContext, SealError, SealedShare, Sealer};
use crate::service::authz::Authorizer;
use crate::service::health::ReloadState;
use crate::service::observe::{Observer, Phase, Unobserved};
use crate::service::unseal_cache::{UnsealCache, UnsealCacheStats};
use crate::store::{
    InsertOutcome, Refusal, ShareOrigin, ShareRecord, Store, StoreError, ThresholdInfo,
};
use keystake_core::bls;
use keystake_core::bls::message_cache::{CacheStats, HashedMessage, Lookup, MessageCache};
use keystake_core::consensus::Network;
use keystake_core::policy::{Denial, KeyRef};
use keystake_core::request::{self, RequestError, SignKind, SigningIntent};
use keystake_core::threshold::ShareKeysCache;
use keystake_core::types::{BlsPublicKey, BlsSignature, Root};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(
        "invalid key identifier {identifier:?}: expected a 0x-prefixed 48-byte BLS public key"
    )]
    InvalidIdentifier { identifier: String },
    #[error("no signing key for {identifier}")]
    UnknownKey { identifier: String },
    #[error(
        "{identifier} is the group key of several shares held here; address one share public key"
    )]
    AmbiguousGroupKey { identifier: String },
    #[error(transparent)]
    BadRequest(#[from] RequestError),
    #[error("refused by slashing protection: {0}")]
    Refused(Refusal),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HSM: {0}")]
    Seal(#[from] SealError),
    #[error("the sealed share for {public_key} unsealed to an invalid secret key")]
    InvalidUnsealedShare { public_key: BlsPublicKey },
    #[error("the key index lists {group} as a group key but not its share (a bug)")]
    KeyIndexOutOfStep { group: BlsPublicKey },
    #[error("a blocking task of the service did not finish: {0}")]
    TaskFailed(#[from] tokio::task::JoinError),
    #[error("{public_key} is disabled but requests that started before are still running after {DEACTIVATE_DRAIN_TIMEOUT:?}")]
    DrainTimeout { public_key: BlsPublicKey },
    #[error("the HSM returned a different share when unsealing a fresh seal")]
    SealRoundTripMismatch,
    #[error("forbidden: {0}")]
    Forbidden(#[from] Denial),
    #[error("cannot combine: {0}")]
    Combine(#[from] keystake_core::threshold::ThresholdError),
    #[error("refused: {0}")]
    FarFuture(#[from] keystake_core::clock::FarFuture),
}

/// A key this appliance can sign with: the sealed share and what binds it.
pub(crate) struct LoadedKey {
    public_key: BlsPublicKey,
    sealed: SealedShare,
    context: SealContext,
    threshold: Option<ThresholdInfo>,
    origin: ShareOrigin,
}

impl LoadedKey {
    pub(crate) fn key_ref(&self) -> KeyRef {
        KeyRef {
            public_key: self.public_key,
            group_public_key: self.threshold.as_ref().map(|t| t.group_public_key),
        }
    }
}

#[derive(Default)]
struct KeyIndex {
    by_public_key: HashMap<BlsPublicKey, Arc<LoadedKey>>,
    /// Group public key → share public keys held here (threshold shares only).
    by_group_key: HashMap<BlsPublicKey, Vec<BlsPublicKey>>,
    /// Share public keys in the order they were imported (listing order).
    order: Vec<BlsPublicKey>,
}

/// Public description of a loaded key, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyInfo {
    pub public_key: BlsPublicKey,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_public_key: Option<BlsPublicKey>,
    /// Where the key came from: `keystore`, `demo`, `split`, `dkg`.
    pub origin: &'static str,
}

/// The outcome of a successful signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signed {
    pub signature: BlsSignature,
    pub kind: SignKind,
    pub signing_root: Root,
    /// Which key signed (a share key when the request named a group key).
    pub public_key: BlsPublicKey,
}

/// How long `deactivate` waits for in-flight requests of the key (an unseal and a BLS signature
/// take milliseconds; a stuck HSM call is what this bounds).
pub const DEACTIVATE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SigningService {
    store: Arc<Store>,
    sealer: Arc<dyn Sealer>,
    network: Network,
    keys: RwLock<Arc<KeyIndex>>,
    authorizer: Arc<Authorizer>,
    observer: Arc<dyn Observer>,
    reload_state: Mutex<ReloadState>,
    /// Hash-to-G2 points of recent signing roots, shared by every key (public data; see
    /// `keystake_core::bls::message_cache`): a root many keys sign in one slot is hashed once,
    /// and from its 16th signature on it is signed through its fixed-base table.
    messages: Arc<MessageCache>,
    /// Share-key sets of recent verified combines (gRPC `Combine` sends them with every
    /// request), checked once per set (public data; `keystake_core::threshold::share_keys_cache`).
    combine_keys: Arc<ShareKeysCache>,
    /// The generation of the key index in force, and the lock that serializes every rebuild
    /// of it with the store change that caused it: a reload reads the store and installs its
    /// index under this lock, and `deactivate` disables the key and rebuilds under it too, so
    /// a reload that read the store before a DELETE can never install its stale index after.
    index_generation: Mutex<u64>,
    /// Duties further ahead of the wall clock than this many epochs are refused before they
    /// are recorded (`crate::config::SlashingSection::future_margin_epochs`).
    future_margin_epochs: u64,
    /// The unseal policy (issue 14): `None` (the default) unseals in the HSM for every
    /// signature; `Some` keeps unsealed shares for a bounded time (`unseal_cache`).
    unsealed: Option<Arc<UnsealCache>>,
}

/// The sealing context of a record: the share's identity that the HSM binds the blob to.
pub fn seal_context(public_key: BlsPublicKey, threshold: Option<&ThresholdInfo>) -> SealContext {
    SealContext {
        share_public_key: public_key,
        share_index: threshold.map(|t| t.index),
        group_public_key: threshold.map(|t| t.group_public_key),
    }
}

impl SigningService {
    /// Build the service and load every enabled key from the store.
    pub fn new(
        store: Arc<Store>,
        sealer: Arc<dyn Sealer>,
        network: Network,
    ) -> Result<Self, ServiceError> {
        let service = SigningService {
            store,
            sealer,
            network,
            keys: RwLock::new(Arc::new(KeyIndex::default())),
            authorizer: Arc::new(Authorizer::open()),
            observer: Arc::new(Unobserved),
            reload_state: Mutex::new(ReloadState::Idle),
            messages: Arc::new(MessageCache::default()),
            combine_keys: Arc::new(ShareKeysCache::default()),
            index_generation: Mutex::new(0),
            future_margin_epochs: keystake_core::clock::DEFAULT_FUTURE_MARGIN_EPOCHS,
            unsealed: None,
        };
        service.reload()?;
        Ok(service)
    }

    /// Use `authorizer` to decide every request made through [`Self::sign_as`] and friends
    /// (the default allows every client: no policy configured).
    pub fn with_authorizer(mut self, authorizer: Arc<Authorizer>) -> Self {
        self.authorizer = authorizer;
        self
    }

    pub fn authorizer(&self) -> &Arc<Authorizer> {
        &self.authorizer
    }

    /// Refuse duties more than `epochs` ahead of the wall clock (default
    /// [`keystake_core::clock::DEFAULT_FUTURE_MARGIN_EPOCHS`]).
    pub fn with_future_margin_epochs(mut self, epochs: u64) -> Self {
        self.future_margin_epochs = epochs;
        self
    }

    pub fn future_margin_epochs(&self) -> u64 {
        self.future_margin_epochs
    }

    /// Keep unsealed shares in `cache` (`[hsm] unseal_cache`; off unless called).
    pub fn with_unseal_cache(mut self, cache: Arc<UnsealCache>) -> Self {
        self.unsealed = Some(cache);
        self
    }

    /// The unseal cache, when it is on (`app::serve` sweeps it on a timer).
    pub fn unseal_cache(&self) -> Option<Arc<UnsealCache>> {
        self.unsealed.clone()
    }

    /// The unseal cache's counters, when the cache is on.
    pub fn unseal_cache_stats(&self) -> Option<UnsealCacheStats> {
        self.unsealed.as_ref().map(|cache| cache.stats())
    }

    /// The HSM probe failed: drop every cached share, so signing stops with the HSM (answers
    /// 503) instead of carrying on until the entries expire.
    pub(crate) fn hsm_down(&self) {
        if let Some(cache) = &self.unsealed {
            cache.clear();
        }
    }

    /// How many times the key index has been rebuilt (reloads, imports, deletes).
    pub fn index_generation(&self) -> u64 {
        *self
            .index_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Report phase timings, outcomes and refusals to `observer` (the metrics adapter).
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        observer.keys_loaded(self.index().order.len());
        self.observer = observer;
        self
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn sealer(&self) -> &Arc<dyn Sealer> {
        &self.sealer
    }

    /// Re-read the keys from the store (after an import or delete by another process). Returns
    /// the number of keys loaded. Serialized with every other rebuild (see `index_generation`).
    pub fn reload(&self) -> Result<usize, ServiceError> {
        let mut generation = self
            .index_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.rebuild_index(&mut generation)
    }

    /// Read the enabled keys from the store and install them as the next generation. Only
    /// called with the `index_generation` lock held (the `&mut u64` is its guard's value).
    fn rebuild_index(&self, generation: &mut u64) -> Result<usize, ServiceError> {
        let previous = self.index();
        let mut index = KeyIndex::default();
        for record in self.store.shares()? {
            if !record.enabled {
                continue;
            }
            if let Some(t) = &record.threshold {
                index
                    .by_group_key
                    .entry(t.group_public_key)
                    .or_default()
                    .push(record.public_key);
            }
            index.order.push(record.public_key);
            // An unchanged key keeps its `Arc`: in-flight requests hold that same `Arc`, which is
            // how `deactivate` knows when the last of them is done.
            if let Some(existing) = previous.by_public_key.get(&record.public_key) {
                if existing.sealed.0 == record.sealed && existing.threshold == record.threshold {
                    index
                        .by_public_key
                        .insert(record.public_key, existing.clone());
                    continue;
                }
            }
            let context = seal_context(record.public_key, record.threshold.as_ref());
            index.by_public_key.insert(
                record.public_key,
                Arc::new(LoadedKey {
                    public_key: record.public_key,
                    sealed: SealedShare(record.sealed),
                    context,
                    threshold: record.threshold,
                    origin: record.origin,
                }),
            );
        }
        let count = index.order.len();
        if let Some(cache) = &self.unsealed {
            // Deleted keys and replaced blobs leave the cache with the index that held them.
            cache.retain(|public_key, sealed| {
                index
                    .by_public_key
                    .get(public_key)
                    .is_some_and(|key| key.sealed == *sealed)
            });
        }
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(index);
        *generation += 1;
        self.observer.keys_loaded(count);
        Ok(count)
    }

    fn index(&self) -> Arc<KeyIndex> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Share (or whole-key) public keys, in import order.
    pub fn public_keys(&self) -> Vec<BlsPublicKey> {
        self.index().order.clone()
    }

    /// Public description of every loaded key.
    pub fn key_infos(&self) -> Vec<KeyInfo> {
        self.key_infos_where(|_| true)
    }

    pub(crate) fn key_infos_where(&self, keep: impl Fn(&LoadedKey) -> bool) -> Vec<KeyInfo> {
        let index = self.index();
        index
            .order
            .iter()
            .filter_map(|pk| index.by_public_key.get(pk))
            .filter(|key| keep(key))
            .map(|key| KeyInfo {
                public_key: key.public_key,
                share_index: key.threshold.as_ref().map(|t| t.index.get()),
                threshold: key.threshold.as_ref().map(|t| t.threshold.get()),
                participants: key.threshold.as_ref().map(|t| t.participants),
                group_public_key: key.threshold.as_ref().map(|t| t.group_public_key),
                origin: key.origin.as_str(),
            })
            .collect()
    }

    pub(crate) fn resolve(&self, identifier: &str) -> Result<Arc<LoadedKey>, ServiceError> {
        let public_key: BlsPublicKey =
            identifier
                .parse()
                .map_err(|_| ServiceError::InvalidIdentifier {
                    identifier: keystake_core::text::echo(identifier),
                })?;
        let index = self.index();
        if let Some(key) = index.by_public_key.get(&public_key) {
            return Ok(key.clone());
        }
        match index.by_group_key.get(&public_key).map(Vec::as_slice) {
            Some([only]) => index
                .by_public_key
                .get(only)
                .cloned()
                .ok_or(ServiceError::KeyIndexOutOfStep { group: public_key }),
            Some(_) => Err(ServiceError::AmbiguousGroupKey {
                identifier: public_key.to_hex(),
            }),
            None => Err(ServiceError::UnknownKey {
                identifier: public_key.to_hex(),
            }),
        }
    }

    /// Decode and validate a request without touching any key (pure).
    pub fn decode(&self, body: &[u8]) -> Result<SigningIntent, ServiceError> {
        Ok(request::parse_sign_request(body, &self.network)?)
    }

    /// Unseal the share in the HSM, sign, and let the plaintext drop (zeroized). The HSM call
    /// runs on the blocking pool (a slow or hung device must not stall the runtime). A share
    /// held by the unseal cache needs no HSM call: it is signed right here, on the thread that
    /// already holds the request (≈ 150 µs of arithmetic on a cached message point), which
    /// saves the two thread hand-offs of the blocking pool.
    pub(crate) async fn sign_root(
        &self,
        key: Arc<LoadedKey>,
        signing_root: Root,
    ) -> Result<BlsSignature, ServiceError> {
        if let Some(secret) = self
            .unsealed
            .as_ref()
            .and_then(|cache| cache.get(&key.public_key, &key.sealed, &key.context))
        {
            let started = std::time::Instant::now();
            // On the runtime thread: never build a table here (~1.5 ms of this worker's
            // connections); a due table is built on the blocking pool for the next signatures.
            let message = match self.messages.lookup(&signing_root.0, bls::DST) {
                Lookup::Ready(message) => message,
                Lookup::BuildDue(message, build) => {
                    let messages = self.messages.clone();
                    tokio::task::spawn_blocking(move || messages.build(build));
                    message
                }
            };
            let signed = sign_unsealed(&key, secret, &message);
            keystake_core::wipe::wipe_stack();
            self.observer.phase(Phase::Bls, started.elapsed());
            return signed;
        }
        let sealer = self.sealer.clone();
        let observer = self.observer.clone();
        let messages = self.messages.clone();
        let cache = self.unsealed.clone();
        tokio::task::spawn_blocking(move || {
            // The message half first (no secret involved): shared with every other request for
            // this root, and waited for here if one is hashing it right now.
            let hash_started = std::time::Instant::now();
            let message = messages.message(&signing_root.0, bls::DST);
            let hashing = hash_started.elapsed();
            let signed = (|| {
                let started = std::time::Instant::now();
                let secret = sealer
                    .unseal(&key.sealed, &key.context)
                    .inspect_err(|error| {
                        if error.is_unavailable() {
                            // The HSM is down: no cached share may keep signing without it.
                            if let Some(cache) = &cache {
                                cache.clear();
                            }
                        }
                    })?;
                observer.phase(Phase::Unseal, started.elapsed());
                if let Some(cache) = &cache {
                    cache.insert(key.public_key, &key.sealed, &key.context, &secret);
                }
                let started = std::time::Instant::now();
                let signature = sign_unsealed(&key, secret, &message).inspect_err(|_| {
                    // Not a valid scalar: nothing worth keeping.
                    if let Some(cache) = &cache {
                        cache.remove(&key.public_key);
                    }
                })?;
                // Hashing (or waiting for another request's hash) counts as BLS time.
                observer.phase(Phase::Bls, hashing + started.elapsed());
                Ok(signature)
            })();
            // The unseal and blst's signing left copies of the share in the frames below.
            keystake_core::wipe::wipe_stack();
            signed
        })
        .await?
    }

    /// The share-key sets of verified combines, checked once per set.
    pub fn combine_keys(&self) -> Arc<ShareKeysCache> {
        Arc::clone(&self.combine_keys)
    }

    /// Hits, misses and hashes of the shared message cache since start.
    pub fn message_cache_stats(&self) -> CacheStats {
        self.messages.stats()
    }

    /// Seal a secret key in the HSM and store it. The plaintext never leaves memory; the seal is
    /// verified by unsealing it once before the record is written.
    pub fn import_key(
        &self,
        secret: &bls::SecretKey,
        origin: ShareOrigin,
        threshold: Option<ThresholdInfo>,
    ) -> Result<(BlsPublicKey, InsertOutcome), ServiceError> {
        let outcome = import_key(&self.store, self.sealer.as_ref(), secret, origin, threshold)?;
        self.reload()?;
        Ok(outcome)
    }

    /// Stop a key from signing (keymanager DELETE): disable it in the store, drop it from the
    /// index, then wait until no request that resolved it before is still checking, recording
    /// or signing — so slashing data exported afterwards is complete. Returns whether the key
    /// was active. Its slashing history stays.
    pub async fn deactivate(&self, public_key: &BlsPublicKey) -> Result<bool, ServiceError> {
        let held = self.index().by_public_key.get(public_key).cloned();
        let was_active = {
            // Disable and rebuild under the index lock: no reload can read the store before
            // the disable and install its index after this rebuild (which would resurrect it).
            let mut generation = self
                .index_generation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let was_active = self.store.disable_share(public_key)?;
            self.rebuild_index(&mut generation)?;
            was_active
        };
        if let Some(key) = held {
            let deadline = tokio::time::Instant::now() + DEACTIVATE_DRAIN_TIMEOUT;
            // Ours is the only reference left once every in-flight request has finished.
            while Arc::strong_count(&key) > 1 {
                if tokio::time::Instant::now() >= deadline {
                    if let Some(cache) = &self.unsealed {
                        cache.remove(public_key);
                    }
                    return Err(ServiceError::DrainTimeout {
                        public_key: *public_key,
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        // The rebuild above dropped its cached share; a request that resolved the key before
        // may have put it back while it drained.
        if let Some(cache) = &self.unsealed {
            cache.remove(public_key);
        }
        Ok(was_active)
    }
}

/// Sign on a hashed message with an unsealed share (consumed: zeroized when it drops).
fn sign_unsealed(
    key: &LoadedKey,
    secret: zeroize::Zeroizing<[u8; crate::hsm::SHARE_LEN]>,
    message: &HashedMessage,
) -> Result<BlsSignature, ServiceError> {
    let secret_key =
        bls::SecretKey::from_zeroizing(secret).map_err(|_| ServiceError::InvalidUnsealedShare {
            public_key: key.public_key,
        })?;
    Ok(message.sign(&secret_key))
}

/// Seal and store a key without a running service (CLI `keys import`).
pub fn import_key(
    store: &Store,
    sealer: &dyn Sealer,
    secret: &bls::SecretKey,
    origin: ShareOrigin,
    threshold: Option<ThresholdInfo>,
) -> Result<(BlsPublicKey, InsertOutcome), ServiceError> {
    let record = seal_record(sealer, secret, origin, threshold)?;
    let outcome = store.insert_share(&record)?;
    Ok((record.public_key, outcome))
}

/// Seal a secret key in the HSM into a storable record (nothing is written). The seal is
/// verified by unsealing it once, so a record that could not be opened is never stored.
pub fn seal_record(
    sealer: &dyn Sealer,
    secret: &bls::SecretKey,
    origin: ShareOrigin,
    threshold: Option<ThresholdInfo>,
) -> Result<ShareRecord, ServiceError> {
    let public_key = secret.public_key();
    let context = seal_context(public_key, threshold.as_ref());
    let plaintext = secret.to_bytes();
    let sealed = sealer.seal(&plaintext, &context)?;
    let reopened = sealer.unseal(&sealed, &context)?;
    if reopened.as_slice() != plaintext.as_slice() {
        return Err(ServiceError::SealRoundTripMismatch);
    }
    Ok(ShareRecord {
        public_key,
        sealed: sealed.0,
        origin,
        threshold,
        enabled: true,
    })
}
