//! Crash safety: the real binary under concurrent signing load is killed with SIGKILL at random
//! moments, 22 times. After each restart, every signature a client received has its record in
//! the database (the record was durable before the signature left), and no two received
//! signatures are slashable together.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keystake_core::consensus::Network;
use keystake_core::request::{self, SlashingCheck};
use keystake_core::types::Root;
use rand::Rng;
use serde_json::Value;

use super::block;
use crate::common::*;

const KILLS: usize = 22;
const CLIENTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signed {
    Block {
        slot: u64,
        root: Root,
    },
    Attestation {
        source: u64,
        target: u64,
        root: Root,
    },
}

fn decode(body: &Value) -> Signed {
    let intent =
        request::parse_sign_request(&serde_json::to_vec(body).unwrap(), &Network::mainnet())
            .unwrap();
    match intent.slashing.unwrap() {
        SlashingCheck::Block { slot } => Signed::Block {
            slot: slot.0,
            root: intent.signing_root,
        },
        SlashingCheck::Attestation { source, target } => Signed::Attestation {
            source: source.0,
            target: target.0,
            root: intent.signing_root,
        },
    }
}

fn slashable(a: &Signed, b: &Signed) -> bool {
    match (a, b) {
        (Signed::Block { slot: s1, root: r1 }, Signed::Block { slot: s2, root: r2 }) => {
            s1 == s2 && r1 != r2
        }
        (
            Signed::Attestation {
                source: s1,
                target: t1,
                root: r1,
            },
            Signed::Attestation {
                source: s2,
                target: t2,
                root: r2,
            },
        ) => (t1 == t2 && r1 != r2) || (s1 < s2 && t2 < t1) || (s2 < s1 && t1 < t2),
        _ => false,
    }
}

/// Random requests around a moving frontier: many are fine, many conflict (same target or
/// slot with another root, surrounding votes).
fn random_request(rng: &mut impl Rng, frontier: u64) -> Value {
    let epoch = frontier + rng.gen_range(0..6);
    let byte = rng.gen_range(0..3u8);
    if rng.gen_bool(0.25) {
        block(12_000_000 + epoch * 4 + rng.gen_range(0..4), byte)
    } else {
        let span = rng.gen_range(1..3);
        attestation(epoch.saturating_sub(span), epoch, byte)
    }
}

fn assert_recorded(appliance: &Appliance, received: &[(String, Signed)], round: usize) {
    let exported = appliance.export_slashing(&[]);
    let by_key: HashMap<String, _> = exported
        .data
        .iter()
        .map(|r| (r.pubkey.to_hex(), r))
        .collect();
    for (key, signed) in received {
        let record = by_key
            .get(key)
            .unwrap_or_else(|| panic!("round {round}: no history for {key}"));
        let found = match *signed {
            Signed::Block { slot, root } => record
                .signed_blocks
                .iter()
                .any(|b| b.slot.0 == slot && b.signing_root == Some(root)),
            Signed::Attestation {
                source,
                target,
                root,
            } => record.signed_attestations.iter().any(|a| {
                a.source_epoch.0 == source
                    && a.target_epoch.0 == target
                    && a.signing_root == Some(root)
            }),
        };
        assert!(
            found,
            "round {round}: a received signature has no record: {key} {signed:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_never_loses_a_released_signature() {
    let appliance = Appliance::create();
    let keys: Vec<String> = (0..2).map(|i| appliance.import_vector_key(i)).collect();
    let received: Arc<Mutex<Vec<(String, Signed)>>> = Arc::default();
    let mut refused_total = 0usize;
    for round in 0..KILLS {
        let mut server = Server::start(&appliance);
        if round > 0 {
            assert_recorded(&appliance, &received.lock().unwrap(), round);
        }
        let client = server
            .client(appliance.client_config("client"))
            .with_timeout(Duration::from_secs(5));
        let frontier = 10 + round as u64 * 3;
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let client = client.clone();
            let keys = keys.clone();
            let received = received.clone();
            tasks.push(tokio::spawn(async move {
                let mut refused = 0usize;
                for _ in 0..200 {
                    let (key, body) = {
                        let mut rng = rand::thread_rng();
                        let key = keys[rng.gen_range(0..keys.len())].clone();
                        (key, random_request(&mut rng, frontier))
                    };
                    let Ok((status, answer)) = try_post(&client, &sign_path(&key), &body).await
                    else {
                        break; // the server is gone
                    };
                    match status {
                        200 => received.lock().unwrap().push((key, decode(&body))),
                        412 => refused += 1,
                        other => panic!("unexpected {other}: {answer}"),
                    }
                }
                refused
            }));
        }
        let delay = rand::thread_rng().gen_range(40..220);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        server.kill();
        for task in tasks {
            refused_total += task.await.unwrap();
        }
    }
    // One more restart: everything ever received is still recorded.
    let server = Server::start(&appliance);
    let received = received.lock().unwrap().clone();
    assert_recorded(&appliance, &received, KILLS);
    let client = server.client(appliance.client_config("client"));
    // And the running signer refuses a conflicting message for a received attestation.
    if let Some((key, Signed::Attestation { source, target, .. })) = received
        .iter()
        .find(|(_, s)| matches!(s, Signed::Attestation { .. }))
    {
        let (status, _) = sign(&client, key, &attestation(*source, *target, 77)).await;
        assert_eq!(status, 412);
    }
    for (i, (key_a, a)) in received.iter().enumerate() {
        for (key_b, b) in &received[i + 1..] {
            assert!(
                !(key_a == key_b && slashable(a, b)),
                "two received signatures are slashable together: {key_a} {a:?} / {b:?}"
            );
        }
    }
    println!(
        "crash test: {KILLS} SIGKILLs, {} signatures received and recorded, {refused_total} refused",
        received.len()
    );
    assert!(
        received.len() > KILLS,
        "the load produced too few signatures"
    );
    assert!(refused_total > 0, "the load produced no conflicts");
}
