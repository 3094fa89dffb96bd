//! Distributed key generation on real parts (issue 12): four appliances (four data directories,
//! four SoftHSM2 tokens, four CAs from four `certs generate`, four `serve` processes with mutual
//! TLS on 127.0.0.1) run `dkg run` as the real binary. Peers authenticate by the certificates
//! pinned in the definition (no shared CA). Faults are real: a participant that never starts,
//! one killed mid-ceremony, one restarted mid-ceremony, a peer's server dropped and restarted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keystake_core::bls;
use keystake_core::consensus::Network;
use keystake_core::dkg::{Abort, Lock};
use keystake_core::request;
use keystake_core::threshold;
use keystake_core::types::{BlsSignature, ShareIndex};
use keystake_signer::hsm::SealContext;

use crate::common::*;

pub(crate) fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

pub(crate) struct Cluster {
    pub(crate) appliances: Vec<Appliance>,
    pub(crate) servers: Vec<Server>,
    pub(crate) identities: Vec<PathBuf>,
    pub(crate) work: tempfile::TempDir,
}

impl Cluster {
    /// Four appliances, each with its own CA, serving; their identity files.
    pub(crate) fn start() -> Cluster {
        Cluster::start_with(4)
    }

    /// `n` appliances, each with its own CA, serving; their identity files.
    pub(crate) fn start_with(n: usize) -> Cluster {
        let appliances: Vec<Appliance> = (0..n).map(|_| Appliance::create()).collect();
        grant_dkg_peers(&appliances);
        let servers: Vec<Server> = appliances.iter().map(Server::start).collect();
        let work = tempfile::tempdir().unwrap();
        let identities = appliances
            .iter()
            .zip(&servers)
            .enumerate()
            .map(|(i, (appliance, server))| {
                let out = work.path().join(format!("id{}.json", i + 1));
                appliance.cli_ok(
                    &["dkg", "identity"],
                    &["--endpoint", &server.url, "--out", s(&out)],
                );
                out
            })
            .collect();
        Cluster {
            appliances,
            servers,
            identities,
            work,
        }
    }

    /// A 3-of-4 definition for `validators` (each scenario its own: a new ceremony id).
    pub(crate) fn definition(&self, name: &str, validators: u32) -> PathBuf {
        let all: Vec<usize> = (1..=self.identities.len()).collect();
        self.definition_of(name, validators, &all)
    }

    /// A 3-of-n definition of the appliances `set` (1-based, in index order).
    pub(crate) fn definition_of(&self, name: &str, validators: u32, set: &[usize]) -> PathBuf {
        let out = self.work.path().join(format!("{name}.definition.json"));
        let mut args = vec![
            "dkg".to_owned(),
            "definition".into(),
            "--threshold".into(),
            "3".into(),
            "--validators".into(),
            validators.to_string(),
            "--network".into(),
            "mainnet".into(),
            "--withdrawal-address".into(),
            format!("0x{}", "ab".repeat(20)),
            "--fee-recipient".into(),
            format!("0x{}", "cd".repeat(20)),
            "--identity".into(),
        ];
        args.extend(set.iter().map(|i| s(&self.identities[i - 1]).to_owned()));
        args.extend(["--out".into(), s(&out).to_owned()]);
        run_ok(&args);
        out
    }

    pub(crate) fn out_dir(&self, name: &str, participant: usize) -> PathBuf {
        self.work.path().join(format!("{name}-out{participant}"))
    }

    /// `dkg run` of participant `i` (1-based) as a child process.
    pub(crate) fn run(&self, i: usize, definition: &Path, name: &str, timeout_secs: u64) -> Child {
        Command::new(BIN)
            .args([
                "dkg",
                "run",
                "--config",
                s(&self.appliances[i - 1].config),
                "--definition",
                s(definition),
                "--out",
                s(&self.out_dir(name, i)),
                "--timeout-secs",
                &timeout_secs.to_string(),
            ])
            .env("KEYSTAKE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    pub(crate) fn endpoint(&self, i: usize) -> String {
        self.servers[i - 1].url.clone()
    }

    /// The DKG shares `keys list` shows on appliance `i`.
    pub(crate) fn dkg_shares(&self, i: usize) -> Vec<String> {
        self.appliances[i - 1]
            .cli_ok(&["keys", "list"], &[])
            .lines()
            .filter(|line| line.ends_with(" dkg"))
            .map(str::to_owned)
            .collect()
    }

    /// Wait until appliance `i`'s database holds its own message for `phase` (0 = deal) of the
    /// ceremony of `definition`.
    pub(crate) fn wait_for_own_message(&self, i: usize, definition: &Path, phase: u32) {
        let definition: keystake_core::dkg::Definition =
            serde_json::from_str(&std::fs::read_to_string(definition).unwrap()).unwrap();
        let id = definition.ceremony_id();
        let database = self.appliances[i - 1].path().join("data/signer.sqlite");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(conn) = rusqlite::Connection::open(&database) {
                let count: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM dkg_messages
                         WHERE ceremony_id = ?1 AND phase = ?2 AND sender = ?3",
                        rusqlite::params![id.0.as_slice(), phase, i as u32],
                        |r| r.get(0),
                    )
                    .unwrap_or(0);
                if count > 0 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("participant {i} never stored its phase {phase} message");
    }
}

/// SHA-256 fingerprint (hex) of the certificate an appliance presents to DKG peers (its server
/// certificate, the one `dkg identity` pins).
pub(crate) fn dkg_fingerprint(appliance: &Appliance) -> String {
    let config = keystake_signer::config::Config::load(&appliance.config).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(&config.tls.server_cert).unwrap();
    keystake_signer::net::tls::ClientIdentity::from_der(&der)
        .unwrap()
        .fingerprint_hex()
}

/// Append a `dkg` grant for `fingerprint` to `appliance`'s policy (docs/dkg.md: what an operator
/// does for each peer before a ceremony; a running `serve` needs a reload to see it).
pub(crate) fn grant_dkg(appliance: &Appliance, fingerprint: &str) {
    let config = keystake_signer::config::Config::load(&appliance.config).unwrap();
    let path = config.policy_file.unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[[client]]\nfingerprint = \"{fingerprint}\"\n[[client.grant]]\nkeys = \"all\"\noperations = [\"dkg\"]\n"
    ));
    std::fs::write(&path, text).unwrap();
}

/// Every appliance grants `dkg` to every other one's certificate (before `serve` starts).
pub(crate) fn grant_dkg_peers(appliances: &[Appliance]) {
    let fingerprints: Vec<String> = appliances.iter().map(dkg_fingerprint).collect();
    for (i, appliance) in appliances.iter().enumerate() {
        for (j, fingerprint) in fingerprints.iter().enumerate() {
            if i != j {
                grant_dkg(appliance, fingerprint);
            }
        }
    }
}

pub(crate) fn finish(child: Child) -> (bool, String, String) {
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub(crate) fn read_lock(path: &Path) -> Lock {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every honest participant failed, named `culprit` with its endpoint, wrote failure.json
/// naming it, and kept no DKG share.
pub(crate) fn assert_aborted(
    cluster: &Cluster,
    name: &str,
    outcomes: &[(usize, (bool, String, String))],
    culprit: usize,
) {
    let named = format!("participant {culprit} ({})", cluster.endpoint(culprit));
    for (i, (ok, stdout, stderr)) in outcomes {
        assert!(!ok, "participant {i} succeeded: {stdout}");
        assert!(stderr.contains(&named), "participant {i}: {stderr}");
        let failure: Abort = serde_json::from_str(
            &std::fs::read_to_string(cluster.out_dir(name, *i).join("failure.json")).unwrap(),
        )
        .unwrap();
        let culprits: Vec<u32> = failure.culprit_indices().iter().map(|c| c.get()).collect();
        assert_eq!(
            culprits,
            vec![culprit as u32],
            "participant {i}: {failure:?}"
        );
        assert!(
            cluster.dkg_shares(*i).is_empty(),
            "participant {i} kept shares"
        );
        assert!(!cluster.out_dir(name, *i).join("lock.json").exists());
    }
}

/// Environment variable naming the configuration [`print_unsealed_shares`] opens.
const UNSEAL_CONFIG: &str = "KEYSTAKE_TEST_UNSEAL_CONFIG";

/// Test-only helper, run in a child process by [`assert_no_plaintext_shares`] (the SoftHSM2
/// library reads its configuration once per process, so each appliance's token needs its own
/// process): unseal every stored share with the appliance's HSM and print it.
#[test]
#[ignore = "helper run in a child process by assert_no_plaintext_shares"]
fn print_unsealed_shares() {
    let Ok(path) = std::env::var(UNSEAL_CONFIG) else {
        return;
    };
    let config = keystake_signer::config::Config::load(Path::new(&path)).unwrap();
    keystake_signer::app::prepare_hsm_environment(&config);
    let sealer = keystake_signer::app::open_sealer(&config).unwrap();
    let store = keystake_signer::app::open_store(&config).unwrap();
    for record in store.shares().unwrap() {
        let info = record.threshold.as_ref().unwrap();
        let context = SealContext {
            share_public_key: record.public_key,
            share_index: Some(info.index),
            group_public_key: Some(info.group_public_key),
        };
        let secret = sealer
            .unseal(&keystake_signer::hsm::SealedShare(record.sealed), &context)
            .unwrap();
        println!("SHARE {}", hex::encode(*secret));
    }
}

/// Unseal every stored share (through the helper above) and check that its bytes appear
/// nowhere in plaintext: not in any file of the appliances' directories (database, WAL, serve
/// logs) nor in the ceremony outputs.
fn assert_no_plaintext_shares(cluster: &Cluster) {
    let mut secrets: Vec<[u8; 32]> = Vec::new();
    for appliance in &cluster.appliances {
        let output = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "dkg::print_unsealed_shares",
                "--ignored",
                "--nocapture",
            ])
            .env(UNSEAL_CONFIG, &appliance.config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let found: Vec<[u8; 32]> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("SHARE "))
            .map(|h| hex::decode(h).unwrap().try_into().unwrap())
            .collect();
        assert_eq!(found.len(), 10, "{stdout}");
        secrets.extend(found);
    }
    let mut files = vec![cluster.work.path().to_owned()];
    files.extend(cluster.appliances.iter().map(|a| a.path().to_owned()));
    assert_nowhere_in_plaintext(files, &secrets);
}

/// No file under `files` (recursively) holds any of `secrets`, raw or as hex.
pub(crate) fn assert_nowhere_in_plaintext(mut files: Vec<PathBuf>, secrets: &[[u8; 32]]) {
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_lowercase();
        for secret in secrets {
            assert!(
                !bytes.windows(32).any(|w| w == secret.as_slice()),
                "share bytes in {}",
                path.display()
            );
            assert!(
                !text.contains(&hex::encode(secret)),
                "share hex in {}",
                path.display()
            );
        }
    }
}

/// The Python that has py_ecc (scripts/install-deps.sh makes the venv): `KEYSTAKE_PY_ECC_PYTHON`
/// (scripts/test.sh sets it), else the venv's default place under target/. Missing in CI is a
/// failure; elsewhere the check is skipped with a `SKIPPED:` line.
fn py_ecc_python() -> Option<PathBuf> {
    if let Some(python) = std::env::var_os("KEYSTAKE_PY_ECC_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            python.exists(),
            "KEYSTAKE_PY_ECC_PYTHON={} does not exist: run scripts/install-deps.sh",
            python.display()
        );
        return Some(python);
    }
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/py-ecc/venv/bin/python");
    if default.exists() {
        return Some(default);
    }
    let message = format!(
        "no py_ecc venv ({} missing, KEYSTAKE_PY_ECC_PYTHON unset): run scripts/install-deps.sh",
        default.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    println!("SKIPPED: independent deposit check: {message}");
    None
}

/// Runs scripts/verify-deposits.py (py_ecc and the consensus-spec SSZ rules, none of our code).
fn verify_deposits_py(python: &Path, deposit_data: &Path) -> (bool, String, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/verify-deposits.py");
    let output = Command::new(python)
        .arg(script)
        .arg(deposit_data)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `deposit-data.json` verifies with code that is not ours, and tampered copies are refused by
/// that same code for the right reason (so the check cannot pass vacuously).
fn verify_deposits_independently(deposit_path: &Path, deposits: &serde_json::Value, work: &Path) {
    let Some(python) = py_ecc_python() else {
        return;
    };
    let started = Instant::now();
    let (ok, stdout, stderr) = verify_deposits_py(&python, deposit_path);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("verify-deposits: 10 deposits OK"),
        "{stdout}"
    );
    println!("py_ecc verified 10 deposits in {:?}", started.elapsed());

    // Each tampering is at entry 0, so each refusal costs at most one pairing check.
    let flip_last_byte = |value: &serde_json::Value| {
        let hex_text = value.as_str().unwrap();
        let (head, last) = hex_text.split_at(hex_text.len() - 2);
        serde_json::Value::from(format!(
            "{head}{:02x}",
            u8::from_str_radix(last, 16).unwrap() ^ 1
        ))
    };
    for (name, reason) in [
        ("amount", "deposit_message_root"),
        ("signature-byte", "the BLS signature does not verify"),
        (
            "signature-of-another-validator",
            "the BLS signature does not verify",
        ),
        ("data-root", "deposit_data_root"),
    ] {
        let mut tampered = deposits.clone();
        match name {
            "amount" => {
                tampered[0]["amount"] = (deposits[0]["amount"].as_u64().unwrap() - 1).into()
            }
            "signature-byte" => {
                tampered[0]["signature"] = flip_last_byte(&deposits[0]["signature"])
            }
            "signature-of-another-validator" => {
                tampered[0]["signature"] = deposits[1]["signature"].clone();
                tampered[1]["signature"] = deposits[0]["signature"].clone();
            }
            "data-root" => {
                tampered[0]["deposit_data_root"] = flip_last_byte(&deposits[0]["deposit_data_root"])
            }
            _ => unreachable!("{name}"),
        }
        let path = work.join(format!("tampered-deposit-data-{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&tampered).unwrap()).unwrap();
        let (ok, stdout, stderr) = verify_deposits_py(&python, &path);
        assert!(
            !ok && stderr.contains("entry 0 (pubkey ") && stderr.contains(reason),
            "{name}: {stdout}\n{stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn four_appliances_generate_ten_validators_and_sign_with_them() {
    let mut cluster = Cluster::start();
    let definition = cluster.definition("ok", 10);
    let children: Vec<Child> = (1..=4)
        .map(|i| cluster.run(i, &definition, "ok", 60))
        .collect();
    let outcomes: Vec<_> = children.into_iter().map(finish).collect();
    for (i, (ok, stdout, stderr)) in outcomes.iter().enumerate() {
        assert!(ok, "participant {}: {stdout}\n{stderr}", i + 1);
        assert!(stdout.contains("10 shares sealed (origin dkg)"), "{stdout}");
    }
    let locks: Vec<Lock> = (1..=4)
        .map(|i| read_lock(&cluster.out_dir("ok", i).join("lock.json")))
        .collect();
    for lock in &locks {
        assert_eq!(lock.lock_hash, locks[0].lock_hash);
    }
    let lock_path = cluster.out_dir("ok", 1).join("lock.json");
    let deposit_path = cluster.out_dir("ok", 1).join("deposit-data.json");
    let verified = run_ok(&[
        "dkg",
        "verify",
        "--lock",
        s(&lock_path),
        "--deposit-data",
        s(&deposit_path),
    ]);
    assert!(verified.starts_with("lock OK"), "{verified}");
    let deposits: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&deposit_path).unwrap()).unwrap();
    assert_eq!(deposits.as_array().unwrap().len(), 10);
    assert_eq!(
        deposits[0]["withdrawal_credentials"].as_str().unwrap()[..2],
        *"01"
    );
    assert_eq!(deposits[0]["network_name"], "mainnet");
    verify_deposits_independently(&deposit_path, &deposits, cluster.work.path());

    // A tampered lock is refused by `dkg verify`.
    let mut tampered = locks[0].clone();
    tampered.validators[2].public_shares.swap(0, 3);
    let tampered_path = cluster.work.path().join("tampered-lock.json");
    std::fs::write(&tampered_path, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let (ok, _, stderr) = run(&["dkg", "verify", "--lock", s(&tampered_path)]);
    assert!(!ok && stderr.contains("public share"), "{stderr}");

    // Each appliance holds exactly its share of each validator, origin dkg.
    for i in 1..=4 {
        let shares = cluster.dkg_shares(i);
        assert_eq!(shares.len(), 10, "{shares:?}");
        for (v, validator) in locks[0].validators.iter().enumerate() {
            let line = format!(
                "{} active share {i}/4 threshold 3 group {} dkg",
                validator.public_shares[i - 1],
                validator.group_public_key
            );
            assert!(shares.contains(&line), "validator {v}: {shares:?}");
        }
    }

    // The running servers pick the new keys up on restart; partial attestations over REST
    // (addressed by group key) combine into valid group signatures.
    for server in &mut cluster.servers {
        server.kill();
    }
    cluster.servers = cluster.appliances.iter().map(Server::start).collect();
    let clients: Vec<_> = cluster
        .servers
        .iter()
        .zip(&cluster.appliances)
        .map(|(server, appliance)| server.client(appliance.client_config("client")))
        .collect();
    let duty = attestation(2000, 2001, 9);
    let signing_root =
        request::parse_sign_request(&serde_json::to_vec(&duty).unwrap(), &Network::mainnet())
            .unwrap()
            .signing_root;
    for (v, validator) in locks[0].validators.iter().enumerate() {
        let group = validator.group_public_key.to_hex();
        let mut partials = Vec::new();
        for (i, client) in clients.iter().enumerate().skip(v % 2) {
            let (status, body) = sign(client, &group, &duty).await;
            assert_eq!(status, 200, "appliance {}: {body}", i + 1);
            let signature: BlsSignature = body["signature"].as_str().unwrap().parse().unwrap();
            partials.push((ShareIndex::new(i as u32 + 1).unwrap(), signature));
        }
        let keys: BTreeMap<ShareIndex, _> = validator
            .public_shares
            .iter()
            .enumerate()
            .map(|(i, k)| (ShareIndex::new(i as u32 + 1).unwrap(), *k))
            .collect();
        let combined = threshold::combine(
            locks[0].definition.threshold,
            &keys,
            &validator.group_public_key,
            signing_root.as_bytes(),
            &partials[..3],
            true,
            &mut rand::rngs::OsRng,
        )
        .unwrap();
        assert!(combined.culprits.is_empty());
        assert!(bls::verify(
            &validator.group_public_key,
            signing_root.as_bytes(),
            &combined.signature
        ));
        if v == 3 {
            // The real `combine` reads the lock as its manifest.
            let mut args = vec![
                "combine".to_owned(),
                "--manifest".into(),
                s(&lock_path).into(),
                "--validator".into(),
                "3".into(),
                "--signing-root".into(),
                signing_root.to_hex(),
            ];
            for (index, signature) in &partials[..3] {
                args.extend(["--partial".into(), format!("{index}:{signature}")]);
            }
            assert_eq!(run_ok(&args).trim(), combined.signature.to_hex());
        }
    }
    drop(clients);
    for server in &mut cluster.servers {
        server.kill();
    }
    assert_no_plaintext_shares(&cluster);
}

#[test]
fn faults_name_the_culprit_and_transient_failures_are_survived() {
    let mut cluster = Cluster::start();

    // Participant 4 never starts: everyone else names it after the phase timeout.
    let definition = cluster.definition("never", 2);
    let children: Vec<Child> = (1..=3)
        .map(|i| cluster.run(i, &definition, "never", 3))
        .collect();
    let outcomes: Vec<_> = (1..=3).zip(children.into_iter().map(finish)).collect();
    assert_aborted(&cluster, "never", &outcomes, 4);

    // Participant 2 stops mid-ceremony (killed once its deal is out).
    let definition = cluster.definition("stops", 3);
    let mut children: Vec<Child> = (1..=4)
        .map(|i| cluster.run(i, &definition, "stops", 4))
        .collect();
    cluster.wait_for_own_message(2, &definition, 0);
    children[1].kill().unwrap();
    let _ = children[1].wait();
    let outcomes: Vec<_> = children
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(i, child)| (i + 1, finish(child)))
        .collect();
    assert_aborted(&cluster, "stops", &outcomes, 2);

    // A ceremony running on appliance 2 pins its participants' certificates. A fifth
    // participant's identity pins a certificate of a fifth CA whose key file the test holds:
    // with it, a peer of another CA gets through TLS, but only to the DKG service — every
    // other route refuses it. A certificate of another CA that no definition pins is refused at
    // the handshake.
    let fifth = Appliance::create();
    let fifth_id = cluster.work.path().join("id5.json");
    fifth.cli_ok(
        &["dkg", "identity"],
        &["--endpoint", "https://127.0.0.1:9", "--out", s(&fifth_id)],
    );
    let mut identity: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fifth_id).unwrap()).unwrap();
    use rustls_pki_types::pem::PemObject;
    let pinned_der =
        rustls_pki_types::CertificateDer::from_pem_file(fifth.certs().join("client.pem")).unwrap();
    identity["tls_certificate"] = format!("0x{}", hex::encode(pinned_der.as_ref())).into();
    std::fs::write(&fifth_id, serde_json::to_vec(&identity).unwrap()).unwrap();
    let pinned_definition = cluster.work.path().join("pinned.definition.json");
    let mut args: Vec<String> = [
        "dkg",
        "definition",
        "--threshold",
        "3",
        "--validators",
        "1",
        "--network",
        "mainnet",
        "--withdrawal-address",
        &format!("0x{}", "ab".repeat(20)),
        "--fee-recipient",
        &format!("0x{}", "cd".repeat(20)),
        "--identity",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    args.extend(cluster.identities.iter().map(|p| s(p).to_owned()));
    args.extend([
        s(&fifth_id).to_owned(),
        "--out".into(),
        s(&pinned_definition).to_owned(),
    ]);
    run_ok(&args);
    let mut waiting = cluster.run(2, &pinned_definition, "pinned", 60);
    cluster.wait_for_own_message(2, &pinned_definition, 0);
    let ca2 = cluster.appliances[1].certs().join("ca.pem");
    let pinned = identity_config(&ca2, &fifth.certs(), "client");
    let unpinned = identity_config(&ca2, &cluster.appliances[0].certs(), "client");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let peer = cluster.servers[1].client(pinned);
        let (status, body) = get(&peer, "/api/v1/eth2/publicKeys").await;
        assert_eq!(status, 403, "{body}");
        let stranger = cluster.servers[1].client(unpinned);
        assert!(try_request(
            &stranger,
            http::Method::GET,
            "/api/v1/eth2/publicKeys",
            &[],
            None
        )
        .await
        .is_err());
    });
    // The pinned fifth participant without a `dkg` grant in appliance 2's policy is refused
    // by the DKG service itself; granted (and the policy reloaded), it is answered.
    let fetch = |tls: std::sync::Arc<rustls::ClientConfig>| {
        let endpoint = cluster.endpoint(2);
        let definition: keystake_core::dkg::Definition =
            serde_json::from_str(&std::fs::read_to_string(&pinned_definition).unwrap()).unwrap();
        // tonic speaks HTTP/2 only: announce it like the DKG peer channels do.
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let tls = std::sync::Arc::new(tls);
        runtime.block_on(async move {
            let mut client = keystake_signer::net::grpc::dkg::peer_client(&endpoint, tls).unwrap();
            client
                .fetch(keystake_signer::net::grpc::pb::FetchRequest {
                    ceremony_id: definition.ceremony_id().0.to_vec(),
                    phase: 0,
                    sender: 2,
                })
                .await
                .map(|r| r.into_inner().found)
        })
    };
    let refused = fetch(identity_config(&ca2, &fifth.certs(), "client")).unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("not named in the authorization policy"),
        "{refused:?}"
    );
    let fifth_client_fingerprint = keystake_signer::net::tls::ClientIdentity::from_der(&pinned_der)
        .unwrap()
        .fingerprint_hex();
    grant_dkg(&cluster.appliances[1], &fifth_client_fingerprint);
    let pid = cluster.servers[1].child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match fetch(identity_config(&ca2, &fifth.certs(), "client")) {
            Ok(found) => {
                assert!(found, "participant 2's deal is stored");
                break;
            }
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(status) => panic!("still refused after the grant: {status:?}"),
        }
    }
    waiting.kill().unwrap();
    let _ = waiting.wait();

    // Participant 3 is restarted mid-ceremony: it resumes from its database and the ceremony
    // succeeds; and participant 1's server drops mid-ceremony and comes back on its port: its
    // peers retry and survive it.
    let definition = cluster.definition("resume", 4);
    let mut children: Vec<Child> = (1..=4)
        .map(|i| cluster.run(i, &definition, "resume", 60))
        .collect();
    cluster.wait_for_own_message(3, &definition, 0);
    children[2].kill().unwrap();
    let _ = children[2].wait();
    let port = cluster.servers[0].port();
    cluster.servers[0].kill();
    std::thread::sleep(Duration::from_millis(1500));
    children[2] = cluster.run(3, &definition, "resume", 60);
    let restarted = serve_command(&cluster.appliances[0], &format!("127.0.0.1:{port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut restarted = restarted;
    let mut lines = StdoutLines::of(&mut restarted);
    assert!(lines
        .wait_for("listening on ", Duration::from_secs(30))
        .is_some());
    for (i, child) in children.into_iter().enumerate() {
        let (ok, stdout, stderr) = finish(child);
        assert!(ok, "participant {}: {stdout}\n{stderr}", i + 1);
    }
    let locks: Vec<Lock> = (1..=4)
        .map(|i| read_lock(&cluster.out_dir("resume", i).join("lock.json")))
        .collect();
    assert!(locks.iter().all(|l| l.lock_hash == locks[0].lock_hash));
    for i in 1..=4 {
        assert_eq!(cluster.dkg_shares(i).len(), 4);
    }
    let _ = restarted.kill();
    let _ = restarted.wait();
}
