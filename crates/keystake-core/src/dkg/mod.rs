//! Distributed key generation between appliances (issue 12, design.md §8), as a pure state
//! machine: no I/O, no clock, no HSM. The adapter (`keystake-signer::dkg`) moves messages, keeps
//! time, persists them and provides the two operations that need a token: signing a broadcast
//! digest with the identity key ([`BroadcastSigner`]) and opening a share encrypted to the
//! enrolment key ([`ShareDecryptor`]).
//!
//! Protocol (per validator, batched in one message per phase; docs/dkg.md has the full text):
//!
//! 1. **Deal** — dealer `i` draws `f_i` of degree `t−1` (or with a given constant term, for
//!    resharing), broadcasts Feldman commitments, a Schnorr proof of knowledge of `f_i(0)` bound to
//!    (ceremony id, i, validator), and every share `f_i(j)` encrypted to `j`'s enrolment key with
//!    a fresh ephemeral P-256 key `e_ij` (AES-256-GCM, AAD binds ceremony, i, j, validator).
//! 2. **Echo** — every participant signs the list of (sender, body hash, sender's signature) it
//!    received; it proceeds only when all `n` echoes agree. Two valid signatures of one sender
//!    over different bodies of one phase are equivocation evidence.
//! 3. **Complaints** (+ echo) — `j` complains (signed) about every share that does not open or
//!    fails the Feldman check.
//! 4. **Reveals** (+ echo), only when a complaint exists — each accused dealer reveals `e_ij`;
//!    anyone checks `e_ij·G = E_ij`, derives the key, decrypts, and checks the share: the dealer
//!    is blamed when it is inconsistent or missing, the complainer when the share is good.
//! 5. **Finish** — each participant computes its shares, signs every deposit message and the
//!    lock hash with them (BLS partials) and the lock hash with its identity key; the lock is
//!    assembled once all `n` agree and every combined signature verifies ([`verify_lock`]).
//!
//! What it refuses: a message not signed by its sender's pinned identity key, for another
//! ceremony, a phase out of range, or a sender outside the definition; malformed bodies (the
//! sender is blamed); any fault ends the ceremony with [`Abort`] naming culprits with evidence.
#![forbid(unsafe_code)]

mod ceremony;
mod crypto;
mod deal;
mod definition;
mod encoding;
mod evidence;
mod local;
mod lock;
mod reshare;
mod reshare_local;
#[cfg(test)]
mod reshare_tests;
#[cfg(test)]
mod tests;
mod verify;

pub use ceremony::{Ceremony, Step, Success, ValidatorShare};
pub use crypto::{
    share_aad, BroadcastSigner, IdentityPublicKey, IdentitySignature, ShareDecryptor, SignerError,
    SoftwareDecryptor, SoftwareSigner, SHARE_CIPHERTEXT_LEN, SHARE_IV_LEN,
};
pub use deal::{deal_validator, Dealing, EncryptedShare, KnowledgeProof, ValidatorDeal};
pub use definition::{CeremonyId, Definition, Participant, DEFINITION_FORMAT};
pub use evidence::{Abort, Blame, Evidence, Fault};
pub use lock::{
    deposit_data_entries, verify_deposit_data, verify_lock, DepositDataEntry, Lock, LockDeposit,
    LockHash, LockValidator, ParticipantSignature, DEPOSIT_CLI_VERSION, LOCK_FORMAT,
};

pub use reshare::{
    reshare_message_digest, verify_reshared_lock, IgnoredReport, OldHolding, Reshare, ReshareBody,
    ReshareDealing, ReshareDefinition, ReshareFinish, ReshareStep, ReshareSuccess, Role, Seat,
    SlashingMaxima, RESHARE_DEFINITION_FORMAT, SLASHING_MARGIN_EPOCHS,
};
pub use reshare_local::{holding_of, run_local_reshare};

pub use ceremony::{
    message_digest, Body, BodyHash, Complaint, ComplaintReason, EchoEntry, FinishBody, Phase,
    Reveal, SignedMessage, PHASES,
};
pub use encoding::SeedStream;
pub use local::{local_setup, run_local, LocalParty};

use crate::types::ShareIndex;

/// 1-based position of a participant in the definition (the order of `--identity`); also its
/// share index.
pub type ParticipantIndex = ShareIndex;

/// Largest number of participants a definition may have.
pub const MAX_PARTICIPANTS: u32 = 64;

/// Largest number of validators one ceremony may create.
pub const MAX_VALIDATORS: u32 = 10_000;

/// Why a DKG input was refused (as opposed to a participant being blamed: [`Abort`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DkgError {
    #[error("invalid definition: {0}")]
    Definition(String),
    #[error("invalid lock: {0}")]
    Lock(String),
    #[error("invalid deposit data: {0}")]
    DepositData(String),
    #[error("message refused: {0}")]
    Message(String),
    #[error("signing the broadcast failed: {0}")]
    Signer(#[from] SignerError),
    #[error("this appliance (identity {0}) is not a participant of the definition")]
    NotAParticipant(String),
    #[error("the ceremony has already ended")]
    Ended,
}
