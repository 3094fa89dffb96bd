//! In-process ceremonies: n state machines exchanging every message, with faults injected by
//! replacing or withholding real signed messages. Every fault test asserts the culprit named by
//! every honest participant and that no honest participant ended with shares.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeroize::Zeroizing;

use super::crypto::{self, SoftwareDecryptor, SoftwareSigner};
use super::*;
use crate::bls::{self, Scalar};
use crate::consensus::ExecutionAddress;
use crate::threshold;
use crate::types::{BlsSignature, ShareIndex, Threshold};

struct Party {
    signer: SoftwareSigner,
    decryptor: SoftwareDecryptor,
    seed: [u8; 32],
}

fn index(i: u32) -> ShareIndex {
    ShareIndex::new(i).unwrap()
}

fn setup(t: u32, n: u32, validators: u32, rng: &mut StdRng) -> (Definition, Vec<Party>) {
    let parties: Vec<Party> = (0..n)
        .map(|_| Party {
            signer: SoftwareSigner::random(rng),
            decryptor: SoftwareDecryptor::random(rng),
            seed: rng.gen(),
        })
        .collect();
    let participants = parties
        .iter()
        .enumerate()
        .map(|(i, p)| Participant {
            endpoint: format!("https://appliance-{}.example:9443", i + 1),
            enrolment_public_key: p.decryptor.public_key(),
            identity_public_key: p.signer.identity(),
            tls_certificate: vec![i as u8 + 1; 16],
        })
        .collect();
    let definition = Definition {
        format: DEFINITION_FORMAT.to_owned(),
        threshold: Threshold::new(t).unwrap(),
        validators,
        network: "hoodi".to_owned(),
        withdrawal_address: ExecutionAddress([0x11; 20]),
        fee_recipient: ExecutionAddress([0x22; 20]),
        amount_gwei: 32_000_000_000,
        participants,
    };
    definition.validate().unwrap();
    (definition, parties)
}

/// How a test interferes with the exchange.
#[derive(Default)]
struct Script {
    /// Messages given to every participant (the sender's own machine included) before the
    /// ceremony starts: a cheater's crafted message replaces the honest one.
    injected: Vec<SignedMessage>,
    /// `(sender, recipient, phase)` → the message that recipient gets instead (equivocation).
    substituted: BTreeMap<(u32, u32, Phase), SignedMessage>,
    /// A participant that stops before this phase (never starts: `Phase::Deal`).
    stops: BTreeMap<u32, Phase>,
    /// Deliveries lost once (a transient drop: redelivered on the next pass).
    dropped_once: Vec<(u32, u32, Phase)>,
}

type Outcome = Result<Success, Abort>;

fn run(definition: &Definition, parties: &[Party], mut script: Script) -> Vec<Option<Outcome>> {
    let n = parties.len() as u32;
    let mut machines: Vec<Ceremony> = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ceremony::new(
                definition.clone(),
                index(i as u32 + 1),
                Zeroizing::new(p.seed),
            )
            .unwrap()
        })
        .collect();
    for message in &script.injected {
        for machine in &mut machines {
            machine.receive(message.clone()).unwrap();
        }
    }
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut stalled_passes = 0;
    while outcomes.iter().enumerate().any(|(i, o)| {
        o.is_none()
            && script
                .stops
                .get(&(i as u32 + 1))
                .is_none_or(|p| *p != Phase::Deal)
    }) {
        for (i, machine) in machines.iter_mut().enumerate() {
            let me = i as u32 + 1;
            if outcomes[i].is_some() {
                continue;
            }
            if script
                .stops
                .get(&me)
                .is_some_and(|stop| machine.phase() >= *stop)
            {
                continue;
            }
            match machine
                .poll(&parties[i].signer, &parties[i].decryptor)
                .unwrap()
            {
                Step::Waiting { .. } => {}
                Step::Aborted(abort) => outcomes[i] = Some(Err(abort)),
                Step::Finished(success) => outcomes[i] = Some(Ok(*success)),
            }
        }
        let mut delivered = 0;
        for sender in 1..=n {
            let own: Vec<SignedMessage> = machines[sender as usize - 1]
                .messages()
                .filter(|m| m.sender.get() == sender)
                .filter(|m| script.stops.get(&sender).is_none_or(|stop| m.phase < *stop))
                .cloned()
                .collect();
            for message in own {
                for recipient in 1..=n {
                    if recipient == sender {
                        continue;
                    }
                    let key = (sender, recipient, message.phase);
                    if let Some(position) = script.dropped_once.iter().position(|d| *d == key) {
                        script.dropped_once.remove(position);
                        continue;
                    }
                    let message = script
                        .substituted
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| message.clone());
                    let target = &mut machines[recipient as usize - 1];
                    if target.message(message.phase, message.sender) != Some(&message) {
                        target.receive(message).unwrap();
                        delivered += 1;
                    }
                }
            }
        }
        if delivered == 0 {
            stalled_passes += 1;
        } else {
            stalled_passes = 0;
        }
        if stalled_passes > 2 {
            // The phase deadline: every participant still waiting times out.
            for (i, machine) in machines.iter_mut().enumerate() {
                let me = i as u32 + 1;
                if outcomes[i].is_none() && !script.stops.contains_key(&me) {
                    outcomes[i] = Some(Err(machine.timeout()));
                }
            }
            break;
        }
    }
    outcomes
}

fn successes(outcomes: Vec<Option<Outcome>>) -> Vec<Success> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Some(Ok(success)) => success,
            Some(Err(abort)) => panic!("aborted: {}", abort.message()),
            None => panic!("did not finish"),
        })
        .collect()
}

/// Every honest participant aborted, naming exactly `culprits`, with this kind of fault.
fn assert_blamed(
    outcomes: &[Option<Outcome>],
    honest: &[u32],
    culprits: &[u32],
    fault: fn(&Fault) -> bool,
) {
    for i in honest {
        match &outcomes[*i as usize - 1] {
            Some(Err(abort)) => {
                let named: Vec<u32> = abort.culprit_indices().iter().map(|c| c.get()).collect();
                assert_eq!(named, culprits, "participant {i}: {}", abort.message());
                assert!(
                    abort.culprits.iter().all(|b| fault(&b.fault)),
                    "participant {i}: {:?}",
                    abort.culprits
                );
                for culprit in culprits {
                    assert!(abort.message().contains(&format!(
                        "participant {culprit} (https://appliance-{culprit}.example:9443)"
                    )));
                }
            }
            Some(Ok(_)) => panic!("participant {i} kept shares of a faulty ceremony"),
            None => panic!("participant {i} did not end"),
        }
    }
}

/// For one validator: every `t`-subset of partial signatures combines into a signature valid
/// under the group key, and `t−1` shares interpolated at zero do not.
fn check_subsets(results: &[Success], t: u32, validator: usize, max_subsets: usize) {
    let message = b"keystake dkg subset check";
    let group = results[0].lock.validators[validator].group_public_key;
    let partials: Vec<(ShareIndex, BlsSignature)> = results
        .iter()
        .map(|r| {
            let share = &r.shares[validator];
            assert_eq!(share.group_public_key, group);
            (share.share.index(), share.share.sign(message))
        })
        .collect();
    let keys = results[0].lock.validators[validator]
        .public_shares
        .iter()
        .enumerate()
        .map(|(i, k)| (index(i as u32 + 1), *k))
        .collect();
    let n = partials.len();
    let mut checked = 0;
    for mask in 0u32..(1 << n) {
        if mask.count_ones() != t || checked >= max_subsets {
            continue;
        }
        let subset: Vec<(ShareIndex, BlsSignature)> = (0..n)
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| partials[i])
            .collect();
        let combined = threshold::combine(
            Threshold::new(t).unwrap(),
            &keys,
            &group,
            message,
            &subset,
            false,
            &mut StdRng::seed_from_u64(mask as u64),
        )
        .unwrap();
        assert!(bls::verify(&group, message, &combined.signature));
        // t−1 of them, interpolated as if they were enough, give no valid group signature.
        let fewer = &subset[..subset.len() - 1];
        let indices: Vec<ShareIndex> = fewer.iter().map(|(i, _)| *i).collect();
        let coefficients: Vec<Scalar> = threshold::lagrange_coefficients_at_zero(&indices)
            .unwrap()
            .iter()
            .map(|c| Scalar::from_be_bytes_canonical(c).unwrap())
            .collect();
        let signatures: Vec<BlsSignature> = fewer.iter().map(|(_, s)| *s).collect();
        let forged = bls::g2_linear_combination(&signatures, &coefficients).unwrap();
        assert!(!bls::verify(&group, message, &forged));
        checked += 1;
    }
    assert!(checked > 0);
}

fn honest_ceremony(t: u32, n: u32, validators: u32, seed: u64, max_subsets: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (definition, parties) = setup(t, n, validators, &mut rng);
    let results = successes(run(&definition, &parties, Script::default()));
    for result in &results {
        assert_eq!(result.lock.lock_hash, results[0].lock.lock_hash);
        verify_lock(&result.lock).unwrap();
        assert_eq!(result.shares.len(), validators as usize);
        // `Success` and `ValidatorShare` derive Debug: the share inside must print redacted.
        let printed = format!("{result:?}");
        for share in &result.shares {
            let secret = hex::encode(share.share.secret_key().to_bytes().as_slice());
            assert!(
                !printed.contains(&secret),
                "a share's bytes reached Debug output"
            );
        }
        assert!(printed.contains("<redacted>"));
    }
    let entries = deposit_data_entries(&results[0].lock);
    verify_deposit_data(&results[0].lock, &entries).unwrap();
    for v in 0..validators as usize {
        check_subsets(&results, t, v, max_subsets);
    }
}

#[test]
fn ceremony_2_of_3() {
    honest_ceremony(2, 3, 2, 1, usize::MAX);
}

#[test]
fn ceremony_3_of_4() {
    honest_ceremony(3, 4, 3, 2, usize::MAX);
}

#[test]
fn ceremony_5_of_7() {
    honest_ceremony(5, 7, 1, 3, usize::MAX);
}

#[test]
fn ceremony_11_of_16() {
    // All C(16,11) = 4368 subsets take minutes in a debug build; 300 of them (and t−1 for each)
    // still exercise every share many times.
    honest_ceremony(11, 16, 1, 4, 300);
}

/// A tampered copy of `party`'s honest message for `phase` (its own machine will hold it too).
fn crafted_deal(
    definition: &Definition,
    parties: &[Party],
    dealer: u32,
    tamper: impl FnOnce(&mut Dealing),
) -> SignedMessage {
    let party = &parties[dealer as usize - 1];
    let mut scratch = Ceremony::new(
        definition.clone(),
        index(dealer),
        Zeroizing::new(party.seed),
    )
    .unwrap();
    scratch.poll(&party.signer, &party.decryptor).unwrap();
    let honest = scratch.message(Phase::Deal, index(dealer)).unwrap();
    let Body::Deal(mut dealing) = serde_json::from_slice(&honest.body).unwrap() else {
        panic!("not a deal")
    };
    tamper(&mut dealing);
    sign(definition, party, dealer, Phase::Deal, &Body::Deal(dealing))
}

fn sign(
    definition: &Definition,
    party: &Party,
    sender: u32,
    phase: Phase,
    body: &Body,
) -> SignedMessage {
    let body = serde_json::to_vec(body).unwrap();
    let id = definition.ceremony_id();
    let digest = message_digest(
        &id,
        phase,
        index(sender),
        &crate::dkg::encoding::sha256(&body),
    );
    SignedMessage {
        ceremony_id: id,
        phase,
        sender: index(sender),
        body,
        signature: party.signer.sign_digest(&digest).unwrap(),
    }
}

#[test]
fn undecryptable_share_blames_the_dealer() {
    let mut rng = StdRng::seed_from_u64(10);
    let (definition, parties) = setup(3, 4, 2, &mut rng);
    let deal = crafted_deal(&definition, &parties, 2, |d| {
        d.validators[1].shares[2].ciphertext[0] ^= 1;
    });
    let outcomes = run(
        &definition,
        &parties,
        Script {
            injected: vec![deal],
            ..Script::default()
        },
    );
    assert_blamed(
        &outcomes,
        &[1, 3, 4],
        &[2],
        |f| matches!(f, Fault::BadShare { recipient, validator: 1, .. } if recipient.get() == 3),
    );
}

#[test]
fn share_off_the_commitments_blames_the_dealer() {
    let mut rng = StdRng::seed_from_u64(11);
    let (definition, parties) = setup(3, 4, 1, &mut rng);
    let id = definition.ceremony_id();
    let party = &parties[0];
    let recipient = index(4);
    let deal = crafted_deal(&definition, &parties, 1, |d| {
        // A valid encryption, with the right key and AAD, of a share not on the commitments.
        let encrypted = &mut d.validators[0].shares[3];
        let (secret, ephemeral) = deal::ephemeral_secret(&party.seed, &id, 0, recipient);
        assert_eq!(ephemeral, encrypted.ephemeral_public_key);
        let aad = share_aad(&id, index(1), recipient, 0, &ephemeral);
        let wrong = Scalar::from_u64(7).to_be_bytes();
        encrypted.ciphertext = crypto::encrypt_share(
            &secret,
            &definition.participants[3].enrolment_public_key,
            &encrypted.iv_array().unwrap(),
            &aad,
            &wrong,
        )
        .unwrap();
    });
    let outcomes = run(
        &definition,
        &parties,
        Script {
            injected: vec![deal],
            ..Script::default()
        },
    );
    assert_blamed(
        &outcomes,
        &[2, 3, 4],
        &[1],
        |f| matches!(f, Fault::BadShare { recipient, .. } if recipient.get() == 4),
    );
}

#[test]
fn wrong_commitment_blames_the_dealer() {
    let mut rng = StdRng::seed_from_u64(12);
    let (definition, parties) = setup(3, 4, 1, &mut rng);
    let other = crate::bls::SecretKey::random(&mut rng).public_key();
    let deal = crafted_deal(&definition, &parties, 3, |d| {
        d.validators[0].commitments[2] = other
    });
    let outcomes = run(
        &definition,
        &parties,
        Script {
            injected: vec![deal],
            ..Script::default()
        },
    );
    // Every recipient complains (its share is off the commitments) and the reveals prove it.
    assert_blamed(&outcomes, &[1, 2, 4], &[3], |f| {
        matches!(f, Fault::BadShare { .. })
    });
}

#[test]
fn invalid_or_missing_proof_of_knowledge_blames_the_dealer() {
    for tamper in [0, 1] {
        let mut rng = StdRng::seed_from_u64(13);
        let (definition, parties) = setup(2, 3, 1, &mut rng);
        let deal = crafted_deal(&definition, &parties, 2, |d| {
            let proof = &mut d.validators[0].proof;
            if tamper == 0 {
                proof.response[31] ^= 1;
            } else {
                proof.response.clear();
            }
        });
        let outcomes = run(
            &definition,
            &parties,
            Script {
                injected: vec![deal],
                ..Script::default()
            },
        );
        assert_blamed(
            &outcomes,
            &[1, 3],
            &[2],
            |f| matches!(f, Fault::InvalidDeal { reason } if reason.contains("proof of knowledge")),
        );
    }
}

#[test]
fn proof_replayed_into_another_ceremony_fails() {
    let mut rng = StdRng::seed_from_u64(14);
    let (definition, parties) = setup(2, 3, 1, &mut rng);
    let first = definition.ceremony_id();
    let mut other = definition.clone();
    other.amount_gwei += 1;
    let second = other.ceremony_id();
    assert_ne!(first, second);
    let deal = deal_validator(&parties[0].seed, &definition, &first, index(1), 0, None).unwrap();
    assert!(deal::verify_proof(
        &first,
        index(1),
        0,
        &deal.commitments[0],
        &deal.proof
    ));
    // Another ceremony, another dealer index or another validator: the proof fails.
    assert!(!deal::verify_proof(
        &second,
        index(1),
        0,
        &deal.commitments[0],
        &deal.proof
    ));
    assert!(!deal::verify_proof(
        &first,
        index(2),
        0,
        &deal.commitments[0],
        &deal.proof
    ));
    assert!(!deal::verify_proof(
        &first,
        index(1),
        1,
        &deal.commitments[0],
        &deal.proof
    ));
    // Copied wholesale into a deal of the second ceremony, the deal is refused.
    let mut copied = deal_validator(&parties[0].seed, &other, &second, index(1), 0, None).unwrap();
    copied.commitments = deal.commitments.clone();
    copied.proof = deal.proof.clone();
    assert!(deal::check_validator_deal(&other, &second, index(1), 0, &copied).is_err());
}

#[test]
fn equivocating_dealer_is_named() {
    let mut rng = StdRng::seed_from_u64(15);
    let (definition, parties) = setup(3, 4, 1, &mut rng);
    let other = crafted_deal(&definition, &parties, 4, |d| {
        d.validators[0].shares[0].ciphertext[5] ^= 0x80;
    });
    let mut script = Script::default();
    // Participant 4 sends its honest deal to 2 and 3, another one to 1.
    script.substituted.insert((4, 1, Phase::Deal), other);
    let outcomes = run(&definition, &parties, script);
    assert_blamed(&outcomes, &[1, 2, 3], &[4], |f| {
        matches!(f, Fault::Equivocation { phase: Phase::Deal })
    });
    // The evidence convinces a third party: two valid signatures of 4 over different bodies.
    if let Some(Err(abort)) = &outcomes[0] {
        let evidence = &abort.culprits[0].evidence;
        assert!(evidence.iter().all(|m| m.verify(&definition)));
    }
}

#[test]
fn false_complaint_blames_the_complainer() {
    let mut rng = StdRng::seed_from_u64(16);
    let (definition, parties) = setup(3, 4, 2, &mut rng);
    let complaint = sign(
        &definition,
        &parties[1],
        2,
        Phase::Complaints,
        &Body::Complaints {
            complaints: vec![Complaint {
                dealer: index(3),
                validator: 1,
                reason: ComplaintReason::FeldmanMismatch,
            }],
        },
    );
    let outcomes = run(
        &definition,
        &parties,
        Script {
            injected: vec![complaint],
            ..Script::default()
        },
    );
    assert_blamed(
        &outcomes,
        &[1, 3, 4],
        &[2],
        |f| matches!(f, Fault::FalseComplaint { dealer, validator: 1 } if dealer.get() == 3),
    );
}

#[test]
fn participant_that_never_starts_is_named() {
    let mut rng = StdRng::seed_from_u64(17);
    let (definition, parties) = setup(3, 4, 1, &mut rng);
    let mut script = Script::default();
    script.stops.insert(4, Phase::Deal);
    let outcomes = run(&definition, &parties, script);
    assert_blamed(&outcomes, &[1, 2, 3], &[4], |f| {
        matches!(f, Fault::Silence { phase: Phase::Deal })
    });
}

#[test]
fn participant_that_stops_mid_ceremony_is_named() {
    let mut rng = StdRng::seed_from_u64(18);
    let (definition, parties) = setup(3, 4, 1, &mut rng);
    let mut script = Script::default();
    script.stops.insert(2, Phase::Complaints);
    let outcomes = run(&definition, &parties, script);
    assert_blamed(&outcomes, &[1, 3, 4], &[2], |f| {
        matches!(
            f,
            Fault::Silence {
                phase: Phase::Complaints
            }
        )
    });
}

#[test]
fn transient_drop_is_survived() {
    let mut rng = StdRng::seed_from_u64(19);
    let (definition, parties) = setup(2, 3, 1, &mut rng);
    let script = Script {
        dropped_once: vec![
            (1, 2, Phase::Deal),
            (3, 1, Phase::DealEcho),
            (2, 3, Phase::Finish),
        ],
        ..Script::default()
    };
    let results = successes(run(&definition, &parties, script));
    verify_lock(&results[0].lock).unwrap();
}

#[test]
fn restarted_participant_resumes_with_identical_messages() {
    let mut rng = StdRng::seed_from_u64(20);
    let (definition, parties) = setup(2, 3, 2, &mut rng);
    let p = &parties[0];
    let mut first = Ceremony::new(definition.clone(), index(1), Zeroizing::new(p.seed)).unwrap();
    first.poll(&p.signer, &p.decryptor).unwrap();
    let deal = first.message(Phase::Deal, index(1)).unwrap().clone();
    // A fresh machine from the same seed derives the same deal body (the signature may differ:
    // ECDSA is randomized, so the adapter restores its own signed messages instead).
    let mut again = Ceremony::new(definition.clone(), index(1), Zeroizing::new(p.seed)).unwrap();
    again.poll(&p.signer, &p.decryptor).unwrap();
    assert_eq!(
        again.message(Phase::Deal, index(1)).unwrap().body,
        deal.body
    );
    // Restored from its persisted messages, it continues without signing anything new.
    let mut restored = Ceremony::new(definition.clone(), index(1), Zeroizing::new(p.seed)).unwrap();
    restored.receive(deal.clone()).unwrap();
    restored.poll(&p.signer, &p.decryptor).unwrap();
    assert_eq!(restored.message(Phase::Deal, index(1)), Some(&deal));
}

/// A participant killed after its finish message was persisted (its shares computed and
/// sealed by the adapter, the lock not yet assembled) resumes from its messages: it redoes the
/// preparation it kept only in memory and finishes with the group's lock.
#[test]
fn restarted_after_its_own_finish_message_it_finishes() {
    let mut rng = StdRng::seed_from_u64(23);
    let (definition, parties) = setup(2, 3, 2, &mut rng);
    let mut machines: Vec<Ceremony> = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            Ceremony::new(
                definition.clone(),
                index(i as u32 + 1),
                Zeroizing::new(p.seed),
            )
            .unwrap()
        })
        .collect();
    let mut locks = Vec::new();
    for _ in 0..20 {
        for (machine, p) in machines.iter_mut().zip(&parties) {
            if let Step::Finished(success) = machine.poll(&p.signer, &p.decryptor).unwrap() {
                locks.push(success.lock);
            }
        }
        let all: Vec<SignedMessage> = machines
            .iter()
            .flat_map(|m| m.messages().cloned().collect::<Vec<_>>())
            .collect();
        if (1..=3).all(|i| machines[0].message(Phase::Finish, index(i)).is_some()) {
            break;
        }
        for machine in &mut machines {
            for message in &all {
                let _ = machine.receive(message.clone());
            }
        }
    }
    // Participant 1 as restored from its database: every message it held, its own finish
    // message included, and nothing in memory.
    let p = &parties[0];
    let mut restored = Ceremony::new(definition.clone(), index(1), Zeroizing::new(p.seed)).unwrap();
    for message in machines[0].messages() {
        restored.receive(message.clone()).unwrap();
    }
    let Step::Finished(success) = restored.poll(&p.signer, &p.decryptor).unwrap() else {
        panic!("the restored participant did not finish");
    };
    verify_lock(&success.lock).unwrap();
    for lock in &locks {
        assert_eq!(lock.lock_hash, success.lock.lock_hash);
    }
    assert_eq!(success.shares.len(), 2);
}

#[test]
fn forged_or_foreign_messages_are_refused() {
    let mut rng = StdRng::seed_from_u64(21);
    let (definition, parties) = setup(2, 3, 1, &mut rng);
    let mut machine = Ceremony::new(
        definition.clone(),
        index(1),
        Zeroizing::new(parties[0].seed),
    )
    .unwrap();
    let mut forged = sign(
        &definition,
        &parties[2],
        2,
        Phase::Deal,
        &Body::Echo { entries: vec![] },
    );
    assert!(
        machine.receive(forged.clone()).is_err(),
        "signed by 3 in the name of 2"
    );
    forged.ceremony_id = CeremonyId([0; 32]);
    assert!(machine.receive(forged).is_err());
}

#[test]
fn definition_rules() {
    let mut rng = StdRng::seed_from_u64(22);
    let (definition, _) = setup(2, 3, 1, &mut rng);
    let mut bad = definition.clone();
    bad.threshold = Threshold::new(1).unwrap();
    assert!(bad.validate().is_err());
    let mut bad = definition.clone();
    bad.threshold = Threshold::new(4).unwrap();
    assert!(bad.validate().is_err());
    let mut bad = definition.clone();
    bad.participants[1].endpoint = bad.participants[0].endpoint.clone();
    assert!(bad.validate().is_err());
    let mut bad = definition.clone();
    bad.network = "nowhere".into();
    assert!(bad.validate().is_err());
    let mut bad = definition.clone();
    bad.participants[2].endpoint = "http://plain.example".into();
    assert!(bad.validate().is_err());
    // The id changes with every field, and JSON round trips keep it.
    let text = serde_json::to_string(&definition).unwrap();
    let back: Definition = serde_json::from_str(&text).unwrap();
    assert_eq!(back.ceremony_id(), definition.ceremony_id());
    let mut other = definition.clone();
    other.participants.swap(0, 1);
    assert_ne!(other.ceremony_id(), definition.ceremony_id());
}

#[test]
fn tampered_lock_is_refused() {
    let mut rng = StdRng::seed_from_u64(23);
    let (definition, parties) = setup(2, 3, 1, &mut rng);
    let results = successes(run(&definition, &parties, Script::default()));
    let lock = &results[0].lock;
    let text = serde_json::to_string(lock).unwrap();
    let back: Lock = serde_json::from_str(&text).unwrap();
    verify_lock(&back).unwrap();
    let mut bad = lock.clone();
    bad.validators[0].public_shares.swap(0, 1);
    assert!(verify_lock(&bad).is_err());
    let mut bad = lock.clone();
    bad.participant_signatures.pop();
    assert!(verify_lock(&bad).is_err());
    let mut bad = lock.clone();
    bad.definition.amount_gwei += 1;
    assert!(verify_lock(&bad).is_err());
    let mut entries = deposit_data_entries(lock);
    entries[0].amount += 1;
    assert!(verify_deposit_data(lock, &entries).is_err());
}
