//! EIP-3076 interchange import and export against the SQLite history.
//!
//! Import is atomic: the whole file (restricted to the chosen keys when given) goes into one
//! `BEGIN IMMEDIATE … COMMIT`, or nothing does. It binds the database to the file's genesis
//! validators root (a file for another network is refused), stores every entry (exact
//! duplicates once), and raises each key's low watermark to the file's maxima for that key
//! (design.md §5): nothing at or below an imported maximum is signed again, whatever gaps the
//! file has.
//!
//! Export writes the complete form: every stored entry of every chosen key. Where a key's
//! watermark lies above what its entries imply (a configured minimum for a new key), one entry
//! without signing root at the watermark is added, so importing the export elsewhere protects
//! as much as the database did.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashSet};

use rusqlite::{params, Connection, TransactionBehavior};

use super::{
    bind_gvr, ensure_validator, find_validator, raise_watermark, read_gvr, read_key_history,
    u64_to_sql, Store, StoreError,
};
use keystake_core::slashing::interchange::{
    Interchange, InterchangeAttestation, InterchangeBlock, InterchangeRecord,
};
use keystake_core::slashing::Watermark;
use keystake_core::types::BlsPublicKey;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImportSummary {
    /// Keys whose history was imported.
    pub validators: usize,
    /// Keys in the file left out because they were not among the chosen ones.
    pub validators_skipped: usize,
    pub blocks_imported: usize,
    pub attestations_imported: usize,
    /// Entries already present (in the database or earlier in the file).
    pub duplicates_skipped: usize,
}

type BlockEntry = (u64, Option<[u8; 32]>);
type AttestationEntry = (u64, u64, Option<[u8; 32]>);

impl Store {
    /// Import an EIP-3076 document atomically; see the module documentation.
    pub fn import_interchange(
        &self,
        interchange: &Interchange,
        only: Option<&[BlsPublicKey]>,
    ) -> Result<ImportSummary, StoreError> {
        let mut conn = self.admin();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let summary = import_in(&tx, interchange, only)?;
        // Nothing is visible to the signing path until this commit; a failure above rolls the
        // whole file back when `tx` drops.
        tx.commit()?;
        Ok(summary)
    }

    /// Export the complete history of the chosen keys (all keys when `None`). Keys the
    /// database has never seen are left out.
    pub fn export_interchange(
        &self,
        keys: Option<&[BlsPublicKey]>,
    ) -> Result<Interchange, StoreError> {
        let mut conn = self.admin();
        // A read transaction: one consistent snapshot even while the writer commits.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let root = read_gvr(&tx)?.ok_or(StoreError::NotBound)?;
        let mut ids: Vec<(BlsPublicKey, i64)> = match keys {
            Some(keys) => {
                let mut ids = Vec::new();
                let mut seen = HashSet::new();
                for key in keys {
                    if !seen.insert(*key) {
                        continue;
                    }
                    if let Some(id) = find_validator(&tx, key)? {
                        ids.push((*key, id));
                    }
                }
                ids
            }
            None => all_validators(&tx)?,
        };
        ids.sort_by_key(|(key, _)| *key);
        let mut interchange = Interchange::new(root);
        for (pubkey, id) in ids {
            let history = read_key_history(&tx, id)?;
            let mut signed_blocks: Vec<InterchangeBlock> =
                history.blocks.iter().copied().map(Into::into).collect();
            let mut signed_attestations: Vec<InterchangeAttestation> = history
                .attestations
                .iter()
                .copied()
                .map(Into::into)
                .collect();
            add_watermark_entries(
                history.watermark,
                &mut signed_blocks,
                &mut signed_attestations,
            );
            interchange.data.push(InterchangeRecord {
                pubkey,
                signed_blocks,
                signed_attestations,
            });
        }
        tx.commit()?;
        Ok(interchange)
    }
}

/// The import itself, inside a transaction the caller owns (and commits): `import_interchange`
/// and `Store::supersede_shares` (a reshare's history and new shares land in one commit).
pub(super) fn import_in(
    tx: &rusqlite::Transaction<'_>,
    interchange: &Interchange,
    only: Option<&[BlsPublicKey]>,
) -> Result<ImportSummary, StoreError> {
    interchange.validate()?;
    let chosen: Option<HashSet<BlsPublicKey>> = only.map(|keys| keys.iter().copied().collect());
    bind_gvr(tx, interchange.metadata.genesis_validators_root)?;
    let mut summary = ImportSummary::default();
    let mut skipped = HashSet::new();
    let mut by_key: BTreeMap<BlsPublicKey, Vec<&InterchangeRecord>> = BTreeMap::new();
    for record in &interchange.data {
        if chosen.as_ref().is_some_and(|c| !c.contains(&record.pubkey)) {
            skipped.insert(record.pubkey);
            continue;
        }
        by_key.entry(record.pubkey).or_default().push(record);
    }
    summary.validators_skipped = skipped.len();
    for (public_key, records) in by_key {
        import_key(tx, &public_key, &records, &mut summary)?;
        summary.validators += 1;
    }
    Ok(summary)
}

fn all_validators(conn: &Connection) -> Result<Vec<(BlsPublicKey, i64)>, StoreError> {
    let mut stmt = conn.prepare("SELECT pubkey, id FROM validators")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (pubkey, id) = row?;
        let key = BlsPublicKey::from_slice(&pubkey).map_err(|_| {
            StoreError::InvalidData("stored public key has the wrong length".into())
        })?;
        out.push((key, id));
    }
    Ok(out)
}

/// An entry without signing root at the watermark, where the entries themselves do not already
/// reach it: importing such an entry raises the importer's watermark to the same value.
fn add_watermark_entries(
    watermark: Watermark,
    blocks: &mut Vec<InterchangeBlock>,
    attestations: &mut Vec<InterchangeAttestation>,
) {
    if let Some(slot) = watermark.block_slot {
        if blocks.iter().map(|b| b.slot).max() < Some(slot) {
            blocks.push(InterchangeBlock {
                slot,
                signing_root: None,
            });
        }
    }
    let max_source = attestations.iter().map(|a| a.source_epoch).max();
    let max_target = attestations.iter().map(|a| a.target_epoch).max();
    let wanted_source = watermark.attestation_source.max(max_source);
    let wanted_target = watermark.attestation_target.max(max_target);
    if wanted_source > max_source || wanted_target > max_target {
        // Both components are needed for one entry; a missing one falls back to the other
        // (a watermark on one side only is written as source = target).
        let source = wanted_source.or(wanted_target);
        let target = wanted_target.or(wanted_source);
        if let (Some(source_epoch), Some(target_epoch)) = (source, target) {
            attestations.push(InterchangeAttestation {
                source_epoch,
                target_epoch,
                signing_root: None,
            });
        }
    }
}

fn import_key(
    conn: &Connection,
    public_key: &BlsPublicKey,
    records: &[&InterchangeRecord],
    summary: &mut ImportSummary,
) -> Result<(), StoreError> {
    let validator_id = ensure_validator(conn, public_key)?;
    let (mut blocks, mut attestations) = existing_entries(conn, validator_id)?;
    let mut block_insert = conn.prepare_cached(
        "INSERT INTO signed_blocks (validator_id, slot, signing_root) VALUES (?1, ?2, ?3)",
    )?;
    let mut attestation_insert = conn.prepare_cached(
        "INSERT INTO signed_attestations (validator_id, source_epoch, target_epoch, signing_root)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut raise = Watermark::default();
    for record in records {
        let maxima = record.maxima();
        raise = raise.max(Watermark {
            block_slot: maxima.block_slot,
            attestation_source: maxima.attestation_source,
            attestation_target: maxima.attestation_target,
        });
        for block in &record.signed_blocks {
            let root = block.signing_root.map(|r| r.0);
            if !blocks.insert((block.slot.0, root)) {
                summary.duplicates_skipped += 1;
                continue;
            }
            block_insert.execute(params![
                validator_id,
                u64_to_sql(block.slot.0),
                root.map(|r| r.to_vec())
            ])?;
            summary.blocks_imported += 1;
        }
        for attestation in &record.signed_attestations {
            let root = attestation.signing_root.map(|r| r.0);
            let entry = (attestation.source_epoch.0, attestation.target_epoch.0, root);
            if !attestations.insert(entry) {
                summary.duplicates_skipped += 1;
                continue;
            }
            attestation_insert.execute(params![
                validator_id,
                u64_to_sql(entry.0),
                u64_to_sql(entry.1),
                root.map(|r| r.to_vec())
            ])?;
            summary.attestations_imported += 1;
        }
    }
    raise_watermark(conn, validator_id, raise)?;
    Ok(())
}

/// The entries a key already has, for skipping exact duplicates. Empty for a new key, so a
/// large first import costs one indexed lookup per key.
fn existing_entries(
    conn: &Connection,
    validator_id: i64,
) -> Result<(HashSet<BlockEntry>, HashSet<AttestationEntry>), StoreError> {
    let history = read_key_history(conn, validator_id)?;
    let blocks = history
        .blocks
        .iter()
        .map(|b| (b.slot.0, b.signing_root.map(|r| r.0)))
        .collect();
    let attestations = history
        .attestations
        .iter()
        .map(|a| (a.source.0, a.target.0, a.signing_root.map(|r| r.0)))
        .collect();
    Ok((blocks, attestations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Refusal, SlashingRequest, StoreOptions};
    use keystake_core::slashing::{NotSafe, Safe};
    use keystake_core::types::{Epoch, Root, Slot};

    fn key(byte: u8) -> BlsPublicKey {
        BlsPublicKey([byte; 48])
    }

    fn document(records: Vec<InterchangeRecord>) -> Interchange {
        let mut interchange = Interchange::new(Root([0x11; 32]));
        interchange.data = records;
        interchange
    }

    fn record(k: u8, blocks: &[u64], attestations: &[(u64, u64)]) -> InterchangeRecord {
        InterchangeRecord {
            pubkey: key(k),
            signed_blocks: blocks
                .iter()
                .map(|&slot| InterchangeBlock {
                    slot: Slot(slot),
                    signing_root: None,
                })
                .collect(),
            signed_attestations: attestations
                .iter()
                .map(|&(s, t)| InterchangeAttestation {
                    source_epoch: Epoch(s),
                    target_epoch: Epoch(t),
                    signing_root: Some(Root([t as u8; 32])),
                })
                .collect(),
        }
    }

    fn block(slot: u64) -> SlashingRequest {
        SlashingRequest::Block {
            slot: Slot(slot),
            signing_root: Root([0xee; 32]),
        }
    }

    /// Assert that a check was refused as slashable by the named rule.
    macro_rules! assert_slashable {
        ($outcome:expr, $rule:ident) => {{
            let outcome = $outcome;
            assert!(
                matches!(outcome, Err(Refusal::Slashable(NotSafe::$rule { .. }))),
                "{outcome:?}"
            );
        }};
    }

    fn attestation(source: u64, target: u64) -> SlashingRequest {
        SlashingRequest::Attestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: Root([0xee; 32]),
        }
    }

    /// A reshare's history, retirement and new shares commit together: when the history cannot
    /// be imported (here: another chain's genesis validators root) nothing changes — the old
    /// share still signs and no new share or history appears.
    #[test]
    fn supersede_with_history_is_all_or_nothing() {
        use crate::store::{ShareOrigin, ShareRecord};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let share = |own: u8| ShareRecord {
            public_key: key(own),
            sealed: vec![own],
            origin: ShareOrigin::Dkg,
            threshold: None,
            enabled: true,
        };
        store.insert_share(&share(1)).unwrap();
        store
            .import_interchange(&document(vec![record(1, &[5], &[(1, 2)])]), None)
            .unwrap();
        let mut foreign = document(vec![record(2, &[5], &[(1, 2)])]);
        foreign.metadata.genesis_validators_root = Root([0x22; 32]);
        assert!(store
            .supersede_shares(&[key(1)], &[share(2)], Some(&foreign))
            .is_err());
        let keys: Vec<_> = store
            .shares()
            .unwrap()
            .iter()
            .map(|r| r.public_key)
            .collect();
        assert_eq!(keys, vec![key(1)], "the old share stays, no new share");
        assert!(
            store.history(&key(2)).unwrap().is_none(),
            "no history imported"
        );
        // The same hand-over with this chain's history lands whole.
        let history = document(vec![record(2, &[5], &[(1, 2)])]);
        let (removed, _) = store
            .supersede_shares(&[key(1)], &[share(2)], Some(&history))
            .unwrap();
        assert_eq!(removed, 1);
        let keys: Vec<_> = store
            .shares()
            .unwrap()
            .iter()
            .map(|r| r.public_key)
            .collect();
        assert_eq!(keys, vec![key(2)]);
        assert!(store.history(&key(2)).unwrap().is_some());
    }

    #[test]
    fn import_raises_watermarks_to_the_file_maxima() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let file = document(vec![record(1, &[10, 40], &[(2, 30), (20, 25)])]);
        let summary = store.import_interchange(&file, None).unwrap();
        assert_eq!(summary.validators, 1);
        assert_eq!(summary.blocks_imported, 2);
        assert_eq!(summary.attestations_imported, 2);
        let check = |r| store.check_and_record_blocking(key(1), None, r).unwrap();
        // In the gap between imported entries: unknown activity, refused.
        assert_slashable!(check(block(20)), BlockSlotAtOrBelowWatermark);
        assert_eq!(check(block(41)), Ok(Safe::Valid));
        // (19, 31) also surrounds the imported (20, 25); that rule speaks first.
        assert_slashable!(check(attestation(19, 31)), NewSurroundsPrevious);
        assert_slashable!(check(attestation(20, 29)), PreviousSurroundsNew);
        assert_eq!(check(attestation(20, 31)), Ok(Safe::Valid));
        // Where no record conflicts, the watermark alone refuses.
        store
            .import_interchange(&document(vec![record(2, &[], &[(20, 25)])]), None)
            .unwrap();
        let check2 = |r| store.check_and_record_blocking(key(2), None, r).unwrap();
        assert_slashable!(check2(attestation(19, 24)), SourceBelowWatermark);
        assert_slashable!(check2(attestation(20, 24)), TargetAtOrBelowWatermark);
        // Importing the same file again changes nothing.
        let again = store.import_interchange(&file, None).unwrap();
        assert_eq!(again.duplicates_skipped, 4);
        assert_eq!(again.blocks_imported + again.attestations_imported, 0);
    }

    #[test]
    fn another_network_is_refused_and_nothing_is_imported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store
            .bind_genesis_validators_root(Root([0x22; 32]))
            .unwrap();
        let file = document(vec![record(1, &[10], &[(1, 2)])]);
        assert!(matches!(
            store.import_interchange(&file, None),
            Err(StoreError::GenesisMismatch { .. })
        ));
        assert_eq!(store.history(&key(1)).unwrap(), None);
        assert!(matches!(
            store.bind_genesis_validators_root(Root([0x33; 32])),
            Err(StoreError::GenesisMismatch { .. })
        ));
    }

    #[test]
    fn unsupported_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let mut file = document(vec![record(1, &[10], &[])]);
        file.metadata.interchange_format_version = "4".into();
        assert!(matches!(
            store.import_interchange(&file, None),
            Err(StoreError::InvalidInterchange(_))
        ));
        assert_eq!(store.genesis_validators_root().unwrap(), None);
    }

    #[test]
    fn only_chosen_keys_are_imported_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let file = document(vec![
            record(1, &[10], &[(1, 2)]),
            record(2, &[11], &[(1, 3)]),
            record(3, &[12], &[]),
        ]);
        let summary = store
            .import_interchange(&file, Some(&[key(1), key(3)]))
            .unwrap();
        assert_eq!(summary.validators, 2);
        assert_eq!(summary.validators_skipped, 1);
        assert_eq!(store.history(&key(2)).unwrap(), None);
        let exported = store.export_interchange(Some(&[key(3), key(9)])).unwrap();
        assert_eq!(exported.data.len(), 1);
        assert_eq!(exported.data[0], record(3, &[12], &[]));
        let all = store.export_interchange(None).unwrap();
        assert_eq!(
            all.data.iter().map(|r| r.pubkey).collect::<Vec<_>>(),
            vec![key(1), key(3)]
        );
    }

    #[test]
    fn export_round_trips_including_a_configured_watermark() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            new_key_watermark: Watermark {
                block_slot: Some(Slot(1000)),
                attestation_source: Some(Epoch(30)),
                attestation_target: Some(Epoch(30)),
            },
            ..StoreOptions::default()
        };
        let store = Store::open_with(&dir.path().join("a"), options).unwrap();
        store
            .bind_genesis_validators_root(Root([0x11; 32]))
            .unwrap();
        store
            .insert_share(&crate::store::ShareRecord {
                public_key: key(5),
                sealed: vec![1],
                origin: crate::store::ShareOrigin::Dkg,
                threshold: None,
                enabled: true,
            })
            .unwrap();
        assert!(matches!(
            store
                .check_and_record_blocking(key(5), None, block(999))
                .unwrap(),
            Err(Refusal::Slashable(
                NotSafe::BlockSlotAtOrBelowWatermark { .. }
            ))
        ));
        assert_eq!(
            store
                .check_and_record_blocking(key(5), None, attestation(30, 31))
                .unwrap(),
            Ok(Safe::Valid)
        );
        let first = store.export_interchange(None).unwrap();
        let fresh = Store::open(&dir.path().join("b")).unwrap();
        fresh.import_interchange(&first, None).unwrap();
        // The fresh database refuses what the first one refused.
        assert!(matches!(
            fresh
                .check_and_record_blocking(key(5), None, block(1000))
                .unwrap(),
            Err(Refusal::Slashable(_))
        ));
        let second = fresh.export_interchange(None).unwrap();
        assert_eq!(first, second);
        let text = first.to_json();
        assert_eq!(Interchange::from_json(&text).unwrap(), first);
    }

    #[test]
    fn export_needs_a_bound_network() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(matches!(
            store.export_interchange(None),
            Err(StoreError::NotBound)
        ));
    }

    #[test]
    fn dry_run_leaves_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let outcome = runtime
            .block_on(store.check_only(key(4), Some(Root([1; 32])), attestation(1, 2)))
            .unwrap();
        assert_eq!(outcome, Ok(Safe::Valid));
        assert_eq!(store.history(&key(4)).unwrap(), None);
        assert_eq!(store.genesis_validators_root().unwrap(), None);
    }
}
