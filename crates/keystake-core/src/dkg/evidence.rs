//! Why a ceremony aborted: every culprit named by definition index and endpoint, with the signed
//! messages that prove it (`failure.json`). A third party re-checks a blame by verifying the
//! messages' identity signatures against the definition and re-running the public check the
//! fault names; only [`Fault::Silence`] rests on the reporting appliance's own clock.
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

use super::ceremony::{Phase, SignedMessage};
use super::definition::{CeremonyId, Definition};
use super::ParticipantIndex;

/// What a participant did wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Its deal fails a public check (commitment count or point, proof of knowledge, shape).
    InvalidDeal { reason: String },
    /// A complaint against it was upheld: the revealed share is undecryptable or off its
    /// commitments.
    BadShare {
        recipient: ParticipantIndex,
        validator: u32,
        reason: String,
    },
    /// It did not answer a complaint with the ephemeral secret.
    UnansweredComplaint {
        recipient: ParticipantIndex,
        validator: u32,
    },
    /// It revealed a secret that is not the one of the published ephemeral key.
    InvalidReveal {
        recipient: ParticipantIndex,
        validator: u32,
    },
    /// It complained about a share that decrypts and matches the commitments.
    FalseComplaint {
        dealer: ParticipantIndex,
        validator: u32,
    },
    /// It signed two different messages for one phase.
    Equivocation { phase: Phase },
    /// Its message does not parse or does not fit the definition.
    MalformedMessage { phase: Phase, reason: String },
    /// Its partial signature of a deposit or of the lock hash does not verify under its new
    /// public share, or its identity signature of the lock hash does not verify.
    BadFinish { reason: String },
    /// Nothing arrived from it for this phase within the phase timeout (after retries).
    Silence { phase: Phase },
}

/// One culprit and the signed messages that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blame {
    pub participant: ParticipantIndex,
    pub endpoint: String,
    pub fault: Fault,
    pub evidence: Vec<SignedMessage>,
}

/// Evidence messages (kept as its own name for `failure.json` readers).
pub type Evidence = Vec<SignedMessage>;

/// An aborted ceremony: who is to blame. No share of it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Abort {
    pub ceremony_id: CeremonyId,
    pub phase: Phase,
    pub culprits: Vec<Blame>,
}

impl Abort {
    pub(crate) fn new(definition: &Definition, ceremony_id: CeremonyId, phase: Phase) -> Self {
        let _ = definition;
        Self {
            ceremony_id,
            phase,
            culprits: Vec::new(),
        }
    }

    pub(crate) fn blame(
        &mut self,
        definition: &Definition,
        participant: ParticipantIndex,
        fault: Fault,
        evidence: Vec<SignedMessage>,
    ) {
        self.culprits.push(Blame {
            participant,
            endpoint: definition
                .participant(participant)
                .map(|p| p.endpoint.clone())
                .unwrap_or_default(),
            fault,
            evidence,
        });
    }

    /// The culprits' indices, sorted, without repeats.
    pub fn culprit_indices(&self) -> Vec<ParticipantIndex> {
        let mut indices: Vec<ParticipantIndex> =
            self.culprits.iter().map(|b| b.participant).collect();
        indices.sort();
        indices.dedup();
        indices
    }

    /// "participant 4 (https://…): equivocation in phase deal; …" — the operator's message.
    pub fn message(&self) -> String {
        let parts: Vec<String> = self
            .culprits
            .iter()
            .map(|b| {
                format!(
                    "participant {} ({}): {}",
                    b.participant,
                    b.endpoint,
                    describe_fault(&b.fault)
                )
            })
            .collect();
        format!(
            "the DKG ceremony aborted in phase {}: {}",
            self.phase.name(),
            parts.join("; ")
        )
    }
}

fn describe_fault(fault: &Fault) -> String {
    match fault {
        Fault::InvalidDeal { reason } => format!("invalid deal ({reason})"),
        Fault::BadShare {
            recipient,
            validator,
            reason,
        } => format!("bad share to participant {recipient} for validator {validator} ({reason})"),
        Fault::UnansweredComplaint {
            recipient,
            validator,
        } => format!(
            "did not answer participant {recipient}'s complaint about validator {validator}"
        ),
        Fault::InvalidReveal {
            recipient,
            validator,
        } => format!(
            "revealed a wrong deal key for participant {recipient}, validator {validator}"
        ),
        Fault::FalseComplaint { dealer, validator } => format!(
            "false complaint against participant {dealer} for validator {validator} (the share is valid)"
        ),
        Fault::Equivocation { phase } => {
            format!("equivocation: two different signed messages in phase {}", phase.name())
        }
        Fault::MalformedMessage { phase, reason } => {
            format!("malformed message in phase {} ({reason})", phase.name())
        }
        Fault::BadFinish { reason } => format!("bad final signatures ({reason})"),
        Fault::Silence { phase } => format!(
            "silent past the timeout of phase {} (after retries)",
            phase.name()
        ),
    }
}
