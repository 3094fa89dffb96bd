//! The network binding of a slashing-protection database, as one pure rule.
//!
//! A database holds the history of one network only: the genesis validators root it is bound
//! to. [`bind`] decides, from the root the database is bound to (if any) and the root a signing
//! request or an interchange file carries (if any), whether the request may go on and whether
//! recording it binds the database. The store reads and writes the binding; it decides nothing.
//!
//! Refuses: a root that differs from the bound one ([`WrongNetwork`]). A request that carries no
//! root (no `fork_info`) is not compared and binds nothing; an unbound database is bound by the
//! first root it records (the caller writes it only together with a record, so a refused request
//! or a dry run leaves no binding behind).
#![forbid(unsafe_code)]

use crate::types::Root;

/// What [`bind`] allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// Nothing to write: the database is bound to this root already, or there is no root to bind.
    Unchanged,
    /// The database is unbound: bind it to this root together with the first record.
    Bind(Root),
}

/// The root received is not the one the database is bound to. A signing request turns it into
/// [`Refusal::WrongNetwork`](super::Refusal::WrongNetwork), which says so in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongNetwork {
    /// The root the database is bound to.
    pub expected: Root,
    /// The root of the request or file.
    pub received: Root,
}

/// The binding rule: `bound` is the database's root (`None`: unbound), `received` the root a
/// request or file carries (`None`: it carries none).
pub fn bind(bound: Option<Root>, received: Option<Root>) -> Result<Binding, WrongNetwork> {
    match (bound, received) {
        (Some(expected), Some(received)) if expected != received => {
            Err(WrongNetwork { expected, received })
        }
        (None, Some(received)) => Ok(Binding::Bind(received)),
        (Some(_), _) | (None, None) => Ok(Binding::Unchanged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_rule() {
        let a = Root([0xaa; 32]);
        let b = Root([0xbb; 32]);
        assert_eq!(bind(None, Some(a)), Ok(Binding::Bind(a)));
        assert_eq!(bind(Some(a), Some(a)), Ok(Binding::Unchanged));
        assert_eq!(
            bind(Some(a), Some(b)),
            Err(WrongNetwork {
                expected: a,
                received: b
            })
        );
        // No root to compare: allowed, and nothing to bind.
        assert_eq!(bind(Some(a), None), Ok(Binding::Unchanged));
        assert_eq!(bind(None, None), Ok(Binding::Unchanged));
    }
}
