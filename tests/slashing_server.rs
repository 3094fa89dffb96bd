//! The real binary over real mutual TLS: 64 parallel conflicting requests per key give exactly
//! one signature, the 412 body names the rule and the earlier record, the dry-run endpoint
//! answers without recording, and `slashing import/export/prune` work (also while serving).

use keystake_signer::net::client::MtlsClient;
use serde_json::{json, Value};

use super::block;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_requests_sign_once_and_dry_run_records_nothing() {
    let appliance = Appliance::create();
    let keys = [
        appliance.import_vector_key(0),
        appliance.import_vector_key(1),
    ];
    let (_server, client) = appliance.serve();
    let dry_path = |key: &str| format!("/api/v1/eth2/slashable/{key}");

    // Dry run first: would be signed, and records nothing.
    let (status, answer) = post(&client, &dry_path(&keys[0]), &attestation(5, 6, 200)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["refused"], json!(false));
    assert_eq!(answer["protected"], json!(true));
    assert_eq!(answer["verdict"], json!("valid"));

    // 64 conflicting attestations (same target, different roots) for each of two keys, all at
    // once: exactly one signature per key.
    let mut tasks = Vec::new();
    for key in &keys {
        for i in 0..64u8 {
            let client = client.clone();
            let path = sign_path(key);
            tasks.push(tokio::spawn(async move {
                (i, post(&client, &path, &attestation(5, 6, i)).await)
            }));
        }
    }
    let mut signed = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let (i, (status, body)) = task.await.unwrap();
        match status {
            200 => signed.push((i, body["signature"].as_str().unwrap().to_owned())),
            412 => {
                assert_eq!(body["rule"], json!("double_vote"), "{body}");
                assert_eq!(body["conflict"]["previous"]["target"], json!("6"), "{body}");
                assert!(body["error"].as_str().unwrap().contains("double vote"));
                refused += 1;
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(signed.len(), 2, "exactly one signature per key: {signed:?}");
    assert_eq!(refused, 126);

    // The dry run now names the conflict, and an identical re-request is `same_data`.
    let winner = signed[0].0;
    let (status, answer) = post(&client, &dry_path(&keys[0]), &attestation(5, 6, 250)).await;
    assert_eq!(status, 200);
    assert_eq!(answer["refused"], json!(true), "{answer}");
    assert_eq!(answer["verdict"], json!("double_vote"));
    assert!(answer["reason"].as_str().unwrap().contains("double vote"));
    assert_eq!(answer["conflict"]["previous"]["source"], json!("5"));
    let (_, answer) = post(&client, &dry_path(&keys[0]), &attestation(5, 6, winner)).await;
    assert_eq!(answer["verdict"], json!("same_data"), "{answer}");
    let (_, answer) = post(&client, &dry_path(&keys[0]), &attestation(4, 7, 1)).await;
    assert_eq!(
        answer["verdict"],
        json!("new_surrounds_previous"),
        "{answer}"
    );
    // A message type slashing protection does not cover.
    let randao = json!({
        "type": "RANDAO_REVEAL",
        "fork_info": {
            "fork": {"previous_version": "0x05000000", "current_version": "0x06000000", "epoch": "411392"},
            "genesis_validators_root": MAINNET_GVR
        },
        "randao_reveal": {"epoch": "425000"}
    });
    let (status, answer) = post(&client, &dry_path(&keys[0]), &randao).await;
    assert_eq!(status, 200);
    assert_eq!(answer["protected"], json!(false), "{answer}");
    // Errors as for signing.
    let unknown = format!("0x{}", "a1".repeat(48));
    let (status, _) = post(&client, &dry_path(&unknown), &attestation(1, 2, 1)).await;
    assert_eq!(status, 404);
    let (status, body) = post(
        &client,
        &dry_path(&keys[0]),
        &json!({"type": "ATTESTATION"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Dry runs of a block: valid, then after signing it, a different block is refused.
    let (_, answer) = post(&client, &dry_path(&keys[1]), &block(12_000_000, 1)).await;
    assert_eq!(answer["verdict"], json!("valid"));
    let (status, _) = post(&client, &sign_path(&keys[1]), &block(12_000_000, 1)).await;
    assert_eq!(status, 200);
    let (_, answer) = post(&client, &dry_path(&keys[1]), &block(12_000_000, 2)).await;
    assert_eq!(
        answer["verdict"],
        json!("double_block_proposal"),
        "{answer}"
    );

    // The database holds exactly what was signed: no dry run left a record.
    let exported = appliance.export_slashing(&[]);
    assert_eq!(
        exported.metadata.genesis_validators_root.to_hex(),
        MAINNET_GVR
    );
    assert_eq!(exported.data.len(), 2);
    for record in &exported.data {
        assert_eq!(record.signed_attestations.len(), 1, "{record:?}");
        assert_eq!(record.signed_attestations[0].target_epoch.0, 6);
    }
    let blocks: usize = exported.data.iter().map(|r| r.signed_blocks.len()).sum();
    assert_eq!(blocks, 1);
    // Export of one chosen key, minimal form.
    let one = appliance.export_slashing(&["--pubkey", &keys[1], "--minimal"]);
    assert_eq!(one.data.len(), 1);
    assert_eq!(one.data[0].pubkey.to_hex(), keys[1]);
    assert_eq!(one.data[0].signed_blocks[0].signing_root, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_import_while_serving_raises_the_watermark_and_refuses_other_networks() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(2);
    let (_server, client) = appliance.serve();
    let sign = sign_path(&key);
    let (status, _) = post(&client, &sign, &attestation(10, 11, 1)).await;
    assert_eq!(status, 200);

    let file = appliance.path().join("history.json");
    let interchange: Value = json!({
        "metadata": {"interchange_format_version": "5", "genesis_validators_root": MAINNET_GVR},
        "data": [{
            "pubkey": key,
            "signed_blocks": [{"slot": "12000100"}],
            "signed_attestations": [{"source_epoch": "100", "target_epoch": "200"}, {"source_epoch": "30", "target_epoch": "40"}]
        }]
    });
    std::fs::write(&file, interchange.to_string()).unwrap();
    let import_args = ["--file", file.to_str().unwrap()];
    let out = appliance.cli_ok(&["slashing", "import"], &import_args);
    assert!(
        out.contains("imported 1 validators (1 blocks, 2 attestations"),
        "{out}"
    );

    // The running server applies the new watermark at once.
    let (status, body) = post(&client, &sign, &attestation(100, 150, 1)).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(
        body["rule"],
        json!("target_at_or_below_watermark"),
        "{body}"
    );
    assert_eq!(body["conflict"]["watermark"], json!("200"), "{body}");
    let (status, body) = post(&client, &sign, &block(12_000_050, 1)).await;
    assert_eq!(status, 412);
    assert_eq!(
        body["rule"],
        json!("block_slot_at_or_below_watermark"),
        "{body}"
    );
    let (status, _) = post(&client, &sign, &attestation(100, 201, 1)).await;
    assert_eq!(status, 200);
    let (status, _) = post(&client, &sign, &block(12_000_101, 1)).await;
    assert_eq!(status, 200);

    // A file for another network: refused, nothing imported.
    let other = interchange.to_string().replace(
        MAINNET_GVR,
        "0xd8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078",
    );
    let other = other.replace("12000100", "99000000");
    std::fs::write(&file, other).unwrap();
    let (ok, _, stderr) = appliance.cli(&["slashing", "import"], &import_args);
    assert!(!ok);
    assert!(stderr.contains("refusing to mix networks"), "{stderr}");
    // An unsupported version: refused with the reason.
    std::fs::write(&file, interchange.to_string().replace("\"5\"", "\"4\"")).unwrap();
    let (ok, _, stderr) = appliance.cli(&["slashing", "import"], &import_args);
    assert!(!ok);
    assert!(stderr.contains("interchange_format_version"), "{stderr}");

    let exported = appliance.export_slashing(&[]);
    let record = &exported.data[0];
    let slots: Vec<u64> = record.signed_blocks.iter().map(|b| b.slot.0).collect();
    assert_eq!(slots, vec![12_000_100, 12_000_101]);
    assert_eq!(record.signed_attestations.len(), 4);
}

/// After attestations `t − 1 → t` for t = 1..=12 with targets 1..=7 pruned: double votes on the
/// removed targets are refused by the watermark that covers them (source 6, target 7: the
/// greatest removed), each naming its rule.
async fn assert_targets_1_to_7_covered(client: &MtlsClient, sign: &str) {
    for (source, target, rule, watermark) in [
        (2, 3, "source_below_watermark", "6"),
        (6, 7, "target_at_or_below_watermark", "7"),
    ] {
        let (status, body) = post(client, sign, &attestation(source, target, 2)).await;
        assert_eq!(status, 412, "{body}");
        assert_eq!(body["rule"], json!(rule), "{body}");
        assert_eq!(body["conflict"]["watermark"], json!(watermark), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_prune_while_serving_still_refuses_what_the_removed_history_refused() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(2);
    let (_server, client) = appliance.serve();
    let sign = sign_path(&key);
    for target in 1..=12u64 {
        let (status, body) = post(&client, &sign, &attestation(target - 1, target, 1)).await;
        assert_eq!(status, 200, "{body}");
    }

    let out = appliance.cli_ok(&["slashing", "prune"], &["--keep-epochs", "4", "--dry-run"]);
    assert!(
        out.contains("would remove 7 attestations of 1 validators"),
        "{out}"
    );
    assert_eq!(
        appliance.export_slashing(&[]).data[0]
            .signed_attestations
            .len(),
        12
    );
    let out = appliance.cli_ok(&["slashing", "prune"], &["--keep-epochs", "4"]);
    assert!(
        out.contains("removed 7 attestations of 1 validators"),
        "{out}"
    );
    let kept: Vec<u64> = appliance.export_slashing(&[]).data[0]
        .signed_attestations
        .iter()
        .map(|a| a.target_epoch.0)
        .collect();
    assert_eq!(kept, (8..=12).collect::<Vec<_>>());

    // The running server: double votes on removed targets are refused by the watermark that now
    // covers them.
    assert_targets_1_to_7_covered(&client, &sign).await;
    // A kept one is answered again; the next duty signs.
    let (status, _) = post(&client, &sign, &attestation(11, 12, 1)).await;
    assert_eq!(status, 200);
    let (status, _) = post(&client, &sign, &attestation(12, 13, 1)).await;
    assert_eq!(status, 200);

    // A negative bound is refused by the argument parser, naming what it refused.
    let (ok, _, stderr) = appliance.cli(&["slashing", "prune"], &["--keep-epochs", "-1"]);
    assert!(!ok);
    assert!(stderr.contains("unexpected argument '-1'"), "{stderr}");
}

/// `[slashing] prune = { keep_epochs = 4, interval_secs = 1 }` appended to the configuration
/// (appending keeps its 0600 mode; the example has no uncommented `[slashing]` table).
fn schedule_prune(appliance: &Appliance) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&appliance.config)
        .unwrap()
        .write_all(b"\n[slashing]\nprune = { keep_epochs = 4, interval_secs = 1 }\n")
        .unwrap();
}

/// `[slashing] prune` in `serve`: the appliance prunes at start and then on its interval while it
/// signs, the running server refuses what the removed history refused, `/metrics` counts what
/// was removed, and SIGTERM stops it promptly with the kept history intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_prune_while_serving_still_refuses_what_the_removed_history_refused() {
    use std::time::{Duration, Instant};

    let appliance = Appliance::create();
    let key = appliance.import_vector_key(1);
    schedule_prune(&appliance);
    let (mut server, metrics) = crate::metrics::start(&appliance);
    let client = server.client(appliance.client_config("client"));
    let sign = sign_path(&key);
    for target in 1..=12u64 {
        let (status, body) = post(&client, &sign, &attestation(target - 1, target, 1)).await;
        assert_eq!(status, 200, "{body}");
    }
    // Newest target 12, four epochs kept below it: targets 1..=7 go, by one prune or several.
    let pruned = |samples: &std::collections::HashMap<String, f64>| {
        samples
            .get("keystake_slashing_pruned_attestations_total")
            .copied()
            .unwrap_or(0.0)
    };
    assert!(
        wait_until(Duration::from_secs(30), || pruned(&crate::metrics::scrape(
            &metrics
        )) >= 7.0),
        "no scheduled prune removed the old attestations: {}",
        server.report(30)
    );
    let samples = crate::metrics::scrape(&metrics);
    assert_eq!(pruned(&samples), 7.0);
    assert!(
        samples["keystake_slashing_prunes_total{outcome=\"completed\"}"] >= 2.0,
        "the prune at start and at least one on the interval: {samples:?}"
    );
    assert!(!samples.contains_key("keystake_slashing_prunes_total{outcome=\"failed\"}"));

    // Double votes on removed targets are refused by the watermark that now covers them.
    assert_targets_1_to_7_covered(&client, &sign).await;
    let (status, _) = post(&client, &sign, &attestation(12, 13, 1)).await;
    assert_eq!(status, 200);

    // SIGTERM: it stops well inside the shutdown wait, and the kept history is there.
    signal(&server.child, "-TERM");
    let asked = Instant::now();
    assert!(
        wait_until(Duration::from_secs(8), || server
            .child
            .try_wait()
            .unwrap()
            .is_some()),
        "serve did not stop on SIGTERM: {}",
        server.report(20)
    );
    assert!(asked.elapsed() < Duration::from_secs(8));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("scheduled pruning of the slashing history on"),
        "{log}"
    );
    server.kill();
    let kept: Vec<u64> = appliance.export_slashing(&[]).data[0]
        .signed_attestations
        .iter()
        .map(|a| a.target_epoch.0)
        .collect();
    // Target 13 made 9 the cut for the prunes after it, if one ran before SIGTERM.
    assert!(
        kept == (8..=13).collect::<Vec<_>>() || kept == (9..=13).collect::<Vec<_>>(),
        "{kept:?}"
    );
}

/// A start that fails after the database is open (here: the metrics address is taken) must not
/// leave a scheduled prune running: the history is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_does_not_prune() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(2);
    {
        let (_server, client) = appliance.serve();
        for target in 1..=12u64 {
            let (status, body) = post(
                &client,
                &sign_path(&key),
                &attestation(target - 1, target, 1),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    schedule_prune(&appliance);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let output = serve_command(&appliance, "127.0.0.1:0")
        .args(["--metrics-listen", &address])
        .env("KEYSTAKE_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("binding the metrics listener"), "{stderr}");
    assert!(!stderr.contains("pruned the slashing history"), "{stderr}");
    assert_eq!(
        appliance.export_slashing(&[]).data[0]
            .signed_attestations
            .len(),
        12
    );
}
