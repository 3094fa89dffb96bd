//! Integration tests, one binary to keep link time low on 2 cores.

mod admission;
mod audit;
mod authz;
mod common;
mod conformance;
mod custody;
mod dkg;
mod dkg_faults;
mod e2e;
mod forwarder_threshold;
mod grpc;
mod hsm;
mod interop;
mod keymanager_api;
mod memlock;
mod metrics;
mod operator_api;
mod perf;
mod provisioning;
mod reshare;
mod reshare_faults;
mod sandbox;
mod security_access;
mod slashing;
mod threshold;
mod vectors;
