//! Issue 16's request-path changes and issue 17 item 8, through the real binary: signatures of
//! one root shared by many keys (the hash-to-G2 cache, and from the 16th signature of a root its
//! fixed-base table) stay byte-identical to blst's `sign` on REST, gRPC `Sign` and `SignBatch`; `Combine` refuses oversized input at once and, running on
//! the blocking pool, does not stop the server answering `/upcheck` while large combines run;
//! a burst does not spawn a thread per request (session 9).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keystake_core::bls::SecretKey;
use keystake_core::consensus::Network;
use keystake_core::threshold;
use keystake_core::types::Threshold;
use keystake_signer::net::grpc::pb;
use keystake_signer::tools::grpc_client::GrpcClient;
use serde_json::{json, Value};

use crate::common::*;

fn fork_info() -> Value {
    json!({
        "fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
        "genesis_validators_root": "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95",
    })
}

fn hex_bytes(text: &str) -> Vec<u8> {
    hex::decode(text.trim_start_matches("0x")).unwrap()
}

/// Every key signs the same selection-proof root and the same sync-committee root, many times
/// at once over REST, gRPC `Sign` and one `SignBatch`: every answer equals blst's one-step
/// signature of that root under that key. Each root is signed 24 times, so its last 9 or more
/// signatures go through the root's fixed-base table (`/metrics` shows a table for every root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_roots_sign_byte_identical_to_blst_on_every_api() {
    let appliance = Appliance::with_vector_keys();
    let (server, metrics) = crate::metrics::start(&appliance);
    let tls = appliance.client_config("client");
    let rest = server.client(tls.clone());
    let grpc = GrpcClient::connect(&server.url, tls).await.unwrap();
    let keys: Vec<SecretKey> = vector_secret_keys()
        .iter()
        .map(|k| secret_key_from_hex(k))
        .collect();
    assert_eq!(keys.len(), 3);
    let network = Network::mainnet();
    let bodies: Vec<Value> = (0..4u64)
        .flat_map(|i| {
            [
                json!({"type": "AGGREGATION_SLOT", "fork_info": fork_info(),
                       "aggregation_slot": {"slot": (14_408_073 + i).to_string()}}),
                json!({"type": "SYNC_COMMITTEE_MESSAGE", "fork_info": fork_info(),
                       "sync_committee_message": {"beacon_block_root": format!("0x{}", "5c".repeat(32)),
                                                  "slot": (14_408_073 + i).to_string()}}),
            ]
        })
        .collect();
    // The sync-committee bodies share one root (same block root, same epoch's domain).
    let mut roots = std::collections::HashSet::new();
    for body in &bodies {
        let root = keystake_core::request::parse_sign_request(
            serde_json::to_string(body).unwrap().as_bytes(),
            &network,
        )
        .unwrap()
        .signing_root;
        roots.insert(root);
        let expected: Vec<Vec<u8>> = keys.iter().map(|k| k.sign(&root.0).0.to_vec()).collect();
        // REST: each key four times, all at once.
        let public_keys: Vec<String> = keys.iter().map(|k| k.public_key().to_hex()).collect();
        let requests = (0..4 * keys.len()).map(|n| {
            let identifier = public_keys[n % public_keys.len()].clone();
            let rest = &rest;
            async move {
                let (status, answer) = sign(rest, &identifier, body).await;
                assert_eq!(status, 200, "{answer}");
                (n % 3, hex_bytes(answer["signature"].as_str().unwrap()))
            }
        });
        for (k, signature) in futures_util::future::join_all(requests).await {
            assert_eq!(signature, expected[k], "REST key {k}");
        }
        let text = serde_json::to_string(body).unwrap();
        for (k, key) in keys.iter().enumerate() {
            let signed = grpc.sign(&key.public_key().to_hex(), &text).await.unwrap();
            assert_eq!(signed.signature, expected[k], "gRPC Sign key {k}");
        }
        let items: Vec<(String, String)> = (0..3 * keys.len())
            .map(|n| (keys[n % keys.len()].public_key().to_hex(), text.clone()))
            .collect();
        for (n, result) in grpc
            .sign_batch(&items)
            .await
            .unwrap()
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                result.unwrap().signature,
                expected[n % keys.len()],
                "SignBatch item {n}"
            );
        }
    }
    // The gauges are refreshed every 5 s: wait for the refresh that follows the last signature.
    let deadline = Instant::now() + Duration::from_secs(30);
    let tables = loop {
        let samples = crate::metrics::scrape(&metrics);
        let tables = samples
            .get("keystake_message_cache{event=\"tables\"}")
            .copied()
            .unwrap_or(0.0);
        let lookups: f64 = ["hits", "misses"]
            .iter()
            .map(|event| {
                let name = format!("keystake_message_cache{{event=\"{event}\"}}");
                samples.get(&name).copied().unwrap_or(0.0)
            })
            .sum();
        // 24 signatures per body: 12 REST, 3 gRPC Sign, 9 SignBatch items.
        if lookups >= (bodies.len() * 24) as f64 || Instant::now() > deadline {
            break tables;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        roots.len(),
        5,
        "4 selection-proof roots and 1 sync-committee root"
    );
    assert_eq!(tables, roots.len() as f64, "one table per shared root");
}

/// Issue 17 item 8: a threshold of 30,000 (or 30,000 partials) is refused at once, and while 16
/// large combines run (t = 512, every partial verified) `/upcheck` keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combine_is_bounded_and_never_freezes_the_server() {
    let appliance = Appliance::create();
    let server = Server::start(&appliance);
    let tls = appliance.client_config("client");
    let rest = server.client(tls.clone());
    let grpc = Arc::new(GrpcClient::connect(&server.url, tls).await.unwrap());

    // t = 30,000, and (separately) 30,000 partials: refused from the counts alone, before any
    // point is parsed (the partials' bytes are empty; the message stays under the gRPC cap).
    let started = Instant::now();
    let huge_threshold = pb::CombineRequest {
        threshold: 30_000,
        group_public_key: vec![0xaa; 48],
        message: vec![1; 32],
        partials: (1..=3)
            .map(|i| pb::Partial {
                share_index: i,
                signature: vec![0xbb; 96],
            })
            .collect(),
        share_public_keys: vec![vec![0xcc; 48]; 3],
        verify_partials: true,
    };
    let many_partials = pb::CombineRequest {
        threshold: 2,
        partials: (1..=30_000)
            .map(|i| pb::Partial {
                share_index: i,
                signature: Vec::new(),
            })
            .collect(),
        ..huge_threshold.clone()
    };
    for (request, what) in [
        (huge_threshold, "30000 threshold"),
        (many_partials, "30000 partial signatures"),
    ] {
        let status = grpc.combine(request).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(what), "{status:?}");
        assert!(status.message().contains("at most 1024"), "{status:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not after O(t²) work: {:?}",
        started.elapsed()
    );

    // A real 512-of-512 split and its partials.
    let t = 512u32;
    let mut rng = rand::rngs::OsRng;
    let secret = SecretKey::random(&mut rng);
    let split = threshold::split(&secret, Threshold::new(t).unwrap(), t, &mut rng).unwrap();
    let message = [0x42u8; 32];
    let request = pb::CombineRequest {
        threshold: t,
        group_public_key: secret.public_key().0.to_vec(),
        message: message.to_vec(),
        partials: split
            .shares
            .iter()
            .map(|s| pb::Partial {
                share_index: s.index().get(),
                signature: s.sign(&message).0.to_vec(),
            })
            .collect(),
        share_public_keys: split
            .shares
            .iter()
            .map(|s| s.public_key().0.to_vec())
            .collect(),
        verify_partials: true,
    };
    let expected = secret.sign(&message).0.to_vec();
    let done = Arc::new(AtomicUsize::new(0));
    let combines: Vec<_> = (0..16)
        .map(|_| {
            let grpc = grpc.clone();
            let request = request.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let combined = grpc.combine(request).await;
                done.fetch_add(1, Ordering::SeqCst);
                combined
            })
        })
        .collect();
    // Let the combines reach the server, then probe while they run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut probes_during = 0;
    let mut slowest = Duration::ZERO;
    while done.load(Ordering::SeqCst) < 16 {
        let asked = Instant::now();
        let (status, _) = get(&rest, "/upcheck").await;
        assert_eq!(status, 200);
        slowest = slowest.max(asked.elapsed());
        if done.load(Ordering::SeqCst) < 16 {
            probes_during += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for combine in combines {
        assert_eq!(combine.await.unwrap().unwrap().signature, expected);
    }
    assert!(
        probes_during >= 2,
        "the combines finished before /upcheck could be probed during them"
    );
    assert!(
        slowest < Duration::from_secs(2),
        "/upcheck took {slowest:?} while combines ran"
    );
}

/// Issue 16, session 9: a slot burst must not make `serve` spawn a thread per request. 240
/// requests at once (under the 256 handshakes one address may have in progress) (the unseal cache off: every one unseals on the blocking pool) leave the
/// process with at most its bounded blocking pool, the runtime's workers and a few of its own
/// threads; tokio's default pool spawned a thread for most of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_does_not_spawn_a_thread_per_request() {
    let appliance = Appliance::with_vector_keys();
    let server = Server::start(&appliance);
    let client = server.client(appliance.client_config("client"));
    let keys = public_keys(&client).await;
    let requests: Vec<_> = (0..240u64)
        .map(|i| {
            let client = client.clone();
            let key = keys[(i % keys.len() as u64) as usize].clone();
            // Per key, targets 1, 2, 3, … with source one below: never slashable together,
            // in whatever order they arrive.
            let target = i / keys.len() as u64 + 1;
            tokio::spawn(async move {
                sign(&client, &key, &attestation(target - 1, target, 1))
                    .await
                    .0
            })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let threads: usize = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    // The blocking pool (one per session or core, the demo's sessions being one per core, plus
    // the spare), the runtime's workers, and main, the store's writer and a few more.
    let bound = cores + keystake_signer::cli::SERVE_SPARE_BLOCKING_THREADS + cores + 8;
    assert!(threads <= bound, "{threads} threads (bound {bound})");
}
