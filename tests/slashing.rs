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

use keystake_signer::net::client::MtlsClient;
use serde_json::{json, Value};

/// Mainnet's genesis validators root, which every request below carries.
pub const MAINNET_GVR: &str = "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

/// A mainnet (Electra) ATTESTATION request; `byte` varies the signing root.
pub fn attestation(source: u64, target: u64, byte: u8) -> Value {
    json!({
        "type": "ATTESTATION",
        "fork_info": {
            "fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
            "genesis_validators_root": MAINNET_GVR
        },
        "attestation": {
            "slot": (target * 32).to_string(),
            "index": "0",
            "beacon_block_root": format!("0x{}", hex::encode([byte; 32])),
            "source": {"epoch": source.to_string(), "root": format!("0x{}", "11".repeat(32))},
            "target": {"epoch": target.to_string(), "root": format!("0x{}", "22".repeat(32))}
        }
    })
}

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

/// POST JSON; returns (status, body as JSON, or as a JSON string when it is not JSON).
pub async fn post(client: &MtlsClient, path: &str, body: &Value) -> (u16, Value) {
    let response = client
        .request(
            http::Method::POST,
            path,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
        .unwrap();
    let value = serde_json::from_slice(&response.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()));
    (response.status, value)
}
