//! Electra containers a validator signs: the EIP-7549 `Attestation` (aggregation bits across all
//! committees of the slot plus `committee_bits`) and its `AggregateAndProof`. Fulu signs these
//! same containers.
//!
//! Deserialization refuses a missing `committee_bits`, bitfields of the wrong length and
//! everything the phase0 containers refuse; unknown JSON keys are ignored.
#![forbid(unsafe_code)]

use serde::Deserialize;
use ssz_types::{BitList, BitVector};
use tree_hash_derive::TreeHash;

use super::phase0::{AggregateAndProofWith, AttestationData};
use super::PresetSpec;
use crate::types::BlsSignature;

/// Electra `Attestation`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct Attestation<P: PresetSpec> {
    pub aggregation_bits: BitList<P::MaxValidatorsPerSlot>,
    pub data: AttestationData,
    pub signature: BlsSignature,
    pub committee_bits: BitVector<P::MaxCommitteesPerSlot>,
}

/// Electra `AggregateAndProof` (the phase0 container with the Electra attestation).
pub type AggregateAndProof<P> = AggregateAndProofWith<Attestation<P>>;
