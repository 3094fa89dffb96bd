//! Preset-dependent list and bitfield sizes as type-level numbers, so one container definition
//! serves both the mainnet and the minimal preset (the minimal preset shrinks the sync committee
//! and the committees per slot, which changes full-block, aggregate and contribution roots).
//!
//! Only the sizes of containers a validator signs are here; nothing else is refused or checked.
#![forbid(unsafe_code)]

use std::fmt::Debug;

use ssz_types::typenum::{Prod, Quot, Unsigned, U128, U16, U2, U2048, U32, U4, U512, U64};

use super::Preset;

/// A type-level size: what `ssz_types` lists and bitfields need from their length parameter.
pub trait SszLength: Unsigned + Clone + Debug + PartialEq + Eq + Send + Sync + 'static {}

impl<T: Unsigned + Clone + Debug + PartialEq + Eq + Send + Sync + 'static> SszLength for T {}

/// The consensus-spec preset constants that size signed containers.
pub trait PresetSpec: Clone + Copy + Debug + PartialEq + Eq + Send + Sync + 'static {
    /// The runtime name of this preset.
    const PRESET: Preset;
    /// `MAX_VALIDATORS_PER_COMMITTEE`.
    type MaxValidatorsPerCommittee: SszLength;
    /// `MAX_COMMITTEES_PER_SLOT` (also the length of Electra's `committee_bits`).
    type MaxCommitteesPerSlot: SszLength;
    /// `MAX_VALIDATORS_PER_COMMITTEE * MAX_COMMITTEES_PER_SLOT` (Electra `aggregation_bits` limit).
    type MaxValidatorsPerSlot: SszLength;
    /// `MAX_PROPOSER_SLASHINGS`.
    type MaxProposerSlashings: SszLength;
    /// `MAX_ATTESTER_SLASHINGS`.
    type MaxAttesterSlashings: SszLength;
    /// `MAX_ATTESTATIONS`.
    type MaxAttestations: SszLength;
    /// `MAX_DEPOSITS`.
    type MaxDeposits: SszLength;
    /// `MAX_VOLUNTARY_EXITS`.
    type MaxVoluntaryExits: SszLength;
    /// `SYNC_COMMITTEE_SIZE`.
    type SyncCommitteeSize: SszLength;
    /// `SYNC_COMMITTEE_SIZE / SYNC_COMMITTEE_SUBNET_COUNT` (contribution `aggregation_bits`).
    type SyncSubcommitteeSize: SszLength;
}

/// One [`PresetSpec`]. The two presets differ, in what a validator signs, only in
/// `MAX_COMMITTEES_PER_SLOT` and `SYNC_COMMITTEE_SIZE`; the other sizes are the same in both
/// and the two products/quotients are derived, so each preset names just its two numbers.
macro_rules! preset_spec {
    ($(#[$doc:meta])* $spec:ident = $preset:ident {
        committees_per_slot: $committees:ty,
        sync_committee_size: $sync:ty $(,)?
    }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
        pub struct $spec;

        impl PresetSpec for $spec {
            const PRESET: Preset = Preset::$preset;
            type MaxValidatorsPerCommittee = U2048;
            type MaxCommitteesPerSlot = $committees;
            type MaxValidatorsPerSlot = Prod<U2048, $committees>;
            type MaxProposerSlashings = U16;
            type MaxAttesterSlashings = U2;
            type MaxAttestations = U128;
            type MaxDeposits = U16;
            type MaxVoluntaryExits = U16;
            type SyncCommitteeSize = $sync;
            /// `SYNC_COMMITTEE_SUBNET_COUNT` is 4 in every preset.
            type SyncSubcommitteeSize = Quot<$sync, U4>;
        }
    };
}

preset_spec! {
    /// The mainnet preset.
    MainnetSpec = Mainnet { committees_per_slot: U64, sync_committee_size: U512 }
}

preset_spec! {
    /// The minimal preset (test networks and many devnets).
    MinimalSpec = Minimal { committees_per_slot: U4, sync_committee_size: U32 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sizes both presets share, in `PresetSpec` order.
    fn shared_sizes<P: PresetSpec>() -> [usize; 6] {
        [
            P::MaxValidatorsPerCommittee::to_usize(),
            P::MaxProposerSlashings::to_usize(),
            P::MaxAttesterSlashings::to_usize(),
            P::MaxAttestations::to_usize(),
            P::MaxDeposits::to_usize(),
            P::MaxVoluntaryExits::to_usize(),
        ]
    }

    #[test]
    fn preset_sizes_follow_the_specs() {
        assert_eq!(
            <MainnetSpec as PresetSpec>::MaxValidatorsPerSlot::to_usize(),
            131_072
        );
        assert_eq!(
            <MinimalSpec as PresetSpec>::MaxValidatorsPerSlot::to_usize(),
            8_192
        );
        assert_eq!(
            <MainnetSpec as PresetSpec>::SyncCommitteeSize::to_usize(),
            512
        );
        assert_eq!(
            <MinimalSpec as PresetSpec>::SyncCommitteeSize::to_usize(),
            32
        );
        assert_eq!(
            <MainnetSpec as PresetSpec>::MaxCommitteesPerSlot::to_usize(),
            64
        );
        assert_eq!(
            <MinimalSpec as PresetSpec>::MaxCommitteesPerSlot::to_usize(),
            4
        );
        assert_eq!(
            <MainnetSpec as PresetSpec>::SyncSubcommitteeSize::to_usize(),
            128
        );
        assert_eq!(
            <MinimalSpec as PresetSpec>::SyncSubcommitteeSize::to_usize(),
            8
        );
        assert_eq!(MainnetSpec::PRESET, Preset::Mainnet);
        assert_eq!(MinimalSpec::PRESET, Preset::Minimal);
        // Shared by both presets.
        assert_eq!(shared_sizes::<MainnetSpec>(), [2048, 16, 2, 128, 16, 16]);
        assert_eq!(shared_sizes::<MinimalSpec>(), [2048, 16, 2, 128, 16, 16]);
        // SYNC_COMMITTEE_SUBNET_COUNT is 4 in both presets.
        assert_eq!(
            <MainnetSpec as PresetSpec>::SyncSubcommitteeSize::to_usize() * 4,
            <MainnetSpec as PresetSpec>::SyncCommitteeSize::to_usize()
        );
        assert_eq!(
            <MinimalSpec as PresetSpec>::SyncSubcommitteeSize::to_usize() * 4,
            <MinimalSpec as PresetSpec>::SyncCommitteeSize::to_usize()
        );
    }
}
