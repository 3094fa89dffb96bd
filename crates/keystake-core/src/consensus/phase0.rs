//! Phase0 containers a validator signs or that a signed phase0 block contains, with the JSON
//! shape of the beacon and Web3Signer APIs (snake_case keys, uint64 as decimal strings, bytes as
//! `0x` hex). Bellatrix, Capella and Deneb sign these same attestation and aggregate containers.
//!
//! Deserialization refuses values that do not fit the SSZ type (see the module root); unknown
//! JSON keys are ignored, as the API allows.
#![forbid(unsafe_code)]

use serde::Deserialize;
use ssz_types::typenum::U33;
use ssz_types::{BitList, FixedVector, VariableList};
use tree_hash::TreeHash;
use tree_hash_derive::TreeHash;

use super::{quoted_u64, quoted_u64_list, Bytes32, PresetSpec};
use crate::types::{BlsPublicKey, BlsSignature, Root};

/// `Checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct Checkpoint {
    #[serde(with = "quoted_u64")]
    pub epoch: u64,
    pub root: Root,
}

/// `AttestationData`: what an ATTESTATION request signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct AttestationData {
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    #[serde(with = "quoted_u64")]
    pub index: u64,
    pub beacon_block_root: Root,
    pub source: Checkpoint,
    pub target: Checkpoint,
}

/// `BeaconBlockHeader`: what BLOCK_V2 signs from Bellatrix on (its root equals the full block's).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct BeaconBlockHeader {
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    #[serde(with = "quoted_u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body_root: Root,
}

/// `SignedBeaconBlockHeader`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct SignedBeaconBlockHeader {
    pub message: BeaconBlockHeader,
    pub signature: BlsSignature,
}

/// `ProposerSlashing`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct ProposerSlashing {
    pub signed_header_1: SignedBeaconBlockHeader,
    pub signed_header_2: SignedBeaconBlockHeader,
}

/// `IndexedAttestation` (phase0 sizes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct IndexedAttestation<P: PresetSpec> {
    #[serde(with = "quoted_u64_list")]
    pub attesting_indices: VariableList<u64, P::MaxValidatorsPerCommittee>,
    pub data: AttestationData,
    pub signature: BlsSignature,
}

/// `AttesterSlashing` (phase0 sizes).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct AttesterSlashing<P: PresetSpec> {
    pub attestation_1: IndexedAttestation<P>,
    pub attestation_2: IndexedAttestation<P>,
}

/// `Attestation` (phase0 to Deneb).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
#[serde(bound = "")]
pub struct Attestation<P: PresetSpec> {
    pub aggregation_bits: BitList<P::MaxValidatorsPerCommittee>,
    pub data: AttestationData,
    pub signature: BlsSignature,
}

/// `Eth1Data`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct Eth1Data {
    pub deposit_root: Root,
    #[serde(with = "quoted_u64")]
    pub deposit_count: u64,
    pub block_hash: Root,
}

/// `DepositData`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct DepositData {
    pub pubkey: BlsPublicKey,
    pub withdrawal_credentials: Bytes32,
    #[serde(with = "quoted_u64")]
    pub amount: u64,
    pub signature: BlsSignature,
}

/// `DepositMessage`: what a DEPOSIT request signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct DepositMessage {
    pub pubkey: BlsPublicKey,
    pub withdrawal_credentials: Bytes32,
    #[serde(with = "quoted_u64")]
    pub amount: u64,
}

/// `Deposit`: `proof` is `Vector[Bytes32, DEPOSIT_CONTRACT_TREE_DEPTH + 1]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct Deposit {
    pub proof: FixedVector<Root, U33>,
    pub data: DepositData,
}

/// `VoluntaryExit`: what a VOLUNTARY_EXIT request signs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct VoluntaryExit {
    #[serde(with = "quoted_u64")]
    pub epoch: u64,
    #[serde(with = "quoted_u64")]
    pub validator_index: u64,
}

/// `SignedVoluntaryExit`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct SignedVoluntaryExit {
    pub message: VoluntaryExit,
    pub signature: BlsSignature,
}

/// Phase0 `BeaconBlockBody`.
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
}

/// A `BeaconBlock` with the body of its fork: the block container is the same in every fork,
/// only the body changes ([`BeaconBlock`] here, `altair::BeaconBlock`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct BeaconBlockWith<Body: TreeHash> {
    #[serde(with = "quoted_u64")]
    pub slot: u64,
    #[serde(with = "quoted_u64")]
    pub proposer_index: u64,
    pub parent_root: Root,
    pub state_root: Root,
    pub body: Body,
}

/// Phase0 `BeaconBlock`: what BLOCK and BLOCK_V2 (PHASE0) sign.
pub type BeaconBlock<P> = BeaconBlockWith<BeaconBlockBody<P>>;

/// An `AggregateAndProof` of the attestation of its fork: the container is the same in every
/// fork, only the attestation changes ([`AggregateAndProof`] here, `electra::AggregateAndProof`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, TreeHash)]
pub struct AggregateAndProofWith<Aggregate: TreeHash> {
    #[serde(with = "quoted_u64")]
    pub aggregator_index: u64,
    pub aggregate: Aggregate,
    pub selection_proof: BlsSignature,
}

/// `AggregateAndProof` (phase0 to Deneb).
pub type AggregateAndProof<P> = AggregateAndProofWith<Attestation<P>>;
