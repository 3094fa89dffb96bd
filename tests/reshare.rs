//! Resharing through the real binary (issue 13).
//!
//! * `reshare_definition_and_verify_previous_through_the_binary`: the lock comes from an
//!   in-process 3-of-4 DKG of the pure core, the reshare to {2,3,4,5} runs in process, and the
//!   binary writes the definition and checks the reshared lock against the previous one;
//! * `five_appliances_reshare_a_dkg_validator`: real parts — five appliances (own data
//!   directories, SoftHSM2 tokens, CAs, `serve` processes with mTLS on 127.0.0.1), a real 3-of-4
//!   `dkg run` on the first four, an attestation signed by the old group, then `dkg reshare` to
//!   {2,3,4,5}: same group keys, new partials over REST combine, appliance 5 refuses (412) a
//!   double vote against what the old group signed, appliance 1 no longer signs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use keystake_core::bls;
use keystake_core::consensus::Network;
use keystake_core::request;
use keystake_core::threshold;
use keystake_core::types::{BlsSignature, ShareIndex};

use keystake_core::dkg::{
    holding_of, local_setup, run_local, run_local_reshare, BroadcastSigner, LocalParty, Lock,
    Participant, ReshareDefinition, SoftwareDecryptor, SoftwareSigner,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use zeroize::Zeroizing;

use crate::common::*;

fn write_json<T: serde::Serialize>(path: &std::path::Path, value: &T) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

#[test]
fn reshare_definition_and_verify_previous_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    let text = |name: &str| path(name).to_str().unwrap().to_owned();
    let mut rng = StdRng::seed_from_u64(13);
    let (definition, old) = local_setup(3, 4, 2, "hoodi", &mut rng).unwrap();
    let results = run_local(&definition, &old).unwrap();
    let lock = &results[0].lock;
    write_json(&path("lock.json"), lock);
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut_slice());
    let fresh = LocalParty {
        signer: SoftwareSigner::random(&mut rng),
        decryptor: SoftwareDecryptor::random(&mut rng),
        seed,
    };
    for i in 2..=4 {
        write_json(
            &path(&format!("id{i}.json")),
            &lock.definition.participants[i - 1],
        );
    }
    write_json(
        &path("id5.json"),
        &Participant {
            endpoint: "https://127.0.0.1:9105".into(),
            enrolment_public_key: fresh.decryptor.public_key(),
            identity_public_key: fresh.signer.identity(),
            tls_certificate: vec![5; 32],
        },
    );
    let identities: Vec<String> = (2..=5).map(|i| text(&format!("id{i}.json"))).collect();
    let mut args = vec![
        "dkg".to_owned(),
        "reshare-definition".into(),
        "--lock".into(),
        text("lock.json"),
        "--threshold".into(),
        "3".into(),
        "--identity".into(),
    ];
    args.extend(identities.iter().cloned());
    args.extend(["--out".into(), text("reshare.json")]);
    let out = run_ok(&args);
    let reshare: ReshareDefinition =
        serde_json::from_slice(&std::fs::read(path("reshare.json")).unwrap()).unwrap();
    assert_eq!(out.trim(), format!("reshare {}", reshare.reshare_id()));
    reshare.validate().unwrap();
    assert_eq!(reshare.participants[0], lock.definition.participants[1]);
    assert_eq!(
        reshare.participants[3].identity_public_key,
        fresh.signer.identity()
    );
    assert_eq!(reshare.dealers.len(), 4);

    // Never clobbered; a threshold of 1 is refused.
    let (ok, _, stderr) = run(&args);
    assert!(!ok && stderr.contains("exists"), "{stderr}");
    let mut low = args.clone();
    low[5] = "1".into();
    *low.last_mut().unwrap() = text("low.json");
    let (ok, _, stderr) = run(&low);
    assert!(!ok && stderr.contains("threshold"), "{stderr}");

    // The reshare itself (seats: old 1 leaving, old 2–4 staying, the fresh member).
    let parties: Vec<&LocalParty> = old.iter().chain(std::iter::once(&fresh)).collect();
    let mut holdings: Vec<_> = results
        .iter()
        .map(|r| Some(holding_of(r).unwrap()))
        .collect();
    holdings.push(None);
    let reshared = run_local_reshare(&reshare, &parties, holdings, 1000).unwrap();
    let new_lock: &Lock = &reshared[0].lock;
    write_json(&path("new-lock.json"), new_lock);
    let out = run_ok(&[
        "dkg",
        "verify",
        "--lock",
        &text("new-lock.json"),
        "--previous",
        &text("lock.json"),
    ]);
    assert!(out.contains("reshare OK: 2 validators"), "{out}");
    assert!(
        out.contains("(3-of-4) now 3-of-4, same group keys"),
        "{out}"
    );

    // Against another lock (other group keys) it fails.
    let (other_definition, other_parties) = local_setup(3, 4, 2, "hoodi", &mut rng).unwrap();
    let other = run_local(&other_definition, &other_parties).unwrap();
    write_json(&path("other-lock.json"), &other[0].lock);
    let (ok, _, stderr) = run(&[
        "dkg",
        "verify",
        "--lock",
        &text("new-lock.json"),
        "--previous",
        &text("other-lock.json"),
    ]);
    assert!(!ok && stderr.contains("group key differs"), "{stderr}");
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn spawn(args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .env(
            "KEYSTAKE_LOG",
            std::env::var("RESHARE_TEST_LOG").unwrap_or("info".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finish(child: Child) -> (bool, String, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Restart `server` on the same port: the endpoints in the identity files stay true (a
/// restarted appliance keeps its address).
fn restart(appliance: &Appliance, server: &mut Server) {
    server.kill();
    let port = server.url.rsplit(':').next().unwrap().to_owned();
    let log_file =
        std::fs::File::create(appliance.path().join(format!("serve-{port}-again.log"))).unwrap();
    let mut child = serve_command(appliance, &format!("127.0.0.1:{port}"))
        .env("KEYSTAKE_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let mut stdout = StdoutLines::of(&mut child);
    let url = stdout
        .wait_for("listening on ", std::time::Duration::from_secs(30))
        .expect("the server restarts on its port");
    assert_eq!(url, server.url);
    *server = Server {
        child,
        url,
        log: server.log.clone(),
        stdout,
    };
}

fn read_lock(path: &Path) -> Lock {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn signing_root_of(duty: &serde_json::Value) -> keystake_core::types::Root {
    request::parse_sign_request(&serde_json::to_vec(duty).unwrap(), &Network::mainnet())
        .unwrap()
        .signing_root
}

#[tokio::test(flavor = "multi_thread")]
async fn five_appliances_reshare_a_dkg_validator() {
    let appliances: Vec<Appliance> = (0..5).map(|_| Appliance::create()).collect();
    crate::dkg::grant_dkg_peers(&appliances);
    let mut servers: Vec<Server> = appliances.iter().map(Server::start).collect();
    let work = tempfile::tempdir().unwrap();
    let path = |name: &str| work.path().join(name);
    let identities: Vec<PathBuf> = appliances
        .iter()
        .zip(&servers)
        .enumerate()
        .map(|(i, (appliance, server))| {
            let out = path(&format!("id{}.json", i + 1));
            appliance.cli_ok(
                &["dkg", "identity"],
                &["--endpoint", &server.url, "--out", s(&out)],
            );
            out
        })
        .collect();

    // A real 3-of-4 DKG of two validators on appliances 1–4.
    let mut args: Vec<String> = [
        "dkg",
        "definition",
        "--threshold",
        "3",
        "--validators",
        "2",
        "--network",
        "mainnet",
    ]
    .map(String::from)
    .to_vec();
    args.extend([
        "--withdrawal-address".into(),
        format!("0x{}", "ab".repeat(20)),
        "--fee-recipient".into(),
        format!("0x{}", "cd".repeat(20)),
        "--identity".into(),
    ]);
    args.extend(identities[..4].iter().map(|p| s(p).to_owned()));
    args.extend(["--out".into(), s(&path("definition.json")).to_owned()]);
    run_ok(&args);
    let children: Vec<Child> = (1..=4)
        .map(|i| {
            spawn(&[
                "dkg".into(),
                "run".into(),
                "--config".into(),
                s(&appliances[i - 1].config).into(),
                "--definition".into(),
                s(&path("definition.json")).into(),
                "--out".into(),
                s(&path(&format!("dkg{i}"))).into(),
                "--timeout-secs".into(),
                "60".into(),
            ])
        })
        .collect();
    for (i, (ok, stdout, stderr)) in children.into_iter().map(finish).enumerate() {
        assert!(ok, "dkg run {}: {stdout}\n{stderr}", i + 1);
    }
    let old_lock_path = path("dkg1/lock.json");
    let old_lock = read_lock(&old_lock_path);
    let group = old_lock.validators[0].group_public_key.to_hex();

    // The old group signs an attestation (appliances 1–3; servers restarted to load the keys).
    for (appliance, server) in appliances.iter().zip(servers.iter_mut()) {
        restart(appliance, server);
    }
    let clients: Vec<_> = servers
        .iter()
        .zip(&appliances)
        .map(|(server, appliance)| server.client(appliance.client_config("client")))
        .collect();
    let signed = attestation(2000, 2001, 9);
    for client in &clients[..3] {
        let (status, body) = sign(client, &group, &signed).await;
        assert_eq!(status, 200, "{body}");
    }
    drop(clients);

    // Reshare to {2,3,4,5}, 3-of-4, on all five appliances.
    let mut args: Vec<String> = [
        "dkg",
        "reshare-definition",
        "--lock",
        s(&old_lock_path),
        "--threshold",
        "3",
        "--identity",
    ]
    .map(String::from)
    .to_vec();
    args.extend(identities[1..].iter().map(|p| s(p).to_owned()));
    args.extend(["--out".into(), s(&path("reshare.json")).to_owned()]);
    run_ok(&args);
    let children: Vec<Child> = (1..=5)
        .map(|i| {
            spawn(&[
                "dkg".into(),
                "reshare".into(),
                "--config".into(),
                s(&appliances[i - 1].config).into(),
                "--definition".into(),
                s(&path("reshare.json")).into(),
                "--out".into(),
                s(&path(&format!("reshare{i}"))).into(),
                "--timeout-secs".into(),
                "30".into(),
            ])
        })
        .collect();
    let outcomes: Vec<_> = children.into_iter().map(finish).collect();
    let report: Vec<String> = outcomes
        .iter()
        .enumerate()
        .map(|(i, (ok, stdout, stderr))| format!("appliance {}: {ok} {stdout}\n{stderr}", i + 1))
        .collect();
    assert!(outcomes.iter().all(|o| o.0), "{}", report.join("\n"));
    assert!(outcomes[0].1.contains("(Leaving)") && outcomes[0].1.contains("2 old shares retired"));
    assert!(outcomes[4].1.contains("(Joining)") && outcomes[4].1.contains("2 new shares sealed"));
    assert!(outcomes[1].1.contains("(Keeping)") && outcomes[1].1.contains("2 old shares retired"));
    let new_lock_path = path("reshare2/lock.json");
    let new_lock = read_lock(&new_lock_path);
    for i in 2..=5 {
        assert_eq!(read_lock(&path(&format!("reshare{i}/lock.json"))), new_lock);
    }
    let verified = run_ok(&[
        "dkg",
        "verify",
        "--lock",
        s(&new_lock_path),
        "--previous",
        s(&old_lock_path),
    ]);
    assert!(verified.contains("same group keys"), "{verified}");
    for (old, new) in old_lock.validators.iter().zip(&new_lock.validators) {
        assert_eq!(old.group_public_key, new.group_public_key);
    }

    for (appliance, server) in appliances.iter().zip(servers.iter_mut()) {
        restart(appliance, server);
    }
    let clients: Vec<_> = servers
        .iter()
        .zip(&appliances)
        .map(|(server, appliance)| server.client(appliance.client_config("client")))
        .collect();

    // Appliance 5 never held the validator, yet refuses a double vote against what the old
    // group signed (its floor came from the old members' signed reports).
    let double = attestation(2000, 2001, 11);
    let (status, body) = sign(&clients[4], &group, &double).await;
    assert_eq!(status, 412, "{body}");
    // A keeping member refuses it by its own carried-over history.
    let (status, body) = sign(&clients[1], &group, &double).await;
    assert_eq!(status, 412, "{body}");
    // Appliance 1 left: it no longer signs for the validator.
    let next = attestation(2001, 2002, 12);
    let (status, body) = sign(&clients[0], &group, &next).await;
    assert_ne!(status, 200, "{body}");

    // New partials over REST combine into a valid group signature.
    let root = signing_root_of(&next);
    let mut partials = Vec::new();
    for (j, client) in clients[1..].iter().enumerate() {
        let (status, body) = sign(client, &group, &next).await;
        assert_eq!(status, 200, "appliance {}: {body}", j + 2);
        let signature: BlsSignature = body["signature"].as_str().unwrap().parse().unwrap();
        partials.push((ShareIndex::new(j as u32 + 1).unwrap(), signature));
    }
    let keys: BTreeMap<ShareIndex, _> = new_lock.validators[0]
        .public_shares
        .iter()
        .enumerate()
        .map(|(i, k)| (ShareIndex::new(i as u32 + 1).unwrap(), *k))
        .collect();
    let combined = threshold::combine(
        new_lock.definition.threshold,
        &keys,
        &new_lock.validators[0].group_public_key,
        root.as_bytes(),
        &partials[1..],
        true,
        &mut rand::rngs::OsRng,
    )
    .unwrap();
    assert!(combined.culprits.is_empty());
    assert!(bls::verify(
        &new_lock.validators[0].group_public_key,
        root.as_bytes(),
        &combined.signature
    ));
    drop(clients);
    for server in &mut servers {
        server.kill();
    }
}
