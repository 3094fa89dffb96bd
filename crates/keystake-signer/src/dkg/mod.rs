//! The DKG adapter (issue 12): drives the pure state machine (`keystake_core::dkg`) over the
//! network, the HSM and the database. `dkg run` calls [`run::run_ceremony`]; `serve` answers
//! peers from the same database (`net::grpc::dkg`).
//!
//! * transport ([`run::Transport`], [`run::GrpcTransport`]): pull — each appliance fetches
//!   the messages it lacks from their senders (and, after a few failed tries, from any other
//!   participant: messages carry their sender's signature, so a relay cannot forge one), with
//!   backoff, until the phase timeout; a transient drop is just a retry;
//! * persistence (`store::dkg`): the sealed seed and every message, written before a message
//!   is served, so a restarted `dkg run` resumes with identical deals;
//! * HSM: the seed and the identity key are sealed by the sealing key ([`identity`]); shares
//!   are opened by the enrolment key inside the token (`hsm::enrolment::EnrolmentDecryptor`) and
//!   the new shares are sealed into the share store with origin `dkg` once the lock verifies.
//!
//! Refuses: a definition that does not validate or does not list this appliance's identity
//! key and enrolment key; a ceremony this appliance already finished or aborted.
#![forbid(unsafe_code)]

pub mod identity;
pub mod reshare;
pub mod run;

use crate::hsm::SealError;
use crate::service::ServiceError;
use crate::store::StoreError;
use keystake_core::dkg::DkgError;

/// Why the DKG adapter could not run (a participant's fault is an `Abort`, not an error).
#[derive(Debug, thiserror::Error)]
pub enum DkgAdapterError {
    #[error(transparent)]
    Dkg(#[from] DkgError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("HSM: {0}")]
    Seal(#[from] SealError),
    #[error("sealing a new share: {0}")]
    Service(#[from] ServiceError),
    #[error("identity key: {0}")]
    Identity(String),
    #[error("this appliance is not in the definition: {0}")]
    NotAParticipant(String),
    #[error(
        "ceremony {0} already ended on this appliance ({1}); a new ceremony needs a new definition"
    )]
    AlreadyEnded(String, &'static str),
    #[error("transport: {0}")]
    Transport(String),
}
