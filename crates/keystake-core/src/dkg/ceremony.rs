//! The round state machine of one participant (module doc of `dkg`).
//!
//! Driving it: feed every message that arrives to [`Ceremony::receive`] (own messages restored
//! from disk too), call [`Ceremony::poll`] to create this participant's next message and advance
//! as far as the messages allow, serve [`Ceremony::message`] to peers, and call
//! [`Ceremony::timeout`] when a phase's deadline passes. The machine keeps no clock and does no
//! I/O; its only secret is the 32-byte seed (the adapter keeps it sealed) and, between the
//! complaint and finish phases, the decrypted share sums in zeroizing memory.
//!
//! Refuses ([`DkgError::Message`], nothing recorded): a message for another ceremony, from a
//! sender outside the definition, or whose identity signature does not verify. A second,
//! different signed message from one sender for one phase ends the ceremony with equivocation
//! evidence.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bls::{Scalar, SecretKey};
use crate::threshold::{self, FeldmanCommitments, SecretShare};
use crate::types::{fixed_bytes, BlsPublicKey, BlsSignature, Root, ShareIndex};

use super::crypto::{BroadcastSigner, IdentitySignature, ShareDecryptor};
use super::deal::{self, Dealing};
use super::definition::{CeremonyId, Definition};
use super::encoding::{sha256, Canonical};
use super::evidence::{Abort, Fault};
use super::lock::{
    self, Lock, LockDeposit, LockEntry, LockHash, LockValidator, ParticipantSignature,
};
use super::{verify, DkgError, ParticipantIndex};

fixed_bytes!(
    /// SHA-256 of a message body.
    BodyHash,
    32
);

/// The phases, in order. Each `*Echo` phase is the consistent-broadcast check of the phase
/// before it; `Reveals` and `RevealsEcho` happen only when a complaint was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Deal,
    DealEcho,
    Complaints,
    ComplaintsEcho,
    Reveals,
    RevealsEcho,
    Finish,
}

/// Every phase in order.
pub const PHASES: [Phase; 7] = [
    Phase::Deal,
    Phase::DealEcho,
    Phase::Complaints,
    Phase::ComplaintsEcho,
    Phase::Reveals,
    Phase::RevealsEcho,
    Phase::Finish,
];

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Deal => "deal",
            Phase::DealEcho => "deal_echo",
            Phase::Complaints => "complaints",
            Phase::ComplaintsEcho => "complaints_echo",
            Phase::Reveals => "reveals",
            Phase::RevealsEcho => "reveals_echo",
            Phase::Finish => "finish",
        }
    }

    pub fn number(self) -> u32 {
        self as u32
    }

    pub fn from_number(number: u32) -> Option<Phase> {
        PHASES.get(number as usize).copied()
    }

    fn is_echo(self) -> bool {
        matches!(
            self,
            Phase::DealEcho | Phase::ComplaintsEcho | Phase::RevealsEcho
        )
    }
}

/// A broadcast: `body` (JSON of [`Body`]) signed by `sender`'s identity key over
/// [`message_digest`]. The bytes, not their meaning, are what is signed and compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedMessage {
    pub ceremony_id: CeremonyId,
    pub phase: Phase,
    pub sender: ParticipantIndex,
    #[serde(with = "crate::manifest::hex_bytes")]
    pub body: Vec<u8>,
    pub signature: IdentitySignature,
}

/// `SHA-256` of the canonical (ceremony id, phase, sender, SHA-256(body)): what identity keys sign.
pub fn message_digest(
    ceremony: &CeremonyId,
    phase: Phase,
    sender: ParticipantIndex,
    body_hash: &[u8; 32],
) -> [u8; 32] {
    Canonical::new("keystake-dkg-message-v1")
        .bytes(&ceremony.0)
        .u32(phase.number())
        .u32(sender.get())
        .bytes(body_hash)
        .finish()
}

impl SignedMessage {
    pub fn body_hash(&self) -> BodyHash {
        BodyHash(sha256(&self.body))
    }

    pub fn digest(&self) -> [u8; 32] {
        message_digest(
            &self.ceremony_id,
            self.phase,
            self.sender,
            &self.body_hash().0,
        )
    }

    /// Whether the sender's identity key (from `definition`) signed it.
    pub fn verify(&self, definition: &Definition) -> bool {
        definition.participant(self.sender).is_some_and(|p| {
            p.identity_public_key
                .verify(&self.digest(), &self.signature)
        })
    }
}

/// One line of an echo: what the echoer received from `sender`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoEntry {
    pub sender: ParticipantIndex,
    pub body_hash: BodyHash,
    pub signature: IdentitySignature,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComplaintReason {
    /// The ciphertext does not open with the recipient's enrolment key.
    Undecryptable,
    /// It opens, but the share is not on the dealer's commitments.
    FeldmanMismatch,
}

/// "the share `dealer` dealt me for `validator` is bad".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Complaint {
    pub dealer: ParticipantIndex,
    pub validator: u32,
    pub reason: ComplaintReason,
}

/// A dealer's answer to a complaint: the ephemeral secret of that one share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reveal {
    pub recipient: ParticipantIndex,
    pub validator: u32,
    #[serde(with = "crate::manifest::hex_bytes")]
    pub ephemeral_secret: Vec<u8>,
}

/// A participant's final message: partial signatures with its new shares and its identity
/// signature of the lock hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    pub lock_hash: LockHash,
    pub deposit_signatures: Vec<BlsSignature>,
    pub lock_signatures: Vec<BlsSignature>,
    pub identity_signature: IdentitySignature,
}

/// The body of a message; the phase decides which variant is expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Body {
    Deal(Dealing),
    Echo { entries: Vec<EchoEntry> },
    Complaints { complaints: Vec<Complaint> },
    Reveals { reveals: Vec<Reveal> },
    Finish(FinishBody),
}

/// One new share, ready to be sealed.
#[derive(Debug)]
pub struct ValidatorShare {
    pub validator: u32,
    pub group_public_key: BlsPublicKey,
    pub share: SecretShare,
}

/// A successful ceremony: the verified lock and this participant's shares.
#[derive(Debug)]
pub struct Success {
    pub lock: Lock,
    pub shares: Vec<ValidatorShare>,
}

/// What [`Ceremony::poll`] reached.
#[derive(Debug)]
pub enum Step {
    /// Waiting for these senders' messages of `phase`.
    Waiting {
        phase: Phase,
        missing: Vec<ParticipantIndex>,
    },
    Aborted(Abort),
    Finished(Box<Success>),
}

/// Public data of the group, computed when the finish phase starts.
struct Prepared {
    lock_hash: LockHash,
    validators: Vec<PreparedValidator>,
    shares: Vec<ValidatorShare>,
}

struct PreparedValidator {
    commitments: Vec<BlsPublicKey>,
    public_shares: Vec<BlsPublicKey>,
    deposit_message: crate::consensus::phase0::DepositMessage,
    deposit_message_root: Root,
    deposit_signing_root: Root,
}

/// One participant's view of a ceremony.
pub struct Ceremony {
    definition: Definition,
    id: CeremonyId,
    me: ParticipantIndex,
    seed: Zeroizing<[u8; 32]>,
    /// Resharing: the constant term this dealer deals per validator (its old share).
    constants: Option<Vec<Scalar>>,
    messages: BTreeMap<(Phase, ParticipantIndex), SignedMessage>,
    phase: Phase,
    /// Dealers' commitments `[dealer-1][validator]`, once the deals are agreed and checked.
    commitments: Option<Vec<Vec<FeldmanCommitments>>>,
    /// The dealings those commitments came from, parsed once (public data).
    dealings: BTreeMap<ParticipantIndex, Dealing>,
    /// `Σ_i f_i(me)` per validator, once every own share opened and checked.
    share_sums: Option<Vec<Scalar>>,
    prepared: Option<Prepared>,
    ended: Option<Result<(), Abort>>,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("id", &self.id)
            .field("me", &self.me)
            .field("phase", &self.phase)
            .finish_non_exhaustive()
    }
}

fn body_of(message: &SignedMessage) -> Result<Body, String> {
    serde_json::from_slice(&message.body).map_err(|e| format!("the body does not parse: {e}"))
}

impl Ceremony {
    /// A fresh ceremony for participant `me`, its secrets drawn from `seed` (keep it sealed: a
    /// restart must reuse it to re-send identical deals).
    pub fn new(
        definition: Definition,
        me: ParticipantIndex,
        seed: Zeroizing<[u8; 32]>,
    ) -> Result<Self, DkgError> {
        definition.validate()?;
        if definition.participant(me).is_none() {
            return Err(DkgError::NotAParticipant(me.to_string()));
        }
        let id = definition.ceremony_id();
        Ok(Self {
            definition,
            id,
            me,
            seed,
            constants: None,
            messages: BTreeMap::new(),
            phase: Phase::Deal,
            commitments: None,
            dealings: BTreeMap::new(),
            share_sums: None,
            prepared: None,
            ended: None,
        })
    }

    /// Resharing: deal `constants[v]` as the constant term of validator `v` (issue 13).
    pub fn with_constant_terms(mut self, constants: Vec<Scalar>) -> Result<Self, DkgError> {
        if constants.len() != self.definition.validators as usize {
            return Err(DkgError::Definition(
                "one constant term per validator is needed".into(),
            ));
        }
        self.constants = Some(constants);
        Ok(self)
    }

    pub fn id(&self) -> CeremonyId {
        self.id
    }

    pub fn definition(&self) -> &Definition {
        &self.definition
    }

    pub fn me(&self) -> ParticipantIndex {
        self.me
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The message of `sender` for `phase`, if held (to serve peers, own messages included).
    pub fn message(&self, phase: Phase, sender: ParticipantIndex) -> Option<&SignedMessage> {
        self.messages.get(&(phase, sender))
    }

    /// Every message held (to persist).
    pub fn messages(&self) -> impl Iterator<Item = &SignedMessage> {
        self.messages.values()
    }

    /// This participant's shares once the finish phase has started (to seal them at once).
    pub fn pending_shares(&self) -> Option<&[ValidatorShare]> {
        self.prepared.as_ref().map(|p| p.shares.as_slice())
    }

    /// Accept a message (module doc). A repeat of a held message is ignored; a different one
    /// from the same sender for the same phase ends the ceremony (equivocation).
    pub fn receive(&mut self, message: SignedMessage) -> Result<(), DkgError> {
        if message.ceremony_id != self.id {
            return Err(DkgError::Message("for another ceremony".into()));
        }
        if self.definition.participant(message.sender).is_none() {
            return Err(DkgError::Message(format!(
                "sender {} is not a participant",
                message.sender
            )));
        }
        if !message.verify(&self.definition) {
            return Err(DkgError::Message(format!(
                "the signature of {} does not verify",
                self.definition.describe(message.sender)
            )));
        }
        let key = (message.phase, message.sender);
        match self.messages.get(&key) {
            Some(held) if held.body == message.body => Ok(()),
            Some(held) => {
                if self.ended.is_none() {
                    let mut abort = Abort::new(&self.definition, self.id, message.phase);
                    abort.blame(
                        &self.definition,
                        message.sender,
                        Fault::Equivocation {
                            phase: message.phase,
                        },
                        vec![held.clone(), message],
                    );
                    self.end(abort);
                }
                Ok(())
            }
            None => {
                self.messages.insert(key, message);
                Ok(())
            }
        }
    }

    fn end(&mut self, abort: Abort) {
        // Nothing of an aborted ceremony is kept: drop the secrets now.
        self.share_sums = None;
        self.prepared = None;
        self.ended = Some(Err(abort));
    }

    /// The phase deadline passed: abort naming every participant whose message for the current
    /// phase is missing.
    pub fn timeout(&mut self) -> Abort {
        if let Some(Err(abort)) = &self.ended {
            return abort.clone();
        }
        let mut abort = Abort::new(&self.definition, self.id, self.phase);
        for sender in self.missing(self.phase) {
            abort.blame(
                &self.definition,
                sender,
                Fault::Silence { phase: self.phase },
                Vec::new(),
            );
        }
        self.end(abort.clone());
        abort
    }

    fn missing(&self, phase: Phase) -> Vec<ParticipantIndex> {
        self.definition
            .indices()
            .filter(|i| !self.messages.contains_key(&(phase, *i)))
            .collect()
    }

    fn sign_own(
        &mut self,
        phase: Phase,
        body: &Body,
        signer: &dyn BroadcastSigner,
    ) -> Result<(), DkgError> {
        if self.messages.contains_key(&(phase, self.me)) {
            return Ok(());
        }
        let bytes = serde_json::to_vec(body).map_err(|e| DkgError::Message(e.to_string()))?;
        let digest = message_digest(&self.id, phase, self.me, &sha256(&bytes));
        let signature = signer.sign_digest(&digest)?;
        self.receive(SignedMessage {
            ceremony_id: self.id,
            phase,
            sender: self.me,
            body: bytes,
            signature,
        })
    }

    /// Create this participant's message for the current phase (if not held yet) and advance
    /// while every participant's message of the phase is held.
    pub fn poll(
        &mut self,
        signer: &dyn BroadcastSigner,
        decryptor: &dyn ShareDecryptor,
    ) -> Result<Step, DkgError> {
        loop {
            match &self.ended {
                Some(Err(abort)) => return Ok(Step::Aborted(abort.clone())),
                Some(Ok(())) => return Err(DkgError::Ended),
                None => {}
            }
            if !self.messages.contains_key(&(self.phase, self.me)) {
                let body = self.own_body(signer, decryptor)?;
                if self.ended.is_some() {
                    continue;
                }
                self.sign_own(self.phase, &body, signer)?;
                continue;
            }
            if self.phase == Phase::Finish && self.prepared.is_none() {
                // Restarted after its own finish message was persisted: that message is
                // restored, but the preparation it came from (memory only) must be redone —
                // deterministically, so the shares and the lock hash are the same.
                self.prepare(decryptor)?;
            }
            let missing = self.missing(self.phase);
            if !missing.is_empty() {
                return Ok(Step::Waiting {
                    phase: self.phase,
                    missing,
                });
            }
            match self.complete_phase()? {
                Some(success) => return Ok(Step::Finished(Box::new(success))),
                None => continue,
            }
        }
    }

    fn own_body(
        &mut self,
        signer: &dyn BroadcastSigner,
        decryptor: &dyn ShareDecryptor,
    ) -> Result<Body, DkgError> {
        Ok(match self.phase {
            Phase::Deal => {
                let mut validators = Vec::with_capacity(self.definition.validators as usize);
                for v in 0..self.definition.validators {
                    let constant = self.constants.as_ref().map(|c| &c[v as usize]);
                    validators.push(
                        deal::deal_validator(
                            &self.seed,
                            &self.definition,
                            &self.id,
                            self.me,
                            v,
                            constant,
                        )
                        .map_err(DkgError::Definition)?,
                    );
                }
                Body::Deal(Dealing { validators })
            }
            phase if phase.is_echo() => {
                let echoed = PHASES[phase as usize - 1];
                let entries = self
                    .definition
                    .indices()
                    .filter_map(|sender| self.messages.get(&(echoed, sender)))
                    .map(|message| EchoEntry {
                        sender: message.sender,
                        body_hash: message.body_hash(),
                        signature: message.signature,
                    })
                    .collect();
                Body::Echo { entries }
            }
            Phase::Complaints => Body::Complaints {
                complaints: self.open_own_shares(decryptor)?,
            },
            Phase::Reveals => Body::Reveals {
                reveals: self.answer_complaints()?,
            },
            Phase::Finish => self.finish_body(signer, decryptor)?,
            _ => unreachable!("every phase is covered"),
        })
    }

    fn parsed(&self, phase: Phase) -> Vec<(ParticipantIndex, Result<Body, String>)> {
        self.definition
            .indices()
            .filter_map(|sender| {
                self.messages
                    .get(&(phase, sender))
                    .map(|m| (sender, body_of(m)))
            })
            .collect()
    }

    /// All messages of the current phase are held: check them and move on. `Some` at the end.
    fn complete_phase(&mut self) -> Result<Option<Success>, DkgError> {
        let phase = self.phase;
        let mut abort = Abort::new(&self.definition, self.id, phase);
        match phase {
            Phase::Deal | Phase::Complaints | Phase::Reveals => {
                // Checked after their echo, when everyone is known to hold the same bytes.
            }
            Phase::DealEcho | Phase::ComplaintsEcho | Phase::RevealsEcho => {
                self.check_echoes(phase, &mut abort);
                if abort.culprits.is_empty() {
                    match phase {
                        Phase::DealEcho => self.check_deals(&mut abort),
                        Phase::ComplaintsEcho => {
                            let complaints = self.check_complaints(&mut abort);
                            if abort.culprits.is_empty() && complaints.is_empty() {
                                self.phase = Phase::Finish;
                                return Ok(None);
                            }
                        }
                        _ => {
                            self.judge_complaints(&mut abort);
                            if abort.culprits.is_empty() {
                                // Complaints were made, so reveals always end the ceremony.
                                return Err(DkgError::Message(
                                    "complaints were made but none could be judged".into(),
                                ));
                            }
                        }
                    }
                }
            }
            Phase::Finish => {
                if let Some(lock) = self.assemble(&mut abort)? {
                    let prepared = self.prepared.take();
                    self.share_sums = None;
                    self.ended = Some(Ok(()));
                    return Ok(Some(Success {
                        lock,
                        shares: prepared.map(|p| p.shares).unwrap_or_default(),
                    }));
                }
            }
        }
        if !abort.culprits.is_empty() {
            self.end(abort);
            return Ok(None);
        }
        self.phase = PHASES[phase as usize + 1];
        Ok(None)
    }

    /// Every echo must list, for each sender, the very message this participant holds.
    fn check_echoes(&self, phase: Phase, abort: &mut Abort) {
        let echoed = PHASES[phase as usize - 1];
        let mut equivocators = BTreeSet::new();
        let held_hashes = verify::body_hashes(
            self.definition
                .indices()
                .filter_map(|sender| self.messages.get(&(echoed, sender))),
        );
        for (echoer, body) in self.parsed(phase) {
            let echo_message = self.messages[&(phase, echoer)].clone();
            let entries = match body {
                Ok(Body::Echo { entries }) => entries,
                Ok(_) => {
                    abort.blame(
                        &self.definition,
                        echoer,
                        Fault::MalformedMessage {
                            phase,
                            reason: "not an echo".into(),
                        },
                        vec![echo_message],
                    );
                    continue;
                }
                Err(reason) => {
                    abort.blame(
                        &self.definition,
                        echoer,
                        Fault::MalformedMessage { phase, reason },
                        vec![echo_message],
                    );
                    continue;
                }
            };
            let senders: Vec<ParticipantIndex> = entries.iter().map(|e| e.sender).collect();
            let expected: Vec<ParticipantIndex> = self.definition.indices().collect();
            if senders != expected {
                abort.blame(
                    &self.definition,
                    echoer,
                    Fault::MalformedMessage {
                        phase,
                        reason: "the echo does not list every participant once, in order".into(),
                    },
                    vec![echo_message],
                );
                continue;
            }
            for entry in entries {
                let held = &self.messages[&(echoed, entry.sender)];
                if held_hashes.get(&entry.sender) == Some(&entry.body_hash) {
                    continue;
                }
                let digest = message_digest(&self.id, echoed, entry.sender, &entry.body_hash.0);
                let signed_by_sender = self
                    .definition
                    .participant(entry.sender)
                    .is_some_and(|p| p.identity_public_key.verify(&digest, &entry.signature));
                if signed_by_sender {
                    if equivocators.insert(entry.sender) {
                        abort.blame(
                            &self.definition,
                            entry.sender,
                            Fault::Equivocation { phase: echoed },
                            vec![held.clone(), echo_message.clone()],
                        );
                    }
                } else {
                    abort.blame(
                        &self.definition,
                        echoer,
                        Fault::MalformedMessage {
                            phase,
                            reason: format!(
                                "the echo attributes to participant {} a message it did not sign",
                                entry.sender
                            ),
                        },
                        vec![echo_message.clone()],
                    );
                }
            }
        }
    }

    /// Public checks of every deal; keeps the commitments.
    fn check_deals(&mut self, abort: &mut Abort) {
        let mut all = Vec::with_capacity(self.definition.participants.len());
        let mut dealings = BTreeMap::new();
        for (dealer, body) in self.parsed(Phase::Deal) {
            let result = match body {
                Ok(Body::Deal(dealing)) => self
                    .check_dealing(dealer, &dealing)
                    .map(|commitments| (commitments, dealing)),
                Ok(_) => Err("not a deal".to_owned()),
                Err(reason) => Err(reason),
            };
            match result {
                Ok((commitments, dealing)) => {
                    all.push(commitments);
                    dealings.insert(dealer, dealing);
                }
                Err(reason) => abort.blame(
                    &self.definition,
                    dealer,
                    Fault::InvalidDeal { reason },
                    vec![self.messages[&(Phase::Deal, dealer)].clone()],
                ),
            }
        }
        if abort.culprits.is_empty() {
            self.commitments = Some(all);
            self.dealings = dealings;
        }
    }

    fn check_dealing(
        &self,
        dealer: ParticipantIndex,
        dealing: &Dealing,
    ) -> Result<Vec<FeldmanCommitments>, String> {
        if dealing.validators.len() != self.definition.validators as usize {
            return Err(format!(
                "{} validators dealt, the definition has {}",
                dealing.validators.len(),
                self.definition.validators
            ));
        }
        dealing
            .validators
            .iter()
            .enumerate()
            .map(|(v, deal)| {
                deal::check_validator_deal(&self.definition, &self.id, dealer, v as u32, deal)
            })
            .collect()
    }

    /// A dealer's dealing: parsed once when the deals are checked, kept until the end.
    fn dealing(&self, dealer: ParticipantIndex) -> Option<std::borrow::Cow<'_, Dealing>> {
        if let Some(dealing) = self.dealings.get(&dealer) {
            return Some(std::borrow::Cow::Borrowed(dealing));
        }
        match self.messages.get(&(Phase::Deal, dealer)).map(body_of) {
            Some(Ok(Body::Deal(dealing))) => Some(std::borrow::Cow::Owned(dealing)),
            _ => None,
        }
    }

    /// Open and check every share dealt to this participant; keep their sums; list complaints.
    /// All opened shares are checked in one batch (`verify::check_received_shares`).
    fn open_own_shares(
        &mut self,
        decryptor: &dyn ShareDecryptor,
    ) -> Result<Vec<Complaint>, DkgError> {
        let commitments = self
            .commitments
            .as_ref()
            .ok_or(DkgError::Message("deals not checked yet".into()))?;
        let v_count = self.definition.validators as usize;
        let mut opened = Vec::with_capacity(v_count * self.definition.participants.len());
        for dealer in self.definition.indices() {
            let dealing = self
                .dealing(dealer)
                .ok_or(DkgError::Message("deal missing".into()))?;
            for (v, deal) in dealing.validators.iter().enumerate() {
                let encrypted = &deal.shares[self.me.get() as usize - 1];
                opened.push(verify::open_share(
                    decryptor, &self.id, dealer, self.me, v, encrypted,
                )?);
            }
        }
        let mut weights = super::encoding::SeedStream::new(&self.seed, b"feldman-batch-weights");
        let (complaints, accepted) = verify::complaints_about(
            self.me,
            &opened,
            |o| &commitments[o.dealer.get() as usize - 1][o.validator],
            &mut weights,
        );
        let mut sums: Vec<Scalar> = (0..v_count).map(|_| Scalar::zero()).collect();
        for (o, accepted) in opened.iter().zip(accepted) {
            if let (true, Some(share)) = (accepted, &o.share) {
                let scalar = Scalar::from_be_bytes_canonical(share)
                    .ok_or(DkgError::Message("share encoding".into()))?;
                sums[o.validator] = sums[o.validator].add(&scalar);
            }
        }
        self.share_sums = complaints.is_empty().then_some(sums);
        Ok(complaints)
    }

    /// All complaints (after their echo), each checked for shape; malformed ones blame their
    /// sender.
    fn check_complaints(&self, abort: &mut Abort) -> Vec<(ParticipantIndex, Complaint)> {
        let mut out = Vec::new();
        for (sender, body) in self.parsed(Phase::Complaints) {
            let message = self.messages[&(Phase::Complaints, sender)].clone();
            let complaints = match body {
                Ok(Body::Complaints { complaints }) => complaints,
                other => {
                    let reason = match other {
                        Err(reason) => reason,
                        Ok(_) => "not a complaint list".to_owned(),
                    };
                    abort.blame(
                        &self.definition,
                        sender,
                        Fault::MalformedMessage {
                            phase: Phase::Complaints,
                            reason,
                        },
                        vec![message],
                    );
                    continue;
                }
            };
            let mut seen = BTreeSet::new();
            for complaint in complaints {
                if self.definition.participant(complaint.dealer).is_none()
                    || complaint.validator >= self.definition.validators
                    || !seen.insert((complaint.dealer, complaint.validator))
                {
                    abort.blame(
                        &self.definition,
                        sender,
                        Fault::MalformedMessage {
                            phase: Phase::Complaints,
                            reason: "a complaint out of range or repeated".into(),
                        },
                        vec![message.clone()],
                    );
                    break;
                }
                out.push((sender, complaint));
            }
        }
        out
    }

    fn agreed_complaints(&self) -> Vec<(ParticipantIndex, Complaint)> {
        let mut ignored = Abort::new(&self.definition, self.id, Phase::Complaints);
        self.check_complaints(&mut ignored)
    }

    /// This dealer's reveals: the ephemeral secret of every share it was complained about.
    fn answer_complaints(&self) -> Result<Vec<Reveal>, DkgError> {
        Ok(self
            .agreed_complaints()
            .into_iter()
            .filter(|(_, complaint)| complaint.dealer == self.me)
            .map(|(recipient, complaint)| {
                let (secret, _) =
                    deal::ephemeral_secret(&self.seed, &self.id, complaint.validator, recipient);
                Reveal {
                    recipient,
                    validator: complaint.validator,
                    ephemeral_secret: secret.to_vec(),
                }
            })
            .collect())
    }

    /// Decide every complaint from the agreed reveals (module doc of `dkg`).
    fn judge_complaints(&self, abort: &mut Abort) {
        let Some(commitments) = self.commitments.as_ref() else {
            return;
        };
        let mut reveals: BTreeMap<(ParticipantIndex, ParticipantIndex, u32), Vec<u8>> =
            BTreeMap::new();
        for (dealer, body) in self.parsed(Phase::Reveals) {
            match body {
                Ok(Body::Reveals { reveals: list }) => {
                    for reveal in list {
                        reveals
                            .entry((dealer, reveal.recipient, reveal.validator))
                            .or_insert(reveal.ephemeral_secret);
                    }
                }
                Ok(_) | Err(_) => abort.blame(
                    &self.definition,
                    dealer,
                    Fault::MalformedMessage {
                        phase: Phase::Reveals,
                        reason: "not a reveal list".into(),
                    },
                    vec![self.messages[&(Phase::Reveals, dealer)].clone()],
                ),
            }
        }
        for (recipient, complaint) in self.agreed_complaints() {
            let dealer = complaint.dealer;
            let v = complaint.validator;
            let deal_message = self.messages[&(Phase::Deal, dealer)].clone();
            let complaint_message = self.messages[&(Phase::Complaints, recipient)].clone();
            let mut evidence = vec![deal_message, complaint_message];
            let Some(secret) = reveals.get(&(dealer, recipient, v)) else {
                abort.blame(
                    &self.definition,
                    dealer,
                    Fault::UnansweredComplaint {
                        recipient,
                        validator: v,
                    },
                    evidence,
                );
                continue;
            };
            evidence.push(self.messages[&(Phase::Reveals, dealer)].clone());
            let Some(dealing) = self.dealing(dealer) else {
                continue;
            };
            let encrypted = &dealing.validators[v as usize].shares[recipient.get() as usize - 1];
            let Some(recipient_key) = self
                .definition
                .participant(recipient)
                .map(|p| p.enrolment_public_key)
            else {
                continue;
            };
            let dealt = verify::Dealt {
                dealer,
                index: recipient,
                validator: v,
                encrypted,
                commitments: &commitments[dealer.get() as usize - 1][v as usize],
            };
            verify::judge_revealed_share(&self.id, dealt, secret, &recipient_key).blame(
                abort,
                &self.definition,
                dealer,
                recipient,
                v,
                evidence,
            );
        }
    }

    /// Group commitments, public shares, deposits and lock hash; this participant's shares.
    fn prepare(&mut self, decryptor: &dyn ShareDecryptor) -> Result<(), DkgError> {
        if self.prepared.is_some() {
            return Ok(());
        }
        if self.share_sums.is_none() {
            // After a restart the sums are not in memory: open the shares again.
            let complaints = self.open_own_shares(decryptor)?;
            if !complaints.is_empty() {
                return Err(DkgError::Message(
                    "own shares no longer verify after a restart".into(),
                ));
            }
        }
        let commitments = self
            .commitments
            .as_ref()
            .ok_or(DkgError::Message("deals not checked".into()))?;
        let fork_version = self
            .definition
            .deposit_fork_version()
            .ok_or(DkgError::Definition("unknown network".into()))?;
        let t = self.definition.threshold.get() as usize;
        let n = self.definition.participants.len() as u32;
        let mut validators = Vec::with_capacity(self.definition.validators as usize);
        for v in 0..self.definition.validators as usize {
            let dealt: Vec<&FeldmanCommitments> = commitments.iter().map(|c| &c[v]).collect();
            let group_commitments = verify::combine_commitments(&dealt, None)?;
            let public_shares = verify::public_shares(&group_commitments, n)?;
            let group = group_commitments.as_slice().to_vec();
            let (deposit_message, deposit_message_root, deposit_signing_root) =
                lock::deposit_message(&self.definition, fork_version, group[0]);
            validators.push(PreparedValidator {
                commitments: group,
                public_shares,
                deposit_message,
                deposit_message_root,
                deposit_signing_root,
            });
        }
        let entries: Vec<LockEntry<'_>> = validators
            .iter()
            .map(|p| LockEntry {
                commitments: &p.commitments,
                public_shares: &p.public_shares,
                withdrawal_credentials: &p.deposit_message.withdrawal_credentials.0,
                amount: p.deposit_message.amount,
                deposit_message_root: &p.deposit_message_root,
            })
            .collect();
        let lock_hash = lock::compute_lock_hash(&self.id, t as u32, &entries);
        let sums = self
            .share_sums
            .as_ref()
            .ok_or(DkgError::Message("shares not opened".into()))?;
        let mut shares = Vec::with_capacity(sums.len());
        for (v, sum) in sums.iter().enumerate() {
            let key = SecretKey::from_scalar(sum)
                .map_err(|_| DkgError::Message("a zero share (probability 2^-255)".into()))?;
            let share = SecretShare::new(self.me, key);
            if share.public_key() != validators[v].public_shares[self.me.get() as usize - 1] {
                return Err(DkgError::Message(
                    "own share does not match its public share".into(),
                ));
            }
            shares.push(ValidatorShare {
                validator: v as u32,
                group_public_key: validators[v].commitments[0],
                share,
            });
        }
        self.prepared = Some(Prepared {
            lock_hash,
            validators,
            shares,
        });
        Ok(())
    }

    fn finish_body(
        &mut self,
        signer: &dyn BroadcastSigner,
        decryptor: &dyn ShareDecryptor,
    ) -> Result<Body, DkgError> {
        self.prepare(decryptor)?;
        let prepared = self
            .prepared
            .as_ref()
            .ok_or(DkgError::Message("not prepared".into()))?;
        let deposit_signatures = prepared
            .shares
            .iter()
            .zip(&prepared.validators)
            .map(|(share, v)| share.share.sign(&v.deposit_signing_root.0))
            .collect();
        let lock_signatures = prepared
            .shares
            .iter()
            .map(|share| share.share.sign(&prepared.lock_hash.0))
            .collect();
        let identity_signature = signer.sign_digest(&lock::lock_digest(&prepared.lock_hash))?;
        Ok(Body::Finish(FinishBody {
            lock_hash: prepared.lock_hash,
            deposit_signatures,
            lock_signatures,
            identity_signature,
        }))
    }

    /// Combine the finish messages into the lock; blame any participant whose partials or lock
    /// signature do not verify. `None` when the ceremony aborts.
    fn assemble(&mut self, abort: &mut Abort) -> Result<Option<Lock>, DkgError> {
        let Some(prepared) = self.prepared.as_ref() else {
            return Err(DkgError::Message("finish without preparation".into()));
        };
        let digest = lock::lock_digest(&prepared.lock_hash);
        let v_count = prepared.validators.len();
        let mut finishes = Vec::new();
        for (sender, body) in self.parsed(Phase::Finish) {
            let message = self.messages[&(Phase::Finish, sender)].clone();
            let problem = match &body {
                Ok(Body::Finish(finish)) => {
                    let participant = self.definition.participant(sender);
                    if finish.lock_hash != prepared.lock_hash {
                        Some("it signs a different lock hash".to_owned())
                    } else if finish.deposit_signatures.len() != v_count
                        || finish.lock_signatures.len() != v_count
                    {
                        Some("not one partial signature per validator".to_owned())
                    } else if !participant.is_some_and(|p| {
                        p.identity_public_key
                            .verify(&digest, &finish.identity_signature)
                    }) {
                        Some("its identity signature of the lock hash does not verify".to_owned())
                    } else {
                        None
                    }
                }
                Ok(_) => Some("not a finish message".to_owned()),
                Err(reason) => Some(reason.clone()),
            };
            match (problem, body) {
                (None, Ok(Body::Finish(finish))) => finishes.push((sender, finish, message)),
                (Some(reason), _) => abort.blame(
                    &self.definition,
                    sender,
                    Fault::BadFinish { reason },
                    vec![message],
                ),
                _ => {}
            }
        }
        if !abort.culprits.is_empty() {
            return Ok(None);
        }
        let t = self.definition.threshold;
        let fork_version = self
            .definition
            .deposit_fork_version()
            .ok_or(DkgError::Definition("unknown network".into()))?;
        let mut validators = Vec::with_capacity(v_count);
        let mut bad: BTreeMap<ParticipantIndex, String> = BTreeMap::new();
        let mut weights = super::encoding::SeedStream::new(&self.seed, b"finish-batch-weights");
        for (v, pv) in prepared.validators.iter().enumerate() {
            let keys: BTreeMap<ShareIndex, BlsPublicKey> = self
                .definition
                .indices()
                .zip(pv.public_shares.iter().copied())
                .collect();
            let mut combine = |message: &[u8], pick: &dyn Fn(&FinishBody) -> BlsSignature| {
                let partials: Vec<(ShareIndex, BlsSignature)> =
                    finishes.iter().map(|(s, f, _)| (*s, pick(f))).collect();
                // Every partial and the result in one randomized check (weights from this
                // participant's secret seed stream: unpredictable to the others).
                let result = threshold::combine(
                    t,
                    &keys,
                    &pv.commitments[0],
                    message,
                    &partials,
                    true,
                    &mut weights,
                );
                match result {
                    Ok(combined) => {
                        for culprit in &combined.culprits {
                            bad.entry(*culprit).or_insert_with(|| {
                                format!("validator {v}: a partial does not verify")
                            });
                        }
                        Some(combined.signature)
                    }
                    Err(error) => {
                        for culprit in error.culprits() {
                            bad.entry(*culprit).or_insert_with(|| {
                                format!("validator {v}: a partial does not verify")
                            });
                        }
                        None
                    }
                }
            };
            let deposit_signature =
                combine(&pv.deposit_signing_root.0, &|f| f.deposit_signatures[v]);
            let lock_signature = combine(&prepared.lock_hash.0, &|f| f.lock_signatures[v]);
            if let (Some(deposit_signature), Some(lock_signature)) =
                (deposit_signature, lock_signature)
            {
                validators.push(LockValidator {
                    group_public_key: pv.commitments[0],
                    public_shares: pv.public_shares.clone(),
                    commitments: pv.commitments.clone(),
                    deposit: LockDeposit {
                        pubkey: pv.commitments[0],
                        withdrawal_credentials: pv.deposit_message.withdrawal_credentials,
                        amount: pv.deposit_message.amount,
                        signature: deposit_signature,
                        deposit_message_root: pv.deposit_message_root,
                        deposit_data_root: lock::deposit_data_root(
                            &pv.deposit_message,
                            deposit_signature,
                        ),
                        fork_version,
                    },
                    lock_signature,
                });
            }
        }
        if !bad.is_empty() {
            for (sender, reason) in bad {
                let evidence = finishes
                    .iter()
                    .filter(|(s, _, _)| *s == sender)
                    .map(|(_, _, m)| m.clone())
                    .collect();
                abort.blame(
                    &self.definition,
                    sender,
                    Fault::BadFinish { reason },
                    evidence,
                );
            }
            return Ok(None);
        }
        let lock = Lock {
            format: lock::LOCK_FORMAT.to_owned(),
            ceremony_id: self.id,
            threshold: t.get(),
            definition: self.definition.clone(),
            validators,
            lock_hash: prepared.lock_hash,
            participant_signatures: finishes
                .iter()
                .map(|(sender, finish, _)| ParticipantSignature {
                    participant: *sender,
                    signature: finish.identity_signature,
                })
                .collect(),
        };
        lock::verify_lock(&lock)?;
        Ok(Some(lock))
    }
}
