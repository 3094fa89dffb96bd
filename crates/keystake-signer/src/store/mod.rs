//! The appliance's SQLite database: sealed shares (only ever the HSM-sealed blob and public
//! metadata) and the slashing-protection history.
//!
//! Check-and-record runs on one dedicated writer thread that owns the writing connection.
//! Requests that arrive while a transaction is being written wait and then go together into the
//! next `BEGIN IMMEDIATE … COMMIT` (group commit): every request is checked against the history as
//! left by the requests before it in the same transaction, and nobody gets an answer before the
//! commit — with `synchronous=FULL` — is on disk. A failed commit refuses every request of the
//! batch; nothing was released, so nothing is lost. No lock is held while signing: the slow
//! parts (unseal, BLS) run outside. A signing request may ask for the verdict as soon as the
//! writer has decided it inside the open transaction ([`PendingCheck::tentative`]), to compute
//! its signature while the batch commits; the signature is released only on the committed
//! outcome ([`PendingCheck::durable`]), and dropped unseen when the commit fails.
//!
//! Fail closed (issue 17): when a slashing transaction fails with a storage fault (disk full, I/O
//! error, read-only file system, corruption — anything but a lock held by another process) the
//! store **latches**: every later check-and-record is refused with
//! [`StoreFault::Latched`] (503) and `/healthcheck` is DOWN until an operator has run
//! `keystake-signer slashing verify` and restarted the signer. Records written near an I/O error
//! may be lost or damaged, so carrying on after the fault went away could sign against a history
//! that silently lacks a record. Before every batch the writer also checks that the file at the
//! configured path is still the one it opened (device, inode — one `stat` per batch): a database
//! moved or replaced underneath latches the same way, since records committed to an unlinked file
//! vanish at restart. Group commit can be switched off ([`StoreOptions::group_commit`]) to measure
//! what it buys.
//!
//! EIP-3076 interchange import and export live in [`interchange`]; removing old attestations
//! (with the watermark raised over them) in [`prune`].
//!
//! Refuses: opening a file that fails `PRAGMA integrity_check` (which, unlike `quick_check`,
//! compares every index with its table: the surround queries are forced through an index, so a
//! stale index page would hide a record from them), a schema newer than this build, a
//! second network (signing requests or interchange files whose genesis validators root differs
//! from the one the database is bound to).
#![forbid(unsafe_code)]

pub mod dkg;
pub mod interchange;
pub mod prune;
// Audit log storage (issue 6): entries ride in the writer's batch transaction.
pub mod audit;

pub use interchange::ImportSummary;
pub use prune::{PruneFailed, PruneSummary};
// The request, refusal and outcome types are the core's (pure data); re-exported where the
// store's callers have always found them.
pub use keystake_core::slashing::{CheckOutcome, Refusal, SlashingRequest};

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;

use keystake_core::slashing::binding::{self, Binding};
use keystake_core::slashing::interchange::InterchangeError;
use keystake_core::slashing::{
    self, History, Safe, SignedAttestation, SignedBlock, Surround, Watermark,
};
use keystake_core::types::{BlsPublicKey, Epoch, Root, ShareIndex, Slot, Threshold};

/// Schema version written to `PRAGMA user_version`.
const SCHEMA_VERSION: i64 = 2;
/// At most this many requests share one transaction.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be used (I/O error, disk full, read-only, replaced, locked). Requests
    /// are refused with 503. Only a lock held by another process clears by itself; every other
    /// fault latches the store ([`StoreFault::Latched`]) until a restart.
    #[error("slashing-protection database unavailable: {0}")]
    Unavailable(#[from] StoreFault),
    #[error("database {path} is corrupted ({detail}); refusing to use it — restore it from a backup or an EIP-3076 export")]
    Corrupted { path: PathBuf, detail: String },
    #[error("database {path} has schema version {found}, newer than this build understands ({SCHEMA_VERSION})")]
    SchemaTooNew { path: PathBuf, found: i64 },
    #[error("a stored value is invalid: {0}")]
    InvalidData(String),
    #[error("{key} would be a second signing key of validator {group} on this appliance ({reason}); each key would keep its own slashing history, so together they could sign a slashable pair — one appliance holds at most one share (or the whole key) of a validator")]
    SecondKeyOfValidator {
        key: BlsPublicKey,
        group: BlsPublicKey,
        reason: &'static str,
    },
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("the interchange file is for the network with genesis validators root {file}, but this database is bound to {bound}; refusing to mix networks")]
    GenesisMismatch { bound: Root, file: Root },
    #[error(transparent)]
    InvalidInterchange(#[from] InterchangeError),
    #[error("the database is not bound to a network yet (nothing was signed or imported), so there is no genesis validators root to export")]
    NotBound,
}

/// Why the database cannot be used right now, named so an operator knows what to fix. Cheap to
/// clone: one failed group commit answers every request of its batch with the same fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreFault {
    #[error("{}", describe_sqlite(*kind, source))]
    Sqlite {
        kind: FaultKind,
        source: Arc<rusqlite::Error>,
    },
    #[error("cannot {action} {}: {cause}", path.display())]
    Open {
        action: &'static str,
        path: PathBuf,
        cause: Box<StoreFault>,
    },
    #[error("{} is no longer the database file this signer opened (deleted, moved or replaced)", path.display())]
    Replaced { path: PathBuf },
    #[error("cannot start writer thread: {0}")]
    WriterThread(Arc<std::io::Error>),
    /// A fault latched the store: signing stays stopped until an operator intervenes.
    #[error("signing stopped after a storage fault ({0}); slashing records near the fault may be lost — fix the cause, run `keystake-signer slashing verify` and restart the signer")]
    Latched(Box<StoreFault>),
}

impl StoreFault {
    /// Whether this fault stops signing for good (until restart). A database locked by another
    /// process (`busy`) is the one fault that clears by itself without any record at risk.
    fn latches(&self) -> bool {
        !matches!(
            self,
            StoreFault::Sqlite {
                kind: FaultKind::Busy,
                ..
            }
        )
    }
}

/// The first latching fault of this process, shared by the writer thread (which sets it) and the
/// [`Store`] handle (which refuses new jobs and fails the health check while it is set).
type Latch = Arc<OnceLock<StoreFault>>;

fn latched(fault: &StoreFault) -> StoreError {
    StoreError::Unavailable(StoreFault::Latched(Box::new(fault.clone())))
}

/// The class of an SQLite failure an operator can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    DiskFull,
    ReadOnly,
    Io,
    Corrupted,
    Busy,
    CannotOpen,
    Other,
}

impl FaultKind {
    fn of(error: &rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => FaultKind::DiskFull,
            Some(ErrorCode::ReadOnly) => FaultKind::ReadOnly,
            Some(ErrorCode::SystemIoFailure) => FaultKind::Io,
            Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
                FaultKind::Corrupted
            }
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => FaultKind::Busy,
            Some(ErrorCode::CannotOpen) => FaultKind::CannotOpen,
            _ => FaultKind::Other,
        }
    }

    fn label(self) -> Option<&'static str> {
        Some(match self {
            FaultKind::DiskFull => "disk full",
            FaultKind::ReadOnly => "database is read-only",
            FaultKind::Io => "I/O error",
            FaultKind::Corrupted => "database corrupted",
            FaultKind::Busy => "database busy",
            FaultKind::CannotOpen => "cannot open the database file",
            FaultKind::Other => return None,
        })
    }
}

fn describe_sqlite(kind: FaultKind, error: &rusqlite::Error) -> String {
    match kind.label() {
        Some(label) => format!("{label}: {error}"),
        None => error.to_string(),
    }
}

impl From<rusqlite::Error> for StoreFault {
    fn from(error: rusqlite::Error) -> Self {
        StoreFault::Sqlite {
            kind: FaultKind::of(&error),
            source: Arc::new(error),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Unavailable(error.into())
    }
}

/// How a [`Store`] behaves beyond the file it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Share one transaction and one fsync among all check-and-record requests waiting at the
    /// same time (default). Off: one transaction per request — only for measuring.
    pub group_commit: bool,
    /// The low watermark given to a key installed with no slashing history here (DKG, split,
    /// keymanager import without slashing data): configured by `[slashing]` in `signer.toml`.
    pub new_key_watermark: Watermark,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            group_commit: true,
            new_key_watermark: Watermark::default(),
        }
    }
}

/// Where a stored share came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareOrigin {
    Keystore,
    Demo,
    Split,
    Dkg,
}

impl ShareOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            ShareOrigin::Keystore => "keystore",
            ShareOrigin::Demo => "demo",
            ShareOrigin::Split => "split",
            ShareOrigin::Dkg => "dkg",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "keystore" => ShareOrigin::Keystore,
            "demo" => ShareOrigin::Demo,
            "split" => ShareOrigin::Split,
            "dkg" => ShareOrigin::Dkg,
            other => return Err(StoreError::InvalidData(format!("unknown origin {other}"))),
        })
    }
}

/// Threshold metadata of a share (absent for a whole validator key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThresholdInfo {
    pub index: ShareIndex,
    pub threshold: Threshold,
    pub participants: u32,
    pub group_public_key: BlsPublicKey,
    /// The public keys of all `participants` shares, in index order.
    pub share_public_keys: Vec<BlsPublicKey>,
}

/// One stored key share: the HSM-sealed blob and public metadata. Never the plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    pub public_key: BlsPublicKey,
    pub sealed: Vec<u8>,
    pub origin: ShareOrigin,
    pub threshold: Option<ThresholdInfo>,
    pub enabled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    Inserted,
    /// A share with this public key is already stored (and enabled).
    Duplicate,
    /// The key was stored but disabled (deleted); it is enabled again with the new blob.
    Reenabled,
}

struct Job {
    public_key: BlsPublicKey,
    genesis_validators_root: Option<Root>,
    /// `None`: an audit-only job (a refusal or a signature slashing protection does not cover).
    request: Option<SlashingRequest>,
    record: bool,
    /// The audit entry to chain in the same transaction (issue 6; see `audit.rs`).
    audit: Option<keystake_core::audit::Record>,
    /// The verdict as decided inside the open transaction, before it commits (see
    /// [`PendingCheck`]); `None` when the caller waits for the commit only.
    tentative: Option<oneshot::Sender<CheckOutcome>>,
    reply: oneshot::Sender<Result<CheckOutcome, StoreError>>,
}

/// Whether a slashing check records the request when safe (a dry run does not).
#[derive(Clone, Copy)]
enum Recording {
    Yes,
    No,
}

/// A check-and-record in flight on the writer thread.
///
/// [`tentative`](Self::tentative) gives the verdict the writer decided inside its open
/// transaction, before the commit: enough to *start* computing a signature, never to release
/// one — the batch may still fail to commit, and then every request of it is refused.
/// [`durable`](Self::durable) gives the outcome once the transaction is on disk (or the fault that
/// refused it); only that outcome may release a signature.
#[must_use = "only the durable outcome may release a signature"]
pub struct PendingCheck {
    tentative: Option<oneshot::Receiver<CheckOutcome>>,
    durable: oneshot::Receiver<Result<CheckOutcome, StoreError>>,
}

impl PendingCheck {
    /// The verdict before the commit; `None` when the writer refused the whole batch before
    /// deciding this request (a latched store, a replaced file, a failed `BEGIN`), or when it was
    /// already taken. [`durable`](Self::durable) then says why.
    pub async fn tentative(&mut self) -> Option<CheckOutcome> {
        self.tentative.take()?.await.ok()
    }

    /// The outcome once committed: the only answer a signature may be released on.
    pub async fn durable(self) -> Result<CheckOutcome, StoreError> {
        self.durable.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// The database. Cheap to share behind an `Arc`.
pub struct Store {
    path: PathBuf,
    options: StoreOptions,
    /// Connection for administrative work (share import, listing); WAL lets it read while the
    /// writer writes, and `busy_timeout` serialises its writes with the writer's.
    admin: Mutex<Connection>,
    jobs: mpsc::Sender<Job>,
    /// (device, inode) of the file opened, to notice it being deleted or replaced underneath.
    file_identity: Option<(u64, u64)>,
    /// Set after a latching fault; see the module docs.
    latch: Latch,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// SQLite stores signed 64-bit integers; flipping the top bit maps u64 onto i64 preserving
/// order, so range queries (surround checks) stay correct up to 2^64-1.
fn u64_to_sql(value: u64) -> i64 {
    (value ^ (1 << 63)) as i64
}

fn sql_to_u64(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

fn root_from_sql(bytes: Option<Vec<u8>>) -> Result<Option<Root>, rusqlite::Error> {
    bytes
        .map(|b| {
            Root::from_slice(&b).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Blob, e.into())
            })
        })
        .transpose()
}

/// The pragmas every connection gets, on create and on open alike.
pub(crate) fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsync'd at every commit, so a committed slashing record survives a crash
    // or power loss before its signature is released.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(())
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
        });
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS validators (
                 id INTEGER PRIMARY KEY,
                 pubkey BLOB NOT NULL UNIQUE,
                 -- watermarks (order-preserving u64 encoding, see u64_to_sql)
                 min_block_slot INTEGER,
                 min_att_source INTEGER,
                 min_att_target INTEGER
             );
             CREATE TABLE IF NOT EXISTS shares (
                 validator_id INTEGER PRIMARY KEY REFERENCES validators(id),
                 sealed BLOB NOT NULL,
                 origin TEXT NOT NULL,
                 share_index INTEGER,
                 threshold INTEGER,
                 participants INTEGER,
                 group_pubkey BLOB,
                 share_pubkeys BLOB,
                 enabled INTEGER NOT NULL DEFAULT 1,
                 created_at INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS signed_blocks (
                 validator_id INTEGER NOT NULL REFERENCES validators(id),
                 slot INTEGER NOT NULL,
                 signing_root BLOB
             );
             CREATE INDEX IF NOT EXISTS signed_blocks_by_slot ON signed_blocks (validator_id, slot);
             CREATE TABLE IF NOT EXISTS signed_attestations (
                 validator_id INTEGER NOT NULL REFERENCES validators(id),
                 source_epoch INTEGER NOT NULL,
                 target_epoch INTEGER NOT NULL,
                 signing_root BLOB
             );
             CREATE INDEX IF NOT EXISTS signed_attestations_by_target
                 ON signed_attestations (validator_id, target_epoch);
             CREATE INDEX IF NOT EXISTS signed_attestations_by_source
                 ON signed_attestations (validator_id, source_epoch);
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    if version < 2 {
        // Version 2: shares are looked up by group key on every import (one key per validator
        // per appliance); without an index that made imports quadratic in the number of keys.
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE INDEX IF NOT EXISTS shares_by_group ON shares (group_pubkey);
             PRAGMA user_version = 2;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// `PRAGMA integrity_check`: the b-tree structure (what `quick_check` covers) **and** that every
/// index holds exactly its table's rows. A stale index page (a restored or half-written page of
/// `signed_attestations_by_target`, say) passes `quick_check` but would hide records from the
/// surround queries, which are forced through those indexes. Costs a full read of the file:
/// measured in docs/performance.md ("Integrity check at start").
fn check_integrity(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let corrupted = |detail: String| StoreError::Corrupted {
        path: path.to_owned(),
        detail,
    };
    // At most a few findings: enough to name the damage, bounded however bad it is.
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(5)")
        .map_err(|e| corrupted(e.to_string()))?;
    let findings = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| corrupted(e.to_string()))?;
    if findings != ["ok"] {
        return Err(corrupted(findings.join("; ")));
    }
    Ok(())
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    // A file that is not a database (or a damaged one) is refused for good; anything else is a
    // fault the appliance may recover from.
    let fault = |action: &'static str| {
        move |e: rusqlite::Error| match FaultKind::of(&e) {
            FaultKind::Corrupted => StoreError::Corrupted {
                path: path.to_owned(),
                detail: e.to_string(),
            },
            _ => StoreError::Unavailable(StoreFault::Open {
                action,
                path: path.to_owned(),
                cause: Box::new(e.into()),
            }),
        }
    };
    let conn = Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
            | rusqlite::OpenFlags::SQLITE_OPEN_CREATE
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(fault("open"))?;
    configure(&conn).map_err(fault("configure"))?;
    Ok(conn)
}

impl Store {
    /// Open (creating if missing) the database at `path`, check its integrity and start the
    /// writer thread, with default options.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, StoreOptions::default())
    }

    /// [`Store::open`] with explicit options.
    pub fn open_with(path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let admin = open_connection(path)?;
        check_integrity(&admin, path)?;
        migrate(&admin, path)?;
        audit::create_table(&admin)?;
        let writer = open_connection(path)?;
        let identity = file_identity(path);
        let latch = Latch::default();
        let (jobs, queue) = mpsc::channel::<Job>();
        let writer = Writer {
            path: path.to_owned(),
            conn: writer,
            identity,
            latch: latch.clone(),
            max_batch: if options.group_commit { MAX_BATCH } else { 1 },
        };
        thread::Builder::new()
            .name("slashing-db-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Unavailable(StoreFault::WriterThread(Arc::new(e))))?;
        Ok(Store {
            path: path.to_owned(),
            options,
            admin: Mutex::new(admin),
            jobs,
            file_identity: identity,
            latch,
        })
    }

    pub fn options(&self) -> StoreOptions {
        self.options
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn admin(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves a usable connection (SQLite rolls back an open
        // transaction when the statement is dropped), so a poisoned lock is not fatal.
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a sealed share. A share whose key is already stored and enabled is a duplicate and
    /// left untouched; a disabled (deleted) one is enabled again with the new blob — its
    /// slashing history, which is never deleted, applies again.
    pub fn insert_share(&self, record: &ShareRecord) -> Result<InsertOutcome, StoreError> {
        let outcomes = self.insert_shares(std::slice::from_ref(record))?;
        Ok(outcomes[0])
    }

    /// Store many sealed shares in one transaction (one fsync): all of them or none.
    pub fn insert_shares(&self, records: &[ShareRecord]) -> Result<Vec<InsertOutcome>, StoreError> {
        let mut conn = self.admin();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            outcomes.push(insert_share_in(
                &tx,
                record,
                self.options.new_key_watermark,
            )?);
        }
        tx.commit()?;
        Ok(outcomes)
    }

    /// Resharing (issue 13): in one transaction, remove the shares `retired` (the share rows and
    /// their sealed blobs; their slashing history stays under their keys) and insert `records`,
    /// the new shares of the same validators. Unlike a delete, a superseded share cannot come
    /// back: its polynomial was handed over, so the one-key-per-validator rule lets the new share
    /// take its place. Returns how many shares were removed and each insert's outcome.
    pub fn supersede_shares(
        &self,
        retired: &[BlsPublicKey],
        records: &[ShareRecord],
        history: Option<&keystake_core::slashing::interchange::Interchange>,
    ) -> Result<(usize, Vec<InsertOutcome>), StoreError> {
        let mut conn = self.admin();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The new keys' slashing history first, in the same transaction: a crash leaves either
        // the old shares with nothing imported, or the new shares with their history — never a
        // new share without its history, nor the history without the share.
        if let Some(history) = history {
            interchange::import_in(&tx, history, None)?;
        }
        let mut removed = 0;
        for key in retired {
            removed += tx.execute(
                "DELETE FROM shares WHERE validator_id = (SELECT id FROM validators WHERE pubkey = ?1)",
                [key.0.to_vec()],
            )?;
        }
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            outcomes.push(insert_share_in(
                &tx,
                record,
                self.options.new_key_watermark,
            )?);
        }
        tx.commit()?;
        Ok((removed, outcomes))
    }

    /// Stop a key from signing. Its slashing history stays. Returns false when no enabled share
    /// with that key exists.
    pub fn disable_share(&self, public_key: &BlsPublicKey) -> Result<bool, StoreError> {
        let conn = self.admin();
        let changed = conn.execute(
            "UPDATE shares SET enabled = 0 WHERE enabled = 1 AND validator_id =
                 (SELECT id FROM validators WHERE pubkey = ?1)",
            [public_key.0.to_vec()],
        )?;
        Ok(changed > 0)
    }

    /// Every stored share, enabled or not, in insertion order.
    pub fn shares(&self) -> Result<Vec<ShareRecord>, StoreError> {
        let conn = self.admin();
        let mut stmt = conn.prepare(
            "SELECT v.pubkey, s.sealed, s.origin, s.share_index, s.threshold, s.participants,
                    s.group_pubkey, s.share_pubkeys, s.enabled
             FROM shares s JOIN validators v ON v.id = s.validator_id ORDER BY s.rowid",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Vec<u8>>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<u32>>(3)?,
                r.get::<_, Option<u32>>(4)?,
                r.get::<_, Option<u32>>(5)?,
                r.get::<_, Option<Vec<u8>>>(6)?,
                r.get::<_, Option<Vec<u8>>>(7)?,
                r.get::<_, bool>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                pubkey,
                sealed,
                origin,
                index,
                threshold,
                participants,
                group,
                share_keys,
                enabled,
            ) = row?;
            let invalid = |what: &str| StoreError::InvalidData(what.to_owned());
            let threshold_info = match (index, threshold, participants, group) {
                (Some(index), Some(threshold), Some(participants), Some(group)) => {
                    let share_keys = share_keys.unwrap_or_default();
                    Some(ThresholdInfo {
                        index: ShareIndex::new(index).map_err(|_| invalid("share index 0"))?,
                        threshold: Threshold::new(threshold).map_err(|_| invalid("threshold 0"))?,
                        participants,
                        group_public_key: BlsPublicKey::from_slice(&group)
                            .map_err(|_| invalid("group public key"))?,
                        share_public_keys: share_keys
                            .chunks(BlsPublicKey::LEN)
                            .map(BlsPublicKey::from_slice)
                            .collect::<Result<_, _>>()
                            .map_err(|_| invalid("share public keys"))?,
                    })
                }
                (None, None, None, None) => None,
                _ => return Err(invalid("partial threshold metadata")),
            };
            out.push(ShareRecord {
                public_key: BlsPublicKey::from_slice(&pubkey).map_err(|_| invalid("public key"))?,
                sealed,
                origin: ShareOrigin::parse(&origin)?,
                threshold: threshold_info,
                enabled,
            });
        }
        Ok(out)
    }

    /// The genesis validators root this database is bound to, if any.
    pub fn genesis_validators_root(&self) -> Result<Option<Root>, StoreError> {
        let conn = self.admin();
        read_gvr(&conn).map_err(Into::into)
    }

    /// Bind the database to a network (the first signing request or import does this too).
    /// Binding again to the same root is a no-op; another root is refused.
    pub fn bind_genesis_validators_root(&self, root: Root) -> Result<(), StoreError> {
        let mut conn = self.admin();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        bind_gvr(&tx, root)?;
        tx.commit()?;
        Ok(())
    }

    /// Everything recorded for one key: blocks by slot, attestations by target, the watermark.
    /// `None` when the key has never been seen.
    pub fn history(&self, public_key: &BlsPublicKey) -> Result<Option<KeyHistory>, StoreError> {
        let conn = self.admin();
        let Some(validator_id) = find_validator(&conn, public_key)? else {
            return Ok(None);
        };
        Ok(Some(read_key_history(&conn, validator_id)?))
    }

    /// Check a signing request against the key's history and, when safe, record it durably.
    /// Returns only after the record is committed to disk.
    pub async fn check_and_record(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<Root>,
        request: SlashingRequest,
    ) -> Result<CheckOutcome, StoreError> {
        self.submit_check(public_key, genesis_validators_root, request, Recording::Yes)?
            .durable()
            .await
    }

    /// The same check without recording anything (dry run).
    pub async fn check_only(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<Root>,
        request: SlashingRequest,
    ) -> Result<CheckOutcome, StoreError> {
        self.submit_check(public_key, genesis_validators_root, request, Recording::No)?
            .durable()
            .await
    }

    /// Blocking variant for synchronous callers (CLI, tests).
    pub fn check_and_record_blocking(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<Root>,
        request: SlashingRequest,
    ) -> Result<CheckOutcome, StoreError> {
        self.submit_check(public_key, genesis_validators_root, request, Recording::Yes)?
            .durable
            .blocking_recv()
            .map_err(|_| StoreError::WriterGone)?
    }

    /// A slashing check without an audit entry, answered once durable (no tentative verdict).
    fn submit_check(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<Root>,
        request: SlashingRequest,
        record: Recording,
    ) -> Result<PendingCheck, StoreError> {
        let record = matches!(record, Recording::Yes);
        self.submit(
            public_key,
            genesis_validators_root,
            Some(request),
            record,
            None,
            false,
        )
    }

    /// Hand a job to the writer thread (the one way in): a slashing check (`request`, recorded
    /// when `record`), an audit entry chained in the same transaction, or an audit entry alone;
    /// with `tentative`, the writer also answers as soon as it has decided the job, before the
    /// commit ([`PendingCheck`]). A latched store refuses at once.
    pub(super) fn submit(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<Root>,
        request: Option<SlashingRequest>,
        record: bool,
        audit: Option<keystake_core::audit::Record>,
        tentative: bool,
    ) -> Result<PendingCheck, StoreError> {
        self.refuse_if_latched()?;
        let (tentative_sender, tentative_answer) = if tentative {
            let (sender, answer) = oneshot::channel();
            (Some(sender), Some(answer))
        } else {
            (None, None)
        };
        let (reply, durable) = oneshot::channel();
        self.jobs
            .send(Job {
                public_key,
                genesis_validators_root,
                request,
                record,
                audit,
                tentative: tentative_sender,
                reply,
            })
            .map_err(|_| StoreError::WriterGone)?;
        Ok(PendingCheck {
            tentative: tentative_answer,
            durable,
        })
    }

    /// Whether the database can take a slashing record right now (for `/healthcheck`): the file
    /// at the configured path is still the one opened (not deleted or replaced — records written
    /// to an unlinked file would vanish at restart), it answers a query, and a write transaction
    /// can start within [`HEALTH_WRITE_PROBE_TIMEOUT`] (not read-only, not locked by another
    /// process). The probe writes nothing.
    pub fn health_check(&self) -> Result<(), StoreError> {
        self.refuse_if_latched()?;
        if file_identity(&self.path) != self.file_identity {
            return Err(StoreError::Unavailable(StoreFault::Replaced {
                path: self.path.clone(),
            }));
        }
        let conn = self.admin();
        conn.query_row("SELECT count(*) FROM meta", [], |r| r.get::<_, i64>(0))?;
        conn.busy_timeout(HEALTH_WRITE_PROBE_TIMEOUT)?;
        let probe = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;");
        conn.busy_timeout(Duration::from_secs(10))?;
        if probe.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        probe?;
        Ok(())
    }
}

/// How many rows the slashing history holds (`slashing verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordCounts {
    pub validators: u64,
    pub blocks: u64,
    pub attestations: u64,
}

impl Store {
    /// Row counts of the slashing history.
    pub fn record_counts(&self) -> Result<RecordCounts, StoreError> {
        let conn = self.admin();
        let count = |table: &str| -> Result<u64, rusqlite::Error> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n.max(0) as u64)
        };
        Ok(RecordCounts {
            validators: count("validators")?,
            blocks: count("signed_blocks")?,
            attestations: count("signed_attestations")?,
        })
    }

    /// The latched fault, if a storage fault has stopped signing in this process.
    pub fn latched_fault(&self) -> Option<&StoreFault> {
        self.latch.get()
    }

    fn refuse_if_latched(&self) -> Result<(), StoreError> {
        match self.latch.get() {
            Some(fault) => Err(latched(fault)),
            None => Ok(()),
        }
    }
}

/// How long the health check waits for the write lock before calling the database unavailable.
pub const HEALTH_WRITE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn read_gvr(conn: &Connection) -> Result<Option<Root>, rusqlite::Error> {
    conn.prepare_cached("SELECT value FROM meta WHERE key = 'genesis_validators_root'")?
        .query_row([], |r| r.get::<_, Vec<u8>>(0))
        .optional()
        .and_then(root_from_sql)
}

/// Bind to `root` unless already bound; refuse another root (the rule: `binding::bind`).
fn bind_gvr(conn: &Connection, root: Root) -> Result<(), StoreError> {
    match binding::bind(read_gvr(conn)?, Some(root)) {
        Err(wrong) => Err(StoreError::GenesisMismatch {
            bound: wrong.expected,
            file: wrong.received,
        }),
        Ok(Binding::Unchanged) => Ok(()),
        Ok(Binding::Bind(root)) => Ok(write_gvr(conn, root)?),
    }
}

fn write_gvr(conn: &Connection, root: Root) -> Result<(), rusqlite::Error> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('genesis_validators_root', ?1)",
        [root.0.to_vec()],
    )?;
    Ok(())
}

/// Everything recorded for one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyHistory {
    /// Sorted by slot, then root.
    pub blocks: Vec<SignedBlock>,
    /// Sorted by target, then source, then root.
    pub attestations: Vec<SignedAttestation>,
    pub watermark: Watermark,
}

fn read_key_history(conn: &Connection, validator_id: i64) -> Result<KeyHistory, rusqlite::Error> {
    let mut blocks = conn
        .prepare_cached(
            "SELECT slot, signing_root FROM signed_blocks WHERE validator_id = ?1
             ORDER BY slot, signing_root",
        )?
        .query_map([validator_id], |r| {
            Ok(SignedBlock {
                slot: Slot(sql_to_u64(r.get(0)?)),
                signing_root: root_from_sql(r.get(1)?)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    blocks.sort_by_key(|b| (b.slot, b.signing_root));
    let mut attestations = conn
        .prepare_cached(
            "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
             WHERE validator_id = ?1",
        )?
        .query_map([validator_id], attestation_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    attestations.sort_by_key(|a| (a.target, a.source, a.signing_root));
    let watermark = SqlHistory {
        conn,
        validator_id: Some(validator_id),
    }
    .watermark()?;
    Ok(KeyHistory {
        blocks,
        attestations,
        watermark,
    })
}

fn find_validator(
    conn: &Connection,
    public_key: &BlsPublicKey,
) -> Result<Option<i64>, rusqlite::Error> {
    conn.prepare_cached("SELECT id FROM validators WHERE pubkey = ?1")?
        .query_row([&public_key.0[..]], |r| r.get(0))
        .optional()
}

fn sql_opt(value: Option<u64>) -> Option<i64> {
    value.map(u64_to_sql)
}

/// Raise a key's watermark component by component (never lowers it).
fn raise_watermark(
    conn: &Connection,
    validator_id: i64,
    raise: Watermark,
) -> Result<(), rusqlite::Error> {
    let current = SqlHistory {
        conn,
        validator_id: Some(validator_id),
    }
    .watermark()?;
    let new = current.max(raise);
    if new != current {
        conn.prepare_cached(
            "UPDATE validators SET min_block_slot = ?2, min_att_source = ?3, min_att_target = ?4
             WHERE id = ?1",
        )?
        .execute(params![
            validator_id,
            sql_opt(new.block_slot.map(|s| s.0)),
            sql_opt(new.attestation_source.map(|e| e.0)),
            sql_opt(new.attestation_target.map(|e| e.0)),
        ])?;
    }
    Ok(())
}

/// Give a key with no history at all (no records, no watermark) the configured watermark for
/// newly installed keys. A key with history keeps what it has: its own records protect it.
fn apply_new_key_watermark(
    conn: &Connection,
    validator_id: i64,
    watermark: Watermark,
) -> Result<(), rusqlite::Error> {
    if watermark == Watermark::default() {
        return Ok(());
    }
    let has_history: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM signed_blocks WHERE validator_id = ?1)
             OR EXISTS (SELECT 1 FROM signed_attestations WHERE validator_id = ?1)
             OR EXISTS (SELECT 1 FROM validators WHERE id = ?1 AND (min_block_slot IS NOT NULL
                        OR min_att_source IS NOT NULL OR min_att_target IS NOT NULL))",
        [validator_id],
        |r| r.get(0),
    )?;
    if !has_history {
        raise_watermark(conn, validator_id, watermark)?;
    }
    Ok(())
}

fn ensure_validator(conn: &Connection, public_key: &BlsPublicKey) -> Result<i64, rusqlite::Error> {
    if let Some(id) = find_validator(conn, public_key)? {
        return Ok(id);
    }
    conn.prepare_cached("INSERT INTO validators (pubkey) VALUES (?1)")?
        .execute([public_key.0.to_vec()])?;
    Ok(conn.last_insert_rowid())
}

/// Refuse a record that would give one validator a second signing key here: a second share of
/// the same group, a whole key next to a share of it, or the reverse. Deleted (disabled) rows
/// count too: a deleted key keeps its slashing history here and can come back, so another key of
/// its validator — with no history — must not take its place (issue 17). Re-importing the
/// deleted key itself is allowed (its history applies again).
fn check_one_key_per_validator(tx: &Connection, record: &ShareRecord) -> Result<(), StoreError> {
    // Refuse when `sql` (an `EXISTS` query) finds a conflicting share.
    let refuse_if_found = |sql: &str,
                           params: &[&dyn rusqlite::ToSql],
                           group: BlsPublicKey,
                           reason: &'static str|
     -> Result<(), StoreError> {
        if tx.query_row(sql, params, |r| r.get::<_, bool>(0))? {
            return Err(StoreError::SecondKeyOfValidator {
                key: record.public_key,
                group,
                reason,
            });
        }
        Ok(())
    };
    let key = record.public_key.0.to_vec();
    // The new key is the group key of a share stored here.
    refuse_if_found(
        "SELECT EXISTS(SELECT 1 FROM shares WHERE group_pubkey = ?1)",
        &[&key],
        record.public_key,
        "a share of this key is stored (active or deleted)",
    )?;
    if let Some(info) = &record.threshold {
        let group = info.group_public_key.0.to_vec();
        refuse_if_found(
            "SELECT EXISTS(SELECT 1 FROM shares s JOIN validators v ON v.id = s.validator_id
                           WHERE s.group_pubkey = ?1 AND v.pubkey != ?2)",
            &[&group, &key],
            info.group_public_key,
            "another share of this validator is stored (active or deleted)",
        )?;
        refuse_if_found(
            "SELECT EXISTS(SELECT 1 FROM shares s JOIN validators v ON v.id = s.validator_id
                           WHERE v.pubkey = ?1)",
            &[&group],
            info.group_public_key,
            "the validator's whole key is stored (active or deleted)",
        )?;
    }
    Ok(())
}

/// Insert (or re-enable) one share inside an open transaction.
fn insert_share_in(
    tx: &Connection,
    record: &ShareRecord,
    new_key_watermark: Watermark,
) -> Result<InsertOutcome, StoreError> {
    check_one_key_per_validator(tx, record)?;
    let validator_id = ensure_validator(tx, &record.public_key)?;
    let existing: Option<bool> = tx
        .query_row(
            "SELECT enabled FROM shares WHERE validator_id = ?1",
            [validator_id],
            |r| r.get(0),
        )
        .optional()?;
    let t = record.threshold.as_ref();
    let share_pubkeys: Option<Vec<u8>> =
        t.map(|t| t.share_public_keys.iter().flat_map(|k| k.0).collect());
    let outcome = match existing {
        Some(true) => return Ok(InsertOutcome::Duplicate),
        // A deleted (disabled) key comes back with the new blob; its history never left.
        Some(false) => InsertOutcome::Reenabled,
        None => InsertOutcome::Inserted,
    };
    tx.execute(
        "INSERT INTO shares (validator_id, sealed, origin, share_index, threshold,
             participants, group_pubkey, share_pubkeys, enabled, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, strftime('%s','now'))
         ON CONFLICT (validator_id) DO UPDATE SET sealed = excluded.sealed,
             origin = excluded.origin, share_index = excluded.share_index,
             threshold = excluded.threshold, participants = excluded.participants,
             group_pubkey = excluded.group_pubkey, share_pubkeys = excluded.share_pubkeys,
             enabled = 1",
        params![
            validator_id,
            record.sealed,
            record.origin.as_str(),
            t.map(|t| t.index.get()),
            t.map(|t| t.threshold.get()),
            t.map(|t| t.participants),
            t.map(|t| t.group_public_key.0.to_vec()),
            share_pubkeys,
        ],
    )?;
    apply_new_key_watermark(tx, validator_id, new_key_watermark)?;
    Ok(outcome)
}

/// One key's history, read inside the writer's transaction. `validator_id` is `None` for a key
/// the database has never seen (a dry run does not create it): its history is empty.
struct SqlHistory<'a> {
    conn: &'a Connection,
    validator_id: Option<i64>,
}

/// The surround queries of [`SqlHistory`] (`?1` = validator, `?2` = source, `?3` = target).
/// Each scans the bound above the new attestation (the targets for an earlier attestation that
/// surrounds it, the sources for one it surrounds): in normal operation the new attestation is
/// the newest, so that range is empty. (Left to itself SQLite picks the source index for the first
/// and walks the key's whole history: measured 5x slower at 40k records.)
const PREVIOUS_SURROUNDS_NEW_SQL: &str =
    "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
     INDEXED BY signed_attestations_by_target
     WHERE validator_id = ?1 AND source_epoch < ?2 AND target_epoch > ?3 LIMIT 1";
const NEW_SURROUNDS_PREVIOUS_SQL: &str =
    "SELECT source_epoch, target_epoch, signing_root FROM signed_attestations
     INDEXED BY signed_attestations_by_source
     WHERE validator_id = ?1 AND source_epoch > ?2 AND target_epoch < ?3 LIMIT 1";

impl History for SqlHistory<'_> {
    type Error = rusqlite::Error;

    fn blocks_at(&self, slot: Slot) -> Result<Vec<SignedBlock>, Self::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT signing_root FROM signed_blocks WHERE validator_id = ?1 AND slot = ?2",
        )?;
        let rows = stmt.query_map(
            params![self.validator_id.unwrap_or(-1), u64_to_sql(slot.0)],
            |r| {
                Ok(SignedBlock {
                    slot,
                    signing_root: root_from_sql(r.get(0)?)?,
                })
            },
        )?;
        rows.collect()
    }

    fn attestations_with_target(
        &self,
        target: Epoch,
    ) -> Result<Vec<SignedAttestation>, Self::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT source_epoch, signing_root FROM signed_attestations
             WHERE validator_id = ?1 AND target_epoch = ?2",
        )?;
        let rows = stmt.query_map(
            params![self.validator_id.unwrap_or(-1), u64_to_sql(target.0)],
            |r| {
                Ok(SignedAttestation {
                    source: Epoch(sql_to_u64(r.get(0)?)),
                    target,
                    signing_root: root_from_sql(r.get(1)?)?,
                })
            },
        )?;
        rows.collect()
    }

    fn attestation_surround(
        &self,
        surround: Surround,
    ) -> Result<Option<SignedAttestation>, Self::Error> {
        let (sql, source, target) = match surround {
            Surround::PreviousSurroundsNew { source, target } => {
                (PREVIOUS_SURROUNDS_NEW_SQL, source, target)
            }
            Surround::NewSurroundsPrevious { source, target } => {
                (NEW_SURROUNDS_PREVIOUS_SQL, source, target)
            }
        };
        self.conn
            .prepare_cached(sql)?
            .query_row(
                params![
                    self.validator_id.unwrap_or(-1),
                    u64_to_sql(source.0),
                    u64_to_sql(target.0)
                ],
                attestation_from_row,
            )
            .optional()
    }

    fn watermark(&self) -> Result<Watermark, Self::Error> {
        let Some(validator_id) = self.validator_id else {
            return Ok(Watermark::default());
        };
        self.conn
            .prepare_cached(
                "SELECT min_block_slot, min_att_source, min_att_target FROM validators WHERE id = ?1",
            )?
            .query_row([validator_id], |r| {
                Ok(Watermark {
                    block_slot: r.get::<_, Option<i64>>(0)?.map(|v| Slot(sql_to_u64(v))),
                    attestation_source: r.get::<_, Option<i64>>(1)?.map(|v| Epoch(sql_to_u64(v))),
                    attestation_target: r.get::<_, Option<i64>>(2)?.map(|v| Epoch(sql_to_u64(v))),
                })
            })
    }
}

fn attestation_from_row(r: &rusqlite::Row<'_>) -> Result<SignedAttestation, rusqlite::Error> {
    Ok(SignedAttestation {
        source: Epoch(sql_to_u64(r.get(0)?)),
        target: Epoch(sql_to_u64(r.get(1)?)),
        signing_root: root_from_sql(r.get(2)?)?,
    })
}

/// Check one request inside the open transaction and record it when safe and asked to.
/// `bound` is the network binding as this transaction sees it: read once per batch (the
/// transaction holds the write lock, so only this function changes it until the commit).
fn process(
    conn: &Connection,
    job: &Job,
    bound: &mut Option<Root>,
) -> Result<CheckOutcome, rusqlite::Error> {
    let Some(request) = job.request else {
        return Ok(Ok(Safe::Valid)); // audit-only job (issue 6)
    };
    let binding = match binding::bind(*bound, job.genesis_validators_root) {
        Ok(binding) => binding,
        Err(wrong) => return Ok(Err(wrong.into())),
    };
    // Reading never creates rows: a refused request (or a dry run) must leave no trace, not even
    // a network binding or a row for a key never seen before.
    let validator_id = find_validator(conn, &job.public_key)?;
    let history = SqlHistory { conn, validator_id };
    let verdict = slashing::check(&history, request)?;
    if verdict == Ok(Safe::Valid) && job.record {
        if let Binding::Bind(root) = binding {
            // The first recorded signature binds an unbound database to its network.
            write_gvr(conn, root)?;
            *bound = Some(root);
        }
        let validator_id = match validator_id {
            Some(id) => id,
            None => ensure_validator(conn, &job.public_key)?,
        };
        match request {
            SlashingRequest::Block { slot, signing_root } => {
                conn.prepare_cached(
                    "INSERT INTO signed_blocks (validator_id, slot, signing_root) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![validator_id, u64_to_sql(slot.0), &signing_root.0[..]])?;
            }
            SlashingRequest::Attestation {
                source,
                target,
                signing_root,
            } => {
                conn.prepare_cached(
                    "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    validator_id,
                    u64_to_sql(source.0),
                    u64_to_sql(target.0),
                    &signing_root.0[..]
                ])?;
            }
        }
    }
    Ok(verdict.map_err(Refusal::Slashable))
}

/// The writer thread's state: the one writing connection, the identity of the file it opened and
/// the latch it sets after a storage fault.
struct Writer {
    path: PathBuf,
    conn: Connection,
    identity: Option<(u64, u64)>,
    latch: Latch,
    max_batch: usize,
}

impl Writer {
    /// Group commit: take every queued job (up to `max_batch`), process them in one transaction,
    /// commit once (one fsync), then answer them all. A failed transaction rolls back and
    /// refuses its whole batch; unless the fault was only a lock held elsewhere it also latches
    /// the store, and every later batch is refused without touching the database.
    fn run(mut self, queue: mpsc::Receiver<Job>) {
        while let Ok(first) = queue.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            match self.commit(&mut batch) {
                Ok(outcomes) => {
                    for (job, outcome) in batch.into_iter().zip(outcomes) {
                        // The requester may have gone away (client disconnected); the record stays.
                        let _ = job.reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    for job in batch {
                        let _ = job.reply.send(Err(error.clone_for_batch()));
                    }
                }
            }
        }
    }

    fn commit(&mut self, batch: &mut [Job]) -> Result<Vec<CheckOutcome>, StoreError> {
        if let Some(fault) = self.latch.get() {
            return Err(latched(fault));
        }
        // One stat per batch: records committed to a moved or deleted file would be gone at the
        // next start, and a replaced file is another history.
        let fault = if file_identity(&self.path) != self.identity {
            StoreFault::Replaced {
                path: self.path.clone(),
            }
        } else {
            match run_batch(&mut self.conn, batch) {
                Ok(outcomes) => return Ok(outcomes),
                Err(error) => StoreFault::from(error),
            }
        };
        if fault.latches() {
            if self.latch.set(fault.clone()).is_ok() {
                tracing::error!(error = %fault, jobs = batch.len(), "slashing-protection database fault: signing stopped until `keystake-signer slashing verify` and a restart; nothing signed");
            }
        } else {
            tracing::warn!(error = %fault, jobs = batch.len(), "slashing-protection database busy; requests refused, nothing signed");
        }
        Err(StoreError::Unavailable(fault))
    }
}

impl StoreError {
    /// The same error for every job of a failed batch (only [`StoreError::Unavailable`] occurs
    /// there; anything else would be a bug and is reported as the writer having stopped).
    fn clone_for_batch(&self) -> StoreError {
        match self {
            StoreError::Unavailable(fault) => StoreError::Unavailable(fault.clone()),
            _ => StoreError::WriterGone,
        }
    }
}

fn run_batch(
    conn: &mut Connection,
    batch: &mut [Job],
) -> Result<Vec<CheckOutcome>, rusqlite::Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut audit_chain = audit::Chain::default();
    let mut bound = read_gvr(&tx)?;
    for job in batch.iter_mut() {
        let outcome = process(&tx, job, &mut bound)?;
        // Taken, not copied: a failed batch answers its jobs with the error and never runs them
        // again, so nothing reads the drafted record after this.
        if let Some(record) = job.audit.take() {
            audit_chain.append(&tx, audit::settle(record, &outcome))?;
        }
        // Lets the requester compute its signature while the rest of the batch is checked and
        // committed; it releases nothing before the reply below (PendingCheck).
        if let Some(tentative) = job.tentative.take() {
            let _ = tentative.send(outcome);
        }
        outcomes.push(outcome);
    }
    // Dropping `tx` on an error above rolls everything back: no request of the batch is answered
    // as signed, so nothing is released without its record.
    tx.commit()?;
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystake_core::slashing::NotSafe;

    fn key(byte: u8) -> BlsPublicKey {
        BlsPublicKey([byte; 48])
    }

    fn att(source: u64, target: u64, byte: u8) -> SlashingRequest {
        SlashingRequest::Attestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: Root([byte; 32]),
        }
    }

    #[test]
    fn u64_mapping_preserves_order() {
        let values = [
            0u64,
            1,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in values.windows(2) {
            assert!(u64_to_sql(pair[0]) < u64_to_sql(pair[1]));
            assert_eq!(sql_to_u64(u64_to_sql(pair[0])), pair[0]);
        }
    }

    #[test]
    fn check_and_record_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.sqlite");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(
                store
                    .check_and_record_blocking(key(1), None, att(1, 2, 1))
                    .unwrap(),
                Ok(Safe::Valid)
            );
            assert_eq!(
                store
                    .check_and_record_blocking(key(1), None, att(1, 2, 1))
                    .unwrap(),
                Ok(Safe::SameData)
            );
        }
        let store = Store::open(&path).unwrap();
        assert!(matches!(
            store
                .check_and_record_blocking(key(1), None, att(1, 2, 2))
                .unwrap(),
            Err(Refusal::Slashable(NotSafe::DoubleVote { .. }))
        ));
        assert!(matches!(
            store
                .check_and_record_blocking(key(1), None, att(0, 3, 2))
                .unwrap(),
            Err(Refusal::Slashable(NotSafe::NewSurroundsPrevious { .. }))
        ));
        // Another key is independent.
        assert_eq!(
            store
                .check_and_record_blocking(key(2), None, att(1, 2, 2))
                .unwrap(),
            Ok(Safe::Valid)
        );
    }

    #[test]
    fn a_refused_request_neither_binds_the_network_nor_creates_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let refused = store
            .check_and_record_blocking(key(3), Some(Root([0xcc; 32])), att(5, 4, 1))
            .unwrap();
        assert!(matches!(
            refused,
            Err(Refusal::Slashable(NotSafe::SourceExceedsTarget { .. }))
        ));
        assert_eq!(store.genesis_validators_root().unwrap(), None);
        assert!(store.history(&key(3)).unwrap().is_none());
        // The network is still free to be bound by a valid signature.
        assert_eq!(
            store
                .check_and_record_blocking(key(3), Some(Root([0xdd; 32])), att(4, 5, 1))
                .unwrap(),
            Ok(Safe::Valid)
        );
        assert_eq!(
            store.genesis_validators_root().unwrap(),
            Some(Root([0xdd; 32]))
        );
    }

    #[test]
    fn database_is_bound_to_one_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let gvr_a = Root([0xaa; 32]);
        let gvr_b = Root([0xbb; 32]);
        assert_eq!(
            store
                .check_and_record_blocking(key(1), Some(gvr_a), att(1, 2, 1))
                .unwrap(),
            Ok(Safe::Valid)
        );
        assert!(matches!(
            store
                .check_and_record_blocking(key(1), Some(gvr_b), att(2, 3, 1))
                .unwrap(),
            Err(Refusal::WrongNetwork { .. })
        ));
        assert_eq!(store.genesis_validators_root().unwrap(), Some(gvr_a));
    }

    #[test]
    fn pragmas_applied_on_create_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        for _ in 0..2 {
            let conn = open_connection(&path).unwrap();
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            let sync: i64 = conn
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
            assert_eq!(sync, 2, "synchronous=FULL");
            migrate(&conn, &path).unwrap();
        }
    }

    #[test]
    fn corrupted_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::Corrupted { .. })
        ));
    }

    #[test]
    fn shares_round_trip_and_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let record = ShareRecord {
            public_key: key(7),
            sealed: vec![1, 2, 3],
            origin: ShareOrigin::Split,
            threshold: Some(ThresholdInfo {
                index: ShareIndex::new(2).unwrap(),
                threshold: Threshold::new(2).unwrap(),
                participants: 3,
                group_public_key: key(9),
                share_public_keys: vec![key(6), key(7), key(8)],
            }),
            enabled: true,
        };
        assert_eq!(
            store.insert_share(&record).unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.insert_share(&record).unwrap(),
            InsertOutcome::Duplicate
        );
        assert_eq!(store.shares().unwrap(), vec![record.clone()]);
        assert!(store.disable_share(&key(7)).unwrap());
        assert!(!store.disable_share(&key(7)).unwrap());
        assert!(!store.shares().unwrap()[0].enabled);
        assert_eq!(
            store.insert_share(&record).unwrap(),
            InsertOutcome::Reenabled
        );
    }

    #[test]
    fn one_appliance_holds_one_key_per_validator() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let share = |own: u8, index: u32| ShareRecord {
            public_key: key(own),
            sealed: vec![own],
            origin: ShareOrigin::Split,
            threshold: Some(ThresholdInfo {
                index: ShareIndex::new(index).unwrap(),
                threshold: Threshold::new(2).unwrap(),
                participants: 3,
                group_public_key: key(9),
                share_public_keys: vec![key(6), key(7), key(8)],
            }),
            enabled: true,
        };
        let whole = |own: u8| ShareRecord {
            public_key: key(own),
            sealed: vec![own],
            origin: ShareOrigin::Keystore,
            threshold: None,
            enabled: true,
        };
        assert_eq!(
            store.insert_share(&share(6, 1)).unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            store.insert_share(&share(6, 1)).unwrap(),
            InsertOutcome::Duplicate
        );
        assert!(matches!(
            store.insert_share(&share(7, 2)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
        assert!(matches!(
            store.insert_share(&whole(9)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
        // The reverse: the whole key first, then a share of it.
        let other = Store::open(&dir.path().join("db2")).unwrap();
        other.insert_share(&whole(9)).unwrap();
        assert!(matches!(
            other.insert_share(&share(6, 1)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
        // Nothing of the refused records was stored.
        assert_eq!(store.shares().unwrap().len(), 1);
        assert_eq!(other.shares().unwrap().len(), 1);
        // A deleted share still holds its validator's place: another share (no history here)
        // is refused, the deleted one itself may come back with its history.
        assert!(store.disable_share(&key(6)).unwrap());
        assert!(matches!(
            store.insert_share(&share(7, 2)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
        assert!(matches!(
            store.insert_share(&whole(9)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
        assert_eq!(
            store.insert_share(&share(6, 1)).unwrap(),
            InsertOutcome::Reenabled
        );
        // The reverse: a deleted whole key keeps its shares out.
        assert!(other.disable_share(&key(9)).unwrap());
        assert!(matches!(
            other.insert_share(&share(6, 1)),
            Err(StoreError::SecondKeyOfValidator { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_conflicting_requests_sign_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(&dir.path().join("db")).unwrap());
        let mut tasks = Vec::new();
        for i in 0..64u8 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store.check_and_record(key(1), None, att(5, 6, i)).await
            }));
        }
        let mut valid = 0;
        for task in tasks {
            if let Ok(Safe::Valid) = task.await.unwrap().unwrap() {
                valid += 1;
            }
        }
        assert_eq!(valid, 1);
    }
}
