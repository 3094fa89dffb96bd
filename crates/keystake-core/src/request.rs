//! Web3Signer eth2 signing requests (`POST /api/v1/eth2/sign/{pubkey}` bodies) → the signing root
//! to sign, the slashing check it needs and the chain it is for (`SigningIntent`).
//!
//! The rules follow Web3Signer: `type` is matched ignoring case; the domain's fork version is
//! `fork_info.fork.previous_version` before `fork_info.fork.epoch` and `current_version` from it
//! on; DEPOSIT signs under its own `genesis_fork_version` and a zero validators root, and
//! VALIDATOR_REGISTRATION under the network's genesis fork version; full blocks and aggregates
//! are decoded with the SSZ schema of the network's fork at their slot; unknown JSON keys are
//! ignored; a supplied `signingRoot` (or `signing_root`) must equal the computed root.
//!
//! Refused, every time as a client error naming the JSON field at fault: bodies that are not a
//! JSON object, unknown types, a missing object for the type, a missing `fork_info` where the
//! domain needs it, malformed hex, wrong byte lengths, uint64 values that are negative or above
//! 2^64-1, lists and bitfields of the wrong size, an unknown or inconsistent fork `version`, a
//! full block where the fork takes a header (and vice versa), and a mismatching `signingRoot`.
//! Slashing rules are not applied here (an attestation whose source exceeds its target passes;
//! the slashing module refuses it).
#![forbid(unsafe_code)]

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::consensus::{
    altair, builder, compute_domain, compute_signing_root, electra, phase0, quoted_u64, root_of,
    Bytes32, ForkName, MainnetSpec, MinimalSpec, Network, Preset, PresetSpec,
    DOMAIN_AGGREGATE_AND_PROOF, DOMAIN_APPLICATION_BUILDER, DOMAIN_BEACON_ATTESTER,
    DOMAIN_BEACON_PROPOSER, DOMAIN_CONTRIBUTION_AND_PROOF, DOMAIN_DEPOSIT, DOMAIN_RANDAO,
    DOMAIN_SELECTION_PROOF, DOMAIN_SYNC_COMMITTEE, DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF,
    DOMAIN_VOLUNTARY_EXIT, ZERO_ROOT,
};
use crate::slashing::SlashingRequest;
use crate::types::{BlsPublicKey, Domain, DomainType, Epoch, ForkVersion, Root, Slot};

/// The signing request types of the Web3Signer eth2 API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignKind {
    /// Deprecated: a phase0-style full block directly under `block`.
    Block,
    BlockV2,
    Attestation,
    AggregationSlot,
    /// Deprecated: a phase0 `AggregateAndProof` directly under `aggregate_and_proof`.
    AggregateAndProof,
    AggregateAndProofV2,
    Deposit,
    RandaoReveal,
    VoluntaryExit,
    SyncCommitteeMessage,
    SyncCommitteeSelectionProof,
    SyncCommitteeContributionAndProof,
    ValidatorRegistration,
}

impl SignKind {
    pub const ALL: [SignKind; 13] = [
        SignKind::Block,
        SignKind::BlockV2,
        SignKind::Attestation,
        SignKind::AggregationSlot,
        SignKind::AggregateAndProof,
        SignKind::AggregateAndProofV2,
        SignKind::Deposit,
        SignKind::RandaoReveal,
        SignKind::VoluntaryExit,
        SignKind::SyncCommitteeMessage,
        SignKind::SyncCommitteeSelectionProof,
        SignKind::SyncCommitteeContributionAndProof,
        SignKind::ValidatorRegistration,
    ];

    /// The Web3Signer spelling of the `type` field, e.g. `"BLOCK_V2"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignKind::Block => "BLOCK",
            SignKind::BlockV2 => "BLOCK_V2",
            SignKind::Attestation => "ATTESTATION",
            SignKind::AggregationSlot => "AGGREGATION_SLOT",
            SignKind::AggregateAndProof => "AGGREGATE_AND_PROOF",
            SignKind::AggregateAndProofV2 => "AGGREGATE_AND_PROOF_V2",
            SignKind::Deposit => "DEPOSIT",
            SignKind::RandaoReveal => "RANDAO_REVEAL",
            SignKind::VoluntaryExit => "VOLUNTARY_EXIT",
            SignKind::SyncCommitteeMessage => "SYNC_COMMITTEE_MESSAGE",
            SignKind::SyncCommitteeSelectionProof => "SYNC_COMMITTEE_SELECTION_PROOF",
            SignKind::SyncCommitteeContributionAndProof => "SYNC_COMMITTEE_CONTRIBUTION_AND_PROOF",
            SignKind::ValidatorRegistration => "VALIDATOR_REGISTRATION",
        }
    }

    /// Parse a `type` value, ignoring ASCII case.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
    }

    /// The request field that carries the object to sign.
    pub fn object_field(&self) -> &'static str {
        match self {
            SignKind::Block => "block",
            SignKind::BlockV2 => "beacon_block",
            SignKind::Attestation => "attestation",
            SignKind::AggregationSlot => "aggregation_slot",
            SignKind::AggregateAndProof | SignKind::AggregateAndProofV2 => "aggregate_and_proof",
            SignKind::Deposit => "deposit",
            SignKind::RandaoReveal => "randao_reveal",
            SignKind::VoluntaryExit => "voluntary_exit",
            SignKind::SyncCommitteeMessage => "sync_committee_message",
            SignKind::SyncCommitteeSelectionProof => "sync_aggregator_selection_data",
            SignKind::SyncCommitteeContributionAndProof => "contribution_and_proof",
            SignKind::ValidatorRegistration => "validator_registration",
        }
    }

    /// Whether the domain comes from `fork_info` (all but DEPOSIT and VALIDATOR_REGISTRATION).
    pub fn needs_fork_info(&self) -> bool {
        !matches!(self, SignKind::Deposit | SignKind::ValidatorRegistration)
    }
}

impl fmt::Display for SignKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the slashing-protection module must check before the root may be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlashingCheck {
    Block { slot: Slot },
    Attestation { source: Epoch, target: Epoch },
}

impl SlashingCheck {
    /// The slashing-protection request for this check and the root that would be signed: the
    /// one conversion, used by signing and by the dry run alike.
    pub fn with_signing_root(self, signing_root: Root) -> SlashingRequest {
        match self {
            SlashingCheck::Block { slot } => SlashingRequest::Block { slot, signing_root },
            SlashingCheck::Attestation { source, target } => SlashingRequest::Attestation {
                source,
                target,
                signing_root,
            },
        }
    }
}

/// A decoded, validated signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningIntent {
    pub kind: SignKind,
    pub signing_root: Root,
    pub slashing: Option<SlashingCheck>,
    /// `fork_info.genesis_validators_root` when the request carries `fork_info`.
    pub genesis_validators_root: Option<Root>,
}

/// Why a signing request was refused. Every variant is the client's fault (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must be a JSON object")]
    NotAnObject,
    #[error("missing field `{field}`")]
    MissingField { field: String },
    #[error("{field}: {message}")]
    InvalidField { field: String, message: String },
    #[error("unknown signing type `{0}`")]
    UnknownType(String),
    #[error("{field}: unknown version `{version}` (expected PHASE0, ALTAIR, BELLATRIX, CAPELLA, DENEB, ELECTRA or FULU)")]
    UnknownVersion { field: String, version: String },
    #[error("{field}: {version} does not match the network's fork {network_fork} at slot {slot} (network {network})")]
    VersionMismatch {
        field: String,
        version: ForkName,
        network_fork: ForkName,
        slot: Slot,
        network: String,
    },
    #[error("{field}: slot {slot} is in {fork}, whose blocks are signed from a header; send BLOCK_V2 with `block_header`")]
    FullBlockAfterAltair {
        field: String,
        slot: Slot,
        fork: ForkName,
    },
    #[error("{field}: slot {slot} is in {fork}, whose aggregates carry `committee_bits`; send AGGREGATE_AND_PROOF_V2")]
    DeprecatedAggregateAfterElectra {
        field: String,
        slot: Slot,
        fork: ForkName,
    },
    #[error("{field} {supplied} does not match the computed signing root {computed}")]
    SigningRootMismatch {
        field: String,
        supplied: Root,
        computed: Root,
    },
}

impl RequestError {
    /// The JSON field path at fault (`"attestation.target.epoch"`), when one field is.
    pub fn field(&self) -> Option<&str> {
        match self {
            RequestError::MalformedJson(_) | RequestError::NotAnObject => None,
            RequestError::UnknownType(_) => Some("type"),
            RequestError::MissingField { field }
            | RequestError::InvalidField { field, .. }
            | RequestError::UnknownVersion { field, .. }
            | RequestError::VersionMismatch { field, .. }
            | RequestError::FullBlockAfterAltair { field, .. }
            | RequestError::DeprecatedAggregateAfterElectra { field, .. }
            | RequestError::SigningRootMismatch { field, .. } => Some(field),
        }
    }
}

/// Decode a signing request body and compute what to sign on `network`.
pub fn parse_sign_request(body: &[u8], network: &Network) -> Result<SigningIntent, RequestError> {
    parse_unbounded(body, network).map_err(RequestError::bounded)
}

impl RequestError {
    /// The same error with every client-supplied string (field paths, values, serde's
    /// messages, which quote values) escaped and cut to [`crate::text::MAX_ECHOED_BYTES`], so
    /// an error body or audit entry stays small whatever the request carried.
    pub fn bounded(self) -> Self {
        use crate::text::echo;
        match self {
            RequestError::MalformedJson(m) => RequestError::MalformedJson(echo(&m)),
            RequestError::MissingField { field } => RequestError::MissingField {
                field: echo(&field),
            },
            RequestError::InvalidField { field, message } => RequestError::InvalidField {
                field: echo(&field),
                message: echo(&message),
            },
            RequestError::UnknownType(t) => RequestError::UnknownType(echo(&t)),
            RequestError::UnknownVersion { field, version } => RequestError::UnknownVersion {
                field: echo(&field),
                version: echo(&version),
            },
            other => other,
        }
    }
}

fn parse_unbounded(body: &[u8], network: &Network) -> Result<SigningIntent, RequestError> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| RequestError::MalformedJson(e.to_string()))?;
    if !document.is_object() {
        return Err(RequestError::NotAnObject);
    }
    let request = Node::root(&document);

    let type_name: String = request.member("type")?.decode()?;
    let kind = SignKind::from_api_name(&type_name).ok_or(RequestError::UnknownType(type_name))?;

    let mut supplied_roots = Vec::new();
    for spelling in ["signingRoot", "signing_root"] {
        if let Some(node) = request.optional_member(spelling)? {
            supplied_roots.push((spelling, node.decode::<Root>()?));
        }
    }

    let fork_info: Option<ForkInfo> = request
        .optional_member("fork_info")?
        .map(|node| node.decode())
        .transpose()?;
    let signing_fork = match (&fork_info, kind.needs_fork_info()) {
        (Some(fork_info), true) => Some(fork_info),
        (None, true) => {
            return Err(RequestError::MissingField {
                field: "fork_info".to_owned(),
            })
        }
        (_, false) => None,
    };

    let object = request.member(kind.object_field())?;
    let signed = match signing_fork {
        Some(fork_info) => sign_with_fork(kind, object, fork_info, network)?,
        None => sign_without_fork(kind, object, network)?,
    };

    for (spelling, supplied) in supplied_roots {
        if supplied != signed.signing_root {
            return Err(RequestError::SigningRootMismatch {
                field: spelling.to_owned(),
                supplied,
                computed: signed.signing_root,
            });
        }
    }

    Ok(SigningIntent {
        kind,
        signing_root: signed.signing_root,
        slashing: signed.slashing,
        genesis_validators_root: fork_info.map(|info| info.genesis_validators_root),
    })
}

/// The root to sign and its slashing check.
struct Signed {
    signing_root: Root,
    slashing: Option<SlashingCheck>,
}

impl Signed {
    fn unprotected(signing_root: Root) -> Self {
        Self {
            signing_root,
            slashing: None,
        }
    }
}

/// Types whose domain comes from `fork_info`.
fn sign_with_fork(
    kind: SignKind,
    object: Node<'_>,
    fork_info: &ForkInfo,
    network: &Network,
) -> Result<Signed, RequestError> {
    let at_slot = |domain_type: DomainType, slot: Slot| {
        fork_info.domain(domain_type, network.epoch_at_slot(slot))
    };
    Ok(match kind {
        SignKind::Block => {
            let slot = object.decode::<SlotProbe>()?.slot;
            let fork = network.fork_at_slot(Slot(slot));
            let block_root = full_block_root(object, fork, Slot(slot), network)?;
            Signed {
                signing_root: compute_signing_root(
                    &block_root,
                    at_slot(DOMAIN_BEACON_PROPOSER, Slot(slot)),
                ),
                slashing: Some(SlashingCheck::Block { slot: Slot(slot) }),
            }
        }
        SignKind::BlockV2 => {
            let (slot, block_root) = block_v2_root(object, network)?;
            Signed {
                signing_root: compute_signing_root(
                    &block_root,
                    at_slot(DOMAIN_BEACON_PROPOSER, slot),
                ),
                slashing: Some(SlashingCheck::Block { slot }),
            }
        }
        SignKind::Attestation => {
            let data: phase0::AttestationData = object.decode()?;
            Signed {
                signing_root: compute_signing_root(
                    &data,
                    fork_info.domain(DOMAIN_BEACON_ATTESTER, Epoch(data.target.epoch)),
                ),
                slashing: Some(SlashingCheck::Attestation {
                    source: Epoch(data.source.epoch),
                    target: Epoch(data.target.epoch),
                }),
            }
        }
        SignKind::AggregationSlot => {
            let slot = object.decode::<SlotProbe>()?.slot;
            Signed::unprotected(compute_signing_root(
                &slot,
                at_slot(DOMAIN_SELECTION_PROOF, Slot(slot)),
            ))
        }
        SignKind::AggregateAndProof => {
            let slot = Slot(object.decode::<AggregateSlotProbe>()?.aggregate.data.slot);
            let fork = network.fork_at_slot(slot);
            if fork.has_electra_attestations() {
                return Err(RequestError::DeprecatedAggregateAfterElectra {
                    field: object.child_path("aggregate.data.slot"),
                    slot,
                    fork,
                });
            }
            let aggregate_root = aggregate_and_proof_root(object, fork, network)?;
            Signed::unprotected(compute_signing_root(
                &aggregate_root,
                at_slot(DOMAIN_AGGREGATE_AND_PROOF, slot),
            ))
        }
        SignKind::AggregateAndProofV2 => {
            let version = object.member("version")?.fork_name()?;
            let data = object.member("data")?;
            let slot = Slot(data.decode::<AggregateSlotProbe>()?.aggregate.data.slot);
            let fork = network.fork_at_slot(slot);
            // Web3Signer decodes the JSON by `version` and the SSZ by the fork at the slot; both
            // must agree on the attestation shape (with or without `committee_bits`).
            if fork.has_electra_attestations() != version.has_electra_attestations() {
                return Err(RequestError::VersionMismatch {
                    field: object.child_path("version"),
                    version,
                    network_fork: fork,
                    slot,
                    network: network.name.clone(),
                });
            }
            let aggregate_root = aggregate_and_proof_root(data, fork, network)?;
            Signed::unprotected(compute_signing_root(
                &aggregate_root,
                at_slot(DOMAIN_AGGREGATE_AND_PROOF, slot),
            ))
        }
        SignKind::RandaoReveal => {
            let epoch = object.decode::<EpochProbe>()?.epoch;
            Signed::unprotected(compute_signing_root(
                &epoch,
                fork_info.domain(DOMAIN_RANDAO, Epoch(epoch)),
            ))
        }
        SignKind::VoluntaryExit => {
            let exit: phase0::VoluntaryExit = object.decode()?;
            Signed::unprotected(compute_signing_root(
                &exit,
                fork_info.domain(DOMAIN_VOLUNTARY_EXIT, Epoch(exit.epoch)),
            ))
        }
        SignKind::SyncCommitteeMessage => {
            let message: SyncCommitteeMessage = object.decode()?;
            Signed::unprotected(compute_signing_root(
                &message.beacon_block_root,
                at_slot(DOMAIN_SYNC_COMMITTEE, Slot(message.slot)),
            ))
        }
        SignKind::SyncCommitteeSelectionProof => {
            let selection: altair::SyncAggregatorSelectionData = object.decode()?;
            Signed::unprotected(compute_signing_root(
                &selection,
                at_slot(DOMAIN_SYNC_COMMITTEE_SELECTION_PROOF, Slot(selection.slot)),
            ))
        }
        SignKind::SyncCommitteeContributionAndProof => {
            let slot = Slot(object.decode::<ContributionSlotProbe>()?.contribution.slot);
            let contribution_root = match network.preset {
                Preset::Mainnet => {
                    root_of(&object.decode::<altair::ContributionAndProof<MainnetSpec>>()?)
                }
                Preset::Minimal => {
                    root_of(&object.decode::<altair::ContributionAndProof<MinimalSpec>>()?)
                }
            };
            Signed::unprotected(compute_signing_root(
                &contribution_root,
                at_slot(DOMAIN_CONTRIBUTION_AND_PROOF, slot),
            ))
        }
        SignKind::Deposit | SignKind::ValidatorRegistration => {
            return sign_without_fork(kind, object, network)
        }
    })
}

/// Types whose domain does not depend on the chain's current fork.
fn sign_without_fork(
    kind: SignKind,
    object: Node<'_>,
    network: &Network,
) -> Result<Signed, RequestError> {
    match kind {
        SignKind::Deposit => {
            let deposit: DepositRequest = object.decode()?;
            let message = phase0::DepositMessage {
                pubkey: deposit.pubkey,
                withdrawal_credentials: deposit.withdrawal_credentials,
                amount: deposit.amount,
            };
            let domain = compute_domain(DOMAIN_DEPOSIT, deposit.genesis_fork_version, ZERO_ROOT);
            Ok(Signed::unprotected(compute_signing_root(&message, domain)))
        }
        SignKind::ValidatorRegistration => {
            let registration: builder::ValidatorRegistrationV1 = object.decode()?;
            let domain = compute_domain(
                DOMAIN_APPLICATION_BUILDER,
                network.genesis_fork_version,
                ZERO_ROOT,
            );
            Ok(Signed::unprotected(compute_signing_root(
                &registration,
                domain,
            )))
        }
        // Unreachable through `parse_sign_request` (it demands fork_info for these), but a
        // caller of this function must still get a client error, not a panic.
        _ => Err(RequestError::MissingField {
            field: "fork_info".to_owned(),
        }),
    }
}

/// BLOCK_V2: PHASE0/ALTAIR carry a full `block`, later versions a `block_header`.
fn block_v2_root(beacon_block: Node<'_>, network: &Network) -> Result<(Slot, Root), RequestError> {
    let version_node = beacon_block.member("version")?;
    let version = version_node.fork_name()?;
    match version {
        ForkName::Phase0 | ForkName::Altair => {
            let block = beacon_block.member("block")?;
            let slot = Slot(block.decode::<SlotProbe>()?.slot);
            let fork = network.fork_at_slot(slot);
            if fork != version {
                return Err(RequestError::VersionMismatch {
                    field: version_node.path(),
                    version,
                    network_fork: fork,
                    slot,
                    network: network.name.clone(),
                });
            }
            Ok((slot, full_block_root(block, fork, slot, network)?))
        }
        ForkName::Bellatrix
        | ForkName::Capella
        | ForkName::Deneb
        | ForkName::Electra
        | ForkName::Fulu => {
            let header: phase0::BeaconBlockHeader =
                beacon_block.member("block_header")?.decode()?;
            Ok((Slot(header.slot), root_of(&header)))
        }
    }
}

/// `hash_tree_root` of a full block in the schema of `fork` (PHASE0 or ALTAIR).
fn full_block_root(
    block: Node<'_>,
    fork: ForkName,
    slot: Slot,
    network: &Network,
) -> Result<Root, RequestError> {
    match network.preset {
        Preset::Mainnet => full_block_root_in::<MainnetSpec>(block, fork, slot),
        Preset::Minimal => full_block_root_in::<MinimalSpec>(block, fork, slot),
    }
}

fn full_block_root_in<P: PresetSpec>(
    block: Node<'_>,
    fork: ForkName,
    slot: Slot,
) -> Result<Root, RequestError> {
    match fork {
        ForkName::Phase0 => Ok(root_of(&block.decode::<phase0::BeaconBlock<P>>()?)),
        ForkName::Altair => Ok(root_of(&block.decode::<altair::BeaconBlock<P>>()?)),
        ForkName::Bellatrix
        | ForkName::Capella
        | ForkName::Deneb
        | ForkName::Electra
        | ForkName::Fulu => Err(RequestError::FullBlockAfterAltair {
            field: block.child_path("slot"),
            slot,
            fork,
        }),
    }
}

/// `hash_tree_root` of an `AggregateAndProof` in the schema of `fork`.
fn aggregate_and_proof_root(
    object: Node<'_>,
    fork: ForkName,
    network: &Network,
) -> Result<Root, RequestError> {
    match network.preset {
        Preset::Mainnet => aggregate_and_proof_root_in::<MainnetSpec>(object, fork),
        Preset::Minimal => aggregate_and_proof_root_in::<MinimalSpec>(object, fork),
    }
}

fn aggregate_and_proof_root_in<P: PresetSpec>(
    object: Node<'_>,
    fork: ForkName,
) -> Result<Root, RequestError> {
    if fork.has_electra_attestations() {
        Ok(root_of(&object.decode::<electra::AggregateAndProof<P>>()?))
    } else {
        Ok(root_of(&object.decode::<phase0::AggregateAndProof<P>>()?))
    }
}

/// `fork_info` of a request.
#[derive(Debug, Clone, Deserialize)]
struct ForkInfo {
    fork: Fork,
    genesis_validators_root: Root,
}

#[derive(Debug, Clone, Deserialize)]
struct Fork {
    previous_version: ForkVersion,
    current_version: ForkVersion,
    #[serde(with = "quoted_u64")]
    epoch: u64,
}

impl ForkInfo {
    /// The domain at `epoch`: the previous fork version before the fork epoch, the current one
    /// from it on.
    fn domain(&self, domain_type: DomainType, epoch: Epoch) -> Domain {
        let version = if epoch.0 < self.fork.epoch {
            self.fork.previous_version
        } else {
            self.fork.current_version
        };
        compute_domain(domain_type, version, self.genesis_validators_root)
    }
}

/// The `deposit` object: a `DepositMessage` plus the fork version it is signed for.
#[derive(Deserialize)]
struct DepositRequest {
    pubkey: BlsPublicKey,
    withdrawal_credentials: Bytes32,
    #[serde(with = "quoted_u64")]
    amount: u64,
    genesis_fork_version: ForkVersion,
}

#[derive(Deserialize)]
struct SyncCommitteeMessage {
    beacon_block_root: Root,
    #[serde(with = "quoted_u64")]
    slot: u64,
}

/// Reads only `slot`, to pick a schema before decoding the rest.
#[derive(Deserialize)]
struct SlotProbe {
    #[serde(with = "quoted_u64")]
    slot: u64,
}

#[derive(Deserialize)]
struct EpochProbe {
    #[serde(with = "quoted_u64")]
    epoch: u64,
}

#[derive(Deserialize)]
struct AggregateSlotProbe {
    aggregate: AttestationSlotProbe,
}

#[derive(Deserialize)]
struct AttestationSlotProbe {
    data: SlotProbe,
}

#[derive(Deserialize)]
struct ContributionSlotProbe {
    contribution: SlotProbe,
}

/// A JSON value with the path that reached it, so every error names its field.
#[derive(Clone, Copy)]
struct Node<'a> {
    value: &'a Value,
    parent: Option<&'a Node<'a>>,
    key: &'a str,
}

impl<'a> Node<'a> {
    fn root(value: &'a Value) -> Self {
        Self {
            value,
            parent: None,
            key: "",
        }
    }

    /// The dotted path of this node (`"beacon_block.block"`); empty at the root.
    fn path(&self) -> String {
        match self.parent {
            None => String::new(),
            Some(parent) => join_path(&parent.path(), self.key),
        }
    }

    fn child_path(&self, suffix: &str) -> String {
        join_path(&self.path(), suffix)
    }

    /// A member that may be absent; JSON `null` counts as absent.
    fn optional_member(&'a self, key: &'a str) -> Result<Option<Node<'a>>, RequestError> {
        let Value::Object(members) = self.value else {
            return Err(RequestError::InvalidField {
                field: self.path(),
                message: "expected a JSON object".to_owned(),
            });
        };
        Ok(members
            .get(key)
            .filter(|value| !value.is_null())
            .map(|value| Node {
                value,
                parent: Some(self),
                key,
            }))
    }

    fn member(&'a self, key: &'a str) -> Result<Node<'a>, RequestError> {
        self.optional_member(key)?
            .ok_or_else(|| RequestError::MissingField {
                field: self.child_path(key),
            })
    }

    fn decode<T: DeserializeOwned>(&self) -> Result<T, RequestError> {
        serde_path_to_error::deserialize(self.value).map_err(|error| {
            let mut inner_path = String::new();
            for segment in error.path().iter() {
                inner_path = match segment {
                    serde_path_to_error::Segment::Seq { index } => {
                        format!("{inner_path}[{index}]")
                    }
                    serde_path_to_error::Segment::Map { key } => join_path(&inner_path, key),
                    serde_path_to_error::Segment::Enum { variant } => {
                        join_path(&inner_path, variant)
                    }
                    serde_path_to_error::Segment::Unknown => join_path(&inner_path, "?"),
                };
            }
            let field = self.child_path(&inner_path);
            let message = error.into_inner().to_string();
            match missing_field_name(&message) {
                Some(name) => RequestError::MissingField {
                    field: join_path(&field, name),
                },
                None => RequestError::InvalidField { field, message },
            }
        })
    }

    /// A fork `version` name (ASCII case ignored).
    fn fork_name(&self) -> Result<ForkName, RequestError> {
        let text: String = self.decode()?;
        ForkName::from_api_name(&text).ok_or_else(|| RequestError::UnknownVersion {
            field: self.path(),
            version: text,
        })
    }
}

fn join_path(prefix: &str, suffix: &str) -> String {
    if prefix.is_empty() {
        suffix.to_owned()
    } else if suffix.is_empty() || suffix.starts_with('[') {
        format!("{prefix}{suffix}")
    } else {
        format!("{prefix}.{suffix}")
    }
}

/// serde reports a missing member as "missing field `name`" on the enclosing object; the field
/// path should name the member itself.
fn missing_field_name(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")?
        .split_once('`')
        .map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_cases(folder: &str) -> Vec<(String, Value)> {
        crate::test_vectors::load_folder(folder)
    }

    fn text<'v>(value: &'v Value, pointer: &str) -> &'v str {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("vector field {pointer}"))
    }

    fn body(request: &Value) -> Vec<u8> {
        serde_json::to_vec(request).expect("serialize request")
    }

    fn vector_network(case: &Value) -> Network {
        let name = text(case, "/network/name");
        let network = Network::by_name(name).expect("vector network is built in");
        assert_eq!(text(case, "/network/preset"), network.preset.as_str());
        assert_eq!(
            text(case, "/network/genesis_fork_version"),
            network.genesis_fork_version.to_hex()
        );
        assert_eq!(
            case.pointer("/network/slots_per_epoch")
                .and_then(Value::as_u64),
            Some(network.slots_per_epoch)
        );
        network
    }

    /// Checks one `web3signer/` case fully; returns its kind.
    fn check_web3signer_case(name: &str, case: &Value) -> SignKind {
        let network = vector_network(case);
        let request = &case["request"];
        let expected: Root = text(case, "/signing_root").parse().expect("root");
        let intent = parse_sign_request(&body(request), &network)
            .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
        assert_eq!(intent.signing_root, expected, "{name}: signing root");
        assert_eq!(intent.kind.as_str(), text(request, "/type"), "{name}: kind");
        let gvr = request
            .pointer("/fork_info/genesis_validators_root")
            .and_then(Value::as_str)
            .map(|root| root.parse::<Root>().expect("gvr"));
        assert_eq!(intent.genesis_validators_root, gvr, "{name}: gvr");
        let expected_slashing = match intent.kind {
            SignKind::BlockV2 => {
                let block = request
                    .pointer("/beacon_block/block")
                    .or_else(|| request.pointer("/beacon_block/block_header"))
                    .expect("block");
                Some(SlashingCheck::Block {
                    slot: text(block, "/slot").parse().expect("slot"),
                })
            }
            SignKind::Attestation => Some(SlashingCheck::Attestation {
                source: text(request, "/attestation/source/epoch")
                    .parse()
                    .expect("source"),
                target: text(request, "/attestation/target/epoch")
                    .parse()
                    .expect("target"),
            }),
            _ => None,
        };
        assert_eq!(intent.slashing, expected_slashing, "{name}: slashing");

        // `type` ignores case, `signing_root` is the other accepted spelling, and a wrong
        // supplied root is refused under either spelling.
        let mut variant = request.clone();
        let lowercase = text(request, "/type").to_ascii_lowercase();
        variant["type"] = Value::String(lowercase);
        if let Some(object) = variant.as_object_mut() {
            object.remove("signingRoot");
            object.insert("signing_root".into(), Value::String(expected.to_hex()));
        }
        let again = parse_sign_request(&body(&variant), &network)
            .unwrap_or_else(|e| panic!("{name}: variant refused: {e}"));
        assert_eq!(again.signing_root, expected, "{name}: variant root");
        let mut wrong = expected.0;
        wrong[31] ^= 1;
        for spelling in ["signingRoot", "signing_root"] {
            let mut tampered = request.clone();
            tampered[spelling] = Value::String(Root(wrong).to_hex());
            let error =
                parse_sign_request(&body(&tampered), &network).expect_err("tampered signing root");
            assert!(
                matches!(error, RequestError::SigningRootMismatch { .. }),
                "{name}: {error}"
            );
            assert_eq!(error.field(), Some(spelling));
        }
        intent.kind
    }

    #[test]
    fn slashing_check_with_signing_root() {
        let root = Root([7; 32]);
        assert_eq!(
            SlashingCheck::Block { slot: Slot(9) }.with_signing_root(root),
            SlashingRequest::Block {
                slot: Slot(9),
                signing_root: root
            }
        );
        assert_eq!(
            SlashingCheck::Attestation {
                source: Epoch(3),
                target: Epoch(4)
            }
            .with_signing_root(root),
            SlashingRequest::Attestation {
                source: Epoch(3),
                target: Epoch(4),
                signing_root: root
            }
        );
    }

    #[test]
    fn web3signer_attestation_and_block_v2_vectors() {
        let mut checked = 0;
        for (name, case) in load_cases("web3signer") {
            let kind = text(&case, "/request/type");
            if kind == "ATTESTATION" || kind == "BLOCK_V2" {
                check_web3signer_case(&name, &case);
                checked += 1;
            }
        }
        assert!(
            checked >= 30,
            "only {checked} ATTESTATION/BLOCK_V2 cases found"
        );
    }

    #[test]
    fn web3signer_all_vectors() {
        let cases = load_cases("web3signer");
        assert_eq!(cases.len(), 84, "vector count");
        let mut kinds = std::collections::HashSet::new();
        for (name, case) in &cases {
            kinds.insert(check_web3signer_case(name, case));
        }
        // Every type except the deprecated BLOCK (no oracle vector) is exercised.
        assert_eq!(kinds.len(), SignKind::ALL.len() - 1);
    }

    #[test]
    fn web3signer_negative_vectors_are_refused() {
        let network = Network::mainnet();
        let mut refused = 0;
        for (name, case) in load_cases("web3signer-negative") {
            if case["recommended_status"].as_u64() != Some(400) {
                continue;
            }
            let request_body = match case.get("raw_body").and_then(Value::as_str) {
                Some(raw) => raw.as_bytes().to_vec(),
                None => body(&case["request"]),
            };
            let error = parse_sign_request(&request_body, &network)
                .expect_err(&format!("{name} must be refused"));
            let expected_field = match name.as_str() {
                "aggregate_and_proof_v2_electra_without_committee_bits" => {
                    Some("aggregate_and_proof.data.aggregate.committee_bits")
                }
                "attestation_missing_fork_info" => Some("fork_info"),
                "block_v2_deneb_block_instead_of_header" => Some("beacon_block.block_header"),
                "block_v2_phase0_block_header_only" => Some("beacon_block.block"),
                "block_v2_unknown_version" => Some("beacon_block.version"),
                "contribution_aggregation_bits_wrong_length" => {
                    Some("contribution_and_proof.contribution.aggregation_bits")
                }
                "deposit_missing_genesis_fork_version" => Some("deposit.genesis_fork_version"),
                "fork_version_3_bytes" => Some("fork_info.fork.current_version"),
                "odd_length_hex" | "root_31_bytes" | "root_not_hex" => {
                    Some("attestation.beacon_block_root")
                }
                "signing_root_mismatch" => Some("signingRoot"),
                "uint64_negative" => Some("randao_reveal.epoch"),
                "uint64_overflow" => Some("attestation.slot"),
                "unknown_type" => Some("type"),
                "empty_body" | "malformed_json" => None,
                other => panic!("new negative case {other}: add its expected field"),
            };
            assert_eq!(error.field(), expected_field, "{name}: {error}");
            refused += 1;
        }
        assert_eq!(refused, 17);
    }

    /// Web3Signer's OpenAPI examples come from Teku test specs where the example's fork is active
    /// from genesis; the network here schedules every fork up to the request's `version` at
    /// epoch 0 (PHASE0 only when the request has no version).
    fn openapi_network(case: &Value) -> Network {
        let preset = match text(case, "/network/preset") {
            "mainnet" => Preset::Mainnet,
            "minimal" => Preset::Minimal,
            other => panic!("unknown preset {other}"),
        };
        let genesis = text(case, "/network/genesis_fork_version")
            .parse()
            .expect("genesis fork version");
        example_network(preset, genesis, &case["request"])
    }

    fn example_network(preset: Preset, genesis: ForkVersion, request: &Value) -> Network {
        let version = request
            .pointer("/beacon_block/version")
            .or_else(|| request.pointer("/aggregate_and_proof/version"))
            .and_then(Value::as_str)
            .map_or(ForkName::Phase0, |name| {
                ForkName::from_api_name(name).expect("example version")
            });
        let forks = ForkName::ALL[1..]
            .iter()
            .zip(1u8..)
            .filter(|(fork, _)| **fork <= version)
            .map(|(fork, ordinal)| crate::consensus::ScheduledFork {
                fork: *fork,
                version: ForkVersion([ordinal, 0, 0, 1]),
                epoch: Epoch(0),
            })
            .collect();
        Network::new(
            "openapi-example",
            preset,
            genesis,
            preset.slots_per_epoch(),
            forks,
        )
        .expect("example network")
    }

    #[test]
    fn web3signer_openapi_examples() {
        let mut reproduced = 0;
        for (name, case) in load_cases("web3signer-openapi-examples") {
            if case["status"].as_str() != Some("oracle_agrees") {
                continue;
            }
            let network = openapi_network(&case);
            let expected: Root = text(&case, "/web3signer_signing_root")
                .parse()
                .expect("root");
            let intent = parse_sign_request(&body(&case["request"]), &network)
                .unwrap_or_else(|e| panic!("{name}: refused: {e}"));
            assert_eq!(intent.signing_root, expected, "{name}");
            reproduced += 1;
        }
        assert_eq!(reproduced, 21);
    }

    fn snake_case_keys(value: &Value) -> Value {
        match value {
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(key, member)| {
                        let mut snake = String::new();
                        for character in key.chars() {
                            if character.is_ascii_uppercase() {
                                snake.push('_');
                            }
                            snake.push(character.to_ascii_lowercase());
                        }
                        (snake, snake_case_keys(member))
                    })
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.iter().map(snake_case_keys).collect()),
            other => other.clone(),
        }
    }

    /// The two examples Web3Signer wrote with camelCase keys (which its own deserializer does not
    /// read) reproduce once the keys are snake_case; the camelCase originals are refused.
    #[test]
    fn web3signer_openapi_camel_case_examples() {
        for name in ["aggregation_slot", "block_deprecated"] {
            let (_, case) = load_cases("web3signer-openapi-examples")
                .into_iter()
                .find(|(file, _)| file == name)
                .expect("example");
            // Same network as the reproduced examples: genesis fork version 0x00000001, mainnet.
            let network =
                example_network(Preset::Mainnet, ForkVersion([0, 0, 0, 1]), &case["request"]);
            let error = parse_sign_request(&body(&case["request"]), &network)
                .expect_err("camelCase fork keys");
            assert_eq!(error.field(), Some("fork_info.fork.previous_version"));
            let mut request = snake_case_keys(&case["request"]);
            request["signingRoot"] = case["request"]["signingRoot"].clone();
            let intent = parse_sign_request(&body(&request), &network)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                Some(intent.signing_root.to_hex().as_str()),
                case["web3signer_signing_root"].as_str(),
                "{name}"
            );
        }
    }

    fn attestation_request() -> Value {
        let cases = load_cases("web3signer");
        let (_, case) = cases
            .into_iter()
            .find(|(name, _)| name == "attestation__key0")
            .expect("attestation__key0");
        case["request"].clone()
    }

    #[test]
    fn field_paths_name_the_offender() {
        let network = Network::mainnet();
        let mut request = attestation_request();
        request["attestation"]["target"]["epoch"] = Value::String("x1".into());
        let error = parse_sign_request(&body(&request), &network).expect_err("bad epoch");
        assert_eq!(error.field(), Some("attestation.target.epoch"));
        assert_eq!(
            error.to_string(),
            "attestation.target.epoch: expected a decimal unsigned 64-bit integer"
        );

        let mut request = attestation_request();
        if let Some(object) = request.as_object_mut() {
            object.remove("fork_info");
        }
        let error = parse_sign_request(&body(&request), &network).expect_err("no fork_info");
        assert_eq!(error.to_string(), "missing field `fork_info`");

        let mut request = attestation_request();
        if let Some(object) = request.as_object_mut() {
            object.remove("attestation");
        }
        let error = parse_sign_request(&body(&request), &network).expect_err("no attestation");
        assert_eq!(error.field(), Some("attestation"));

        let mut request = attestation_request();
        request["fork_info"]["fork"] = Value::String("nope".into());
        let error = parse_sign_request(&body(&request), &network).expect_err("fork not object");
        assert_eq!(error.field(), Some("fork_info.fork"));
    }

    #[test]
    fn unknown_fields_are_ignored_and_source_above_target_passes() {
        let network = Network::mainnet();
        let mut request = attestation_request();
        if let Some(object) = request.as_object_mut() {
            object.remove("signingRoot");
            object.insert("extra".into(), Value::Bool(true));
        }
        request["attestation"]["colour"] = Value::String("blue".into());
        request["attestation"]["source"]["epoch"] = Value::String("500000".into());
        let intent = parse_sign_request(&body(&request), &network).expect("accepted");
        assert_eq!(
            intent.slashing,
            Some(SlashingCheck::Attestation {
                source: Epoch(500_000),
                target: Epoch(410_077)
            })
        );
    }

    #[test]
    fn schema_follows_the_network_fork_at_the_slot() {
        let network = Network::mainnet();
        let cases = load_cases("web3signer");
        let request_of = |wanted: &str| {
            cases
                .iter()
                .find(|(name, _)| name == wanted)
                .map(|(_, case)| case["request"].clone())
                .expect("vector")
        };

        // A PHASE0 block at an Altair slot: the version disagrees with the network.
        let mut block = request_of("block_v2_phase0__key0");
        block["beacon_block"]["block"]["slot"] = Value::String((74_240u64 * 32).to_string());
        let error = parse_sign_request(&body(&block), &network).expect_err("mismatch");
        assert!(
            matches!(error, RequestError::VersionMismatch { .. }),
            "{error}"
        );
        assert_eq!(error.field(), Some("beacon_block.version"));

        // The deprecated BLOCK type takes the same full block, by the fork at its slot.
        let phase0 = request_of("block_v2_phase0__key0");
        let mut deprecated = phase0.clone();
        if let Some(object) = deprecated.as_object_mut() {
            object.insert("type".into(), Value::String("BLOCK".into()));
            object.insert("block".into(), phase0["beacon_block"]["block"].clone());
            object.remove("beacon_block");
        }
        let intent = parse_sign_request(&body(&deprecated), &network).expect("BLOCK");
        assert_eq!(intent.kind, SignKind::Block);
        assert_eq!(
            Some(intent.signing_root.to_hex().as_str()),
            phase0["signingRoot"].as_str()
        );
        deprecated["block"]["slot"] = Value::String((144_896u64 * 32).to_string());
        if let Some(object) = deprecated.as_object_mut() {
            object.remove("signingRoot");
        }
        let error = parse_sign_request(&body(&deprecated), &network).expect_err("bellatrix");
        assert!(
            matches!(error, RequestError::FullBlockAfterAltair { .. }),
            "{error}"
        );

        // An Electra aggregate at a Deneb slot, and a deprecated aggregate at an Electra slot.
        let mut electra = request_of("aggregate_and_proof_v2_electra__key0");
        electra["aggregate_and_proof"]["data"]["aggregate"]["data"]["slot"] =
            Value::String("100".into());
        let error = parse_sign_request(&body(&electra), &network).expect_err("family");
        assert_eq!(error.field(), Some("aggregate_and_proof.version"));
        let mut legacy = request_of("aggregate_and_proof__key0");
        legacy["aggregate_and_proof"]["aggregate"]["data"]["slot"] =
            Value::String((364_032u64 * 32).to_string());
        let error = parse_sign_request(&body(&legacy), &network).expect_err("electra slot");
        assert!(
            matches!(error, RequestError::DeprecatedAggregateAfterElectra { .. }),
            "{error}"
        );
    }

    #[test]
    fn minimal_preset_changes_contribution_sizes() {
        let cases = load_cases("web3signer");
        let (_, case) = cases
            .iter()
            .find(|(name, _)| name == "sync_committee_contribution_and_proof__key0")
            .expect("vector");
        let minimal = Network::new(
            "minimal-devnet",
            Preset::Minimal,
            ForkVersion([0; 4]),
            8,
            Vec::new(),
        )
        .expect("network");
        // Mainnet's 16-byte subcommittee bits do not fit the minimal preset's 1 byte.
        let error = parse_sign_request(&body(&case["request"]), &minimal).expect_err("size");
        assert_eq!(
            error.field(),
            Some("contribution_and_proof.contribution.aggregation_bits")
        );
    }

    #[test]
    fn non_object_bodies_are_refused() {
        let network = Network::mainnet();
        for raw in [
            "",
            "[]",
            "\"ATTESTATION\"",
            "{\"type\": 5}",
            "{}",
            "{\"type\":\"BLOCK_V3\"}",
        ] {
            let error = parse_sign_request(raw.as_bytes(), &network).expect_err(raw);
            match raw {
                "{}" => assert_eq!(error.field(), Some("type")),
                "{\"type\": 5}" => assert_eq!(error.field(), Some("type")),
                "{\"type\":\"BLOCK_V3\"}" => {
                    assert_eq!(error, RequestError::UnknownType("BLOCK_V3".into()))
                }
                _ => assert_eq!(error.field(), None, "{raw}"),
            }
        }
    }
}
