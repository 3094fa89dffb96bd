//! Pruning old attestations from the slashing history (`slashing prune`).
//!
//! Without it the history only grows: about 225 attestations per key per day, some 100 bytes
//! each with their two indexes, so 10,000 keys add about 250 MB a day, and every check and
//! record walks deeper indexes. A prune keeps each key's newest attestations — its newest
//! target epoch and the `keep_epochs` epochs below it ([`slashing::prune_cut`], relative to the
//! key's own history, never the wall clock) — and removes the older ones, raising the key's
//! watermark over what it removed in the same transaction ([`Watermark::covering`]). After each
//! commit the key refuses everything it refused before; the only answer that changes is an
//! identical re-request of a removed attestation, refused instead of answered again.
//!
//! Safe while `serve` runs: each transaction spends at most [`PRUNE_ROWS_PER_TRANSACTION`] — one
//! per key visited, one per attestation removed — so it lasts tens of milliseconds, and after
//! each commit the prune pauses at least as long as the transaction took, so the signer's
//! writer — whose busy handler polls for the lock with growing sleeps — gets the lock between
//! two prune transactions instead of being starved by them. The attestations of one target go
//! together or stay together ([`prune_one_transaction`] says why), so after every commit the
//! key refuses everything it refused before, and a prune stopped half-way (crash, Ctrl-C)
//! leaves every key consistent. Blocks are not pruned: a key proposes a few a year.
//!
//! `serve` runs the same prune on a schedule (`[slashing] prune`, `crate::app`) through
//! [`Store::prune_attestations_while`]: the connection it shares with the health probe and the
//! keymanager is held for one transaction at a time, never across a pause, and the prune stops
//! between two transactions when asked to (shutdown).
//!
//! Refuses nothing by itself; a database that cannot be written fails the transaction and the
//! prune stops with that error, having committed only whole, covered transactions. A store whose
//! writer has latched a storage fault (fail-closed) is not pruned: the latched error is returned
//! before the next transaction.
#![forbid(unsafe_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, TransactionBehavior};

use super::{raise_watermark, sql_to_u64, u64_to_sql, Store, StoreError};
use keystake_core::slashing::{self, Watermark};
use keystake_core::types::Epoch;

/// What one prune transaction may spend: one per key visited, one per attestation removed. A
/// removal touches the table and its two indexes; offline here they took about 35 µs each
/// (docs/performance.md, "Pruning"), so a transaction holds the lock for tens of milliseconds,
/// longer under load — the longest the writer of a running `serve` waits for it.
pub const PRUNE_ROWS_PER_TRANSACTION: usize = 1_000;

/// The shortest pause between two prune transactions (see the module docs): longer than the
/// first few sleeps of SQLite's busy handler, so a writer that found the lock taken retries
/// within it.
const PRUNE_MIN_PAUSE: Duration = Duration::from_millis(25);

/// What a prune removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PruneSummary {
    /// Keys that had attestations older than what is kept.
    pub validators: usize,
    /// Attestations removed.
    pub attestations: usize,
    /// Transactions committed (none in a dry run).
    pub transactions: usize,
    /// Whether it stopped before visiting every key because it was asked to
    /// ([`Store::prune_attestations_while`]); what it committed is covered all the same.
    pub stopped_early: bool,
}

/// A prune that ended on an error, after committing `committed`: what those transactions removed
/// stays removed and is covered by watermarks, so a report of the prune must still count it.
#[derive(Debug, thiserror::Error)]
#[error(
    "prune stopped after removing {} attestations of {} validators in {} transactions (covered by watermarks)",
    committed.attestations,
    committed.validators,
    committed.transactions
)]
pub struct PruneFailed {
    pub committed: PruneSummary,
    /// Boxed: a prune's result should not be the size of the largest store error.
    #[source]
    pub error: Box<StoreError>,
}

impl From<StoreError> for PruneFailed {
    /// An error before anything was committed.
    fn from(error: StoreError) -> Self {
        PruneFailed {
            committed: PruneSummary::default(),
            error: Box::new(error),
        }
    }
}

impl Store {
    /// Remove, for every key, the attestations older than its newest `keep_epochs` epochs,
    /// raising its watermark over them (module docs). With `dry_run`, count them and change
    /// nothing.
    pub fn prune_attestations(
        &self,
        keep_epochs: u64,
        dry_run: bool,
    ) -> Result<PruneSummary, PruneFailed> {
        if dry_run {
            let mut conn = self.admin();
            // One read transaction: the counts come from one snapshot.
            let snapshot = conn.transaction().map_err(StoreError::from)?;
            return Ok(count_prunable(&snapshot, keep_epochs).map_err(StoreError::from)?);
        }
        self.prune_attestations_while(keep_epochs, &|| true)
    }

    /// [`Store::prune_attestations`] (not a dry run) that asks `keep_going` before each
    /// transaction and stops, with [`PruneSummary::stopped_early`], when it answers `false`.
    /// The administrative connection is locked for one transaction at a time, so the health
    /// probe and the keymanager, which share it, wait at most one transaction, never a whole
    /// prune. A latched storage fault stops it before the next transaction, with that error.
    pub fn prune_attestations_while(
        &self,
        keep_epochs: u64,
        keep_going: &dyn Fn() -> bool,
    ) -> Result<PruneSummary, PruneFailed> {
        prune_in_transactions(
            &self.admin,
            keep_epochs,
            PRUNE_ROWS_PER_TRANSACTION,
            PRUNE_MIN_PAUSE,
            &|| {
                self.refuse_if_latched()?;
                Ok(keep_going())
            },
        )
    }
}

fn validator_ids(conn: &Connection) -> Result<Vec<i64>, rusqlite::Error> {
    conn.prepare("SELECT id FROM validators ORDER BY id")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// The target below which a key's attestations go, or `None` for a key without any.
fn cut_of(conn: &Connection, id: i64, keep_epochs: u64) -> Result<Option<Epoch>, rusqlite::Error> {
    let newest: Option<i64> = conn
        .prepare_cached(
            "SELECT max(target_epoch) FROM signed_attestations WHERE validator_id = ?1",
        )?
        .query_row([id], |r| r.get(0))?;
    Ok(newest.map(|newest| slashing::prune_cut(Epoch(sql_to_u64(newest)), keep_epochs)))
}

fn count_prunable(conn: &Connection, keep_epochs: u64) -> Result<PruneSummary, rusqlite::Error> {
    let mut summary = PruneSummary::default();
    for id in validator_ids(conn)? {
        let Some(cut) = cut_of(conn, id, keep_epochs)? else {
            continue;
        };
        let count: i64 = conn
            .prepare_cached(
                "SELECT count(*) FROM signed_attestations WHERE validator_id = ?1 AND target_epoch < ?2",
            )?
            .query_row(params![id, u64_to_sql(cut.0)], |r| r.get(0))?;
        if count > 0 {
            summary.validators += 1;
            summary.attestations += usize::try_from(count).unwrap_or(usize::MAX);
        }
    }
    Ok(summary)
}

/// `(rowid, source, target)` of an attestation row selected for removal.
fn prunable_row(r: &rusqlite::Row<'_>) -> Result<(i64, u64, u64), rusqlite::Error> {
    Ok((r.get(0)?, sql_to_u64(r.get(1)?), sql_to_u64(r.get(2)?)))
}

/// Where a prune is: the keys to visit, the next one, and what it has done so far.
struct PruneProgress {
    ids: Vec<i64>,
    next: usize,
    last_counted: Option<i64>,
    summary: PruneSummary,
}

impl PruneProgress {
    fn start(conn: &Connection) -> Result<Self, rusqlite::Error> {
        Ok(Self {
            ids: validator_ids(conn)?,
            next: 0,
            last_counted: None,
            summary: PruneSummary::default(),
        })
    }

    fn done(&self) -> bool {
        self.next >= self.ids.len()
    }
}

/// The prune itself: one transaction after another ([`prune_one_transaction`]), with a pause of
/// at least `min_pause`, and at least the last transaction's own time, between two; `admin`
/// locked for each transaction only. `before_each` is asked before every transaction: `Ok(false)`
/// stops the prune there, an error ends it with that error.
fn prune_in_transactions(
    admin: &Mutex<Connection>,
    keep_epochs: u64,
    budget: usize,
    min_pause: Duration,
    before_each: &dyn Fn() -> Result<bool, StoreError>,
) -> Result<PruneSummary, PruneFailed> {
    let lock = || lock_admin(admin);
    let mut progress = PruneProgress::start(&lock()).map_err(StoreError::from)?;
    let result = paced(min_pause, before_each, &mut || {
        prune_one_transaction(&mut lock(), keep_epochs, budget, &mut progress)?;
        Ok(!progress.done())
    });
    match result {
        Ok(stopped_early) => {
            progress.summary.stopped_early = stopped_early;
            Ok(progress.summary)
        }
        Err(error) => {
            tracing::error!(
                removed = progress.summary.attestations,
                validators = progress.summary.validators,
                transactions = progress.summary.transactions,
                %error,
                "prune stopped; what the committed transactions removed is covered by watermarks"
            );
            Err(PruneFailed {
                committed: progress.summary,
                error: Box::new(error),
            })
        }
    }
}

/// The administrative connection; a panic while holding the lock leaves a usable connection
/// (see `Store::admin`).
fn lock_admin(admin: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    admin.lock().unwrap_or_else(|p| p.into_inner())
}

/// Run `step`, one short transaction at a time, until it answers `false` (nothing left),
/// pausing between two at least `min_pause` and at least as long as the previous one took, so a
/// writer waiting on the lock gets it in between. `before_each` is asked before every step:
/// `Ok(false)` stops there (the answer is then `Ok(true)`: stopped early), an error ends it.
fn paced(
    min_pause: Duration,
    before_each: &dyn Fn() -> Result<bool, StoreError>,
    step: &mut dyn FnMut() -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let mut pause = None;
    loop {
        if let Some(pause) = pause {
            std::thread::sleep(pause);
        }
        if !before_each()? {
            return Ok(true);
        }
        let started = Instant::now();
        if !step()? {
            return Ok(false);
        }
        pause = Some(started.elapsed().max(min_pause));
    }
}

/// An audit `seq` as SQLite stores it (a plain integer, unlike the epochs' order-keeping
/// [`u64_to_sql`]), and back.
fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn audit_seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Audit entries deleted per transaction by [`Store::delete_audit_through`]: a range delete on
/// the primary key, a few milliseconds per thousand rows.
pub const AUDIT_DELETE_ROWS_PER_TRANSACTION: u64 = 10_000;

impl Store {
    /// Delete the audit entries at or below `through`, oldest first, in paced transactions of at
    /// most [`AUDIT_DELETE_ROWS_PER_TRANSACTION`] (safe while `serve` runs, as above); returns
    /// how many went. Only what the stored anchor covers may go, and never the newest entry,
    /// which the writer continues the chain from: refused with [`StoreError::InvalidData`]
    /// otherwise, before anything is deleted.
    pub fn delete_audit_through(&self, through: u64) -> Result<u64, StoreError> {
        {
            let conn = self.admin();
            let anchor = super::audit::anchor_head(&conn)?;
            if through > anchor.seq {
                return Err(StoreError::InvalidData(format!(
                    "refusing to delete audit entries up to {through}: the stored anchor covers only up to {}",
                    anchor.seq
                )));
            }
            let newest: Option<i64> =
                conn.query_row("SELECT max(seq) FROM audit_log", [], |r| r.get(0))?;
            if newest.is_some_and(|newest| audit_seq(newest) <= through) {
                return Err(StoreError::InvalidData(format!(
                    "refusing to delete audit entries up to {through}: the newest entry must stay"
                )));
            }
        }
        let mut deleted = 0u64;
        paced(
            PRUNE_MIN_PAUSE,
            &|| Ok(self.refuse_if_latched().is_ok()),
            &mut || {
                let conn = self.admin();
                let oldest: Option<i64> =
                    conn.query_row("SELECT min(seq) FROM audit_log", [], |r| r.get(0))?;
                let Some(oldest) = oldest.map(audit_seq).filter(|oldest| *oldest <= through) else {
                    return Ok(false);
                };
                let last =
                    through.min(oldest.saturating_add(AUDIT_DELETE_ROWS_PER_TRANSACTION - 1));
                deleted += conn.execute(
                    "DELETE FROM audit_log WHERE seq BETWEEN ?1 AND ?2",
                    params![sql_seq(oldest), sql_seq(last)],
                )? as u64;
                Ok(last < through)
            },
        )?;
        self.refuse_if_latched()?;
        Ok(deleted)
    }
}

/// One prune transaction, spending at most `budget`: one per key visited (so a transaction over
/// keys with nothing to remove stays short too) and one per attestation removed. For each key it
/// reads the newest target, takes its oldest attestations below the cut, raises its watermark
/// over exactly those and deletes them.
///
/// A target's attestations are removed all together or not at all: the identical re-request of
/// a record is answered again *before* the watermark is looked at, so removing only some of the
/// records at one target (a rootless import next to a signed one) would turn a double vote into
/// an identical re-request until the rest went. When the budget ends inside a target, that
/// target waits for the next transaction; a single target larger than a whole budget (only an
/// import can make one) is removed whole, in a transaction of its own.
fn prune_one_transaction(
    conn: &mut Connection,
    keep_epochs: u64,
    budget: usize,
    progress: &mut PruneProgress,
) -> Result<(), rusqlite::Error> {
    let budget = budget.max(1);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut spent = 0;
    let mut removed_here = 0;
    while !progress.done() && spent < budget {
        let id = progress.ids[progress.next];
        spent += 1;
        let Some(cut) = cut_of(&tx, id, keep_epochs)? else {
            progress.next += 1;
            continue;
        };
        let room = budget - spent;
        // One row more than there is room for tells whether the key has more below the cut.
        let rows: Vec<(i64, u64, u64)> = tx
            .prepare_cached(
                "SELECT rowid, source_epoch, target_epoch FROM signed_attestations
                 WHERE validator_id = ?1 AND target_epoch < ?2 ORDER BY target_epoch LIMIT ?3",
            )?
            .query_map(
                params![
                    id,
                    u64_to_sql(cut.0),
                    i64::try_from(room.saturating_add(1)).unwrap_or(i64::MAX)
                ],
                prunable_row,
            )?
            .collect::<Result<_, _>>()?;
        let complete = rows.len() <= room;
        let doomed: Vec<(i64, u64, u64)> = if complete {
            rows
        } else {
            // Every row below the first target left out was selected: whole targets only.
            let first_left_out = rows[room].2;
            let whole: Vec<_> = rows
                .into_iter()
                .filter(|row| row.2 < first_left_out)
                .collect();
            if !whole.is_empty() {
                whole
            } else if removed_here == 0 {
                tx.prepare_cached(
                    "SELECT rowid, source_epoch, target_epoch FROM signed_attestations
                     WHERE validator_id = ?1 AND target_epoch = ?2",
                )?
                .query_map(params![id, u64_to_sql(first_left_out)], prunable_row)?
                .collect::<Result<_, _>>()?
            } else {
                // This key's next target does not fit: it starts the next transaction.
                break;
            }
        };
        if let (Some(source), Some(target)) = (
            doomed.iter().map(|d| d.1).max(),
            doomed.iter().map(|d| d.2).max(),
        ) {
            // The watermark first: within this transaction nothing is removed uncovered.
            raise_watermark(&tx, id, Watermark::covering(Epoch(source), Epoch(target)))?;
            let mut delete =
                tx.prepare_cached("DELETE FROM signed_attestations WHERE rowid = ?1")?;
            for (rowid, _, _) in &doomed {
                delete.execute([rowid])?;
            }
            if progress.last_counted != Some(id) {
                progress.summary.validators += 1;
                progress.last_counted = Some(id);
            }
        }
        spent += doomed.len();
        removed_here += doomed.len();
        progress.summary.attestations += doomed.len();
        if complete {
            progress.next += 1;
        }
    }
    tx.commit()?;
    progress.summary.transactions += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreFault;
    use keystake_core::slashing::{MemoryHistory, Safe, SignedAttestation, SlashingRequest};
    use keystake_core::types::{BlsPublicKey, Root};
    use rand::{Rng, SeedableRng};

    fn key(byte: u8) -> BlsPublicKey {
        BlsPublicKey([byte; 48])
    }

    fn root(source: u64, target: u64, byte: u8) -> Root {
        let mut bytes = [byte; 32];
        bytes[..8].copy_from_slice(&source.to_le_bytes());
        bytes[8..16].copy_from_slice(&target.to_le_bytes());
        Root(bytes)
    }

    fn attestation(source: u64, target: u64, byte: u8) -> SlashingRequest {
        SlashingRequest::Attestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: root(source, target, byte),
        }
    }

    fn new_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    /// Attestations `target − 1 → target` for key `k` (never slashable together), recorded
    /// through the writer as `serve` records them.
    fn sign_run(store: &Store, k: u8, targets: impl IntoIterator<Item = u64>) {
        for target in targets {
            let outcome = store
                .check_and_record_blocking(key(k), None, attestation(target - 1, target, 1))
                .unwrap();
            assert_eq!(outcome, Ok(Safe::Valid), "target {target}");
        }
    }

    #[test]
    fn prune_removes_the_old_covers_them_and_keeps_signing() {
        let (_dir, store) = new_store();
        sign_run(&store, 1, 1..=40);
        sign_run(&store, 2, [5, 6]);

        let dry = store.prune_attestations(10, true).unwrap();
        assert_eq!(
            dry,
            PruneSummary {
                validators: 1,
                attestations: 29,
                transactions: 0,
                stopped_early: false,
            }
        );
        assert_eq!(
            store.history(&key(1)).unwrap().unwrap().attestations.len(),
            40
        );

        let done = store.prune_attestations(10, false).unwrap();
        assert_eq!((done.validators, done.attestations), (1, 29));
        let history = store.history(&key(1)).unwrap().unwrap();
        let targets: Vec<u64> = history.attestations.iter().map(|a| a.target.0).collect();
        assert_eq!(targets, (30..=40).collect::<Vec<_>>());
        assert_eq!(history.watermark, Watermark::covering(Epoch(28), Epoch(29)));
        // Key 2's two attestations are within its newest 10 epochs: untouched, no watermark.
        let other = store.history(&key(2)).unwrap().unwrap();
        assert_eq!(
            (other.attestations.len(), other.watermark),
            (2, Watermark::default())
        );

        // The attacks the removed records refused are still refused: a double vote on a removed
        // target, an attestation surrounded by a removed one, one surrounding a removed one.
        let refused = |request| {
            store
                .check_and_record_blocking(key(1), None, request)
                .unwrap()
        };
        assert!(refused(attestation(9, 10, 2)).is_err());
        assert!(refused(attestation(3, 4, 2)).is_err());
        assert!(refused(attestation(0, 35, 2)).is_err());
        // The identical re-request of a removed one is refused too (documented); of a kept one
        // answered again; the next duty signs.
        assert!(refused(attestation(9, 10, 1)).is_err());
        assert_eq!(refused(attestation(39, 40, 1)), Ok(Safe::SameData));
        assert_eq!(refused(attestation(40, 41, 1)), Ok(Safe::Valid));
        // Pruning again with the same bound removes only what became old since.
        let again = store.prune_attestations(10, false).unwrap();
        assert_eq!((again.validators, again.attestations), (1, 1));
    }

    #[test]
    fn a_prune_split_over_many_transactions_ends_where_one_would() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (_dir, one) = new_store();
        let (_dir2, many) = new_store();
        let mut models = Vec::new();
        for k in 1..=5u8 {
            // Out-of-order but allowed histories, as imports and late duties leave them.
            let mut targets: Vec<u64> = (1..=60).filter(|_| rng.gen_bool(0.6)).collect();
            targets.reverse();
            let mut model = MemoryHistory::default();
            for target in targets {
                for store in [&one, &many] {
                    store
                        .check_and_record_blocking(key(k), None, attestation(target - 1, target, 1))
                        .unwrap()
                        .unwrap();
                }
                model.attestations.push(SignedAttestation {
                    source: Epoch(target - 1),
                    target: Epoch(target),
                    signing_root: Some(root(target - 1, target, 1)),
                });
            }
            models.push(model);
        }
        let keep = 17;
        let whole = one.prune_attestations(keep, false).unwrap();
        let split =
            prune_in_transactions(&many.admin, keep, 3, Duration::ZERO, &|| Ok(true)).unwrap();
        assert_eq!(whole.transactions, 1);
        assert!(split.transactions > 10, "{split:?}");
        assert_eq!(
            (whole.validators, whole.attestations),
            (split.validators, split.attestations)
        );
        for (k, model) in (1..=5u8).zip(&mut models) {
            let removed = model.prune_attestations(keep);
            let mut expected = model.attestations.clone();
            expected.sort_by_key(|a| (a.target, a.source, a.signing_root));
            for store in [&one, &many] {
                let history = store.history(&key(k)).unwrap().unwrap();
                assert_eq!(history.attestations, expected, "key {k}");
                assert_eq!(history.watermark, model.watermark, "key {k}");
            }
            assert!(removed > 0, "key {k}");
        }
    }

    /// Every request of a small grid, with a root the history used and one it did not.
    fn grid() -> Vec<SlashingRequest> {
        let mut out = Vec::new();
        for source in 0..24 {
            for target in source..24 {
                out.push(attestation(source, target, 1));
                out.push(attestation(source, target, 2));
            }
        }
        out
    }

    /// Whether `store` refuses `request` for key `k`, asked as a dry run (nothing recorded).
    fn refuses(store: &Store, k: u8, request: SlashingRequest) -> bool {
        store
            .submit_check(key(k), None, request, crate::store::Recording::No)
            .unwrap()
            .durable
            .blocking_recv()
            .unwrap()
            .unwrap()
            .is_err()
    }

    #[test]
    fn an_export_of_a_pruned_history_protects_the_importer_as_much() {
        let (_dir, store) = new_store();
        store
            .bind_genesis_validators_root(Root([0x77; 32]))
            .unwrap();
        // Gaps and an out-of-order tail, so the kept entries do not imply the watermark alone.
        sign_run(&store, 1, (1..=20).filter(|t| t % 3 != 0));
        sign_run(&store, 1, [21, 18]);
        store.prune_attestations(4, false).unwrap();
        let exported = store.export_interchange(None).unwrap();
        let (_dir2, importer) = new_store();
        importer.import_interchange(&exported, None).unwrap();
        for request in grid() {
            if refuses(&store, 1, request) {
                assert!(refuses(&importer, 1, request), "{request:?}");
            }
        }
        assert_eq!(
            importer
                .check_and_record_blocking(key(1), None, attestation(21, 22, 1))
                .unwrap(),
            Ok(Safe::Valid)
        );
    }

    #[test]
    fn every_transaction_of_a_prune_refuses_all_the_unpruned_history_refused() {
        let (_dir, store) = new_store();
        store
            .bind_genesis_validators_root(Root([0x77; 32]))
            .unwrap();
        // An import can leave several records at one target: a rootless one next to a signed
        // one. A prune that removed the rootless one alone would turn a double vote with it into
        // an identical re-request of the other.
        let mut record = keystake_core::slashing::interchange::InterchangeRecord {
            pubkey: key(1),
            signed_blocks: Vec::new(),
            signed_attestations: Vec::new(),
        };
        let entry = |source: u64, target: u64, root: Option<Root>| {
            keystake_core::slashing::interchange::InterchangeAttestation {
                source_epoch: Epoch(source),
                target_epoch: Epoch(target),
                signing_root: root,
            }
        };
        record.signed_attestations.push(entry(4, 5, None));
        record
            .signed_attestations
            .push(entry(4, 5, Some(root(4, 5, 1))));
        for target in 6..=12 {
            record.signed_attestations.push(entry(
                target - 1,
                target,
                Some(root(target - 1, target, 1)),
            ));
            record
                .signed_attestations
                .push(entry(target - 1, target, None));
        }
        let mut interchange =
            keystake_core::slashing::interchange::Interchange::new(Root([0x77; 32]));
        interchange.data.push(record);
        store.import_interchange(&interchange, None).unwrap();
        sign_run(&store, 1, 13..=16);
        let before: Vec<SlashingRequest> = grid()
            .into_iter()
            .filter(|request| refuses(&store, 1, *request))
            .collect();
        assert!(before.contains(&attestation(4, 5, 1)));

        for budget in [1, 2, 3] {
            let (_dir, copy) = new_store();
            copy.import_interchange(&interchange, None).unwrap();
            sign_run(&copy, 1, 13..=16);
            let mut progress = PruneProgress::start(&copy.admin()).unwrap();
            let mut transactions = 0;
            while !progress.done() {
                prune_one_transaction(&mut copy.admin(), 0, budget, &mut progress).unwrap();
                transactions += 1;
                for request in &before {
                    assert!(
                        refuses(&copy, 1, *request),
                        "budget {budget}, after transaction {transactions}: {request:?} allowed"
                    );
                }
            }
            assert!(transactions > 3, "budget {budget}: {transactions}");
            let history = copy.history(&key(1)).unwrap().unwrap();
            let targets: Vec<u64> = history.attestations.iter().map(|a| a.target.0).collect();
            assert_eq!(targets, vec![16], "budget {budget}");
        }
    }

    #[test]
    fn keys_with_nothing_to_prune_count_against_a_transaction_too() {
        let (_dir, store) = new_store();
        for k in 1..=10 {
            sign_run(&store, k, [7]);
        }
        let summary =
            prune_in_transactions(&store.admin, 5, 3, Duration::ZERO, &|| Ok(true)).unwrap();
        assert_eq!(
            summary,
            PruneSummary {
                validators: 0,
                attestations: 0,
                transactions: 4,
                stopped_early: false,
            }
        );
    }

    /// Keys 1–6 each sign targets 1–8; the requests of the grid each of them then refuses.
    fn six_keys_and_what_they_refuse(store: &Store) -> Vec<(u8, SlashingRequest)> {
        for k in 1..=6 {
            sign_run(store, k, 1..=8);
        }
        (1..=6)
            .flat_map(|k| grid().into_iter().map(move |request| (k, request)))
            .filter(|(k, request)| refuses(store, *k, *request))
            .collect()
    }

    /// `serve`'s prune stops between two transactions when asked (shutdown): what it committed
    /// is covered, the next prune finishes the rest, and the shared connection is free whenever
    /// it is asked — never held across the pause, which the health probe would wait out.
    #[test]
    fn a_prune_asked_to_stop_stops_between_transactions_without_holding_the_connection() {
        let (_dir, store) = new_store();
        let before = six_keys_and_what_they_refuse(&store);
        let asked = std::cell::Cell::new(0);
        let partial = prune_in_transactions(&store.admin, 2, 4, Duration::ZERO, &|| {
            assert!(
                store.admin.try_lock().is_ok(),
                "connection held between transactions"
            );
            asked.set(asked.get() + 1);
            Ok(asked.get() <= 2)
        })
        .unwrap();
        assert_eq!(asked.get(), 3);
        assert_eq!(partial.transactions, 2);
        assert!(partial.stopped_early);
        assert!(partial.attestations > 0);
        for (k, request) in &before {
            assert!(
                refuses(&store, *k, *request),
                "key {k}: {request:?} allowed"
            );
        }
        let rest = store.prune_attestations(2, false).unwrap();
        assert!(!rest.stopped_early);
        assert_eq!(partial.attestations + rest.attestations, 6 * 5);
        for k in 1..=6 {
            let targets: Vec<u64> = store
                .history(&key(k))
                .unwrap()
                .unwrap()
                .attestations
                .iter()
                .map(|a| a.target.0)
                .collect();
            assert_eq!(targets, vec![6, 7, 8], "key {k}");
        }
    }

    /// A prune that fails after committing some transactions says what they removed (the
    /// scheduled prune counts it in `/metrics`), and those removals stay covered.
    #[test]
    fn a_failed_prune_reports_what_its_committed_transactions_removed() {
        let (dir, store) = new_store();
        let before = six_keys_and_what_they_refuse(&store);
        let asked = std::cell::Cell::new(0);
        let failed = prune_in_transactions(&store.admin, 2, 4, Duration::ZERO, &|| {
            asked.set(asked.get() + 1);
            if asked.get() <= 2 {
                Ok(true)
            } else {
                Err(StoreError::Unavailable(StoreFault::Replaced {
                    path: dir.path().join("db"),
                }))
            }
        })
        .unwrap_err();
        assert!(
            matches!(
                *failed.error,
                StoreError::Unavailable(StoreFault::Replaced { .. })
            ),
            "{failed:?}"
        );
        assert_eq!(failed.committed.transactions, 2);
        let remaining: i64 = store
            .admin()
            .query_row("SELECT count(*) FROM signed_attestations", [], |r| r.get(0))
            .unwrap();
        assert!(failed.committed.attestations > 0);
        assert_eq!(failed.committed.attestations as i64, 6 * 8 - remaining);
        assert!(failed.to_string().contains(&format!(
            "removing {} attestations",
            failed.committed.attestations
        )));
        for (k, request) in &before {
            assert!(
                refuses(&store, *k, *request),
                "key {k}: {request:?} allowed"
            );
        }
    }

    /// A store whose writer latched a storage fault (fail-closed) is not written by a prune.
    #[test]
    fn a_latched_store_is_not_pruned() {
        let (dir, store) = new_store();
        sign_run(&store, 1, 1..=8);
        store
            .latch
            .set(StoreFault::Replaced {
                path: dir.path().join("db"),
            })
            .unwrap();
        let failed = store.prune_attestations(0, false).unwrap_err();
        assert!(
            matches!(
                *failed.error,
                StoreError::Unavailable(StoreFault::Latched(_))
            ),
            "{failed:?}"
        );
        assert_eq!(failed.committed, PruneSummary::default());
        let count: i64 = store
            .admin()
            .query_row("SELECT count(*) FROM signed_attestations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(count, 8);
    }
}
