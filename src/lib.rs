//! KeyStake signer: a hardware-secured remote signer for Ethereum validators.
//!
//! Pure core (`types`, `consensus`, `request`, `slashing`, `threshold`, `bls`, `keystore`) and thin
//! adapters (`seal`, `store`, `tls`, `api`) composed by `service`. See `docs/architecture.md`.
//!
//! `deny` rather than `forbid` at the root: the one FFI module `bls::ffi` (scalar arithmetic blst
//! exposes only through its C API) must be able to `allow` unsafe code; every other module
//! `forbid`s it.
#![deny(unsafe_code)]

pub mod admin_commands;
pub mod api;
pub mod audit;
pub mod authz;
pub mod benchtools;
pub mod bls;
pub mod certs;
pub mod client;
pub mod commands;
pub mod config;
pub mod consensus;
pub mod enrolment;
pub mod forwarder;
pub mod keymanager;
pub mod keystore;
pub mod loadgen;
pub mod manifest;
pub mod metrics;
pub mod pkcs12;
pub mod policy;
pub mod request;
pub mod seal;
pub mod server;
pub mod service;
pub mod slashing;
pub mod store;
pub mod threshold;
pub mod tls;
pub mod types;
