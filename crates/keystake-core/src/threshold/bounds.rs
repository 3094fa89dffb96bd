//! The exact safety bounds of a t-of-n threshold committee (design.md §4, docs/threshold.md).
//!
//! With `f` colluding (malicious) operators out of `n`, each holding one share, and `t` shares
//! needed to sign:
//!
//! * **theft** (a group signature on anything, without any honest appliance) needs `f ≥ t`;
//! * **liveness** survives up to `n − t` appliances offline;
//! * **slashing**: two conflicting group signatures need two quorums of `t`. Each honest
//!   appliance refuses only what *it* signed, so the colluders can join both quorums and the
//!   honest appliances can be split between them by feeding each half different duty data. That
//!   works whenever `(t − f) + (t − f) ≤ n − f`, i.e. `f ≥ 2t − n`. Slashing safety therefore needs
//!   `f < 2t − n`; when `2t ≤ n` not even an honest committee is safe (two disjoint quorums exist).
//!
//! What it refuses: `t` outside `[1, n]` and `n` above [`MAX_SHARES`](super::MAX_SHARES), with the
//! same errors as [`split`](super::split). Pure arithmetic, no I/O.

use std::fmt;

use serde::Serialize;

use super::{ThresholdError, MAX_SHARES};
use crate::types::Threshold;

/// What a t-of-n committee withstands, computed by [`SafetyBounds::for_committee`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SafetyBounds {
    /// `t`: shares needed to sign.
    pub threshold: u32,
    /// `n`: shares in the committee.
    pub shares: u32,
    /// Colluders needed to sign alone (steal the key's signing power): `t`.
    pub theft_needs_colluders: u32,
    /// Appliances that may be offline while the group still signs: `n − t`.
    pub offline_tolerated: u32,
    /// Fewest colluders that, with honest appliances fed different duty data, obtain two
    /// conflicting group signatures: `max(2t − n, 0)`. Zero means an honest committee is not safe.
    pub slashing_needs_colluders: u32,
}

impl SafetyBounds {
    /// The bounds of a `t`-of-`n` committee. Refuses `t > n` and `n > MAX_SHARES`.
    pub fn for_committee(t: Threshold, n: u32) -> Result<Self, ThresholdError> {
        let t = t.get();
        if n > MAX_SHARES {
            return Err(ThresholdError::TooManyShares { n });
        }
        if t > n {
            return Err(ThresholdError::InvalidThreshold { t, n });
        }
        // 2t ≤ 2·65535 fits in u32; saturating keeps 2t ≤ n at zero.
        let slashing_needs_colluders = (2 * t).saturating_sub(n);
        Ok(Self {
            threshold: t,
            shares: n,
            theft_needs_colluders: t,
            offline_tolerated: n - t,
            slashing_needs_colluders,
        })
    }

    /// The largest number of colluding operators against which slashing protection still holds
    /// (`2t − n − 1`), or `None` when even a fully honest committee can be driven to two
    /// conflicting group signatures (`2t ≤ n`).
    pub fn slashing_colluders_tolerated(&self) -> Option<u32> {
        self.slashing_needs_colluders.checked_sub(1)
    }

    /// True when at least one malicious operator can be tolerated against slashing (`2t − n ≥ 2`).
    pub fn tolerates_malicious_operator(&self) -> bool {
        self.slashing_colluders_tolerated().is_some_and(|f| f >= 1)
    }

    /// The warning to print when the committee tolerates no malicious operator against slashing,
    /// `None` otherwise.
    pub fn warning(&self) -> Option<String> {
        let (t, n) = (self.threshold, self.shares);
        match self.slashing_colluders_tolerated() {
            None => Some(format!(
                "WARNING: {t}-of-{n} is not slashing-safe even with every operator honest: two \
                 disjoint quorums of {t} exist (2t − n = {} ≤ 0); choose t > n/2",
                2 * i64::from(t) - i64::from(n)
            )),
            Some(0) => Some(format!(
                "WARNING: {t}-of-{n} tolerates no malicious operator against slashing: one \
                 colluder feeding honest appliances different duty data gets two conflicting \
                 group signatures (2t − n = 1); use 2t − n ≥ 2, e.g. 3-of-4 or 5-of-7"
            )),
            Some(_) => None,
        }
    }
}

impl fmt::Display for SafetyBounds {
    /// Three lines, as printed by `split`, `manifest verify` and the DKG definitions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (t, n) = (self.threshold, self.shares);
        writeln!(
            f,
            "theft:    signing without the honest appliances needs {} colluding operators (t)",
            self.theft_needs_colluders
        )?;
        writeln!(
            f,
            "liveness: the group signs with up to {} of {n} appliances offline (n − t)",
            self.offline_tolerated
        )?;
        match self.slashing_colluders_tolerated() {
            Some(tolerated) => write!(
                f,
                "slashing: safe against up to {tolerated} colluding operators; {} colluders \
                 (2t − n) can get two conflicting group signatures ({t}-of-{n})",
                self.slashing_needs_colluders
            ),
            None => write!(
                f,
                "slashing: NOT safe even with every operator honest: 2t ≤ n, so two disjoint \
                 quorums can sign conflicting duties ({t}-of-{n})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(t: u32, n: u32) -> SafetyBounds {
        SafetyBounds::for_committee(Threshold::new(t).unwrap(), n).unwrap()
    }

    /// Brute force over every way to split the honest appliances between two quorums: the
    /// smallest f for which quorums A and B of at least t exist, the f colluders in both and each
    /// honest appliance in at most one (it signs only one of two conflicting duties).
    fn brute_force_slashing_colluders(t: u32, n: u32) -> u32 {
        (0..=n)
            .find(|&f| {
                let honest = n - f;
                (0..=honest).any(|a| (0..=honest - a).any(|b| f + a >= t && f + b >= t))
            })
            .unwrap()
    }

    #[test]
    fn named_examples() {
        // The and design.md's examples.
        let b = bounds(2, 3);
        assert_eq!(
            (
                b.theft_needs_colluders,
                b.offline_tolerated,
                b.slashing_needs_colluders
            ),
            (2, 1, 1)
        );
        assert_eq!(b.slashing_colluders_tolerated(), Some(0));
        assert!(!b.tolerates_malicious_operator());
        assert!(b.warning().unwrap().contains("no malicious operator"));

        let b = bounds(3, 4);
        assert_eq!(b.slashing_needs_colluders, 2);
        assert_eq!(b.slashing_colluders_tolerated(), Some(1));
        assert!(b.tolerates_malicious_operator());
        assert!(b.warning().is_none());

        let b = bounds(2, 4);
        assert_eq!(b.slashing_colluders_tolerated(), None);
        assert!(b
            .warning()
            .unwrap()
            .contains("even with every operator honest"));

        let b = bounds(1, 1);
        assert_eq!((b.offline_tolerated, b.slashing_needs_colluders), (0, 1));
        assert_eq!(b.slashing_colluders_tolerated(), Some(0));
    }

    #[test]
    fn matches_brute_force_for_small_committees() {
        for n in 1..=12 {
            for t in 1..=n {
                let b = bounds(t, n);
                assert_eq!(
                    b.slashing_needs_colluders,
                    brute_force_slashing_colluders(t, n),
                    "{t}-of-{n}"
                );
                assert_eq!(b.theft_needs_colluders, t);
                assert_eq!(b.offline_tolerated, n - t);
            }
        }
    }

    #[test]
    fn refuses_bad_committees() {
        let t = Threshold::new(4).unwrap();
        assert_eq!(
            SafetyBounds::for_committee(t, 3),
            Err(ThresholdError::InvalidThreshold { t: 4, n: 3 })
        );
        assert_eq!(
            SafetyBounds::for_committee(t, MAX_SHARES + 1),
            Err(ThresholdError::TooManyShares { n: MAX_SHARES + 1 })
        );
        let top = SafetyBounds::for_committee(Threshold::new(MAX_SHARES).unwrap(), MAX_SHARES);
        assert_eq!(top.unwrap().slashing_needs_colluders, MAX_SHARES);
    }

    #[test]
    fn display_states_all_three_bounds() {
        let text = bounds(3, 4).to_string();
        assert!(text.contains("theft:"), "{text}");
        assert!(text.contains("up to 1 of 4 appliances offline"), "{text}");
        assert!(text.contains("safe against up to 1 colluding"), "{text}");
        assert!(bounds(2, 4).to_string().contains("NOT safe"));
    }
}
