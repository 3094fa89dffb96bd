//! KeyStake signer: a hardware-secured remote signer for Ethereum validators.
//!
//! Pure core (`types`, `consensus`, `request`, `slashing`, `threshold`, `bls`, `keystore`) and thin
//! adapters (`seal`, `store`, `tls`, `api`) composed by `service`. See `docs/architecture.md`.
#![forbid(unsafe_code)]

pub mod slashing;
pub mod store;
pub mod types;
