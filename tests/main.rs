//! Integration tests, one binary to keep link time low on 2 cores.

mod common;
mod e2e;
mod interop;
mod slashing;
mod threshold;
mod vectors;
