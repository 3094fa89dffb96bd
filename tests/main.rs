//! Integration tests, one binary to keep link time low on 2 cores.

mod common;
mod conformance;
mod e2e;
mod interop;
mod keymanager_api;
mod operator_api;
mod slashing;
mod threshold;
mod vectors;
