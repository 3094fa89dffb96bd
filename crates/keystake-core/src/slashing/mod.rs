//! EIP-3076 slashing rules as pure functions over a small [`History`] view.
//!
//! A check answers [`Safe`] (sign; `SameData` means the identical message was signed before and
//! may be answered again) or [`NotSafe`], which carries the earlier record it conflicts with so a
//! refusal can say *why*. The rules (design.md §5):
//! - no second block at a slot with a different (or unknown) signing root;
//! - no double vote (same target epoch, different or unknown signing root);
//! - no surround vote in either direction;
//! - no attestation whose source epoch exceeds its target epoch;
//! - nothing at or below the key's low watermark (raised only by interchange import, a
//!   configured minimum, or pruning old history; never by our own signing history).
//!
//! Pruning ([`prune_cut`], [`Watermark::covering`]) removes a key's old attestations and raises
//! its watermark over what it removed, so that the key refuses at least everything it refused
//! before (see [`Watermark::covering`] for why) and history stops growing without bound.
//!
//! A request to check is a [`SlashingRequest`] (built from a decoded signing request's
//! `SlashingCheck` and signing root); [`check`] answers it, and a refused one is a [`Refusal`]:
//! slashable ([`NotSafe`]) or for another network ([`binding`], the rule that binds a database to
//! one genesis validators root).
//!
//! This module does no I/O: the store implements [`History`] over SQLite inside the same
//! exclusive transaction that then records the signature. The EIP-3076 interchange model lives in
//! [`interchange`].
#![forbid(unsafe_code)]

pub mod binding;
pub mod interchange;

use serde::Serialize;

use crate::types::{Epoch, Root, Slot};

/// A block proposal already in the history. `signing_root` is `None` for entries imported from
/// an interchange file without a root: those conflict with everything at their slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SignedBlock {
    pub slot: Slot,
    pub signing_root: Option<Root>,
}

/// An attestation already in the history (see [`SignedBlock`] about a missing root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SignedAttestation {
    pub source: Epoch,
    pub target: Epoch,
    pub signing_root: Option<Root>,
}

/// The per-key lower bounds below which nothing is signed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Watermark {
    /// No block at or below this slot.
    pub block_slot: Option<Slot>,
    /// No attestation with a source below this epoch.
    pub attestation_source: Option<Epoch>,
    /// No attestation with a target at or below this epoch.
    pub attestation_target: Option<Epoch>,
}

impl Watermark {
    /// The attestation watermark that stands in for removed attestations whose greatest source
    /// epoch is `max_source` and greatest target epoch `max_target` (pruning): raised to it, a
    /// key refuses every attestation the removed ones made it refuse, provided the removal takes
    /// every record of each target it touches. A request the removed record `(s0, t0)` refused
    /// was
    /// - a double vote: its target is `t0 ≤ max_target`, and no record is left at `t0` that could
    ///   answer it as an identical re-request (which [`check_attestation`] decides *before* the
    ///   watermark) — so the target watermark refuses it;
    /// - surrounded by it (`s0 < s`, `t < t0`): `t < max_target`, below the target watermark;
    /// - surrounding it (`s < s0`, `t0 < t`): `s < max_source`, below the source watermark.
    ///
    /// Removing only some records of one target would break the first case: a rootless import
    /// next to a signed record at the same target refuses that record's re-request as a double
    /// vote; without the rootless one it would be answered again.
    ///
    /// The price: an identical re-request of a removed attestation, which the history alone
    /// would answer again, is refused too. The block watermark is untouched: blocks are not
    /// pruned (a key proposes a few a year).
    pub fn covering(max_source: Epoch, max_target: Epoch) -> Watermark {
        Watermark {
            block_slot: None,
            attestation_source: Some(max_source),
            attestation_target: Some(max_target),
        }
    }

    /// The higher of two watermarks, component by component (an import never lowers one).
    pub fn max(self, other: Watermark) -> Watermark {
        Watermark {
            block_slot: self.block_slot.max(other.block_slot),
            attestation_source: self.attestation_source.max(other.attestation_source),
            attestation_target: self.attestation_target.max(other.attestation_target),
        }
    }
}

/// A surround query: earlier attestations that stand in a surround relation to a new one
/// `source → target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surround {
    /// The earlier one surrounds the new: `prev.source < source && prev.target > target`.
    PreviousSurroundsNew { source: Epoch, target: Epoch },
    /// The new one surrounds the earlier: `prev.source > source && prev.target < target`.
    NewSurroundsPrevious { source: Epoch, target: Epoch },
}

impl Surround {
    /// Whether `previous` answers this query.
    pub fn holds(self, previous: &SignedAttestation) -> bool {
        match self {
            Surround::PreviousSurroundsNew { source, target } => {
                previous.source < source && previous.target > target
            }
            Surround::NewSurroundsPrevious { source, target } => {
                previous.source > source && previous.target < target
            }
        }
    }
}

/// What the rules need to know about one key's history. Implemented by the store (inside its
/// transaction) and by in-memory models in tests.
pub trait History {
    type Error;
    /// Every block recorded at `slot` (an import may have left several).
    fn blocks_at(&self, slot: Slot) -> Result<Vec<SignedBlock>, Self::Error>;
    /// Every attestation recorded with this target epoch.
    fn attestations_with_target(
        &self,
        target: Epoch,
    ) -> Result<Vec<SignedAttestation>, Self::Error>;
    /// One attestation that answers the surround query, if any.
    fn attestation_surround(
        &self,
        surround: Surround,
    ) -> Result<Option<SignedAttestation>, Self::Error>;
    fn watermark(&self) -> Result<Watermark, Self::Error>;
}

/// The request may be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Safe {
    /// Nothing conflicts; the signature must be recorded before it is released.
    Valid,
    /// The identical message (same signing root) was signed before: answer it again, record nothing.
    SameData,
}

/// The request must be refused. Each variant carries what it conflicts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum NotSafe {
    #[error("double block proposal: a different block was already signed at slot {}", previous.slot)]
    DoubleBlockProposal { previous: SignedBlock },
    #[error("block slot {slot} is at or below the low watermark {watermark}")]
    BlockSlotAtOrBelowWatermark { slot: Slot, watermark: Slot },
    #[error("attestation source epoch {source_epoch} exceeds target epoch {target_epoch}")]
    SourceExceedsTarget {
        source_epoch: Epoch,
        target_epoch: Epoch,
    },
    #[error("double vote: a different attestation was already signed with target epoch {}", previous.target)]
    DoubleVote { previous: SignedAttestation },
    #[error("surround vote: the earlier attestation ({}→{}) surrounds this one", previous.source, previous.target)]
    PreviousSurroundsNew { previous: SignedAttestation },
    #[error("surround vote: this attestation surrounds the earlier one ({}→{})", previous.source, previous.target)]
    NewSurroundsPrevious { previous: SignedAttestation },
    #[error("attestation source epoch {source_epoch} is below the low watermark {watermark}")]
    SourceBelowWatermark {
        source_epoch: Epoch,
        watermark: Epoch,
    },
    #[error("attestation target epoch {target} is at or below the low watermark {watermark}")]
    TargetAtOrBelowWatermark { target: Epoch, watermark: Epoch },
}

impl NotSafe {
    /// A short machine-readable rule name (the `rule` field of the 412 body and of metrics).
    pub fn rule(&self) -> &'static str {
        match self {
            NotSafe::DoubleBlockProposal { .. } => "double_block_proposal",
            NotSafe::BlockSlotAtOrBelowWatermark { .. } => "block_slot_at_or_below_watermark",
            NotSafe::SourceExceedsTarget { .. } => "source_exceeds_target",
            NotSafe::DoubleVote { .. } => "double_vote",
            NotSafe::PreviousSurroundsNew { .. } => "previous_surrounds_new",
            NotSafe::NewSurroundsPrevious { .. } => "new_surrounds_previous",
            NotSafe::SourceBelowWatermark { .. } => "source_below_watermark",
            NotSafe::TargetAtOrBelowWatermark { .. } => "target_at_or_below_watermark",
        }
    }
}

/// The outcome of a check: `Ok(Ok(Safe))`, `Ok(Err(NotSafe))`, or `Err` when the history could
/// not be read (the caller refuses with a server error and signs nothing).
pub type Verdict<E> = Result<Result<Safe, NotSafe>, E>;

/// What to check and record for one signing request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlashingRequest {
    Block {
        slot: Slot,
        signing_root: Root,
    },
    Attestation {
        source: Epoch,
        target: Epoch,
        signing_root: Root,
    },
}

/// Why a check-and-record refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Slashable(#[from] NotSafe),
    #[error("genesis validators root {received} differs from {expected}, the network this slashing database is bound to")]
    WrongNetwork { expected: Root, received: Root },
}

impl From<binding::WrongNetwork> for Refusal {
    fn from(wrong: binding::WrongNetwork) -> Self {
        Refusal::WrongNetwork {
            expected: wrong.expected,
            received: wrong.received,
        }
    }
}

/// The answer of a check-and-record: sign (`Safe`) or refuse (`Refusal`).
pub type CheckOutcome = Result<Safe, Refusal>;

/// May `request` be signed? [`check_block`] or [`check_attestation`], whichever it is.
pub fn check<H: History>(history: &H, request: SlashingRequest) -> Verdict<H::Error> {
    match request {
        SlashingRequest::Block { slot, signing_root } => check_block(history, slot, signing_root),
        SlashingRequest::Attestation {
            source,
            target,
            signing_root,
        } => check_attestation(history, source, target, signing_root),
    }
}

/// What the records already at a block's slot (or an attestation's target) say.
enum Earlier<T> {
    /// No record: the other rules decide.
    Nothing,
    /// Only the identical message (same signing root): answer it again.
    Same,
    /// A record with another or an unknown root: a double proposal or a double vote.
    Conflict(T),
}

/// The rule blocks (per slot) and attestations (per target) share: any earlier record whose
/// root is not `signing_root` (a missing root included) conflicts.
fn earlier<T: Copy>(
    records: &[T],
    signing_root: Root,
    root_of: impl Fn(&T) -> Option<Root>,
) -> Earlier<T> {
    match records.iter().find(|r| root_of(r) != Some(signing_root)) {
        Some(conflict) => Earlier::Conflict(*conflict),
        None if records.is_empty() => Earlier::Nothing,
        None => Earlier::Same,
    }
}

/// May a block at `slot` with `signing_root` be signed?
pub fn check_block<H: History>(history: &H, slot: Slot, signing_root: Root) -> Verdict<H::Error> {
    // The identical proposal is answered again even at or below the watermark (EIP-3076: a
    // re-sign of the same data is safe); anything else at that slot conflicts.
    match earlier(&history.blocks_at(slot)?, signing_root, |b| b.signing_root) {
        Earlier::Conflict(previous) => return Ok(Err(NotSafe::DoubleBlockProposal { previous })),
        Earlier::Same => return Ok(Ok(Safe::SameData)),
        Earlier::Nothing => {}
    }
    if let Some(watermark) = history.watermark()?.block_slot {
        if slot <= watermark {
            return Ok(Err(NotSafe::BlockSlotAtOrBelowWatermark {
                slot,
                watermark,
            }));
        }
    }
    Ok(Ok(Safe::Valid))
}

/// May an attestation `source → target` with `signing_root` be signed?
pub fn check_attestation<H: History>(
    history: &H,
    source: Epoch,
    target: Epoch,
    signing_root: Root,
) -> Verdict<H::Error> {
    if source > target {
        return Ok(Err(NotSafe::SourceExceedsTarget {
            source_epoch: source,
            target_epoch: target,
        }));
    }
    match earlier(
        &history.attestations_with_target(target)?,
        signing_root,
        |a| a.signing_root,
    ) {
        Earlier::Conflict(previous) => return Ok(Err(NotSafe::DoubleVote { previous })),
        Earlier::Same => return Ok(Ok(Safe::SameData)),
        Earlier::Nothing => {}
    }
    if let Some(previous) =
        history.attestation_surround(Surround::PreviousSurroundsNew { source, target })?
    {
        return Ok(Err(NotSafe::PreviousSurroundsNew { previous }));
    }
    if let Some(previous) =
        history.attestation_surround(Surround::NewSurroundsPrevious { source, target })?
    {
        return Ok(Err(NotSafe::NewSurroundsPrevious { previous }));
    }
    let watermark = history.watermark()?;
    if let Some(min_source) = watermark.attestation_source {
        if source < min_source {
            return Ok(Err(NotSafe::SourceBelowWatermark {
                source_epoch: source,
                watermark: min_source,
            }));
        }
    }
    if let Some(min_target) = watermark.attestation_target {
        if target <= min_target {
            return Ok(Err(NotSafe::TargetAtOrBelowWatermark {
                target,
                watermark: min_target,
            }));
        }
    }
    Ok(Ok(Safe::Valid))
}

/// The oldest attestation target a prune keeping `keep_epochs` epochs keeps, for a key whose
/// newest attestation targets `newest_target`: attestations with a lower target may be removed
/// (with [`Watermark::covering`]), `newest_target` and the `keep_epochs` epochs below it stay.
/// Relative to each key's own newest record, not the wall clock: a key that stopped attesting
/// keeps its last records, and a wrong clock cannot prune what was just signed.
pub fn prune_cut(newest_target: Epoch, keep_epochs: u64) -> Epoch {
    Epoch(newest_target.0.saturating_sub(keep_epochs))
}

/// An in-memory [`History`], the reference model for tests and for checking an interchange file.
#[derive(Debug, Clone, Default)]
pub struct MemoryHistory {
    pub blocks: Vec<SignedBlock>,
    pub attestations: Vec<SignedAttestation>,
    pub watermark: Watermark,
}

impl MemoryHistory {
    /// Remove the attestations older than [`prune_cut`] and raise the watermark over them
    /// ([`Watermark::covering`]): the reference model of the store's prune. Returns how many
    /// were removed.
    pub fn prune_attestations(&mut self, keep_epochs: u64) -> usize {
        let Some(newest) = self.attestations.iter().map(|a| a.target).max() else {
            return 0;
        };
        let cut = prune_cut(newest, keep_epochs);
        let (removed, kept): (Vec<SignedAttestation>, Vec<SignedAttestation>) =
            self.attestations.iter().partition(|a| a.target < cut);
        if let (Some(source), Some(target)) = (
            removed.iter().map(|a| a.source).max(),
            removed.iter().map(|a| a.target).max(),
        ) {
            self.watermark = self.watermark.max(Watermark::covering(source, target));
        }
        self.attestations = kept;
        removed.len()
    }
}

impl History for MemoryHistory {
    type Error = std::convert::Infallible;

    fn blocks_at(&self, slot: Slot) -> Result<Vec<SignedBlock>, Self::Error> {
        Ok(self
            .blocks
            .iter()
            .filter(|b| b.slot == slot)
            .copied()
            .collect())
    }

    fn attestations_with_target(
        &self,
        target: Epoch,
    ) -> Result<Vec<SignedAttestation>, Self::Error> {
        Ok(self
            .attestations
            .iter()
            .filter(|a| a.target == target)
            .copied()
            .collect())
    }

    fn attestation_surround(
        &self,
        surround: Surround,
    ) -> Result<Option<SignedAttestation>, Self::Error> {
        Ok(self
            .attestations
            .iter()
            .find(|a| surround.holds(a))
            .copied())
    }

    fn watermark(&self) -> Result<Watermark, Self::Error> {
        Ok(self.watermark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(byte: u8) -> Root {
        Root([byte; 32])
    }

    fn att(source: u64, target: u64, byte: u8) -> SignedAttestation {
        SignedAttestation {
            source: Epoch(source),
            target: Epoch(target),
            signing_root: Some(root(byte)),
        }
    }

    /// A recorded block; `byte: None` for one imported without a root.
    fn blk(slot: u64, byte: Option<u8>) -> SignedBlock {
        SignedBlock {
            slot: Slot(slot),
            signing_root: byte.map(root),
        }
    }

    /// Checks go through [`check`], so every test below also covers its dispatch.
    /// `valid`, `same_data` or the refusing rule's name (`NotSafe::rule`).
    fn verdict(v: Result<Safe, NotSafe>) -> &'static str {
        match v {
            Ok(Safe::Valid) => "valid",
            Ok(Safe::SameData) => "same_data",
            Err(not_safe) => not_safe.rule(),
        }
    }

    fn check_att(h: &MemoryHistory, s: u64, t: u64, byte: u8) -> &'static str {
        let request = SlashingRequest::Attestation {
            source: Epoch(s),
            target: Epoch(t),
            signing_root: root(byte),
        };
        let Ok(v) = check(h, request);
        verdict(v)
    }

    fn check_blk(h: &MemoryHistory, slot: u64, byte: u8) -> &'static str {
        let request = SlashingRequest::Block {
            slot: Slot(slot),
            signing_root: root(byte),
        };
        let Ok(v) = check(h, request);
        verdict(v)
    }

    #[test]
    fn wrong_network_becomes_a_refusal() {
        let wrong = binding::bind(Some(root(1)), Some(root(2))).unwrap_err();
        let refusal = Refusal::from(wrong);
        assert_eq!(
            refusal,
            Refusal::WrongNetwork {
                expected: root(1),
                received: root(2)
            }
        );
        assert!(refusal.to_string().contains(&root(1).to_string()));
    }

    #[test]
    fn attestation_rules() {
        let h = MemoryHistory {
            attestations: vec![att(10, 11, 1)],
            ..Default::default()
        };
        assert_eq!(check_att(&h, 10, 11, 1), "same_data");
        assert_eq!(check_att(&h, 10, 11, 2), "double_vote");
        assert_eq!(check_att(&h, 9, 12, 2), "new_surrounds_previous");
        assert_eq!(check_att(&h, 11, 12, 2), "valid");
        // Out of order but not slashable: allowed (design.md §5).
        assert_eq!(check_att(&h, 8, 9, 2), "valid");
        assert_eq!(check_att(&h, 5, 4, 2), "source_exceeds_target");
        let wide = MemoryHistory {
            attestations: vec![att(1, 20, 1)],
            ..Default::default()
        };
        assert_eq!(check_att(&wide, 2, 19, 2), "previous_surrounds_new");
    }

    #[test]
    fn rootless_records_conflict_with_everything_at_their_slot_or_target() {
        let h = MemoryHistory {
            blocks: vec![blk(5, None)],
            attestations: vec![SignedAttestation {
                signing_root: None,
                ..att(1, 2, 0)
            }],
            ..Default::default()
        };
        assert_eq!(check_blk(&h, 5, 1), "double_block_proposal");
        assert_eq!(check_att(&h, 1, 2, 1), "double_vote");
    }

    #[test]
    fn watermarks() {
        let h = MemoryHistory {
            blocks: vec![blk(10, Some(1))],
            watermark: Watermark {
                block_slot: Some(Slot(10)),
                attestation_source: Some(Epoch(5)),
                attestation_target: Some(Epoch(6)),
            },
            ..Default::default()
        };
        assert_eq!(check_blk(&h, 10, 1), "same_data");
        assert_eq!(check_blk(&h, 10, 2), "double_block_proposal");
        assert_eq!(check_blk(&h, 9, 1), "block_slot_at_or_below_watermark");
        assert_eq!(check_blk(&h, 11, 1), "valid");
        assert_eq!(check_att(&h, 4, 7, 1), "source_below_watermark");
        assert_eq!(check_att(&h, 5, 6, 1), "target_at_or_below_watermark");
        assert_eq!(check_att(&h, 5, 7, 1), "valid");
    }

    #[test]
    fn prune_keeps_the_newest_epochs_and_covers_the_rest() {
        assert_eq!(prune_cut(Epoch(100), 10), Epoch(90));
        assert_eq!(prune_cut(Epoch(5), 10), Epoch(0));
        let mut h = MemoryHistory {
            attestations: vec![att(1, 2, 1), att(2, 3, 1), att(3, 9, 1), att(9, 10, 1)],
            ..Default::default()
        };
        assert_eq!(h.clone().prune_attestations(100), 0);
        // Keeping one epoch below the newest target (10) keeps targets 9 and 10.
        assert_eq!(h.clone().prune_attestations(1), 2);
        assert_eq!(h.prune_attestations(0), 3);
        assert_eq!(h.attestations, vec![att(9, 10, 1)]);
        assert_eq!(h.watermark, Watermark::covering(Epoch(3), Epoch(9)));
        // What the removed records refused stays refused; what comes next still signs.
        assert_eq!(check_att(&h, 3, 3, 2), "target_at_or_below_watermark");
        assert_eq!(check_att(&h, 4, 8, 2), "target_at_or_below_watermark");
        assert_eq!(check_att(&h, 1, 8, 2), "source_below_watermark");
        // The price: the identical re-request of a removed record is refused too.
        assert_eq!(check_att(&h, 3, 9, 1), "target_at_or_below_watermark");
        assert_eq!(check_att(&h, 9, 10, 1), "same_data");
        assert_eq!(check_att(&h, 10, 11, 2), "valid");
        // Pruning never lowers a watermark, and an empty history has nothing to prune.
        let mut high = MemoryHistory {
            attestations: vec![att(1, 2, 1), att(5, 6, 1)],
            watermark: Watermark::covering(Epoch(4), Epoch(5)),
            ..Default::default()
        };
        assert_eq!(high.prune_attestations(0), 1);
        assert_eq!(high.watermark, Watermark::covering(Epoch(4), Epoch(5)));
        assert_eq!(MemoryHistory::default().prune_attestations(0), 0);
    }

    fn any_attestation() -> impl proptest::strategy::Strategy<Value = SignedAttestation> {
        use proptest::prelude::*;
        (0u64..12, 0u64..12, proptest::option::of(0u8..3)).prop_map(|(source, target, byte)| {
            SignedAttestation {
                source: Epoch(source),
                target: Epoch(target),
                signing_root: byte.map(root),
            }
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Pruning only ever adds refusals: whatever the history (slashable within itself or
        /// not, with or without roots) and whatever is kept, every request refused before the
        /// prune is refused after it.
        #[test]
        fn pruning_never_turns_a_refusal_into_a_signature(
            attestations in proptest::collection::vec(any_attestation(), 0..12),
            keep in 0u64..12,
            requests in proptest::collection::vec((0u64..14, 0u64..14, 0u8..3), 1..24),
        ) {
            // Besides the random requests, the ones each record refuses: a double vote and
            // both surrounds of it, where a lax prune would let one through.
            let near = attestations.iter().flat_map(|a| {
                let (s, t) = (a.source.0, a.target.0);
                [(s, t, 2), (s.saturating_sub(1), t + 1, 2), (s + 1, t.saturating_sub(1), 2)]
            });
            let requests: Vec<(u64, u64, u8)> = requests.iter().copied().chain(near).collect();
            let before = MemoryHistory { attestations, ..Default::default() };
            let mut after = before.clone();
            after.prune_attestations(keep);
            for (source, target, byte) in requests {
                let request = SlashingRequest::Attestation {
                    source: Epoch(source),
                    target: Epoch(target),
                    signing_root: root(byte),
                };
                let Ok(was) = check(&before, request);
                let Ok(now) = check(&after, request);
                proptest::prop_assert!(
                    was.is_ok() || now.is_err(),
                    "{:?}: refused before ({:?}), allowed after ({:?})", request, was, now
                );
            }
        }
    }
}
