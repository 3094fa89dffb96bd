//! One reshare from this appliance's side (issue 13, docs/resharing.md): drives the pure
//! `keystake_core::dkg::Reshare` over the DKG's transport (`keystake.v1.Dkg/Fetch`, TLS pinned
//! to the seats' certificates), database and HSM, like [`super::run::run_ceremony`].
//!
//! * old shares: a dealer unseals its shares of the previous lock's validators only to deal
//!   them; they stay sealed and enabled in the store **until the new lock verifies**;
//! * new shares: sealed by the HSM the moment they are computed, into the reshare's state
//!   (pending, not signable, as in a DKG: `run::seal_pending`), before the finish message that
//!   proves them is published; stored as signing shares from those seals at hand-over;
//! * slashing: a dealer reports its per-validator maxima from its history; on success every new
//!   member imports (EIP-3076, atomically) the reshare's bounded floors for its new share key, and
//!   a member keeping the validator also imports its old share's complete history under the new
//!   key — both before the new share can be loaded by `serve`;
//! * retirement, on success only: every old share of the handed-over validators held here is
//!   removed, automatically and in the same transaction that stores the new shares
//!   (`Store::supersede_shares`) — a member that left but still signs is the fault resharing
//!   exists to remove (drand #1190), and the store holds one share per validator; the old
//!   shares' slashing history stays under their keys. No `--retire` flag is needed.
//!
//! Refuses: a definition that does not validate or does not list this appliance (identity and
//! enrolment key); a dealer missing one of its old shares; a network whose genesis time is not
//! known (the wall-clock epoch bounds the slashing reports); a reshare already ended here.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::identity::seed_context;
use super::run::{
    fetch_missing, pending_record, seal_pending, Outgoing, Pace, Parts, RunOptions, Transport,
};
use super::DkgAdapterError;
use crate::hsm::SealedShare;
use crate::service::seal_context;
use crate::store::dkg::CeremonyState;
use crate::store::ThresholdInfo;
use keystake_core::bls::SecretKey;
use keystake_core::consensus::Network;
use keystake_core::dkg::{
    Abort, Lock, OldHolding, ParticipantIndex, Phase, Reshare, ReshareDefinition, ReshareStep,
    ReshareSuccess, Role, SlashingMaxima,
};
use keystake_core::slashing::interchange::{
    Interchange, InterchangeAttestation, InterchangeBlock, InterchangeRecord,
};
use keystake_core::threshold::SecretShare;
use keystake_core::types::{BlsPublicKey, Epoch, Slot};

/// How a reshare ended here.
#[derive(Debug)]
pub enum ReshareOutcome {
    Success {
        lock: Box<Lock>,
        role: Role,
        /// New share keys sealed here.
        shares: Vec<BlsPublicKey>,
        /// Old share keys disabled here.
        retired: Vec<BlsPublicKey>,
        /// Slashing reports ignored as impossible ("seat N (endpoint): validator v: why").
        ignored: Vec<String>,
    },
    Aborted(Abort),
}

/// The current epoch of `network` by this appliance's clock (`keystake_core::clock`).
pub fn wall_clock_epoch(network: &Network) -> Result<u64, DkgAdapterError> {
    let clock = network.clock().ok_or_else(|| {
        DkgAdapterError::Transport(format!(
            "no genesis time known for network '{}': the slashing reports cannot be bounded",
            network.name
        ))
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| DkgAdapterError::Transport(e.to_string()))?
        .as_secs();
    Ok(clock.current_epoch(now).0)
}

/// The seat of this appliance (by identity key), checked against its enrolment key.
fn own_seat(
    definition: &ReshareDefinition,
    parts: &Parts<'_>,
    enrolment: &keystake_core::manifest::EnrolmentPublicKey,
) -> Result<(ParticipantIndex, keystake_core::dkg::Seat), DkgAdapterError> {
    let identity = parts.signer.identity();
    let seats = definition.seats();
    let position = seats
        .iter()
        .position(|s| s.participant.identity_public_key == identity)
        .ok_or_else(|| DkgAdapterError::NotAParticipant(format!("identity key {identity}")))?;
    let seat = seats[position].clone();
    if seat.participant.enrolment_public_key != *enrolment {
        return Err(DkgAdapterError::NotAParticipant(format!(
            "seat {} lists enrolment key {}, this appliance has {}",
            position + 1,
            seat.participant.enrolment_public_key.fingerprint(),
            enrolment.fingerprint()
        )));
    }
    let me = ParticipantIndex::new(position as u32 + 1)
        .map_err(|e| DkgAdapterError::NotAParticipant(e.to_string()))?;
    Ok((me, seat))
}

/// A dealer's old shares (unsealed) and its slashing maxima, per validator of the lock.
fn old_holding(
    parts: &Parts<'_>,
    definition: &ReshareDefinition,
    old_index: ParticipantIndex,
) -> Result<OldHolding, DkgAdapterError> {
    let records = parts.store.shares()?;
    let mut shares = Vec::new();
    let mut maxima = Vec::new();
    for (v, validator) in definition.previous.validators.iter().enumerate() {
        let key = validator.public_shares[old_index.get() as usize - 1];
        let record = records
            .iter()
            .find(|r| r.public_key == key && r.enabled)
            .ok_or_else(|| {
                DkgAdapterError::Transport(format!(
                    "validator {v}: this appliance holds no enabled share {key} to deal"
                ))
            })?;
        let secret = parts.sealer.unseal(
            &SealedShare(record.sealed.clone()),
            &seal_context(record.public_key, record.threshold.as_ref()),
        )?;
        let secret = SecretKey::from_zeroizing(secret)
            .map_err(|_| DkgAdapterError::Transport(format!("validator {v}: bad share")))?;
        shares.push(SecretShare::new(old_index, secret));
        let mut report = SlashingMaxima::default();
        if let Some(history) = parts.store.history(&key)? {
            report.block_slot = history
                .blocks
                .iter()
                .map(|b| b.slot.0)
                .chain(history.watermark.block_slot.map(|s| s.0))
                .max();
            report.source_epoch = history
                .attestations
                .iter()
                .map(|a| a.source.0)
                .chain(history.watermark.attestation_source.map(|e| e.0))
                .max();
            report.target_epoch = history
                .attestations
                .iter()
                .map(|a| a.target.0)
                .chain(history.watermark.attestation_target.map(|e| e.0))
                .max();
        }
        maxima.push(report);
    }
    Ok(OldHolding { shares, maxima })
}

/// The seed of this reshare: unsealed after a restart, else drawn, sealed and stored first.
fn seed_for(
    parts: &Parts<'_>,
    definition: &ReshareDefinition,
    me: ParticipantIndex,
) -> Result<Zeroizing<[u8; 32]>, DkgAdapterError> {
    let id = definition.reshare_id();
    let context = seed_context(&id);
    if parts.dkg.ceremony(&id)?.is_none() {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut_slice());
        let sealed = parts.sealer.seal(&seed, &context)?;
        parts
            .dkg
            .insert_ceremony_with_id(&id, &definition.seats_as_definition(), me, &sealed.0)?;
    }
    let row = parts
        .dkg
        .ceremony(&id)?
        .ok_or_else(|| DkgAdapterError::Transport("reshare row vanished".into()))?;
    match row.state {
        CeremonyState::Running => {}
        CeremonyState::Done => return Err(DkgAdapterError::AlreadyEnded(id.to_string(), "done")),
        CeremonyState::Aborted => {
            return Err(DkgAdapterError::AlreadyEnded(id.to_string(), "aborted"))
        }
    }
    if row.me != me {
        return Err(DkgAdapterError::NotAParticipant(format!(
            "the stored reshare runs as seat {}, not {me}",
            row.me
        )));
    }
    Ok(parts
        .sealer
        .unseal(&SealedShare(row.sealed_seed), &context)?)
}

/// A reshare state machine rebuilt from the seed and every message persisted for it (a
/// restart, or after [`Outgoing`] replaced an own message), as `run::resume` for a DKG.
fn resume(
    definition: &ReshareDefinition,
    parts: &Parts<'_>,
    old: Option<OldHolding>,
    seed: &Zeroizing<[u8; 32]>,
    epoch: u64,
) -> Result<(Reshare, BTreeSet<(Phase, ParticipantIndex)>), DkgAdapterError> {
    let mut reshare = Reshare::new(
        definition.clone(),
        &parts.signer.identity(),
        seed.clone(),
        old,
        epoch,
    )?;
    let mut persisted: BTreeSet<(Phase, ParticipantIndex)> = BTreeSet::new();
    for message in parts.dkg.messages(&definition.reshare_id())? {
        persisted.insert((message.phase, message.sender));
        let _ = reshare.receive(message);
    }
    Ok((reshare, persisted))
}

/// Run (or resume) the reshare of `definition` to its end; own messages pass through
/// `outgoing` (given the seats as a definition) before they are persisted.
pub async fn run_reshare<T: Transport>(
    definition: ReshareDefinition,
    parts: Parts<'_>,
    enrolment: &keystake_core::manifest::EnrolmentPublicKey,
    transport: &T,
    options: RunOptions,
    outgoing: &dyn Outgoing,
) -> Result<ReshareOutcome, DkgAdapterError> {
    definition.validate()?;
    let network = definition
        .previous
        .definition
        .network_config()
        .ok_or_else(|| DkgAdapterError::Transport("unknown network".into()))?;
    let epoch = wall_clock_epoch(&network)?;
    let (me, seat) = own_seat(&definition, &parts, enrolment)?;
    let id = definition.reshare_id();
    let seats = definition.seats_as_definition();
    // A dealer missing one of its old shares is refused before anything is stored.
    let holding = || -> Result<Option<OldHolding>, DkgAdapterError> {
        match (seat.deals, seat.old_index) {
            (true, Some(old_index)) => Ok(Some(tokio::task::block_in_place(|| {
                old_holding(&parts, &definition, old_index)
            })?)),
            _ => Ok(None),
        }
    };
    let old = holding()?;
    let seed = seed_for(&parts, &definition, me)?;
    let (mut reshare, mut persisted) = resume(&definition, &parts, old, &seed, epoch)?;
    let mut pending_sealed = false;
    let mut pace = Pace::new(&options, reshare.phase());
    loop {
        let step = tokio::task::block_in_place(|| reshare.poll(parts.signer, parts.decryptor));
        let step = match step {
            Ok(step) => step,
            Err(error) => {
                // A refused definition or a group key that does not recompute: nothing is kept.
                parts.dkg.finish_ceremony(&id, CeremonyState::Aborted)?;
                return Err(error.into());
            }
        };
        // New shares are sealed the moment they are computed (pending, not signable), before
        // the finish message that proves them is published — as in a DKG (run.rs).
        if let Some(shares) = reshare.pending_shares() {
            if !pending_sealed {
                tokio::task::block_in_place(|| seal_pending(&parts, id, shares))?;
                pending_sealed = true;
            }
        }
        let replaced = super::run::persist_messages(
            reshare.messages(),
            &mut persisted,
            me,
            &seats,
            outgoing,
            &parts,
        )?;
        if replaced {
            (reshare, persisted) = resume(&definition, &parts, holding()?, &seed, epoch)?;
            continue;
        }
        match step {
            ReshareStep::Finished(success) => {
                let outcome = tokio::task::block_in_place(|| {
                    hand_over(&parts, &definition, &seat, &network, *success)
                })?;
                parts.dkg.finish_ceremony(&id, CeremonyState::Done)?;
                return Ok(outcome);
            }
            ReshareStep::Aborted(abort) => {
                parts.dkg.finish_ceremony(&id, CeremonyState::Aborted)?;
                return Ok(ReshareOutcome::Aborted(abort));
            }
            ReshareStep::Waiting {
                phase: now,
                missing,
            } => {
                let Some(attempt) = pace.next_attempt(now) else {
                    let abort = reshare.timeout();
                    parts.dkg.finish_ceremony(&id, CeremonyState::Aborted)?;
                    return Ok(ReshareOutcome::Aborted(abort));
                };
                let fetched =
                    fetch_missing(transport, &seats, me, id, now, &missing, attempt).await;
                let mut progress = false;
                for message in fetched {
                    if reshare.message(message.phase, message.sender).is_none() {
                        progress = true;
                    }
                    if let Err(error) = reshare.receive(message) {
                        tracing::warn!(%error, "reshare message refused");
                    }
                }
                pace.settle(progress).await;
            }
        }
    }
}

/// The new lock verified: slashing history and floors for the new share keys first, then the
/// new shares, then the old shares retired.
fn hand_over(
    parts: &Parts<'_>,
    definition: &ReshareDefinition,
    seat: &keystake_core::dkg::Seat,
    network: &Network,
    success: ReshareSuccess,
) -> Result<ReshareOutcome, DkgAdapterError> {
    let lock = &success.lock;
    let previous = &definition.previous;
    let root = match parts.store.genesis_validators_root()? {
        Some(root) => root,
        None => network.genesis_validators_root.ok_or_else(|| {
            DkgAdapterError::Transport("no genesis validators root to bind the history to".into())
        })?,
    };
    let mut keys = Vec::with_capacity(success.shares.len());
    let mut interchange = Interchange::new(root);
    for share in &success.shares {
        let v = share.validator as usize;
        let new_key = share.share.public_key();
        let floor = success.slashing_floors[v];
        let mut record = InterchangeRecord {
            pubkey: new_key,
            signed_blocks: floor
                .block_slot
                .map(|slot| InterchangeBlock {
                    slot: Slot(slot),
                    signing_root: None,
                })
                .into_iter()
                .collect(),
            signed_attestations: match (floor.source_epoch, floor.target_epoch) {
                (Some(source), Some(target)) => vec![InterchangeAttestation {
                    source_epoch: Epoch(source),
                    target_epoch: Epoch(target),
                    signing_root: None,
                }],
                _ => Vec::new(),
            },
        };
        if let Some(old_index) = seat.old_index {
            // Keeping the validator: its own complete history follows the new share key.
            let old_key = previous.validators[v].public_shares[old_index.get() as usize - 1];
            if parts.store.history(&old_key)?.is_some() {
                let old = parts.store.export_interchange(Some(&[old_key]))?;
                for entry in old.data {
                    record.signed_blocks.extend(entry.signed_blocks);
                    record.signed_attestations.extend(entry.signed_attestations);
                }
            }
        }
        if !record.signed_blocks.is_empty() || !record.signed_attestations.is_empty() {
            interchange.data.push(record);
        }
        keys.push((share, new_key));
    }
    // The new keys' history, the removal of the old shares and the new shares land in ONE
    // transaction (`Store::supersede_shares`): the store holds at most one share of a validator,
    // and the old shares are removed — a share of a polynomial the group handed over must not
    // sign again (drand #1190); their slashing history stays under their keys and is copied to
    // the new keys. A crash before the commit leaves the old shares signing as before.
    let pending = parts.dkg.pending_shares(&definition.reshare_id())?;
    let mut records = Vec::with_capacity(keys.len());
    for (share, _) in &keys {
        let validator = &lock.validators[share.validator as usize];
        let info = ThresholdInfo {
            index: share.share.index(),
            threshold: lock.definition.threshold,
            participants: lock.definition.n(),
            group_public_key: validator.group_public_key,
            share_public_keys: validator.public_shares.clone(),
        };
        records.push(pending_record(parts, &pending, share, info)?);
    }
    let old_keys: Vec<BlsPublicKey> = match seat.old_index {
        Some(old_index) => previous
            .validators
            .iter()
            .map(|v| v.public_shares[old_index.get() as usize - 1])
            .collect(),
        None => Vec::new(),
    };
    let history = (!interchange.data.is_empty()).then_some(&interchange);
    let (removed, _) = parts.store.supersede_shares(&old_keys, &records, history)?;
    let sealed: Vec<BlsPublicKey> = records.iter().map(|r| r.public_key).collect();
    let retired = if removed > 0 { old_keys } else { Vec::new() };
    let ignored = success
        .ignored_reports
        .iter()
        .map(|r| {
            format!(
                "seat {} ({}): validator {}: {}",
                r.seat, r.endpoint, r.validator, r.reason
            )
        })
        .collect();
    Ok(ReshareOutcome::Success {
        lock: Box::new(success.lock.clone()),
        role: success.role,
        shares: sealed,
        retired,
        ignored,
    })
}
