//! The wall-clock bound on duties: a block slot or an attestation epoch well past "now" is
//! refused before anything is recorded. Recording a target epoch of 2^64−1 would brick a key
//! (every later attestation is surrounded by it) and travel into every interchange export; no
//! honest validator client asks for a duty more than a few slots ahead of the clock.
//!
//! Pure: the caller passes the current Unix time in; the network passes its genesis time and
//! slot length. Refuses a slot whose start lies more than `margin_epochs` epochs after `now`.
#![forbid(unsafe_code)]

use crate::request::SlashingCheck;
use crate::types::{Epoch, Slot};

/// Default tolerance ahead of the wall clock: one epoch (clock skew, early proposals).
pub const DEFAULT_FUTURE_MARGIN_EPOCHS: u64 = 1;

/// The chain's clock: when slot 0 started and how slots and epochs are sized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainClock {
    /// Unix seconds of slot 0.
    pub genesis_time: u64,
    pub seconds_per_slot: u64,
    pub slots_per_epoch: u64,
}

/// A duty too far ahead of the clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FarFuture {
    #[error("slot {slot} is more than {margin_epochs} epoch(s) ahead of the current slot {current}; refused before recording (a far-future record would block the key)")]
    Slot {
        slot: Slot,
        current: Slot,
        margin_epochs: u64,
    },
    #[error("epoch {epoch} is more than {margin_epochs} epoch(s) ahead of the current epoch {current}; refused before recording (a far-future record would block the key)")]
    Epoch {
        epoch: Epoch,
        current: Epoch,
        margin_epochs: u64,
    },
}

impl ChainClock {
    /// The slot in progress at `now` (Unix seconds); slot 0 before genesis.
    pub fn current_slot(&self, now: u64) -> Slot {
        Slot(now.saturating_sub(self.genesis_time) / self.seconds_per_slot.max(1))
    }

    /// The epoch in progress at `now`.
    pub fn current_epoch(&self, now: u64) -> Epoch {
        Epoch(self.current_slot(now).0 / self.slots_per_epoch.max(1))
    }

    /// Refuse `slot` if it lies more than `margin_epochs` epochs after the slot in progress.
    pub fn check_slot(&self, slot: Slot, now: u64, margin_epochs: u64) -> Result<(), FarFuture> {
        let current = self.current_slot(now);
        let limit = current
            .0
            .saturating_add(margin_epochs.saturating_mul(self.slots_per_epoch.max(1)));
        if slot.0 > limit {
            return Err(FarFuture::Slot {
                slot,
                current,
                margin_epochs,
            });
        }
        Ok(())
    }

    /// Refuse `epoch` if it lies more than `margin_epochs` epochs after the epoch in progress.
    pub fn check_epoch(&self, epoch: Epoch, now: u64, margin_epochs: u64) -> Result<(), FarFuture> {
        let current = self.current_epoch(now);
        if epoch.0 > current.0.saturating_add(margin_epochs) {
            return Err(FarFuture::Epoch {
                epoch,
                current,
                margin_epochs,
            });
        }
        Ok(())
    }
}

impl ChainClock {
    /// Refuse a slashable duty (block slot; attestation source and target) far ahead of `now`.
    pub fn check_duty(
        &self,
        duty: &SlashingCheck,
        now: u64,
        margin_epochs: u64,
    ) -> Result<(), FarFuture> {
        match *duty {
            SlashingCheck::Block { slot } => self.check_slot(slot, now, margin_epochs),
            SlashingCheck::Attestation { source, target } => {
                self.check_epoch(source, now, margin_epochs)?;
                self.check_epoch(target, now, margin_epochs)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAINNET: ChainClock = ChainClock {
        genesis_time: 1_606_824_023,
        seconds_per_slot: 12,
        slots_per_epoch: 32,
    };

    #[test]
    fn current_epoch_and_the_margin() {
        let now = MAINNET.genesis_time + 384 * 1000 + 5;
        assert_eq!(MAINNET.current_epoch(now), Epoch(1000));
        assert!(MAINNET.check_epoch(Epoch(1001), now, 1).is_ok());
        assert!(MAINNET.check_epoch(Epoch(0), now, 1).is_ok());
        assert!(matches!(
            MAINNET.check_epoch(Epoch(1002), now, 1),
            Err(FarFuture::Epoch {
                current: Epoch(1000),
                ..
            })
        ));
        assert!(MAINNET.check_epoch(Epoch(u64::MAX), now, 1).is_err());
        assert!(MAINNET.check_epoch(Epoch(u64::MAX), now, u64::MAX).is_ok());
        assert!(MAINNET.check_slot(Slot(32_000 + 32), now, 1).is_ok());
        assert!(MAINNET.check_slot(Slot(32_000 + 33), now, 1).is_err());
        assert!(MAINNET.check_slot(Slot(u64::MAX), now, 1).is_err());
    }

    #[test]
    fn duties() {
        let now = MAINNET.genesis_time + 384 * 1000;
        let ok = SlashingCheck::Attestation {
            source: Epoch(999),
            target: Epoch(1000),
        };
        assert!(MAINNET.check_duty(&ok, now, 1).is_ok());
        let far = SlashingCheck::Attestation {
            source: Epoch(999),
            target: Epoch(2000),
        };
        assert!(MAINNET.check_duty(&far, now, 1).is_err());
        let block = SlashingCheck::Block {
            slot: Slot(u64::MAX),
        };
        assert!(MAINNET.check_duty(&block, now, 1).is_err());
    }

    #[test]
    fn before_genesis_counts_as_slot_zero() {
        assert_eq!(MAINNET.current_slot(0), Slot(0));
        assert!(MAINNET.check_epoch(Epoch(1), 0, 1).is_ok());
        assert!(MAINNET.check_epoch(Epoch(2), 0, 1).is_err());
    }
}
