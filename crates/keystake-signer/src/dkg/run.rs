//! One ceremony from this appliance's side (module doc of `dkg`).
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use super::identity::seed_context;
use super::DkgAdapterError;
use crate::hsm::{SealedShare, Sealer};
use crate::net::grpc::dkg::{peer_client, DkgClient};
use crate::net::grpc::pb;
use crate::store::dkg::{CeremonyState, DkgStore, PendingShare};
use crate::store::{ShareOrigin, ShareRecord, Store, ThresholdInfo};
use keystake_core::dkg::{
    Abort, BroadcastSigner, Ceremony, CeremonyId, Definition, Lock, ParticipantIndex, Phase,
    ShareDecryptor, SignedMessage, Step,
};
use keystake_core::types::BlsPublicKey;

/// How the messages of peers are obtained.
pub trait Transport: Send + Sync {
    /// The message of `sender` for `phase` as participant `from` holds it (`None`: not yet).
    fn fetch(
        &self,
        from: ParticipantIndex,
        ceremony: CeremonyId,
        phase: Phase,
        sender: ParticipantIndex,
    ) -> impl Future<Output = Result<Option<SignedMessage>, String>> + Send;
}

/// gRPC `keystake.v1.Dkg/Fetch` to each peer over TLS pinned to its certificate.
pub struct GrpcTransport {
    /// `clients[i-1]` reaches participant `i` (`None` for this appliance).
    clients: Vec<Option<DkgClient<tonic::transport::Channel>>>,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport").finish_non_exhaustive()
    }
}

impl GrpcTransport {
    /// Channels to every other participant, presenting `chain` with `key` (this appliance's
    /// pinned certificate and its key, in the HSM by default).
    pub fn new(
        definition: &Definition,
        me: ParticipantIndex,
        chain: Vec<rustls_pki_types::CertificateDer<'static>>,
        key: &crate::net::tls::ServerKey,
    ) -> Result<Self, DkgAdapterError> {
        let mut clients = Vec::with_capacity(definition.participants.len());
        for index in definition.indices() {
            if index == me {
                clients.push(None);
                continue;
            }
            let participant = definition
                .participant(index)
                .ok_or_else(|| DkgAdapterError::Transport("participant".into()))?;
            let tls = crate::net::pinned::peer_client_config(
                chain.clone(),
                key,
                &participant.tls_certificate,
            )
            .map_err(DkgAdapterError::Transport)?;
            clients.push(Some(
                peer_client(&participant.endpoint, tls).map_err(DkgAdapterError::Transport)?,
            ));
        }
        Ok(Self { clients })
    }
}

impl Transport for GrpcTransport {
    async fn fetch(
        &self,
        from: ParticipantIndex,
        ceremony: CeremonyId,
        phase: Phase,
        sender: ParticipantIndex,
    ) -> Result<Option<SignedMessage>, String> {
        let Some(Some(client)) = self.clients.get(from.get() as usize - 1) else {
            return Ok(None);
        };
        let response = client
            .clone()
            .fetch(pb::FetchRequest {
                ceremony_id: ceremony.0.to_vec(),
                phase: phase.number(),
                sender: sender.get(),
            })
            .await
            .map_err(|status| format!("{}: {}", status.code(), status.message()))?
            .into_inner();
        if !response.found {
            return Ok(None);
        }
        serde_json::from_str(&response.message_json)
            .map(Some)
            .map_err(|e| format!("undecodable message: {e}"))
    }
}

/// What this appliance publishes of its own messages. Production runs use [`Honest`] (every
/// message as the state machine made it); the fault tests (tests/dkg_faults.rs) build a cheating
/// participant from this library with a tampering implementation, so no cheating code is in the
/// shipped binary's paths: the runner only *offers* the hook.
pub trait Outgoing: Send + Sync {
    /// The message to publish instead of `own` (this appliance's own message, not yet
    /// persisted), signed with `signer`; `None` publishes `own` unchanged.
    fn replace(
        &self,
        definition: &Definition,
        own: &SignedMessage,
        signer: &dyn BroadcastSigner,
    ) -> Option<SignedMessage>;
}

/// Publish every own message as made (the identity hook; what `dkg run` uses).
#[derive(Debug, Clone, Copy, Default)]
pub struct Honest;

impl Outgoing for Honest {
    fn replace(
        &self,
        _: &Definition,
        _: &SignedMessage,
        _: &dyn BroadcastSigner,
    ) -> Option<SignedMessage> {
        None
    }
}

/// Timing of a run.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// How long one phase may wait for a participant (after which it is blamed for silence).
    pub phase_timeout: Duration,
    /// Longest pause between two rounds of fetches.
    pub max_backoff: Duration,
}

impl RunOptions {
    /// The defaults with another phase timeout (`--timeout-secs`).
    pub fn with_phase_timeout(phase_timeout: Duration) -> Self {
        RunOptions {
            phase_timeout,
            ..RunOptions::default()
        }
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            phase_timeout: Duration::from_secs(120),
            max_backoff: Duration::from_millis(500),
        }
    }
}

/// The polling pace of a waiting ceremony, DKG and reshare alike: each phase gets
/// `phase_timeout` from the moment it is first waited on (then the silent are blamed), fetch
/// attempts are counted per phase (`fetch_missing` rotates relays with them), and while nothing
/// new arrives the pause doubles from 10 ms up to `max_backoff`.
pub(super) struct Pace {
    phase: Phase,
    deadline: Instant,
    attempts: u32,
    backoff: Duration,
    phase_timeout: Duration,
    max_backoff: Duration,
}

impl Pace {
    const FIRST_BACKOFF: Duration = Duration::from_millis(10);

    pub(super) fn new(options: &RunOptions, phase: Phase) -> Self {
        Pace {
            phase,
            deadline: Instant::now() + options.phase_timeout,
            attempts: 0,
            backoff: Self::FIRST_BACKOFF,
            phase_timeout: options.phase_timeout,
            max_backoff: options.max_backoff,
        }
    }

    /// Waiting in `phase`: the number of the next fetch attempt, or `None` once the phase has
    /// waited its whole timeout.
    pub(super) fn next_attempt(&mut self, phase: Phase) -> Option<u32> {
        if phase != self.phase {
            self.phase = phase;
            self.deadline = Instant::now() + self.phase_timeout;
            self.attempts = 0;
        }
        if Instant::now() >= self.deadline {
            return None;
        }
        self.attempts += 1;
        Some(self.attempts)
    }

    /// After a round of fetches: go again at once if it brought something new, else pause
    /// (never past the phase's deadline) and pause longer next time.
    pub(super) async fn settle(&mut self, progress: bool) {
        if progress {
            self.backoff = Self::FIRST_BACKOFF;
        } else {
            tokio::time::sleep(self.backoff.min(self.deadline - Instant::now())).await;
            self.backoff = (self.backoff * 2).min(self.max_backoff);
        }
    }
}

/// The appliance parts a run uses.
pub struct Parts<'a> {
    pub store: &'a Store,
    pub dkg: &'a DkgStore,
    pub sealer: &'a dyn Sealer,
    pub signer: &'a dyn BroadcastSigner,
    pub decryptor: &'a dyn ShareDecryptor,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// The verified lock and the public keys of the shares now sealed here.
    Success {
        lock: Box<Lock>,
        shares: Vec<BlsPublicKey>,
    },
    Aborted(Abort),
}

/// This appliance's index in `definition` (by its identity key), checked against its
/// enrolment key too.
pub fn own_index(
    definition: &Definition,
    signer: &dyn BroadcastSigner,
    enrolment: &keystake_core::manifest::EnrolmentPublicKey,
) -> Result<ParticipantIndex, DkgAdapterError> {
    let identity = signer.identity();
    let me = definition
        .index_of(&identity)
        .ok_or_else(|| DkgAdapterError::NotAParticipant(format!("identity key {identity}")))?;
    let listed = definition
        .participant(me)
        .map(|p| p.enrolment_public_key)
        .ok_or_else(|| DkgAdapterError::NotAParticipant("index".into()))?;
    if listed != *enrolment {
        return Err(DkgAdapterError::NotAParticipant(format!(
            "participant {me} lists enrolment key {}, this appliance has {}",
            listed.fingerprint(),
            enrolment.fingerprint()
        )));
    }
    Ok(me)
}

/// The seed of this ceremony: unsealed from the database after a restart, else drawn, sealed
/// and stored before anything is derived from it.
fn seed_for(
    parts: &Parts<'_>,
    definition: &Definition,
    me: ParticipantIndex,
) -> Result<Zeroizing<[u8; 32]>, DkgAdapterError> {
    let id = definition.ceremony_id();
    let context = seed_context(&id);
    if parts.dkg.ceremony(&id)?.is_none() {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, seed.as_mut_slice());
        let sealed = parts.sealer.seal(&seed, &context)?;
        parts.dkg.insert_ceremony(definition, me, &sealed.0)?;
    }
    let row = parts
        .dkg
        .ceremony(&id)?
        .ok_or_else(|| DkgAdapterError::Transport("ceremony row vanished".into()))?;
    match row.state {
        CeremonyState::Running => {}
        CeremonyState::Done => return Err(DkgAdapterError::AlreadyEnded(id.to_string(), "done")),
        CeremonyState::Aborted => {
            return Err(DkgAdapterError::AlreadyEnded(id.to_string(), "aborted"))
        }
    }
    if row.me != me {
        return Err(DkgAdapterError::NotAParticipant(format!(
            "the stored ceremony runs as participant {}, not {me}",
            row.me
        )));
    }
    Ok(parts
        .sealer
        .unseal(&SealedShare(row.sealed_seed), &context)?)
}

/// Persist every message of the state machine not stored yet — own messages durable before a
/// peer can fetch them — passing this appliance's own through `outgoing`. True when `outgoing`
/// replaced one: it is stored instead and the caller rebuilds its state from the store, since
/// later own messages were derived from the replaced one (DKG and reshare alike).
pub(super) fn persist_messages<'m>(
    messages: impl Iterator<Item = &'m SignedMessage>,
    persisted: &mut BTreeSet<(Phase, ParticipantIndex)>,
    me: ParticipantIndex,
    definition: &Definition,
    outgoing: &dyn Outgoing,
    parts: &Parts<'_>,
) -> Result<bool, DkgAdapterError> {
    for message in messages {
        if persisted.contains(&(message.phase, message.sender)) {
            continue;
        }
        if message.sender == me {
            if let Some(other) = outgoing.replace(definition, message, parts.signer) {
                parts.dkg.insert_message(&other)?;
                return Ok(true);
            }
        }
        persisted.insert((message.phase, message.sender));
        parts.dkg.insert_message(message)?;
    }
    Ok(false)
}

/// A ceremony state machine rebuilt from the seed and every message persisted for it (a
/// restart, or after [`Outgoing`] replaced an own message: the machine must hold what was
/// published, and re-derives the rest identically from the seed).
fn resume(
    definition: &Definition,
    me: ParticipantIndex,
    seed: &Zeroizing<[u8; 32]>,
    dkg: &DkgStore,
) -> Result<(Ceremony, BTreeSet<(Phase, ParticipantIndex)>), DkgAdapterError> {
    let id = definition.ceremony_id();
    let mut ceremony = Ceremony::new(definition.clone(), me, seed.clone())?;
    let mut persisted: BTreeSet<(Phase, ParticipantIndex)> = BTreeSet::new();
    for message in dkg.messages(&id)? {
        persisted.insert((message.phase, message.sender));
        // Refused ones (none should be: they were checked before being stored) are skipped.
        let _ = ceremony.receive(message);
    }
    Ok((ceremony, persisted))
}

/// Run (or resume) the ceremony of `definition` to its end; own messages pass through
/// `outgoing` before they are persisted (and so published).
pub async fn run_ceremony<T: Transport>(
    definition: Definition,
    parts: Parts<'_>,
    enrolment: &keystake_core::manifest::EnrolmentPublicKey,
    transport: &T,
    options: RunOptions,
    outgoing: &dyn Outgoing,
) -> Result<RunOutcome, DkgAdapterError> {
    definition.validate()?;
    let me = own_index(&definition, parts.signer, enrolment)?;
    let id = definition.ceremony_id();
    let seed = seed_for(&parts, &definition, me)?;
    let (mut ceremony, mut persisted) = resume(&definition, me, &seed, parts.dkg)?;
    let mut pending_sealed = false;
    let mut pace = Pace::new(&options, ceremony.phase());
    loop {
        let step = tokio::task::block_in_place(|| ceremony.poll(parts.signer, parts.decryptor))?;
        // The new shares are sealed the moment the state machine has computed them, before
        // the finish message that proves them leaves (plaintext only in its zeroizing memory).
        if let Some(shares) = ceremony.pending_shares() {
            if !pending_sealed {
                tokio::task::block_in_place(|| seal_pending(&parts, id, shares))?;
                pending_sealed = true;
            }
        }
        // Own (and relayed) messages are durable before a peer can fetch them.
        let replaced = persist_messages(
            ceremony.messages(),
            &mut persisted,
            me,
            &definition,
            outgoing,
            &parts,
        )?;
        if replaced {
            (ceremony, persisted) = resume(&definition, me, &seed, parts.dkg)?;
            continue;
        }
        match step {
            Step::Finished(success) => {
                let shares = tokio::task::block_in_place(|| seal_shares(&parts, &success))?;
                parts.dkg.finish_ceremony(&id, CeremonyState::Done)?;
                return Ok(RunOutcome::Success {
                    lock: Box::new(success.lock),
                    shares,
                });
            }
            Step::Aborted(abort) => {
                parts.dkg.finish_ceremony(&id, CeremonyState::Aborted)?;
                return Ok(RunOutcome::Aborted(abort));
            }
            Step::Waiting {
                phase: now,
                missing,
            } => {
                let Some(attempt) = pace.next_attempt(now) else {
                    let abort = ceremony.timeout();
                    parts.dkg.finish_ceremony(&id, CeremonyState::Aborted)?;
                    return Ok(RunOutcome::Aborted(abort));
                };
                let fetched =
                    fetch_missing(transport, &definition, me, id, now, &missing, attempt).await;
                let mut progress = false;
                for message in fetched {
                    if ceremony.message(message.phase, message.sender).is_none() {
                        progress = true;
                    }
                    if let Err(error) = ceremony.receive(message) {
                        tracing::warn!(%error, "DKG message refused");
                    }
                }
                pace.settle(progress).await;
            }
        }
    }
}

/// Ask each missing sender for its message; from the third attempt on, also ask one other
/// participant (rotating), which may relay it.
pub(crate) async fn fetch_missing<T: Transport>(
    transport: &T,
    definition: &Definition,
    me: ParticipantIndex,
    id: CeremonyId,
    phase: Phase,
    missing: &[ParticipantIndex],
    attempts: u32,
) -> Vec<SignedMessage> {
    let n = definition.n();
    let requests = missing.iter().flat_map(|sender| {
        let mut sources = vec![*sender];
        if attempts > 2 && n > 2 {
            let offset = attempts % (n - 1);
            let relay = (sender.get() + offset) % n + 1;
            if let Ok(relay) = ParticipantIndex::new(relay) {
                if relay != me && relay != *sender {
                    sources.push(relay);
                }
            }
        }
        sources.into_iter().map(move |from| (from, *sender))
    });
    let futures = requests.map(|(from, sender)| async move {
        match transport.fetch(from, id, phase, sender).await {
            Ok(found) => found,
            Err(error) => {
                tracing::debug!(%from, %sender, phase = phase.name(), %error, "DKG fetch failed; retrying");
                None
            }
        }
    });
    futures_util::future::join_all(futures)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Seal this appliance's new shares into the ceremony's state (`dkg_pending_shares`), not
/// signable yet, under the seal context they keep in the share store (a restart that computes
/// them again keeps the first seal).
pub(crate) fn seal_pending(
    parts: &Parts<'_>,
    id: CeremonyId,
    shares: &[keystake_core::dkg::ValidatorShare],
) -> Result<(), DkgAdapterError> {
    if parts.dkg.pending_shares(&id)?.len() == shares.len() {
        return Ok(());
    }
    let mut pending = Vec::with_capacity(shares.len());
    for share in shares {
        let public_key = share.share.public_key();
        let context = crate::hsm::SealContext {
            share_public_key: public_key,
            share_index: Some(share.share.index()),
            group_public_key: Some(share.group_public_key),
        };
        let sealed = parts
            .sealer
            .seal(&share.share.secret_key().to_bytes(), &context)?;
        pending.push(PendingShare {
            validator: share.validator,
            public_key,
            group_public_key: share.group_public_key,
            sealed: sealed.0,
        });
    }
    parts.dkg.insert_pending_shares(&id, &pending)?;
    Ok(())
}

/// The lock verified: the pending sealed shares become signable — moved into the share store
/// (origin `dkg`, with their threshold metadata) in one transaction. Each must be the share the
/// state machine finished with; its seal is opened once to prove it.
fn seal_shares(
    parts: &Parts<'_>,
    success: &keystake_core::dkg::Success,
) -> Result<Vec<BlsPublicKey>, DkgAdapterError> {
    let lock = &success.lock;
    let pending = parts.dkg.pending_shares(&lock.ceremony_id)?;
    let mut records = Vec::with_capacity(success.shares.len());
    for share in &success.shares {
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
    parts.store.insert_shares(&records)?;
    Ok(records.iter().map(|r| r.public_key).collect())
}

/// The share-store record of `share` from its pending seal (opened once and compared with the
/// share the state machine finished with; never sealed again).
pub(crate) fn pending_record(
    parts: &Parts<'_>,
    pending: &[PendingShare],
    share: &keystake_core::dkg::ValidatorShare,
    info: ThresholdInfo,
) -> Result<ShareRecord, DkgAdapterError> {
    let public_key = share.share.public_key();
    let sealed = pending
        .iter()
        .find(|p| p.validator == share.validator && p.public_key == public_key)
        .ok_or_else(|| {
            DkgAdapterError::Transport(format!(
                "validator {}: the share was not sealed when computed",
                share.validator
            ))
        })?;
    let reopened = parts.sealer.unseal(
        &SealedShare(sealed.sealed.clone()),
        &crate::service::seal_context(public_key, Some(&info)),
    )?;
    if reopened.as_slice() != share.share.secret_key().to_bytes().as_slice() {
        return Err(DkgAdapterError::Transport(format!(
            "validator {}: the pending seal does not open to the share",
            share.validator
        )));
    }
    Ok(ShareRecord {
        public_key,
        sealed: sealed.sealed.clone(),
        origin: ShareOrigin::Dkg,
        threshold: Some(info),
        enabled: true,
    })
}

/// An in-memory transport between adapters of one process (tests): peers' databases read
/// directly.
pub struct LocalTransport {
    pub stores: Vec<Arc<DkgStore>>,
}

impl Transport for LocalTransport {
    async fn fetch(
        &self,
        from: ParticipantIndex,
        ceremony: CeremonyId,
        phase: Phase,
        sender: ParticipantIndex,
    ) -> Result<Option<SignedMessage>, String> {
        let store = self
            .stores
            .get(from.get() as usize - 1)
            .ok_or("no such participant")?;
        match store
            .message(&ceremony, phase, sender)
            .map_err(|e| e.to_string())?
        {
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    }
}
