//! Threshold shares end to end on real parts (issue #5): four appliances (four data directories,
//! four SoftHSM2 tokens, four `serve` processes on 127.0.0.1:0 with mutual TLS), a trusted split
//! made with the real `split` command, packages imported with `keys import-share`, partial
//! signatures over REST, and `combine` run as the real binary.

use std::path::Path;

use keystake_core::bls::SecretKey;
use keystake_core::consensus::Network;
use keystake_core::request;
use serde_json::{json, Value};

use crate::common::*;

const T: usize = 3;
const N: usize = 4;

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `combine` with `base`, then the partial signatures, then `tail`: (success, stdout, stderr).
fn combine(base: &[String], partials: &[(usize, &str)], tail: &[String]) -> (bool, String, String) {
    let mut args = vec!["combine".to_owned()];
    args.extend_from_slice(base);
    for (i, sig) in partials {
        args.extend(["--partial".to_owned(), format!("{i}:{sig}")]);
    }
    args.extend_from_slice(tail);
    run(&args)
}

/// `keys import-share --package <package> --manifest <manifest>` on `appliance`.
fn import_share(appliance: &Appliance, package: &Path, manifest: &Path) -> (bool, String, String) {
    appliance.cli(
        &["keys", "import-share"],
        &["--package", s(package), "--manifest", s(manifest)],
    )
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_four_split_signs_combines_names_culprits_and_refuses_slashing() {
    let appliances: Vec<Appliance> = (0..N).map(|_| Appliance::create()).collect();
    let dealer = tempfile::tempdir().unwrap();

    // Each appliance's enrolment public key, as an operator hands it to the dealer.
    let mut enrolment_files = Vec::new();
    let mut enrolment_lines = Vec::new();
    for (i, appliance) in appliances.iter().enumerate() {
        let line = appliance.cli_ok(&["enrolment", "show"], &[]);
        assert!(
            line.starts_with("keystake-enrolment-v1 p256 0x04") && line.lines().count() == 1,
            "{line}"
        );
        // `init` again is idempotent and keeps the same enrolment key.
        appliance.cli_ok(&["init"], &[]);
        assert_eq!(appliance.cli_ok(&["enrolment", "show"], &[]), line);
        let file = dealer.path().join(format!("appliance-{}.pub", i + 1));
        std::fs::write(&file, &line).unwrap();
        enrolment_files.push(file);
        enrolment_lines.push(line);
    }
    let distinct: std::collections::BTreeSet<_> = enrolment_lines.iter().collect();
    assert_eq!(distinct.len(), N, "every token has its own enrolment key");

    // The trusted dealer splits a validator key 3-of-4.
    let master = SecretKey::random(&mut rand::rngs::OsRng);
    let group_key = master.public_key().to_hex();
    let (keystore_path, password_path) =
        write_keystore(dealer.path(), "validator", &master, "dealer password ✓");
    let out = dealer.path().join("cluster");
    let mut split_args = vec![
        "split".to_owned(),
        "--keystore".into(),
        s(&keystore_path).into(),
        "--password-file".into(),
        s(&password_path).into(),
        "--threshold".into(),
        T.to_string(),
        "--out".into(),
        s(&out).into(),
    ];
    for file in &enrolment_files {
        split_args.push("--enrolment-key".into());
        split_args.push(s(file).into());
    }
    let printed = run_ok(&split_args);
    assert!(printed.contains(&group_key), "{printed}");
    assert!(printed.contains("3-of-4"), "{printed}");
    // The exact safety bounds (issue 17 item 15): 3-of-4 withstands one colluder against
    // slashing, so no warning.
    assert!(
        printed.contains("safe against up to 1 colluding operators; 2 colluders (2t − n)"),
        "{printed}"
    );
    assert!(
        printed.contains("up to 1 of 4 appliances offline"),
        "{printed}"
    );
    assert!(!printed.contains("WARNING"), "{printed}");
    // A second split into the same directory is refused rather than overwriting.
    let (ok, _, err) = run(&split_args);
    assert!(!ok && err.contains("refusing to overwrite"), "{err}");
    // t above n, and t = 0, are refused.
    for bad_t in ["5", "0"] {
        let mut args = split_args.clone();
        args[6] = bad_t.into();
        args[8] = s(&dealer.path().join(format!("bad-{bad_t}"))).into();
        let (ok, _, err) = run(&args);
        assert!(!ok, "threshold {bad_t} accepted");
        assert!(err.contains("--threshold"), "{err}");
    }

    let manifest_path = out.join("manifest.json");
    let manifest = read_json(&manifest_path);
    assert_eq!(manifest["group_public_key"], group_key);
    assert_eq!(manifest["threshold"], T);
    assert_eq!(manifest["participants"], N);
    assert_eq!(manifest["feldman_commitments"].as_array().unwrap().len(), T);
    let share_keys: Vec<String> = (0..N)
        .map(|i| {
            manifest["shares"][i]["public_key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let verified = run_ok(&["manifest", "verify", "--manifest", s(&manifest_path)]);
    assert!(
        verified.starts_with(&format!("manifest OK: 3-of-4 group {group_key}")),
        "{verified}"
    );
    assert!(
        verified.contains("slashing: safe against up to 1 colluding operators"),
        "{verified}"
    );
    // A manifest with one share key swapped does not verify.
    let mut forged = manifest.clone();
    forged["shares"][1]["public_key"] = json!(share_keys[2]);
    let forged_path = dealer.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let (ok, _, err) = run(&["manifest", "verify", "--manifest", s(&forged_path)]);
    assert!(
        !ok && err.contains("do not match the Feldman commitments"),
        "{err}"
    );

    let package = |i: usize| out.join(format!("share-{i}.pkg"));
    // The dealer's output holds no trace of the validator secret, raw or as hex.
    let secret_bytes = master.to_bytes();
    let secret_hex = hex::encode(secret_bytes.as_slice());
    for entry in std::fs::read_dir(&out).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(32).any(|w| w == secret_bytes.as_slice()));
        assert!(!String::from_utf8_lossy(&bytes).contains(&secret_hex));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(package(1)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Without the manifest from a trusted channel the package authenticates nothing (a forger
    // picks commitments that pass the Feldman check for any group key): refused (issue 17).
    let (ok, _, err) = appliances[0].cli(&["keys", "import-share"], &["--package", s(&package(1))]);
    assert!(!ok && err.contains("--manifest"), "{err}");
    // An ephemeral key off the curve never reaches the token (invalid-curve attack on the
    // enrolment key).
    let mut off_curve = read_json(&package(1));
    let point = off_curve["ephemeral_public_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut bytes = hex::decode(point.trim_start_matches("0x")).unwrap();
    bytes[40] ^= 1;
    off_curve["ephemeral_public_key"] = json!(format!("0x{}", hex::encode(&bytes)));
    let off_curve_path = dealer.path().join("off-curve.pkg");
    std::fs::write(&off_curve_path, off_curve.to_string()).unwrap();
    let (ok, _, err) = import_share(&appliances[0], &off_curve_path, &manifest_path);
    assert!(!ok && err.contains("not a valid P-256 point"), "{err}");
    // A package given to the wrong appliance does not open.
    let (ok, _, err) = import_share(&appliances[1], &package(1), &manifest_path);
    assert!(!ok && err.contains("not for this appliance"), "{err}");
    // Re-addressed to appliance 2 by editing the header: the manifest still names appliance 1.
    let mut readdressed = read_json(&package(1));
    readdressed["recipient"] = manifest["shares"][1]["operator"]["fingerprint"].clone();
    let readdressed_path = dealer.path().join("readdressed.pkg");
    std::fs::write(&readdressed_path, readdressed.to_string()).unwrap();
    let (ok, _, err) = import_share(&appliances[1], &readdressed_path, &manifest_path);
    assert!(!ok && err.contains("the manifest gives share 1"), "{err}");
    // A tampered ciphertext on the right appliance fails authentication in the HSM.
    let mut tampered = read_json(&package(1));
    let ciphertext = tampered["ciphertext"].as_str().unwrap().to_owned();
    let flipped = format!(
        "{}{}",
        &ciphertext[..ciphertext.len() - 1],
        if ciphertext.ends_with('0') { '1' } else { '0' }
    );
    tampered["ciphertext"] = json!(flipped);
    let tampered_path = dealer.path().join("tampered.pkg");
    std::fs::write(&tampered_path, tampered.to_string()).unwrap();
    let (ok, _, err) = import_share(&appliances[0], &tampered_path, &manifest_path);
    assert!(!ok && err.contains("does not open"), "{err}");
    // Nothing was stored by the refused imports.
    for appliance in &appliances {
        let listed = appliance.cli_ok(&["keys", "list"], &[]);
        assert!(listed.is_empty(), "{listed}");
    }

    // Each appliance imports its own package.
    for (i, appliance) in appliances.iter().enumerate() {
        let index = i + 1;
        let printed = appliance.cli_ok(
            &["keys", "import-share"],
            &[
                "--package",
                s(&package(index)),
                "--manifest",
                s(&manifest_path),
            ],
        );
        assert_eq!(
            printed.trim(),
            format!(
                "{} imported share {index}/4 threshold 3 group {group_key}",
                share_keys[i]
            )
        );
        let listed = appliance.cli_ok(&["keys", "list"], &[]);
        assert_eq!(
            listed.trim(),
            format!(
                "{} active share {index}/4 threshold 3 group {group_key}",
                share_keys[i]
            )
        );
    }

    // Four servers; each lists its share key (Web3Signer shape) and the threshold metadata.
    let servers: Vec<Server> = appliances.iter().map(Server::start).collect();
    let clients: Vec<_> = servers
        .iter()
        .zip(&appliances)
        .map(|(server, appliance)| server.client(appliance.client_config("client")))
        .collect();
    for (i, client) in clients.iter().enumerate() {
        assert_eq!(public_keys(client).await, vec![share_keys[i].clone()]);
        let (status, infos) = get(client, "/api/v1/keystake/keys").await;
        assert_eq!(status, 200, "{infos}");
        assert_eq!(
            infos,
            json!([{
                "public_key": share_keys[i],
                "share_index": i + 1,
                "threshold": T,
                "participants": N,
                "group_public_key": group_key,
                "origin": "split",
            }])
        );
    }

    // The same attestation on every appliance: odd ones addressed by share key, even ones by
    // the group key.
    let duty = attestation(1000, 1001, 7);
    let signing_root =
        request::parse_sign_request(&serde_json::to_vec(&duty).unwrap(), &Network::mainnet())
            .unwrap()
            .signing_root;
    let expected = master.sign(signing_root.as_bytes()).to_hex();
    let mut partials = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let identifier = if i % 2 == 0 {
            &share_keys[i]
        } else {
            &group_key
        };
        let (status, body) = sign(client, identifier, &duty).await;
        assert_eq!(status, 200, "appliance {}: {body}", i + 1);
        let partial = body["signature"].as_str().unwrap().to_owned();
        assert_ne!(partial, expected, "a share must not sign as the whole key");
        partials.push(partial);
    }
    let p = |i: usize| (i, partials[i - 1].as_str());
    let root_args = vec!["--signing-root".to_owned(), signing_root.to_hex()];
    let manifest_args = vec!["--manifest".to_owned(), s(&manifest_path).to_owned()];

    // Any three combine to the original key's signature, byte for byte.
    for subset in [[1, 2, 3], [1, 2, 4], [1, 3, 4], [2, 3, 4]] {
        let (ok, stdout, stderr) = combine(&manifest_args, &subset.map(p), &root_args);
        assert!(ok, "{subset:?}: {stderr}");
        assert_eq!(stdout.trim(), expected, "{subset:?}");
        assert!(stderr.is_empty(), "{stderr}");
    }
    // The request body instead of the signing root.
    let request_path = dealer.path().join("attestation.json");
    std::fs::write(&request_path, duty.to_string()).unwrap();
    let request_args = ["--request".to_owned(), s(&request_path).to_owned()];
    let (ok, stdout, stderr) = combine(&manifest_args, &[p(3), p(1), p(2)], &request_args);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), expected);
    // Explicit share public keys instead of a manifest.
    let mut explicit: Vec<String> = Vec::new();
    for (i, key) in share_keys.iter().enumerate() {
        explicit.extend(["--share-pubkey".to_owned(), format!("{}:{key}", i + 1)]);
    }
    explicit.extend([
        "--group-pubkey".to_owned(),
        group_key.clone(),
        "--threshold".to_owned(),
        T.to_string(),
    ]);
    let (ok, stdout, stderr) = combine(&explicit, &[p(2), p(3), p(4)], &root_args);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), expected);
    // Explicit keys that belong to another group key are refused.
    let mut wrong_group = explicit.clone();
    let position = wrong_group.iter().position(|a| a == &group_key).unwrap();
    wrong_group[position] = share_keys[0].clone();
    let (ok, _, stderr) = combine(&wrong_group, &[p(1), p(2), p(3)], &root_args);
    assert!(
        !ok && stderr.contains("do not belong to the group key"),
        "{stderr}"
    );

    // Two partials are not enough, and one partial twice does not count twice.
    let (ok, stdout, stderr) = combine(&manifest_args, &[p(1), p(2)], &root_args);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("2 distinct partial signatures given, 3 needed"),
        "{stderr}"
    );
    let (ok, _, stderr) = combine(&manifest_args, &[p(1), p(2), p(2)], &root_args);
    assert!(
        !ok && stderr.contains("share index 2 appears more than once"),
        "{stderr}"
    );

    // One tampered partial among four (share 3's signature under index 2): the honest three
    // combine and the culprit is named, verifying first or optimistically.
    for optimistic in [false, true] {
        let mut tail = root_args.clone();
        if optimistic {
            tail.push("--optimistic".into());
        }
        let one_tampered = [p(1), (2, partials[2].as_str()), p(3), p(4)];
        let (ok, stdout, stderr) = combine(&manifest_args, &one_tampered, &tail);
        assert!(ok, "optimistic={optimistic}: {stderr}");
        assert_eq!(stdout.trim(), expected);
        assert!(stderr.contains("culprits: 2"), "{stderr}");
    }
    // Two bad partials among four: refused, both culprits named.
    let wrong_message = master.sign(b"another message").to_hex();
    let two_bad = [
        p(1),
        (2, wrong_message.as_str()),
        p(3),
        (4, partials[0].as_str()),
    ];
    let (ok, stdout, stderr) = combine(&manifest_args, &two_bad, &root_args);
    assert!(!ok && stdout.is_empty());
    assert!(stderr.contains("culprits: 2, 4"), "{stderr}");
    // A partial from an index the manifest does not have is a culprit too.
    let unknown_index = [p(1), p(2), (9, partials[2].as_str())];
    let (ok, _, stderr) = combine(&manifest_args, &unknown_index, &root_args);
    assert!(!ok && stderr.contains("culprits: 9"), "{stderr}");

    // A slashable second attestation (same target, another block root) is refused by each
    // appliance, whether addressed by share key or group key; the first is answered again.
    let slashable = attestation(1000, 1001, 8);
    for (i, client) in clients.iter().enumerate() {
        for identifier in [&share_keys[i], &group_key] {
            let (status, body) = sign(client, identifier, &slashable).await;
            assert_eq!(status, 412, "appliance {}: {body}", i + 1);
            assert_eq!(body["rule"], "double_vote", "{body}");
        }
        let (status, body) = sign(client, &share_keys[i], &duty).await;
        assert_eq!(
            (status, body["signature"].as_str()),
            (200, Some(partials[i].as_str()))
        );
    }
    // A share key of another appliance is unknown here.
    let (status, _) = sign(&clients[0], &share_keys[1], &duty).await;
    assert_eq!(status, 404);

    // A deleted share still holds its validator's place (issue 17): after appliance 1's share
    // is deleted, a share of the same validator from a second split (fresh polynomial, same
    // group key, no slashing history here) is refused — it could sign the duty refused above.
    let token = appliances[0].keymanager_token();
    let delete = json!({"pubkeys": [share_keys[0]]});
    let (status, body) = keymanager(
        &clients[0],
        http::Method::DELETE,
        Some(&token),
        Some(&delete),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let resplit = dealer.path().join("resplit");
    let mut resplit_args = split_args.clone();
    resplit_args[8] = s(&resplit).into();
    // Appliance 1's enrolment key second: it gets share 2 of the new split.
    let (first, second) = (resplit_args[10].clone(), resplit_args[12].clone());
    resplit_args[10] = second;
    resplit_args[12] = first;
    run_ok(&resplit_args);
    let (ok, _, err) = import_share(
        &appliances[0],
        &resplit.join("share-2.pkg"),
        &resplit.join("manifest.json"),
    );
    assert!(
        !ok && err.contains("another share of this validator is stored (active or deleted)"),
        "{err}"
    );
    drop(servers);
}
