//! DKG faults through real appliances (issue 12): a cheating participant with real parts — its
//! own SoftHSM2 token, its own CA and TLS identity pinned in the definition, its own `serve`
//! (the real binary) answering `keystake.v1.Dkg/Fetch` on 127.0.0.1 — while the honest
//! participants run `dkg run` as the real binary.
//!
//! The cheater's ceremony runs in a child process of this test binary ([`cheating_participant`]:
//! the SoftHSM2 library reads its configuration once per process), through the library's own
//! `dkg run` path (`cli::dkg::run_command_with`) with a tampering [`Outgoing`] hook on its own
//! messages; the shipped binary only ever passes the identity hook, so no cheating code is in
//! it. Each fault must end with every honest appliance exiting non-zero, naming exactly the
//! culprit ("participant 4 (https://…)") in its message and `failure.json`, with evidence whose
//! signatures check against the definition, and no share kept.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use keystake_core::bls::Scalar;
use keystake_core::dkg::{
    message_digest, Abort, Blame, Body, BroadcastSigner, Complaint, ComplaintReason, Definition,
    Fault, Phase, SignedMessage,
};
use keystake_core::types::{BlsPublicKey, ShareIndex};
use keystake_signer::dkg::run::Outgoing;

use crate::dkg::{assert_aborted, assert_nowhere_in_plaintext, finish, s, Cluster};

/// `KIND|CONFIG|DEFINITION|OUT` for [`cheating_participant`].
const CHEAT: &str = "KEYSTAKE_TEST_CHEAT";

/// How the cheater departs from the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cheat {
    /// Its deal's share for participant 3 (validator 1) does not open.
    BadShare,
    /// Its third commitment coefficient (validator 0) is not the one of its polynomial.
    WrongCommitment,
    /// Its proof of knowledge of f(0) (validator 0) does not verify.
    InvalidProof,
    /// Its proof of knowledge (validator 0) is empty.
    MissingProof,
    /// Its deal echo lists a different (validly signed) deal of its own than the one it served.
    Equivocation,
    /// It complains about participant 3's good share for validator 1.
    FalseComplaint,
    /// Its finish message carries a partial signature of the wrong message (the honest
    /// appliances have sealed their new shares by then: they must drop them).
    BadFinish,
}

impl Cheat {
    const ALL: [Cheat; 7] = [
        Cheat::BadShare,
        Cheat::WrongCommitment,
        Cheat::InvalidProof,
        Cheat::MissingProof,
        Cheat::Equivocation,
        Cheat::FalseComplaint,
        Cheat::BadFinish,
    ];

    fn name(self) -> &'static str {
        match self {
            Cheat::BadShare => "bad-share",
            Cheat::WrongCommitment => "wrong-commitment",
            Cheat::InvalidProof => "invalid-proof",
            Cheat::MissingProof => "missing-proof",
            Cheat::Equivocation => "equivocation",
            Cheat::FalseComplaint => "false-complaint",
            Cheat::BadFinish => "bad-finish",
        }
    }

    fn parse(name: &str) -> Cheat {
        *Cheat::ALL.iter().find(|c| c.name() == name).unwrap()
    }

    /// Whether `fault` is what the honest appliances must name the cheater for.
    fn expected(self, fault: &Fault) -> bool {
        match self {
            Cheat::BadShare => matches!(
                fault,
                Fault::BadShare { recipient, validator: 1, .. } if recipient.get() == 3
            ),
            Cheat::WrongCommitment => matches!(fault, Fault::BadShare { validator: 0, .. }),
            Cheat::InvalidProof | Cheat::MissingProof => matches!(
                fault,
                Fault::InvalidDeal { reason } if reason.contains("proof of knowledge")
            ),
            Cheat::Equivocation => matches!(fault, Fault::Equivocation { phase: Phase::Deal }),
            Cheat::FalseComplaint => matches!(
                fault,
                Fault::FalseComplaint { dealer, validator: 1 } if dealer.get() == 3
            ),
            Cheat::BadFinish => matches!(fault, Fault::BadFinish { .. }),
        }
    }
}

/// The tampering hook: rewrites one own message and signs it with the cheater's real identity
/// key (in its token).
struct Tamper(Cheat);

fn signed(
    definition: &Definition,
    own: &SignedMessage,
    body: &Body,
    signer: &dyn BroadcastSigner,
) -> SignedMessage {
    let mut message = own.clone();
    message.body = serde_json::to_vec(body).unwrap();
    message.signature = signer.sign_digest(&message.digest()).unwrap();
    assert!(message.verify(definition));
    message
}

impl Outgoing for Tamper {
    fn replace(
        &self,
        definition: &Definition,
        own: &SignedMessage,
        signer: &dyn BroadcastSigner,
    ) -> Option<SignedMessage> {
        let body: Body = serde_json::from_slice(&own.body).unwrap();
        match (self.0, own.phase, body) {
            (Cheat::BadShare, Phase::Deal, Body::Deal(mut dealing)) => {
                dealing.validators[1].shares[2].ciphertext[0] ^= 1;
                Some(signed(definition, own, &Body::Deal(dealing), signer))
            }
            (Cheat::WrongCommitment, Phase::Deal, Body::Deal(mut dealing)) => {
                let other = keystake_core::bls::SecretKey::random(&mut rand::rngs::OsRng);
                dealing.validators[0].commitments[2] = other.public_key();
                Some(signed(definition, own, &Body::Deal(dealing), signer))
            }
            (Cheat::InvalidProof, Phase::Deal, Body::Deal(mut dealing)) => {
                dealing.validators[0].proof.response[31] ^= 1;
                Some(signed(definition, own, &Body::Deal(dealing), signer))
            }
            (Cheat::MissingProof, Phase::Deal, Body::Deal(mut dealing)) => {
                dealing.validators[0].proof.response.clear();
                Some(signed(definition, own, &Body::Deal(dealing), signer))
            }
            (Cheat::Equivocation, Phase::DealEcho, Body::Echo { mut entries }) => {
                // A second deal body of its own, validly signed, in place of the one it served.
                let mut other = own.clone();
                other.phase = Phase::Deal;
                other.body = b"{\"kind\":\"deal\",\"validators\":[]}".to_vec();
                let hash = other.body_hash();
                let digest = message_digest(&own.ceremony_id, Phase::Deal, own.sender, &hash.0);
                let entry = entries.iter_mut().find(|e| e.sender == own.sender).unwrap();
                entry.body_hash = hash;
                entry.signature = signer.sign_digest(&digest).unwrap();
                Some(signed(definition, own, &Body::Echo { entries }, signer))
            }
            (Cheat::FalseComplaint, Phase::Complaints, Body::Complaints { .. }) => {
                let complaints = vec![Complaint {
                    dealer: ShareIndex::new(3).unwrap(),
                    validator: 1,
                    reason: ComplaintReason::FeldmanMismatch,
                }];
                Some(signed(
                    definition,
                    own,
                    &Body::Complaints { complaints },
                    signer,
                ))
            }
            (Cheat::BadFinish, Phase::Finish, Body::Finish(mut finish)) => {
                finish.deposit_signatures[0] = finish.lock_signatures[0];
                Some(signed(definition, own, &Body::Finish(finish), signer))
            }
            _ => None,
        }
    }
}

/// Test-only helper run in a child process by [`cheaters_are_named_by_every_honest_appliance`]:
/// participant 4's side of the ceremony with the tampering hook, then asleep until killed (its
/// `serve` keeps answering for the ceremony, aborted or not).
#[test]
#[ignore = "helper run in a child process by cheaters_are_named_by_every_honest_appliance"]
fn cheating_participant() {
    let Ok(spec) = std::env::var(CHEAT) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let cheat = Cheat::parse(parts[0]);
    let definition: Definition =
        serde_json::from_str(&std::fs::read_to_string(parts[2]).unwrap()).unwrap();
    let result = keystake_signer::cli::dkg::run_command_with(
        Path::new(parts[1]),
        definition,
        Path::new(parts[3]),
        Duration::from_secs(30),
        &Tamper(cheat),
    );
    println!("CHEATER ENDED {result:?}");
    std::thread::sleep(Duration::from_secs(120));
}

/// A small third-party check of a blame: every evidence message is signed by its sender's
/// pinned identity key, and the culprit's own signature is among them, over what the fault
/// names (its deal, its complaint, or two different bodies of one phase).
fn check_evidence(definition: &Definition, blame: &Blame, cheat: Cheat) {
    let culprit = blame.participant;
    assert!(!blame.evidence.is_empty(), "{blame:?}");
    for message in &blame.evidence {
        assert!(message.verify(definition), "evidence does not verify");
        assert_eq!(message.ceremony_id, definition.ceremony_id());
    }
    let own = |phase: Phase| {
        blame
            .evidence
            .iter()
            .find(|m| m.sender == culprit && m.phase == phase)
            .unwrap_or_else(|| panic!("no {phase:?} of the culprit in {blame:?}"))
    };
    match cheat {
        Cheat::BadShare | Cheat::WrongCommitment | Cheat::InvalidProof | Cheat::MissingProof => {
            let Ok(Body::Deal(dealing)) = serde_json::from_slice(&own(Phase::Deal).body) else {
                panic!("the culprit's deal does not parse")
            };
            match cheat {
                Cheat::BadShare => {
                    // Participant 3's complaint and the culprit's reveal are evidence; with the
                    // revealed key anyone sees that the share does not open.
                    assert!(blame
                        .evidence
                        .iter()
                        .any(|m| m.phase == Phase::Complaints && m.sender.get() == 3));
                    let opened = open_revealed_independently(
                        definition,
                        own(Phase::Deal),
                        own(Phase::Reveals),
                        ShareIndex::new(3).unwrap(),
                        1,
                    );
                    assert_eq!(opened, Ok(None), "the bad share opened");
                }
                Cheat::WrongCommitment => {
                    // The named recipient's share opens with the revealed key but is off the
                    // dealer's commitments.
                    let Fault::BadShare { recipient, .. } = blame.fault else {
                        panic!("not a bad share")
                    };
                    let share = open_revealed_independently(
                        definition,
                        own(Phase::Deal),
                        own(Phase::Reveals),
                        recipient,
                        0,
                    )
                    .unwrap()
                    .expect("the share opens");
                    assert!(!feldman_holds(
                        &dealing.validators[0].commitments,
                        recipient,
                        &share
                    ));
                }
                Cheat::MissingProof => assert!(dealing.validators[0].proof.response.is_empty()),
                _ => {}
            }
        }
        Cheat::Equivocation => {
            // The held deal and an echo carrying another signature of the culprit over a
            // different deal body.
            let held = own(Phase::Deal);
            let echo = blame
                .evidence
                .iter()
                .find(|m| m.phase == Phase::DealEcho)
                .unwrap();
            let Ok(Body::Echo { entries }) = serde_json::from_slice(&echo.body) else {
                panic!("not an echo")
            };
            let entry = entries.iter().find(|e| e.sender == culprit).unwrap();
            assert_ne!(entry.body_hash, held.body_hash());
            let digest = message_digest(
                &definition.ceremony_id(),
                Phase::Deal,
                culprit,
                &entry.body_hash.0,
            );
            let key = &definition.participant(culprit).unwrap().identity_public_key;
            assert!(key.verify(&digest, &entry.signature));
        }
        Cheat::BadFinish => {
            let Ok(Body::Finish(_)) = serde_json::from_slice(&own(Phase::Finish).body) else {
                panic!("not a finish")
            };
        }
        Cheat::FalseComplaint => {
            let Ok(Body::Complaints { complaints }) =
                serde_json::from_slice(&own(Phase::Complaints).body)
            else {
                panic!("not a complaint")
            };
            assert!(complaints
                .iter()
                .any(|c| c.dealer.get() == 3 && c.validator == 1));
            // Participant 3's deal and reveal are evidence too: the share opens with the
            // revealed key (the Feldman check of the opened share is the core's).
            let dealer = |phase: Phase| {
                blame
                    .evidence
                    .iter()
                    .find(|m| m.sender.get() == 3 && m.phase == phase)
                    .unwrap_or_else(|| panic!("no {phase:?} of participant 3"))
            };
            let opened = open_revealed_independently(
                definition,
                dealer(Phase::Deal),
                dealer(Phase::Reveals),
                culprit,
                1,
            )
            .unwrap()
            .expect("the good share does not open");
            let Ok(Body::Deal(dealing)) = serde_json::from_slice(&dealer(Phase::Deal).body) else {
                panic!("not a deal")
            };
            assert!(feldman_holds(
                &dealing.validators[1].commitments,
                culprit,
                &opened
            ));
        }
    }
}

/// Open the share `dealer` dealt `recipient` for validator `v` with the ephemeral secret the
/// dealer revealed, written out from the protocol's text (docs/dkg.md) rather than with the
/// core's code: checks `e·G = E`, derives `K = x(e·P_recipient)` and AES-256-GCM-decrypts with
/// AAD `"keystake-dkg-share-v1" ‖ ceremony id ‖ dealer ‖ recipient ‖ validator ‖ E`. `Err` when
/// the reveal is not the secret of `E`; `Ok(None)` when the share does not open.
fn open_revealed_independently(
    definition: &Definition,
    deal: &SignedMessage,
    reveal: &SignedMessage,
    recipient: ShareIndex,
    v: u32,
) -> Result<Option<Vec<u8>>, String> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use p256::elliptic_curve::point::AffineCoordinates;
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let Ok(Body::Deal(dealing)) = serde_json::from_slice(&deal.body) else {
        return Err("not a deal".into());
    };
    let Ok(Body::Reveals { reveals }) = serde_json::from_slice(&reveal.body) else {
        return Err("not a reveal".into());
    };
    let secret = reveals
        .iter()
        .find(|r| r.recipient == recipient && r.validator == v)
        .ok_or("no reveal for that share")?;
    let encrypted = &dealing.validators[v as usize].shares[recipient.get() as usize - 1];
    let e = p256::SecretKey::from_slice(&secret.ephemeral_secret).map_err(|e| e.to_string())?;
    let ephemeral = encrypted.ephemeral_public_key.as_sec1();
    if e.public_key().to_encoded_point(false).as_bytes() != ephemeral.as_slice() {
        return Err("the revealed secret is not the one of E".into());
    }
    let recipient_key = definition
        .participant(recipient)
        .ok_or("no such recipient")?
        .enrolment_public_key;
    let point =
        p256::PublicKey::from_sec1_bytes(recipient_key.as_sec1()).map_err(|e| e.to_string())?;
    let shared = (point.to_projective() * *e.to_nonzero_scalar()).to_affine();
    let key: [u8; 32] = shared.x().into();
    let mut aad = b"keystake-dkg-share-v1".to_vec();
    aad.extend_from_slice(&definition.ceremony_id().0);
    aad.extend_from_slice(&deal.sender.get().to_be_bytes());
    aad.extend_from_slice(&recipient.get().to_be_bytes());
    aad.extend_from_slice(&v.to_be_bytes());
    aad.extend_from_slice(ephemeral);
    let iv: [u8; 12] = encrypted
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| "iv length")?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).map_err(|e| e.to_string())?;
    Ok(cipher
        .decrypt(
            &aes_gcm::Nonce::from(iv),
            Payload {
                msg: &encrypted.ciphertext,
                aad: &aad,
            },
        )
        .ok())
}

/// The Feldman check, with the generic G1 arithmetic of `keystake_core::bls` (not the DKG's own
/// check): `share·G == Σ_k j^k·C_k` for recipient `j`.
fn feldman_holds(commitments: &[BlsPublicKey], recipient: ShareIndex, share: &[u8]) -> bool {
    let j = u64::from(recipient.get());
    let powers: Vec<Scalar> = (0..commitments.len() as u32)
        .map(|k| Scalar::from_u64(j.pow(k)))
        .collect();
    let expected = keystake_core::bls::g1_linear_combination(commitments, &powers).unwrap();
    keystake_core::bls::SecretKey::from_bytes(share)
        .unwrap()
        .public_key()
        == expected
}

fn spawn_cheater(cluster: &Cluster, cheat: Cheat, definition: &Path, name: &str) -> Child {
    let appliance = &cluster.appliances[3];
    let spec = [
        cheat.name(),
        s(&appliance.config),
        s(definition),
        s(&cluster.out_dir(name, 4)),
    ]
    .join("|");
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dkg_faults::cheating_participant",
            "--ignored",
            "--nocapture",
        ])
        .env(CHEAT, spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn cheaters_are_named_by_every_honest_appliance() {
    let cluster = Cluster::start();
    for (round, cheat) in Cheat::ALL.into_iter().enumerate() {
        let name = cheat.name();
        // Each scenario its own ceremony id: the validator count differs.
        let definition_path = cluster.definition(name, 2 + round as u32);
        let definition: Definition =
            serde_json::from_str(&std::fs::read_to_string(&definition_path).unwrap()).unwrap();
        let mut cheater = spawn_cheater(&cluster, cheat, &definition_path, name);
        let honest: Vec<Child> = (1..=3)
            .map(|i| cluster.run(i, &definition_path, name, 20))
            .collect();
        let outcomes: Vec<_> = (1..=3).zip(honest.into_iter().map(finish)).collect();
        let _ = cheater.kill();
        let cheater_output = cheater.wait_with_output().unwrap();
        let cheater_log = String::from_utf8_lossy(&cheater_output.stdout);
        assert!(
            cheater_log.contains("running 1 test"),
            "{name}: the cheater did not run: {cheater_log}\n{}\nhonest: {outcomes:?}",
            String::from_utf8_lossy(&cheater_output.stderr)
        );
        assert_aborted(&cluster, name, &outcomes, 4);
        for i in 1..=3 {
            let failure: Abort = serde_json::from_str(
                &std::fs::read_to_string(cluster.out_dir(name, i).join("failure.json")).unwrap(),
            )
            .unwrap();
            let blame = &failure.culprits[0];
            assert!(
                cheat.expected(&blame.fault),
                "{name}: participant {i} blamed {:?}",
                blame.fault
            );
            check_evidence(&definition, blame, cheat);
        }
        // The cheater kept nothing of the aborted ceremony either; no pending sealed share of
        // it stays anywhere.
        assert!(cluster.dkg_shares(4).is_empty(), "{name}");
        for i in 1..=3 {
            assert_eq!(
                pending_count(&cluster, i, &definition),
                0,
                "{name}: appliance {i}"
            );
        }
    }
}

/// How many pending sealed shares appliance `i` holds for the ceremony of `definition`.
fn pending_count(cluster: &Cluster, i: usize, definition: &Definition) -> i64 {
    let database = cluster.appliances[i - 1].path().join("data/signer.sqlite");
    let conn = rusqlite::Connection::open(database).unwrap();
    // Before `dkg run` first opens the DKG tables, none exist: nothing is pending.
    conn.query_row(
        "SELECT count(*) FROM dkg_pending_shares WHERE ceremony_id = ?1",
        rusqlite::params![definition.ceremony_id().0.as_slice()],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

/// `CONFIG|CEREMONY_ID_HEX` for [`print_pending_shares`].
const PENDING: &str = "KEYSTAKE_TEST_PENDING";

/// Test-only helper run in a child process by [`shares_are_sealed_when_computed`]: unseal the
/// pending shares of a ceremony with the appliance's HSM, check each opens to its public key,
/// and print it.
#[test]
#[ignore = "helper run in a child process by shares_are_sealed_when_computed"]
fn print_pending_shares() {
    let Ok(spec) = std::env::var(PENDING) else {
        return;
    };
    let (config, id) = spec.split_once('|').unwrap();
    let config = keystake_signer::config::Config::load(Path::new(config)).unwrap();
    keystake_signer::app::prepare_hsm_environment(&config);
    let sealer = keystake_signer::app::open_sealer(&config).unwrap();
    let dkg = keystake_signer::app::open_dkg_store(&config).unwrap();
    let id = keystake_core::dkg::CeremonyId(hex::decode(id).unwrap().try_into().unwrap());
    let me = dkg.ceremony(&id).unwrap().unwrap().me;
    for pending in dkg.pending_shares(&id).unwrap() {
        let context = keystake_signer::hsm::SealContext {
            share_public_key: pending.public_key,
            share_index: Some(me),
            group_public_key: Some(pending.group_public_key),
        };
        let secret = sealer
            .unseal(&keystake_signer::hsm::SealedShare(pending.sealed), &context)
            .unwrap();
        let key = keystake_core::bls::SecretKey::from_bytes(secret.as_slice()).unwrap();
        assert_eq!(key.public_key(), pending.public_key);
        println!(
            "PENDING {} {}",
            pending.public_key.to_hex(),
            hex::encode(*secret)
        );
    }
}

/// A participant killed after computing its shares but before the lock: its shares are in its
/// database sealed (and only sealed — no plaintext in any file of its directory), not signable;
/// restarted, it resumes, and the very shares sealed then become its signing shares.
#[test]
fn shares_are_sealed_when_computed() {
    let cluster = Cluster::start();
    let definition_path = cluster.definition("sealed", 10);
    let definition: Definition =
        serde_json::from_str(&std::fs::read_to_string(&definition_path).unwrap()).unwrap();
    let mut children: Vec<Child> = (1..=4)
        .map(|i| cluster.run(i, &definition_path, "sealed", 60))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while pending_count(&cluster, 3, &definition) < 10 {
        assert!(std::time::Instant::now() < deadline, "no pending shares");
        std::thread::sleep(Duration::from_millis(2));
    }
    children[2].kill().unwrap();
    let _ = children[2].wait();
    let lock_at_kill = cluster.out_dir("sealed", 3).join("lock.json").exists();
    assert!(!lock_at_kill, "participant 3 finished before it was killed");
    assert!(
        cluster.dkg_shares(3).is_empty(),
        "pending shares must not be signable"
    );
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dkg_faults::print_pending_shares",
            "--ignored",
            "--nocapture",
        ])
        .env(
            PENDING,
            format!(
                "{}|{}",
                s(&cluster.appliances[2].config),
                hex::encode(definition.ceremony_id().0)
            ),
        )
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let pending: Vec<(String, [u8; 32])> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("PENDING "))
        .map(|rest| {
            let (key, secret) = rest.split_once(' ').unwrap();
            (
                key.to_owned(),
                hex::decode(secret).unwrap().try_into().unwrap(),
            )
        })
        .collect();
    assert_eq!(pending.len(), 10, "{stdout}");
    let secrets: Vec<[u8; 32]> = pending.iter().map(|(_, s)| *s).collect();
    assert_nowhere_in_plaintext(vec![cluster.appliances[2].path().to_owned()], &secrets);

    // Restarted, it resumes; the shares it sealed when it computed them are the ones it keeps.
    children[2] = cluster.run(3, &definition_path, "sealed", 60);
    for (i, child) in children.into_iter().enumerate() {
        let (ok, stdout, stderr) = finish(child);
        assert!(ok, "participant {}: {stdout}\n{stderr}", i + 1);
    }
    let listed = cluster.dkg_shares(3).join("\n");
    for (key, _) in &pending {
        assert!(listed.contains(key.as_str()), "{key} not in {listed}");
    }
    for i in 1..=4 {
        assert_eq!(cluster.dkg_shares(i).len(), 10);
        assert_eq!(pending_count(&cluster, i, &definition), 0);
    }
    assert_nowhere_in_plaintext(vec![cluster.appliances[2].path().to_owned()], &secrets);
}
