//! Integration tests, one binary to keep link time low on 2 cores.

mod audit;
mod authz;
mod common;
mod e2e;
mod grpc;
mod metrics;
mod slashing;
mod vectors;
