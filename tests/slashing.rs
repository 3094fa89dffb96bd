//! Slashing protection (issue 4): the EIP-3076 interchange conformance suite, a property test
//! against a reference model, the real server under conflicting load, disk faults, and SIGKILL
//! crashes of the real binary.

#[path = "slashing_interchange.rs"]
mod interchange;
