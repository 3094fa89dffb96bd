//! KeyStake core: everything the signer decides, as pure functions over plain data.
//!
//! Consensus objects and their signing roots (`consensus`, `request`), the EIP-3076 rules and
//! interchange model (`slashing`), threshold math (`threshold`, `bls`), EIP-2335 keystores
//! (`keystore`), who may do what (`policy`), cluster manifests and share packages (`manifest`)
//! and the audit hash chain (`audit`). Randomness is passed in by the caller.
//!
//! What this crate refuses to depend on is checked by the test command
//! (`scripts/check-core-purity.sh`): no async runtime, database, HSM, HTTP, gRPC, TLS, logging or
//! metrics crate may appear among its normal dependencies, so no I/O can hide in here.
//!
//! `deny` rather than `forbid` at the root: the one FFI module `bls::ffi` (scalar arithmetic that
//! blst exposes only through its C API) must be able to `allow` unsafe code; every other module
//! `forbid`s it.
#![deny(unsafe_code)]

pub mod audit;
pub mod bls;
pub mod clock;
pub mod consensus;
pub mod keystore;
pub mod manifest;
pub mod policy;
pub mod request;
pub mod slashing;
#[cfg(test)]
mod test_vectors;
pub mod text;
pub mod threshold;
pub mod types;
pub mod wipe;
