//! The audit log with the real binary: every signature and refusal over both APIs leaves one
//! chained entry; the chain survives restarts and SIGKILL under load; `audit verify` finds every
//! kind of edit (and says where); `audit export` writes JSON lines.

use std::path::{Path, PathBuf};

use keystake_signer::tools::grpc_client::GrpcClient;
use serde_json::Value;

use crate::authz::{vector, PolicyAppliance};
use crate::common::*;

fn export(config: &Path) -> Vec<Value> {
    run_ok_with_config(config, &["audit", "export"], &[])
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// `audit verify` of the database `config` names, with `extra` arguments.
fn verify_with(config: &Path, extra: &[&str]) -> (bool, String, String) {
    run_with_config(config, &["audit", "verify"], extra)
}

fn verify(config: &Path) -> (bool, String, String) {
    verify_with(config, &[])
}

/// A copy of the appliance's database (consistent, WAL included) with a config pointing at it.
fn tampered_copy(appliance: &Appliance, name: &str, sql: &str) -> PathBuf {
    let root = appliance.path().join(format!("tamper-{name}"));
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let source = rusqlite::Connection::open(appliance.path().join("data/signer.sqlite")).unwrap();
    source
        .execute(
            "VACUUM INTO ?1",
            [data.join("signer.sqlite").to_str().unwrap()],
        )
        .unwrap();
    let copy = rusqlite::Connection::open(data.join("signer.sqlite")).unwrap();
    copy.execute_batch(sql).unwrap();
    drop(copy);
    let config = std::fs::read_to_string(&appliance.config)
        .unwrap()
        .replace(
            "data_dir = \"data\"",
            &format!("data_dir = {:?}", data.to_str().unwrap()),
        )
        .replace("policy_file = \"policy.toml\"\n", "");
    // Relative paths (certs, HSM) still resolve against the original directory.
    let config_path = appliance.path().join(format!("tamper-{name}.toml"));
    std::fs::write(&config_path, config).unwrap();
    config_path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_chained_and_tampering_is_found() {
    let setup = PolicyAppliance::create();
    let config = setup.appliance.config.clone();
    let (k1, k2) = (setup.key1.clone(), setup.key2.clone());
    let mut server = Server::start(&setup.appliance);
    let a_rest = server.client(setup.appliance.client_config("a"));
    let a_grpc = GrpcClient::connect(&server.url, setup.appliance.client_config("a"))
        .await
        .unwrap();
    let u_rest = server.client(setup.appliance.client_config("u"));
    let b_grpc = GrpcClient::connect(&server.url, setup.appliance.client_config("b"))
        .await
        .unwrap();
    let body = |v: &Value| serde_json::to_string(v).unwrap();

    // (what, expected outcome, client) for every request, in order.
    let mut expected: Vec<(&str, &str, &str)> = Vec::new();
    assert_eq!(sign(&a_rest, &k1, &attestation(10, 11, 1)).await.0, 200);
    expected.push(("ATTESTATION", "signed", "a"));
    assert!(a_grpc
        .sign(&k1, &body(&attestation(11, 12, 1)))
        .await
        .is_ok());
    expected.push(("ATTESTATION", "signed", "a"));
    assert_eq!(sign(&a_rest, &k1, &attestation(10, 11, 2)).await.0, 412);
    expected.push(("ATTESTATION", "refused", "a"));
    assert_eq!(
        sign(&a_rest, &k1, &vector("block_v2_capella", 1)["request"])
            .await
            .0,
        403
    );
    expected.push(("BLOCK_V2", "refused", "a"));
    assert_eq!(sign(&u_rest, &k1, &attestation(12, 13, 1)).await.0, 403);
    expected.push(("", "refused", "u"));
    assert!(b_grpc
        .sign(&k2, &body(&vector("randao_reveal", 2)["request"]))
        .await
        .is_ok());
    expected.push(("RANDAO_REVEAL", "signed", "b"));
    assert_eq!(
        b_grpc
            .sign(
                &format!("0x{}", "ee".repeat(48)),
                &body(&attestation(1, 2, 1))
            )
            .await
            .unwrap_err()
            .code(),
        tonic::Code::NotFound
    );
    expected.push(("", "refused", "b"));
    server.kill(); // SIGKILL: nothing flushed on the way out

    let (ok, stdout, stderr) = verify(&config);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{} entries", expected.len())),
        "{stdout}"
    );
    let entries = export(&config);
    assert_eq!(entries.len(), expected.len());
    for (i, (entry, (kind, outcome, client))) in entries.iter().zip(&expected).enumerate() {
        assert_eq!(entry["seq"], i as u64 + 1);
        assert_eq!(entry["kind"], *kind, "{entry}");
        assert_eq!(entry["outcome"], *outcome, "{entry}");
        assert_eq!(entry["client"], *client, "{entry}");
        assert!(entry["time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    }
    assert_eq!(entries[0]["api"], "rest");
    assert_eq!(entries[1]["api"], "grpc");
    assert_eq!(entries[0]["key"], k1.as_str());
    assert!(entries[0]["signing_root"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert!(entries[2]["reason"]
        .as_str()
        .unwrap()
        .contains("slashing protection"));
    assert!(entries[4]["reason"]
        .as_str()
        .unwrap()
        .contains("not named in the authorization policy"));
    let head_before = stdout.split("head ").nth(1).unwrap().trim().to_owned();

    // Restart and crash under load: the chain continues and stays intact.
    let server = Server::start(&setup.appliance);
    let a_grpc = GrpcClient::connect(&server.url, setup.appliance.client_config("a"))
        .await
        .unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    const LOAD: u64 = 1500;
    for target in 100..100 + LOAD {
        let client = a_grpc.clone();
        let k1 = k1.clone();
        let done = done.clone();
        load.push(tokio::spawn(async move {
            let ok = client
                .sign(
                    &k1,
                    &serde_json::to_string(&attestation(99, target, 1)).unwrap(),
                )
                .await
                .is_ok();
            done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            ok
        }));
    }
    // Kill while requests are in flight: some answered, most not.
    assert!(wait_until(std::time::Duration::from_secs(30), || {
        done.load(std::sync::atomic::Ordering::SeqCst) >= 20
    }));
    let mut server = server;
    server.kill();
    let answered = futures_util::future::join_all(load)
        .await
        .into_iter()
        .filter(|r| matches!(r, Ok(true)))
        .count();
    assert!(
        answered < LOAD as usize,
        "the kill came after the whole load"
    );
    let (ok, stdout, stderr) = verify(&config);
    assert!(ok, "after SIGKILL under load: {stdout}{stderr}");
    let entries = export(&config);
    // Every answered signature has its entry (more may have committed without an answer).
    let signed_after = entries
        .iter()
        .skip(expected.len())
        .filter(|e| e["outcome"] == "signed")
        .count();
    eprintln!("SIGKILL under load: {answered} of {LOAD} answered, {signed_after} signed entries");
    assert!(
        signed_after >= answered,
        "{signed_after} entries, {answered} answered"
    );
    let (ok, _, stderr) = verify_with(&config, &["--expect-head", &head_before]);
    assert!(ok, "{stderr}");

    let server = Server::start(&setup.appliance);
    let client = server.client(setup.appliance.client_config("a"));
    assert_eq!(sign(&client, &k1, &attestation(5000, 5001, 1)).await.0, 200);
    drop(server);
    let (ok, stdout, stderr) = verify(&config);
    assert!(ok, "{stdout}{stderr}");
    let total = export(&config).len();
    assert_eq!(total, entries.len() + 1);

    // Tampering, one kind per copy: the command fails and names the entry.
    let cases = [
        (
            "edited",
            "UPDATE audit_log SET outcome = 'signed' WHERE seq = 3;",
            "entry 3",
        ),
        (
            "edited-time",
            "UPDATE audit_log SET time_ms = time_ms + 1 WHERE seq = 5;",
            "entry 5",
        ),
        ("deleted", "DELETE FROM audit_log WHERE seq = 4;", "entry 4"),
        (
            "inserted",
            "UPDATE audit_log SET seq = seq + 100000 WHERE seq >= 3;
             UPDATE audit_log SET seq = seq - 99999 WHERE seq >= 100000;
             INSERT INTO audit_log (seq, time_ms, api, client, fingerprint, key, kind, signing_root,
                                    outcome, reason, prev_hash, hash)
                 SELECT 3, time_ms, api, client, fingerprint, key, kind, signing_root, outcome,
                        reason, prev_hash, hash FROM audit_log WHERE seq = 2;",
            "entry 3",
        ),
        (
            "reordered",
            "UPDATE audit_log SET seq = -1 WHERE seq = 3;
             UPDATE audit_log SET seq = 3 WHERE seq = 4;
             UPDATE audit_log SET seq = 4 WHERE seq = -1;",
            "entry 3",
        ),
    ];
    for (name, sql, place) in cases {
        let tampered = tampered_copy(&setup.appliance, name, sql);
        let (ok, stdout, stderr) = verify(&tampered);
        assert!(!ok, "{name}: verify passed:\n{stdout}");
        assert!(stderr.contains("NOT intact"), "{name}: {stderr}");
        assert!(
            stderr.contains(place),
            "{name}: expected {place:?} in {stderr}"
        );
    }
    // Truncating the newest entries keeps a valid chain; the recorded head catches it.
    let (_, stdout, _) = verify(&config);
    let head = stdout.split("head ").nth(1).unwrap().trim().to_owned();
    let tampered = tampered_copy(
        &setup.appliance,
        "truncated",
        &format!("DELETE FROM audit_log WHERE seq = {total};"),
    );
    assert!(verify(&tampered).0, "a truncated chain is still a chain");
    let (ok, _, stderr) = verify_with(&tampered, &["--expect-head", &head]);
    assert!(!ok);
    assert!(stderr.contains("newest entries"), "{stderr}");
}

/// Issue 17: someone with write access to the database rewrites the whole chain (hiding a
/// refusal, every hash recomputed). A plain `audit verify` cannot tell; a head signed earlier by
/// the identity key in the HSM can, and a head forged for the rewritten chain does not verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_chain_is_caught_by_an_earlier_signed_head() {
    use keystake_core::audit::{Entry, Head, Outcome};
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    {
        let (_server, client) = appliance.serve();
        let sign = sign_path(&key);
        for target in 2..5 {
            assert_eq!(
                post(&client, &sign, &attestation(1, target, 1)).await.0,
                200
            );
        }
        // The refusal the rewrite will hide.
        assert_eq!(post(&client, &sign, &attestation(1, 4, 9)).await.0, 412);
    }
    let exported = appliance.path().join("audit.jsonl");
    let head_file = appliance.path().join("head.json");
    let (s, e) = (exported.to_str().unwrap(), head_file.to_str().unwrap());
    appliance.cli_ok(&["audit", "export"], &["--out", s, "--signed-head", e]);
    let verified = appliance.cli_ok(&["audit", "verify"], &["--signed-head", e]);
    assert!(verified.contains("verified"), "{verified}");

    // The rewrite: the refusal becomes a plain signature, every later hash recomputed.
    let entries: Vec<Entry> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(entries.iter().any(|e| e.record.outcome == Outcome::Refused));
    let db = rusqlite::Connection::open(appliance.path().join("data/signer.sqlite")).unwrap();
    let mut head = Head::EMPTY;
    for entry in entries {
        let mut record = entry.record;
        if record.outcome == Outcome::Refused {
            record.outcome = Outcome::Signed;
            record.reason = String::new();
        }
        let rewritten = head.append(record);
        db.execute(
            "UPDATE audit_log SET outcome = ?1, reason = ?2, prev_hash = ?3, hash = ?4 WHERE seq = ?5",
            rusqlite::params![
                rewritten.record.outcome.as_str(),
                rewritten.record.reason,
                rewritten.prev_hash.to_vec(),
                rewritten.hash.to_vec(),
                rewritten.seq as i64
            ],
        )
        .unwrap();
    }
    drop(db);
    let (ok, stdout, _) = appliance.cli(&["audit", "verify"], &[]);
    assert!(
        ok,
        "a consistently rewritten chain is still a chain: {stdout}"
    );
    let (ok, _, stderr) = appliance.cli(&["audit", "verify"], &["--signed-head", e]);
    assert!(!ok && stderr.contains("rewritten"), "{stderr}");

    // Forging a head for the rewritten chain needs the identity key, which stays in the HSM.
    let mut forged: Value =
        serde_json::from_str(&std::fs::read_to_string(&head_file).unwrap()).unwrap();
    forged["head"] = serde_json::json!(head.to_string());
    let forged_file = appliance.path().join("forged-head.json");
    std::fs::write(&forged_file, forged.to_string()).unwrap();
    let (ok, _, stderr) = appliance.cli(
        &["audit", "verify"],
        &["--signed-head", forged_file.to_str().unwrap()],
    );
    assert!(!ok && stderr.contains("does not verify"), "{stderr}");
}

/// `audit prune` while `serve` signs: the old entries go to an archive, the log continues after an
/// anchor signed by the identity key, `verify` checks the anchor and, with the archives, the whole
/// chain from its first entry; a signed head older than the anchor needs its archive; removing
/// entries or moving the anchor without the HSM is found; an archive is never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_archives_old_entries_under_a_signed_anchor_and_tampering_is_found() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(2);
    let (server, client) = appliance.serve();
    let sign = sign_path(&key);
    for target in 1..=4u64 {
        let (status, body) = post(&client, &sign, &attestation(target - 1, target, 1)).await;
        assert_eq!(status, 200, "{body}");
    }
    let path = |name: &str| appliance.path().join(name);
    let arg = |name: &str| path(name).to_str().unwrap().to_owned();
    let early = arg("early-head.json");
    appliance.cli_ok(
        &["audit", "export"],
        &["--out", &arg("before.jsonl"), "--signed-head", &early],
    );
    let before = export(&appliance.config);
    let early_seq = before.last().unwrap()["seq"].as_u64().unwrap();
    assert!(early_seq >= 4, "{before:?}");

    // First prune, while serving and signing: everything before the early head's entry.
    let signing = {
        let (client, sign) = (client.clone(), sign.clone());
        tokio::spawn(async move {
            for target in 5..=24u64 {
                let (status, _) = post(&client, &sign, &attestation(target - 1, target, 1)).await;
                assert_eq!(status, 200);
            }
        })
    };
    let prune_args = [
        "--archive".to_owned(),
        arg("a1.jsonl"),
        "--before-seq".to_owned(),
        early_seq.to_string(),
    ];
    let config = appliance.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = prune_args.iter().map(String::as_str).collect();
        run_ok_with_config(&config, &["audit", "prune"], &args)
    })
    .await
    .unwrap();
    signing.await.unwrap();
    assert!(
        out.contains(&format!(
            "archived {} audit entries (1..={}) into",
            early_seq - 1,
            early_seq - 1
        )),
        "{out}"
    );
    let archived: Vec<Value> = std::fs::read_to_string(path("a1.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(archived, before[..before.len() - 1]);
    // The appliance goes on signing and chaining after the prune.
    for target in 25..=27u64 {
        let (status, _) = post(&client, &sign, &attestation(target - 1, target, 1)).await;
        assert_eq!(status, 200);
    }
    let (ok, stdout, stderr) = verify(&appliance.config);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("after the signed anchor"), "{stdout}");
    let (ok, stdout, stderr) = verify_with(&appliance.config, &["--signed-head", &early]);
    assert!(ok && stdout.contains("verified"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = verify_with(&appliance.config, &["--archive", &arg("a1.jsonl")]);
    assert!(ok && stdout.contains("in archives"), "{stdout}{stderr}");
    assert_eq!(
        export(&appliance.config)[0]["seq"].as_u64(),
        Some(early_seq)
    );

    // An archive is never overwritten; nothing is removed then.
    let (ok, _, stderr) = appliance.cli(
        &["audit", "prune"],
        &["--archive", &arg("a1.jsonl"), "--keep-days", "0"],
    );
    assert!(!ok && stderr.contains("already exists"), "{stderr}");
    assert_eq!(
        export(&appliance.config)[0]["seq"].as_u64(),
        Some(early_seq)
    );

    // Second prune: all but the newest entry.
    let out = appliance.cli_ok(
        &["audit", "prune"],
        &["--archive", &arg("a2.jsonl"), "--keep-days", "0"],
    );
    assert!(out.contains("archived"), "{out}");
    let left = export(&appliance.config);
    assert_eq!(left.len(), 1, "{left:?}");
    let out = appliance.cli_ok(
        &["audit", "prune"],
        &["--archive", &arg("a3.jsonl"), "--keep-days", "0"],
    );
    assert!(out.contains("nothing to prune"), "{out}");
    assert!(!path("a3.jsonl").exists());
    let (ok, _, stderr) = verify_with(&appliance.config, &["--signed-head", &early]);
    assert!(!ok && stderr.contains("pass the archive"), "{stderr}");
    let (ok, stdout, stderr) = verify_with(
        &appliance.config,
        &[
            "--signed-head",
            &early,
            "--archive",
            &arg("a1.jsonl"),
            "--archive",
            &arg("a2.jsonl"),
        ],
    );
    assert!(ok && stdout.contains("verified"), "{stdout}{stderr}");
    std::fs::write(path("huge.jsonl"), "x".repeat(70 * 1024)).unwrap();
    let (ok, _, stderr) = verify_with(&appliance.config, &["--archive", &arg("huge.jsonl")]);
    assert!(
        !ok && stderr.contains("longer than 65536 bytes"),
        "{stderr}"
    );
    let (ok, _, stderr) = verify_with(&appliance.config, &["--archive", &arg("a2.jsonl")]);
    assert!(
        !ok && stderr.contains("missing"),
        "an archive alone is not the chain's start: {stderr}"
    );
    let (ok, _, stderr) = verify_with(
        &appliance.config,
        &["--archive", &arg("a2.jsonl"), "--archive", &arg("a1.jsonl")],
    );
    assert!(!ok, "archives out of order: {stderr}");
    drop(client);
    drop(server);

    // Without the HSM: moving the anchor, replaying a signed head (they are handed out) as the
    // anchor, deleting the anchor, or editing an entry after it is found.
    let newest = left[0]["seq"].as_u64().unwrap();
    assert!(newest > early_seq);
    let early_head: Value =
        serde_json::from_str(&std::fs::read_to_string(path("early-head.json")).unwrap()).unwrap();
    let replay = format!(
        "DELETE FROM audit_log; UPDATE meta SET value = '{early_head}' WHERE key = 'audit_anchor'"
    );
    for (name, sql, wanted) in [
        ("signed-head-replayed", replay.as_str(), "does not verify"),
        (
            "anchor-moved",
            "UPDATE meta SET value = replace(CAST(value AS TEXT), '\"head\":\"', '\"head\":\"1') WHERE key = 'audit_anchor'",
            "does not verify",
        ),
        (
            "anchor-deleted",
            "DELETE FROM meta WHERE key = 'audit_anchor'",
            "missing",
        ),
        (
            "entry-edited",
            "UPDATE audit_log SET reason = 'edited'",
            "does not match its contents",
        ),
    ] {
        let config = tampered_copy(&appliance, name, sql);
        let (ok, _, stderr) = verify(&config);
        assert!(!ok && stderr.contains(wanted), "{name}: {stderr}");
    }
}
