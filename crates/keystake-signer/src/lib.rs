//! KeyStake signer: the appliance around the pure core (`keystake_core`).
//!
//! Adapters: `hsm` (PKCS#11 and YubiHSM2 sealing), `store` (SQLite), `net` (listener, TLS, REST,
//! gRPC, metrics, PKI), `forwarder` (the validator-host side). `service` composes them behind
//! small traits, one function per operation; `app` is the one composition root; `cli` holds one
//! file per subcommand. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod dkg;
pub mod files;
pub mod forwarder;
pub mod hsm;
pub mod memlock;
pub mod net;
pub mod sandbox;
pub mod service;
pub mod store;
#[cfg(feature = "tools")]
pub mod tools;
