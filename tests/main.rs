//! Integration tests, one binary to keep link time low on 2 cores.

mod admission;
mod audit;
mod authz;
mod common;
mod conformance;
mod custody;
mod e2e;
mod grpc;
mod hsm;
mod interop;
mod keymanager_api;
mod metrics;
mod operator_api;
mod perf;
mod sandbox;
mod security_access;
mod slashing;
mod threshold;
mod vectors;
