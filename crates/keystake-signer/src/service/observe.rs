//! What the signing path reports while it runs — phase timings, the outcome of each request,
//! authorization refusals, the number of keys loaded — to an [`Observer`] (in the appliance, the
//! Prometheus adapter `crate::net::metrics`).
//!
//! The service reports typed results; turning them into labels (HTTP statuses, outcome names)
//! is the observer's business, so the service never depends on a network layer. Observers must
//! not block: they run inline on the signing path.
#![forbid(unsafe_code)]

use std::time::Duration;

use super::authz::Api;
use super::ServiceError;

/// A phase of the signing path, timed separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Slashing check + durable record (and the audit entry), including the fsync.
    SlashingDb,
    /// HSM unseal of the share.
    Unseal,
    /// BLS signing.
    Bls,
    /// The whole request, from arrival to answer.
    Total,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::SlashingDb => "slashing_db",
            Phase::Unseal => "unseal",
            Phase::Bls => "bls",
            Phase::Total => "total",
        }
    }
}

/// Receives what the service reports. Every method has a no-op default.
pub trait Observer: Send + Sync {
    /// One phase of one signing request took `elapsed`.
    fn phase(&self, _phase: Phase, _elapsed: Duration) {}
    /// A signing request over `api` for a request of type `kind` (`"unknown"` when it was
    /// refused before its type was known) ended with `result`.
    fn signing_outcome(&self, _api: Api, _kind: &str, _result: Result<(), &ServiceError>) {}
    /// The policy refused `operation` to a client of `api`.
    fn refusal(&self, _api: Api, _operation: &str) {}
    /// The key index now holds `count` keys.
    fn keys_loaded(&self, _count: usize) {}
}

/// The observer of a service nobody watches (CLI commands, tests).
#[derive(Debug, Default)]
pub struct Unobserved;

impl Observer for Unobserved {}
