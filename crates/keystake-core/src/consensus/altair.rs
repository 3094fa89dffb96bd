//! Altair containers: the sync-committee objects a validator signs and the Altair full block
//! (phase0 body plus `sync_aggregate`). Their sizes depend on the preset's sync committee size.
//!
//! Deserialization refuses bitfields of the wrong length and everything the phase0 containers
//! refuse; unknown JSON keys are ignored.
#![forbid(unsafe_code)]

use serde::Deserialize;
use ssz_types::{BitVector, VariableList};
use tree_hash_derive::TreeHash;

use super::phase0::{
    Attestation, AttesterSlashing, BeaconBlockWith, Deposit, Eth1Data, ProposerSlashing,
    SignedVoluntaryExit,
};
use super::{quoted_u64, Bytes32, PresetSpec};
use crate::types::{BlsSignature, Root};

/// `SyncAggregate`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct SyncAggregate<P: PresetSpec> {
    pub sync_committee_bits: BitVector<P::SyncCommitteeSize>,
    pub sync_committee_signature: BlsSignature,
}

/// Altair `BeaconBlockBody`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct BeaconBlockBody<P: PresetSpec> {
    pub randao_reveal: BlsSignature,
    pub eth1_data: Eth1Data,
    pub graffiti: Bytes32,
    pub proposer_slashings: VariableList<ProposerSlashing, P::MaxProposerSlashings>,
    pub attester_slashings: VariableList<AttesterSlashing<P>, P::MaxAttesterSlashings>,
    pub attestations: VariableList<Attestation<P>, P::MaxAttestations>,
    pub deposits: VariableList<Deposit, P::MaxDeposits>,
    pub voluntary_exits: VariableList<SignedVoluntaryExit, P::MaxVoluntaryExits>,
    pub sync_aggregate: SyncAggregate<P>,
}

/// Altair `BeaconBlock`: what BLOCK_V2 (ALTAIR) signs (the phase0 block with this body).
pub type BeaconBlock<P> = BeaconBlockWith<BeaconBlockBody<P>>;

/// `SyncAggregatorSelectionData`: what SYNC_COMMITTEE_SELECTION_PROOF signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct SyncAggregatorSelectionData {
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    #[serde(with = "quoted_u64")]
    pub subcommittee_index: u64,
}

/// `SyncCommitteeContribution`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct SyncCommitteeContribution<P: PresetSpec> {
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    pub beacon_block_root: Root,
    #[serde(with = "quoted_u64")]
    pub subcommittee_index: u64,
    pub aggregation_bits: BitVector<P::SyncSubcommitteeSize>,
    pub signature: BlsSignature,
}

/// `ContributionAndProof`: what SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct ContributionAndProof<P: PresetSpec> {
    #[serde(with = "quoted_u64")]
    pub aggregator_index: u64,
    pub contribution: SyncCommitteeContribution<P>,
    pub selection_proof: BlsSignature,
}
