//! Slashing protection (issue 4): the EIP-3076 interchange conformance suite, a property test
//! against a reference model, the real server under conflicting load, the dry-run endpoint and
//! the CLI, disk faults, and SIGKILL crashes of the real binary.

#[path = "slashing_crash.rs"]
mod crash;
#[path = "slashing_faults.rs"]
mod faults;
#[path = "slashing_interchange.rs"]
mod interchange;
#[path = "slashing_property.rs"]
mod property;
#[path = "slashing_server.rs"]
mod server;

use serde_json::{json, Value};

use crate::common::MAINNET_GVR;

/// A mainnet BLOCK_V2 (Electra header) request at `slot`; `byte` varies the signing root.
pub fn block(slot: u64, byte: u8) -> Value {
    json!({
        "type": "BLOCK_V2",
        "fork_info": {
            "fork": {"previous_version": "0x04000000", "current_version": "0x05000000", "epoch": "364032"},
            "genesis_validators_root": MAINNET_GVR
        },
        "beacon_block": {
            "version": "ELECTRA",
            "block_header": {
                "slot": slot.to_string(),
                "proposer_index": "7",
                "parent_root": format!("0x{}", "33".repeat(32)),
                "state_root": format!("0x{}", "44".repeat(32)),
                "body_root": format!("0x{}", hex::encode([byte; 32]))
            }
        }
    })
}
