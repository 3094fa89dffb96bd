//! Developer tools, compiled only with the `tools` feature so they never ship in an appliance
//! build: the mTLS load generator (`bench load`, with the slot-structured `--mix mainnet` of
//! `mainnet_mix`), benchmark set-up (`bench populate`,
//! `bench startup`) and a gRPC test client.
#![forbid(unsafe_code)]

pub mod bench;
pub mod grpc_client;
pub mod loadgen;
pub mod mainnet_mix;
