//! Audit-log storage: the `audit_log` table and the writer-side chaining.
//!
//! Entries are appended only by the store's writer thread, inside its batch transaction: an
//! entry about a slashable signature commits together with the slashing record that allows it
//! (or not at all), and refusals and uncovered signatures are audit-only jobs in the same queue.
//! The chain head is read inside the write transaction (`BEGIN IMMEDIATE` holds SQLite's write
//! lock), so no other writer can interleave and the chain survives restarts and crashes: a
//! batch that did not commit left no entry.
//!
//! Refuses: nothing here; verification is the pure `keystake_core::audit::verify`.
#![forbid(unsafe_code)]

use rusqlite::{params, Connection, OptionalExtension};

use super::{CheckOutcome, PendingCheck, Refusal, Store, StoreError};
use keystake_core::audit::{parse_head, Entry, Head, Outcome, Record, SignedHead};
use keystake_core::slashing::Safe;
use keystake_core::types::BlsPublicKey;

pub(super) fn create_table(conn: &Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS audit_log (
             seq INTEGER PRIMARY KEY,
             time_ms INTEGER NOT NULL,
             api TEXT NOT NULL,
             client TEXT NOT NULL,
             fingerprint TEXT NOT NULL,
             key TEXT NOT NULL,
             kind TEXT NOT NULL,
             signing_root TEXT NOT NULL,
             outcome TEXT NOT NULL,
             reason TEXT NOT NULL,
             prev_hash BLOB NOT NULL,
             hash BLOB NOT NULL
         );",
    )?;
    Ok(())
}

/// The outcome the writer decided, folded into the record the service drafted.
pub(super) fn settle(mut record: Record, outcome: &CheckOutcome) -> Record {
    match outcome {
        Ok(Safe::Valid) => {}
        Ok(Safe::SameData) => {
            if record.reason.is_empty() {
                record.reason = "identical to an earlier signed message; answered again".into();
            }
        }
        Err(refusal) => {
            record.outcome = Outcome::Refused;
            record.reason = refused_reason(refusal);
        }
    }
    record
}

fn refused_reason(refusal: &Refusal) -> String {
    format!("refused by slashing protection: {refusal}")
}

/// The head the next entry follows: the newest entry, or — in a log whose every entry was
/// pruned (which `audit prune` never does, but a log must not restart at 1 if it happens) — the
/// stored anchor.
fn read_head(conn: &Connection) -> Result<Head, rusqlite::Error> {
    // Read once per write batch by the writer: cached, not parsed again each time.
    let row = conn
        .prepare_cached("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .optional()?;
    Ok(match row {
        None => anchor_head(conn).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })?,
        Some((seq, hash)) => Head {
            seq: u64::try_from(seq).unwrap_or(0),
            // A damaged head hash chains the next entry to garbage; `audit verify` reports it.
            hash: hash.try_into().unwrap_or([0xff; 32]),
        },
    })
}

/// The `meta` key of the signed anchor of a pruned audit log (`audit prune`, docs/audit.md
/// "Retention"): the identity-key-signed head of the last entry removed.
const ANCHOR_KEY: &str = "audit_anchor";

/// The stored anchor, if the log was ever pruned; its signature is the reader's to check.
fn read_anchor(conn: &Connection) -> Result<Option<SignedHead>, StoreError> {
    let text: Option<String> = conn
        .query_row(
            "SELECT CAST(value AS TEXT) FROM meta WHERE key = ?1",
            [ANCHOR_KEY],
            |r| r.get(0),
        )
        .optional()?;
    text.map(|text| {
        serde_json::from_str(&text).map_err(|error| {
            StoreError::InvalidData(format!(
                "the stored audit anchor is not a signed head: {error}"
            ))
        })
    })
    .transpose()
}

/// The head of the stored anchor ([`Head::EMPTY`] when the log was never pruned). Its
/// signature is not checked here: the writer continues whatever chain it finds, and `audit
/// verify` checks the anchor against the identity key.
pub(super) fn anchor_head(conn: &Connection) -> Result<Head, StoreError> {
    match read_anchor(conn)? {
        None => Ok(Head::EMPTY),
        Some(signed) => parse_head(&signed.head).ok_or_else(|| {
            StoreError::InvalidData(format!(
                "the stored audit anchor's head {:?} is not SEQ:SHA256HEX",
                signed.head
            ))
        }),
    }
}

/// The chain inside one write transaction; the head is read on first use.
#[derive(Default)]
pub(super) struct Chain {
    head: Option<Head>,
}

impl Chain {
    pub(super) fn append(
        &mut self,
        conn: &Connection,
        record: Record,
    ) -> Result<(), rusqlite::Error> {
        let head = match &mut self.head {
            Some(head) => head,
            None => self.head.insert(read_head(conn)?),
        };
        let entry = head.append(record);
        insert(conn, &entry)
    }
}

fn insert(conn: &Connection, entry: &Entry) -> Result<(), rusqlite::Error> {
    let r = &entry.record;
    conn.prepare_cached(
        "INSERT INTO audit_log (seq, time_ms, api, client, fingerprint, key, kind, signing_root,
                                outcome, reason, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        i64::try_from(entry.seq).unwrap_or(i64::MAX),
        i64::try_from(r.time_ms).unwrap_or(i64::MAX),
        r.api,
        r.client,
        r.fingerprint,
        r.key,
        r.kind,
        r.signing_root,
        r.outcome.as_str(),
        r.reason,
        entry.prev_hash.to_vec(),
        entry.hash.to_vec(),
    ])?;
    Ok(())
}

/// Read every stored entry in sequence order. A row that cannot even be decoded is an error
/// naming its sequence number.
pub fn read_entries(conn: &Connection) -> Result<Vec<Entry>, StoreError> {
    let mut entries = Vec::new();
    for_each_entry::<StoreError>(conn, 0, &mut |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

/// Every entry with `seq > after`, in order, to `f` (one row decoded at a time); the first error
/// (of the database, of a row that does not decode, or of `f`) ends it.
fn for_each_entry<E: From<StoreError>>(
    conn: &Connection,
    after: u64,
    f: &mut dyn FnMut(Entry) -> Result<(), E>,
) -> Result<(), E> {
    let mut statement = conn
        .prepare(
        "SELECT seq, time_ms, api, client, fingerprint, key, kind, signing_root, outcome, reason,
                prev_hash, hash
         FROM audit_log WHERE seq > ?1 ORDER BY seq",
        )
        .map_err(StoreError::from)?;
    let rows = statement
        .query_map([i64::try_from(after).unwrap_or(i64::MAX)], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                (
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, String>(8)?,
                    r.get::<_, String>(9)?,
                ),
                r.get::<_, Vec<u8>>(10)?,
                r.get::<_, Vec<u8>>(11)?,
            ))
        })
        .map_err(StoreError::from)?;
    for row in rows {
        let (seq, time_ms, text, prev_hash, hash) = row.map_err(StoreError::from)?;
        let (api, client, fingerprint, key, kind, signing_root, outcome, reason) = text;
        let invalid = |what: &str| {
            StoreError::InvalidData(format!("audit entry {seq}: {what} cannot be decoded"))
        };
        f(Entry {
            seq: u64::try_from(seq).map_err(|_| invalid("sequence number"))?,
            record: Record {
                time_ms: u64::try_from(time_ms).map_err(|_| invalid("time"))?,
                api,
                client,
                fingerprint,
                key,
                kind,
                signing_root,
                outcome: Outcome::parse(&outcome).ok_or_else(|| invalid("outcome"))?,
                reason,
            },
            prev_hash: prev_hash.try_into().map_err(|_| invalid("prev_hash"))?,
            hash: hash.try_into().map_err(|_| invalid("hash"))?,
        })?;
    }
    Ok(())
}

impl Store {
    /// Check and record a slashable signing request, chaining `audit` (its outcome settled by
    /// the verdict) into the same transaction. The verdict comes twice (see [`PendingCheck`]):
    /// tentatively once decided, to start signing, and durably once committed, to release.
    pub fn check_and_record_audited(
        &self,
        public_key: BlsPublicKey,
        genesis_validators_root: Option<keystake_core::types::Root>,
        request: super::SlashingRequest,
        audit: Record,
    ) -> Result<PendingCheck, StoreError> {
        self.submit(
            public_key,
            genesis_validators_root,
            Some(request),
            true,
            Some(audit),
            true,
        )
    }

    /// The audit entry of a signature slashing protection does not cover, as a [`PendingCheck`]:
    /// tentatively `Ok(Safe::Valid)` once the writer has taken it into a transaction (the store
    /// is not latched, the file is the one opened, the write lock is held: signing may start),
    /// durably once committed (the signature may leave).
    pub fn record_audit_pending(&self, audit: Record) -> Result<PendingCheck, StoreError> {
        self.submit(BlsPublicKey([0; 48]), None, None, false, Some(audit), true)
    }

    /// Append one audit entry in its own (group-committed) transaction; returns once durable.
    pub async fn record_audit(&self, audit: Record) -> Result<(), StoreError> {
        self.submit(BlsPublicKey([0; 48]), None, None, false, Some(audit), false)?
            .durable()
            .await
            .map(|_| ())
    }

    /// Every audit entry, in sequence order (for `audit verify` / `audit export`).
    pub fn audit_entries(&self) -> Result<Vec<Entry>, StoreError> {
        let conn = self.admin();
        read_entries(&conn)
    }

    /// Read the audit log from one consistent snapshot (a read transaction: the writer goes on
    /// meanwhile, its new entries unseen): `f` gets the stored anchor and a reader of the
    /// entries. Holds the administrative connection while `f` runs: for commands, not `serve`.
    pub fn read_audit<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&AuditSnapshot<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.admin();
        let snapshot = conn.transaction().map_err(StoreError::from)?;
        f(&AuditSnapshot { conn: &snapshot })
    }

    /// Store `anchor` as the audit log's anchor if the stored one is still `expected` (`None`:
    /// never pruned); refuses with [`StoreError::InvalidData`] otherwise (another prune ran
    /// meanwhile), and refuses an anchor at or beyond the newest entry (the writer continues
    /// the chain from the newest entry, which must stay).
    pub fn replace_audit_anchor(
        &self,
        expected: Option<&SignedHead>,
        anchor: &SignedHead,
    ) -> Result<(), StoreError> {
        let head = parse_head(&anchor.head).ok_or_else(|| {
            StoreError::InvalidData(format!(
                "audit anchor head {:?} is not SEQ:SHA256HEX",
                anchor.head
            ))
        })?;
        let mut conn = self.admin();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if read_anchor(&tx)?.as_ref() != expected {
            return Err(StoreError::InvalidData(
                "the audit anchor changed meanwhile (another prune?); nothing changed".into(),
            ));
        }
        if read_head(&tx)?.seq <= head.seq {
            return Err(StoreError::InvalidData(format!(
                "refusing an audit anchor at {}: the newest entry must stay after it",
                head.seq
            )));
        }
        let text = serde_json::to_string(anchor)
            .map_err(|error| StoreError::InvalidData(error.to_string()))?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![ANCHOR_KEY, text],
        )?;
        tx.commit()?;
        Ok(())
    }
}

/// A consistent view of the audit log ([`Store::read_audit`]).
pub struct AuditSnapshot<'a> {
    conn: &'a Connection,
}

impl AuditSnapshot<'_> {
    /// The stored anchor (its signature unchecked), if the log was pruned.
    pub fn anchor(&self) -> Result<Option<SignedHead>, StoreError> {
        read_anchor(self.conn)
    }

    /// Every entry with `seq > after`, in order, one at a time.
    pub fn for_each<E: From<StoreError>>(
        &self,
        after: u64,
        f: &mut dyn FnMut(Entry) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_entry(self.conn, after, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SlashingRequest;
    use keystake_core::types::{Epoch, Root};

    fn record(reason: &str) -> Record {
        Record {
            time_ms: 1,
            api: "local".into(),
            client: "test".into(),
            fingerprint: String::new(),
            key: String::new(),
            kind: "ATTESTATION".into(),
            signing_root: String::new(),
            outcome: Outcome::Signed,
            reason: reason.into(),
        }
    }

    fn att(source: u64, target: u64, byte: u8) -> SlashingRequest {
        SlashingRequest::Attestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: Root([byte; 32]),
        }
    }

    #[tokio::test]
    async fn entries_chain_across_reopen_and_follow_the_verdict() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.sqlite");
        let key = BlsPublicKey([1; 48]);
        {
            let store = Store::open(&path).unwrap();
            store.record_audit(record("first")).await.unwrap();
            let mut pending = store
                .check_and_record_audited(key, None, att(1, 2, 1), record(""))
                .unwrap();
            assert_eq!(pending.tentative().await, Some(Ok(Safe::Valid)));
            assert_eq!(pending.durable().await.unwrap(), Ok(Safe::Valid));
            let mut pending = store
                .check_and_record_audited(key, None, att(1, 2, 2), record(""))
                .unwrap();
            assert!(pending.tentative().await.unwrap().is_err());
            assert!(pending.durable().await.unwrap().is_err());
        }
        let store = Store::open(&path).unwrap();
        store.record_audit(record("after reopen")).await.unwrap();
        let entries = store.audit_entries().unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].record.outcome, Outcome::Signed);
        assert_eq!(entries[2].record.outcome, Outcome::Refused);
        assert!(entries[2].record.reason.contains("slashing protection"));
        assert_eq!(keystake_core::audit::verify(&entries).unwrap().seq, 4);
        // The refused request left an audit entry but no slashing record.
        let history = store.history(&key).unwrap().unwrap();
        assert_eq!(history.attestations.len(), 1);
    }

    /// The case the tentative verdict exists for and must survive: the writer decides a request
    /// is safe, and then its transaction fails to commit. The durable outcome is the fault, and
    /// nothing of the request stays (the signature computed on the tentative verdict is never
    /// released: `service::sign`). The commit is made to fail with a deferred foreign key, which
    /// SQLite checks only at `COMMIT`.
    #[tokio::test]
    async fn a_commit_that_fails_after_a_safe_verdict_refuses_and_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.sqlite");
        let key = BlsPublicKey([2; 48]);
        let store = Store::open(&path).unwrap();
        store
            .admin()
            .execute_batch(
                "CREATE TABLE poison (validator INTEGER REFERENCES validators(id)
                     DEFERRABLE INITIALLY DEFERRED);
                 CREATE TRIGGER poison_every_attestation AFTER INSERT ON signed_attestations
                 BEGIN INSERT INTO poison VALUES (-1); END;",
            )
            .unwrap();
        let mut pending = store
            .check_and_record_audited(key, None, att(1, 2, 1), record(""))
            .unwrap();
        assert_eq!(pending.tentative().await, Some(Ok(Safe::Valid)));
        let durable = pending.durable().await;
        assert!(
            matches!(durable, Err(StoreError::Unavailable(_))),
            "{durable:?}"
        );
        assert!(store.history(&key).unwrap().is_none());
        assert!(store.audit_entries().unwrap().is_empty());
        // Rolled back, not left open: a fresh connection after the writer has gone sees nothing.
        drop(store);
        let reopened = Store::open(&path).unwrap();
        assert!(reopened.history(&key).unwrap().is_none());
        assert!(reopened.audit_entries().unwrap().is_empty());
    }

    /// An anchor with a placeholder signature: the store stores and reads anchors, the CLI
    /// checks their signatures against the identity key.
    fn anchor_at(entries: &[Entry], seq: u64) -> SignedHead {
        let entry = &entries[usize::try_from(seq).unwrap() - 1];
        SignedHead {
            head: Head {
                seq,
                hash: entry.hash,
            }
            .to_string(),
            identity_key: "04".into(),
            signature: "00".into(),
        }
    }

    /// Deletion goes only as far as the stored anchor, never takes the newest entry, and the
    /// writer goes on after the anchor — even if every entry were gone.
    #[tokio::test]
    async fn audit_entries_go_only_under_an_anchor_and_the_chain_continues_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("signer.sqlite")).unwrap();
        for n in 0..6 {
            store
                .record_audit(record(&format!("entry {n}")))
                .await
                .unwrap();
        }
        let entries = store.audit_entries().unwrap();
        assert!(store.delete_audit_through(1).is_err(), "no anchor yet");
        assert!(
            store
                .replace_audit_anchor(None, &anchor_at(&entries, 6))
                .is_err(),
            "the newest entry must stay after the anchor"
        );
        store
            .replace_audit_anchor(None, &anchor_at(&entries, 4))
            .unwrap();
        assert!(
            store
                .replace_audit_anchor(None, &anchor_at(&entries, 5))
                .is_err(),
            "a prune that read no anchor must not replace one stored meanwhile"
        );
        assert!(store.delete_audit_through(5).is_err(), "beyond the anchor");
        assert_eq!(store.delete_audit_through(4).unwrap(), 4);
        assert_eq!(store.delete_audit_through(4).unwrap(), 0);
        let kept = store.audit_entries().unwrap();
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 6]);
        let anchor = Head {
            seq: 4,
            hash: entries[3].hash,
        };
        store.record_audit(record("after the prune")).await.unwrap();
        let kept = store.audit_entries().unwrap();
        assert_eq!(
            keystake_core::audit::verify_from(anchor, &kept)
                .unwrap()
                .seq,
            7
        );

        // Every entry gone (only tampering does that): the next one follows the anchor, seq 5,
        // not a new chain at 1.
        store.admin().execute("DELETE FROM audit_log", []).unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("signer.sqlite")).unwrap();
        store
            .record_audit(record("after every entry went"))
            .await
            .unwrap();
        let restarted = store.audit_entries().unwrap();
        assert_eq!(restarted.len(), 1);
        assert_eq!(restarted[0].seq, 5);
        assert_eq!(restarted[0].prev_hash, anchor.hash);
    }
}
