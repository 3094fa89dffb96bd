//! DKG round state in the appliance's SQLite database (issue 12): each ceremony's definition,
//! this appliance's index and its **sealed** seed (the only secret of a running ceremony:
//! polynomials, proof nonces and deal keys are derived from it), and every signed message held
//! (public), and — from the moment this appliance computes them — its new shares **sealed** by
//! the HSM (`dkg_pending_shares`: not signable; moved into the share store when the lock
//! verifies, erased when the ceremony ends either way). `dkg run` writes it; `serve` reads it to answer peers' `Fetch`
//! calls and to pin their certificates; a restarted `dkg run` resumes from it.
//!
//! Its own tables (created if missing, not part of the slashing schema's version), its own
//! connection with the same pragmas as the store's (WAL, `synchronous=FULL`), so the writer
//! thread of the signing path is not involved.
//!
//! Refuses: a second, different message for a (ceremony, phase, sender) already held (the first
//! one stays: equivocation is judged by the state machine); a ceremony row that does not decode. An aborted ceremony keeps its public messages (evidence) but loses its sealed seed.
#![forbid(unsafe_code)]

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use keystake_core::dkg::{CeremonyId, Definition, Phase, SignedMessage};
use keystake_core::types::{BlsPublicKey, ShareIndex};

/// One new share of a running ceremony, sealed by the HSM under its final seal context (share
/// key, index, group key), waiting for the lock to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingShare {
    pub validator: u32,
    pub public_key: BlsPublicKey,
    pub group_public_key: BlsPublicKey,
    pub sealed: Vec<u8>,
}

/// State of a ceremony row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyState {
    Running,
    Done,
    Aborted,
}

impl CeremonyState {
    fn as_str(self) -> &'static str {
        match self {
            CeremonyState::Running => "running",
            CeremonyState::Done => "done",
            CeremonyState::Aborted => "aborted",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        Ok(match text {
            "running" => CeremonyState::Running,
            "done" => CeremonyState::Done,
            "aborted" => CeremonyState::Aborted,
            other => {
                return Err(StoreError::InvalidData(format!(
                    "unknown ceremony state {other}"
                )))
            }
        })
    }
}

/// One ceremony as stored.
#[derive(Debug, Clone)]
pub struct CeremonyRow {
    pub definition: Definition,
    pub me: ShareIndex,
    /// The seed sealed by the HSM; empty once the ceremony ended.
    pub sealed_seed: Vec<u8>,
    pub state: CeremonyState,
}

/// The DKG tables (module doc).
pub struct DkgStore {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for DkgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DkgStore")
    }
}

fn invalid(what: &str) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::InvalidData(format!("{what}: {e}"))
}

impl DkgStore {
    /// Open (creating the tables if needed) the DKG tables of the database at `path`, which
    /// [`super::Store::open`] has created.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        super::configure(&conn)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dkg_ceremonies (
                 ceremony_id BLOB PRIMARY KEY,
                 definition TEXT NOT NULL,
                 me INTEGER NOT NULL,
                 sealed_seed BLOB NOT NULL,
                 state TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS dkg_messages (
                 ceremony_id BLOB NOT NULL REFERENCES dkg_ceremonies(ceremony_id),
                 phase INTEGER NOT NULL,
                 sender INTEGER NOT NULL,
                 message TEXT NOT NULL,
                 PRIMARY KEY (ceremony_id, phase, sender)
             );
             CREATE TABLE IF NOT EXISTS dkg_pending_shares (
                 ceremony_id BLOB NOT NULL REFERENCES dkg_ceremonies(ceremony_id),
                 validator INTEGER NOT NULL,
                 public_key BLOB NOT NULL,
                 group_public_key BLOB NOT NULL,
                 sealed BLOB NOT NULL,
                 PRIMARY KEY (ceremony_id, validator)
             );",
        )?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (every write is one statement).
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn ceremony(&self, id: &CeremonyId) -> Result<Option<CeremonyRow>, StoreError> {
        let row: Option<(String, u32, Vec<u8>, String)> = self
            .conn()
            .query_row(
                "SELECT definition, me, sealed_seed, state FROM dkg_ceremonies WHERE ceremony_id = ?1",
                params![id.0.as_slice()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        row.map(|(definition, me, sealed_seed, state)| {
            Ok(CeremonyRow {
                definition: serde_json::from_str(&definition).map_err(invalid("definition"))?,
                me: ShareIndex::new(me)
                    .map_err(|_| StoreError::InvalidData("participant index 0".into()))?,
                sealed_seed,
                state: CeremonyState::parse(&state)?,
            })
        })
        .transpose()
    }

    /// Record a new running ceremony (no-op when it exists: a restart keeps the first seed).
    pub fn insert_ceremony(
        &self,
        definition: &Definition,
        me: ShareIndex,
        sealed_seed: &[u8],
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(definition).map_err(invalid("definition"))?;
        self.conn().execute(
            "INSERT OR IGNORE INTO dkg_ceremonies (ceremony_id, definition, me, sealed_seed, state)
             VALUES (?1, ?2, ?3, ?4, 'running')",
            params![
                definition.ceremony_id().0.as_slice(),
                text,
                me.get(),
                sealed_seed
            ],
        )?;
        Ok(())
    }

    /// Record a new running reshare (issue 13) under its own id: `definition` lists its seats
    /// (whose certificates the DKG service pins). No-op when it exists.
    pub fn insert_ceremony_with_id(
        &self,
        id: &CeremonyId,
        definition: &Definition,
        me: ShareIndex,
        sealed_seed: &[u8],
    ) -> Result<(), StoreError> {
        let text = serde_json::to_string(definition).map_err(invalid("definition"))?;
        self.conn().execute(
            "INSERT OR IGNORE INTO dkg_ceremonies (ceremony_id, definition, me, sealed_seed, state)
             VALUES (?1, ?2, ?3, ?4, 'running')",
            params![id.0.as_slice(), text, me.get(), sealed_seed],
        )?;
        Ok(())
    }

    /// End a ceremony: its sealed seed and its pending sealed shares are erased either way (on
    /// success the shares are in the share store by then), in one transaction.
    pub fn finish_ceremony(&self, id: &CeremonyId, state: CeremonyState) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "DELETE FROM dkg_pending_shares WHERE ceremony_id = ?1",
            params![id.0.as_slice()],
        )?;
        tx.execute(
            "UPDATE dkg_ceremonies SET state = ?2, sealed_seed = x'' WHERE ceremony_id = ?1",
            params![id.0.as_slice(), state.as_str()],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Keep this appliance's new shares of a running ceremony, sealed (all in one transaction;
    /// a restart that computes them again keeps the first ones).
    pub fn insert_pending_shares(
        &self,
        id: &CeremonyId,
        shares: &[PendingShare],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for share in shares {
            tx.execute(
                "INSERT OR IGNORE INTO dkg_pending_shares
                     (ceremony_id, validator, public_key, group_public_key, sealed)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    id.0.as_slice(),
                    share.validator,
                    share.public_key.as_bytes().as_slice(),
                    share.group_public_key.as_bytes().as_slice(),
                    share.sealed
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The pending sealed shares of a ceremony, by validator.
    pub fn pending_shares(&self, id: &CeremonyId) -> Result<Vec<PendingShare>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT validator, public_key, group_public_key, sealed FROM dkg_pending_shares
             WHERE ceremony_id = ?1 ORDER BY validator",
        )?;
        let rows = statement.query_map(params![id.0.as_slice()], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Vec<u8>>(2)?,
                r.get::<_, Vec<u8>>(3)?,
            ))
        })?;
        let mut shares = Vec::new();
        for row in rows {
            let (validator, public_key, group_public_key, sealed) = row?;
            let key = |bytes: &[u8]| {
                BlsPublicKey::from_slice(bytes)
                    .map_err(|_| StoreError::InvalidData("pending share public key".into()))
            };
            shares.push(PendingShare {
                validator,
                public_key: key(&public_key)?,
                group_public_key: key(&group_public_key)?,
                sealed,
            });
        }
        Ok(shares)
    }

    /// Keep a message (the first one per (ceremony, phase, sender)).
    pub fn insert_message(&self, message: &SignedMessage) -> Result<(), StoreError> {
        let text = serde_json::to_string(message).map_err(invalid("message"))?;
        self.conn().execute(
            "INSERT OR IGNORE INTO dkg_messages (ceremony_id, phase, sender, message)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                message.ceremony_id.0.as_slice(),
                message.phase.number(),
                message.sender.get(),
                text
            ],
        )?;
        Ok(())
    }

    /// Every message held for a ceremony.
    pub fn messages(&self, id: &CeremonyId) -> Result<Vec<SignedMessage>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare(
            "SELECT message FROM dkg_messages WHERE ceremony_id = ?1 ORDER BY phase, sender",
        )?;
        let rows = statement.query_map(params![id.0.as_slice()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for text in rows {
            out.push(serde_json::from_str(&text?).map_err(invalid("message"))?);
        }
        Ok(out)
    }

    /// One message, for a peer's `Fetch`.
    pub fn message(
        &self,
        id: &CeremonyId,
        phase: Phase,
        sender: ShareIndex,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT message FROM dkg_messages WHERE ceremony_id = ?1 AND phase = ?2 AND sender = ?3",
                params![id.0.as_slice(), phase.number(), sender.get()],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// DER certificates of the participants of every ceremony held here, running or ended (the
    /// TLS pins). Ended ones stay pinned, aborted ones too: a participant slower than this one
    /// still needs the messages this appliance holds (its own and relayed ones) — finish
    /// messages to resume after a crash, or the echoes that let it name the same culprit with
    /// the same evidence after this appliance already aborted. Unpinning on abort let the
    /// fastest seats lock a slow honest one out, which then blamed them for silence. The
    /// messages are public and signed, pinned peers reach only the DKG service, and the `dkg`
    /// policy grant is what an operator withdraws to stop serving them.
    pub fn pinned_certificates(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let conn = self.conn();
        let mut statement = conn.prepare("SELECT definition FROM dkg_ceremonies")?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for text in rows {
            let definition: Definition =
                serde_json::from_str(&text?).map_err(invalid("definition"))?;
            out.extend(
                definition
                    .participants
                    .into_iter()
                    .map(|p| p.tls_certificate),
            );
        }
        Ok(out)
    }
}
