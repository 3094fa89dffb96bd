//! In-process reshares (issue 13): a real 3-of-4 DKG ([`run_local`]) hands its validators to a
//! new set; faults are injected by forging a dealer's constant terms, injecting a real signed
//! lying complaint, reporting impossible slashing maxima, or keeping a dealer silent. Every
//! fault test asserts the culprit named by every honest seat and that none kept new shares.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::SeedableRng;
use zeroize::Zeroizing;

use super::crypto::{BroadcastSigner, SoftwareDecryptor, SoftwareSigner};
use super::encoding::sha256;
use super::*;
use crate::bls::{Scalar, SecretKey};
use crate::threshold::{self, SecretShare};
use crate::types::{BlsSignature, ShareIndex, Threshold};

const EPOCH: u64 = 1000;

fn index(i: u32) -> ShareIndex {
    ShareIndex::new(i).unwrap()
}

/// A completed 3-of-4 DKG and parties for members new to the validators.
struct World {
    old: Vec<LocalParty>,
    results: Vec<Success>,
    fresh: Vec<LocalParty>,
}

#[derive(Clone, Copy)]
enum Who {
    Old(u32),
    Fresh(u32),
}

fn world(validators: u32, fresh: u32, seed: u64) -> World {
    let mut rng = StdRng::seed_from_u64(seed);
    let (definition, old) = local_setup(3, 4, validators, "hoodi", &mut rng).unwrap();
    let results = run_local(&definition, &old).unwrap();
    let fresh = (0..fresh)
        .map(|_| {
            let mut seed = Zeroizing::new([0u8; 32]);
            rand::RngCore::fill_bytes(&mut rng, seed.as_mut_slice());
            LocalParty {
                signer: SoftwareSigner::random(&mut rng),
                decryptor: SoftwareDecryptor::random(&mut rng),
                seed,
            }
        })
        .collect();
    World {
        old,
        results,
        fresh,
    }
}

impl World {
    fn lock(&self) -> &Lock {
        &self.results[0].lock
    }

    fn participant(&self, who: Who) -> Participant {
        match who {
            Who::Old(i) => self.lock().definition.participants[i as usize - 1].clone(),
            Who::Fresh(k) => {
                let party = &self.fresh[k as usize];
                Participant {
                    endpoint: format!("https://127.0.0.1:{}", 9100 + k),
                    enrolment_public_key: party.decryptor.public_key(),
                    identity_public_key: party.signer.identity(),
                    tls_certificate: vec![100 + k as u8; 16],
                }
            }
        }
    }

    fn definition(&self, new: &[Who], t: u32, dealers: &[u32]) -> ReshareDefinition {
        ReshareDefinition {
            format: RESHARE_DEFINITION_FORMAT.to_owned(),
            previous: self.lock().clone(),
            dealers: dealers.iter().map(|d| index(*d)).collect(),
            threshold: Threshold::new(t).unwrap(),
            participants: new.iter().map(|w| self.participant(*w)).collect(),
        }
    }

    /// The party behind a seat.
    fn party(&self, seat: &Seat) -> &LocalParty {
        let identity = seat.participant.identity_public_key;
        self.old
            .iter()
            .chain(&self.fresh)
            .find(|p| p.signer.identity() == identity)
            .unwrap()
    }

    fn old_shares(&self, old_index: ParticipantIndex) -> Vec<SecretShare> {
        self.results[old_index.get() as usize - 1]
            .shares
            .iter()
            .map(|s| {
                let key = SecretKey::from_scalar(&s.share.secret_key().to_scalar()).unwrap();
                SecretShare::new(s.share.index(), key)
            })
            .collect()
    }
}

/// How a test interferes.
#[derive(Default)]
struct Script {
    /// Real signed messages given to every seat before the start.
    injected: Vec<SignedMessage>,
    /// Seats that never start.
    silent: Vec<u32>,
    /// Per old index: its slashing report for every validator.
    reports: BTreeMap<u32, SlashingMaxima>,
    /// Seat → constant terms it deals instead of its share.
    forged: BTreeMap<u32, Vec<Scalar>>,
    /// Skip definition validation (to reach the group-key check).
    unvalidated: bool,
}

type Outcome = Result<ReshareSuccess, String>;

fn machines(world: &World, definition: &ReshareDefinition, script: &Script) -> Vec<Reshare> {
    let v = definition.previous.validators.len();
    definition
        .seats()
        .iter()
        .enumerate()
        .map(|(position, seat)| {
            let party = world.party(seat);
            let old = seat.deals.then(|| {
                let old_index = seat.old_index.unwrap();
                OldHolding {
                    shares: world.old_shares(old_index),
                    maxima: vec![
                        script
                            .reports
                            .get(&old_index.get())
                            .copied()
                            .unwrap_or_default();
                        v
                    ],
                }
            });
            let identity = party.signer.identity();
            let mut machine = if script.unvalidated {
                Reshare::new_unvalidated(
                    definition.clone(),
                    &identity,
                    party.seed.clone(),
                    old,
                    EPOCH,
                )
            } else {
                Reshare::new(
                    definition.clone(),
                    &identity,
                    party.seed.clone(),
                    old,
                    EPOCH,
                )
            }
            .unwrap();
            if let Some(constants) = script.forged.get(&(position as u32 + 1)) {
                machine.forge_constant_terms(constants.to_vec());
            }
            machine
        })
        .collect()
}

fn run(world: &World, definition: &ReshareDefinition, script: &Script) -> Vec<Option<Outcome>> {
    let mut machines = machines(world, definition, script);
    let seats = definition.seats();
    for message in &script.injected {
        for machine in &mut machines {
            machine.receive(message.clone()).unwrap();
        }
    }
    let count = machines.len();
    let mut outcomes: Vec<Option<Outcome>> = (0..count).map(|_| None).collect();
    let mut stalled = 0;
    loop {
        for (i, machine) in machines.iter_mut().enumerate() {
            if outcomes[i].is_some() || script.silent.contains(&(i as u32 + 1)) {
                continue;
            }
            let party = world.party(&seats[i]);
            match machine.poll(&party.signer, &party.decryptor) {
                Ok(ReshareStep::Waiting { .. }) => {}
                Ok(ReshareStep::Aborted(abort)) => outcomes[i] = Some(Err(abort_text(&abort))),
                Ok(ReshareStep::Finished(success)) => outcomes[i] = Some(Ok(*success)),
                Err(error) => outcomes[i] = Some(Err(format!("error: {error}"))),
            }
        }
        let mut delivered = 0;
        for sender in 0..count {
            let own: Vec<SignedMessage> = machines[sender]
                .messages()
                .filter(|m| m.sender.get() == sender as u32 + 1)
                .cloned()
                .collect();
            for message in own {
                for (recipient, target) in machines.iter_mut().enumerate() {
                    if recipient != sender
                        && target.message(message.phase, message.sender) != Some(&message)
                    {
                        target.receive(message.clone()).unwrap();
                        delivered += 1;
                    }
                }
            }
        }
        if outcomes
            .iter()
            .enumerate()
            .all(|(i, o)| o.is_some() || script.silent.contains(&(i as u32 + 1)))
        {
            break;
        }
        stalled = if delivered == 0 { stalled + 1 } else { 0 };
        if stalled > 2 {
            for (i, machine) in machines.iter_mut().enumerate() {
                if outcomes[i].is_none() && !script.silent.contains(&(i as u32 + 1)) {
                    outcomes[i] = Some(Err(abort_text(&machine.timeout())));
                }
            }
            break;
        }
    }
    outcomes
}

/// The abort as `seat:fault-kind` list plus its message (what the tests compare).
fn abort_text(abort: &Abort) -> String {
    let kinds: Vec<String> = abort
        .culprits
        .iter()
        .map(|b| {
            let kind = serde_json::to_value(&b.fault).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned();
            assert!(
                !b.endpoint.is_empty(),
                "every culprit is named with its endpoint"
            );
            format!("{}:{kind}", b.participant)
        })
        .collect();
    format!("[{}] {}", kinds.join(","), abort.message())
}

fn successes(outcomes: Vec<Option<Outcome>>) -> Vec<ReshareSuccess> {
    outcomes
        .into_iter()
        .map(|o| match o {
            Some(Ok(success)) => success,
            Some(Err(abort)) => panic!("aborted: {abort}"),
            None => panic!("did not finish"),
        })
        .collect()
}

/// Every seat in `honest` aborted naming exactly `expected` (e.g. `["2:invalid_deal"]`).
fn assert_blamed(outcomes: &[Option<Outcome>], honest: &[u32], expected: &[&str]) -> String {
    let mut last = String::new();
    for seat in honest {
        match &outcomes[*seat as usize - 1] {
            Some(Err(text)) => {
                let wanted = format!("[{}]", expected.join(","));
                assert!(text.starts_with(&wanted), "seat {seat}: {text}");
                last = text.clone();
            }
            Some(Ok(_)) => panic!("seat {seat} kept new shares of a faulty reshare"),
            None => panic!("seat {seat} did not end"),
        }
    }
    last
}

/// The whole set of checks on a successful reshare from `world`'s lock.
fn check_success(world: &World, definition: &ReshareDefinition, results: &[ReshareSuccess]) {
    let previous = world.lock();
    let lock = &results[0].lock;
    for result in results {
        assert_eq!(&result.lock, lock, "every seat holds the same new lock");
    }
    verify_reshared_lock(previous, lock).unwrap();
    assert_eq!(lock.threshold, definition.threshold.get());
    for (old, new) in previous.validators.iter().zip(&lock.validators) {
        assert_eq!(old.group_public_key, new.group_public_key);
        assert_ne!(old.public_shares, new.public_shares);
    }
    // Leaving members hold nothing new; everyone in the new set holds one share per validator.
    let seats = definition.seats();
    let mut new_shares: Vec<&ValidatorShare> = Vec::new();
    for (seat, result) in seats.iter().zip(results) {
        assert_eq!(seat.role(), result.role);
        match seat.new_index {
            None => assert!(result.shares.is_empty()),
            Some(j) => {
                assert_eq!(result.shares.len(), previous.validators.len());
                assert_eq!(result.shares[0].share.index(), j);
            }
        }
    }
    let t = definition.threshold.get();
    let n = definition.participants.len();
    for v in 0..lock.validators.len() {
        new_shares.clear();
        for result in results {
            if let Some(share) = result.shares.get(v) {
                new_shares.push(share);
            }
        }
        new_shares.sort_by_key(|s| s.share.index());
        assert_eq!(new_shares.len(), n);
        let group = lock.validators[v].group_public_key;
        let message = b"keystake reshare subset check";
        let partials: Vec<(ShareIndex, BlsSignature)> = new_shares
            .iter()
            .map(|s| (s.share.index(), s.share.sign(message)))
            .collect();
        let new_keys: BTreeMap<ShareIndex, _> = lock.validators[v]
            .public_shares
            .iter()
            .enumerate()
            .map(|(i, k)| (index(i as u32 + 1), *k))
            .collect();
        // Every t′-subset combines into a valid group signature.
        let mut subsets = 0;
        for mask in 0u32..(1 << n) {
            if mask.count_ones() != t {
                continue;
            }
            let subset: Vec<(ShareIndex, BlsSignature)> = (0..n)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| partials[i])
                .collect();
            let combined = threshold::combine(
                definition.threshold,
                &new_keys,
                &group,
                message,
                &subset,
                false,
                &mut rand::rngs::OsRng,
            )
            .unwrap();
            assert!(crate::bls::verify(&group, message, &combined.signature));
            subsets += 1;
        }
        assert!(subsets >= 1);
        // t′−1 new partials alone do not combine.
        assert!(threshold::combine(
            definition.threshold,
            &new_keys,
            &group,
            message,
            &partials[..t as usize - 1],
            false,
            &mut rand::rngs::OsRng,
        )
        .is_err());
        // Old and new partials mixed do not combine (under either set of public shares).
        let old_partials: Vec<(ShareIndex, BlsSignature)> = world
            .results
            .iter()
            .map(|r| (r.shares[v].share.index(), r.shares[v].share.sign(message)))
            .collect();
        let old_keys: BTreeMap<ShareIndex, _> = previous.validators[v]
            .public_shares
            .iter()
            .enumerate()
            .map(|(i, k)| (index(i as u32 + 1), *k))
            .collect();
        let take = (t as usize).max(3);
        let mut mixed: Vec<(ShareIndex, BlsSignature)> = Vec::new();
        for position in 0..take.min(n).min(4) {
            let from_new = position % 2 == 0;
            mixed.push(if from_new {
                partials[position]
            } else {
                old_partials[position]
            });
        }
        for (keys, threshold) in [
            (&new_keys, definition.threshold),
            (&old_keys, Threshold::new(previous.threshold).unwrap()),
        ] {
            let used = &mixed[..(threshold.get() as usize).min(mixed.len())];
            assert!(
                threshold::combine(
                    threshold,
                    keys,
                    &group,
                    message,
                    used,
                    false,
                    &mut rand::rngs::OsRng,
                )
                .is_err(),
                "mixed old and new partials combined"
            );
        }
    }
}

#[test]
fn reshare_3_of_4_to_3_of_5_adds_a_member() {
    let world = world(2, 1, 1);
    let new = [
        Who::Old(1),
        Who::Old(2),
        Who::Old(3),
        Who::Old(4),
        Who::Fresh(0),
    ];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let results = successes(run(&world, &definition, &Script::default()));
    check_success(&world, &definition, &results);
    assert_eq!(results[4].role, Role::Joining);
    assert_eq!(results[0].role, Role::Keeping);
}

#[test]
fn reshare_3_of_4_to_2_of_3_removes_two() {
    let world = world(2, 1, 2);
    let new = [Who::Old(1), Who::Old(2), Who::Fresh(0)];
    let definition = world.definition(&new, 2, &[1, 2, 3, 4]);
    let results = successes(run(&world, &definition, &Script::default()));
    check_success(&world, &definition, &results);
    // Seats 3 and 4 are the leaving old members 3 and 4: they dealt, and hold nothing new.
    assert_eq!(results[2].role, Role::Leaving);
    assert_eq!(results[3].role, Role::Leaving);
}

#[test]
fn refresh_3_of_4_to_4_of_4_raises_the_threshold() {
    let world = world(2, 0, 3);
    let new = [Who::Old(1), Who::Old(2), Who::Old(3), Who::Old(4)];
    let definition = world.definition(&new, 4, &[1, 2, 3, 4]);
    let results = successes(run(&world, &definition, &Script::default()));
    check_success(&world, &definition, &results);
}

#[test]
fn replace_one_member_with_exactly_the_old_threshold_dealing() {
    // Old member 4 is gone (compromised, offline): members 1–3 deal, a fresh appliance takes
    // new index 4; old member 4 takes no part at all.
    let world = world(2, 1, 4);
    let new = [Who::Old(1), Who::Old(2), Who::Old(3), Who::Fresh(0)];
    let definition = world.definition(&new, 3, &[1, 2, 3]);
    assert_eq!(definition.seats().len(), 4);
    let results = successes(run(&world, &definition, &Script::default()));
    check_success(&world, &definition, &results);
}

#[test]
fn the_issue_handover_to_members_2_to_5() {
    let world = world(1, 1, 5);
    let new = [Who::Old(2), Who::Old(3), Who::Old(4), Who::Fresh(0)];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let results = successes(run(&world, &definition, &Script::default()));
    check_success(&world, &definition, &results);
    assert_eq!(results[0].role, Role::Leaving);
}

#[test]
fn a_dealer_whose_constant_term_is_not_its_share_is_named() {
    let world = world(2, 1, 6);
    let new = [
        Who::Old(1),
        Who::Old(2),
        Who::Old(3),
        Who::Old(4),
        Who::Fresh(0),
    ];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let mut rng = StdRng::seed_from_u64(60);
    let forged: Vec<Scalar> = (0..2)
        .map(|_| SecretKey::random(&mut rng).to_scalar())
        .collect();
    let script = Script {
        forged: [(2, forged)].into_iter().collect(),
        ..Script::default()
    };
    let outcomes = run(&world, &definition, &script);
    let text = assert_blamed(&outcomes, &[1, 3, 4, 5], &["2:invalid_deal"]);
    assert!(text.contains("constant-term commitment"), "{text}");
}

#[test]
fn a_new_member_lying_in_a_complaint_is_named() {
    let world = world(1, 1, 7);
    let new = [
        Who::Old(1),
        Who::Old(2),
        Who::Old(3),
        Who::Old(4),
        Who::Fresh(0),
    ];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let id = definition.reshare_id();
    let body = serde_json::to_vec(&ReshareBody::Complaints {
        complaints: vec![Complaint {
            dealer: index(1),
            validator: 0,
            reason: ComplaintReason::FeldmanMismatch,
        }],
    })
    .unwrap();
    let liar = &world.fresh[0];
    let digest = reshare_message_digest(&id, Phase::Complaints, index(5), &sha256(&body));
    let lie = SignedMessage {
        ceremony_id: id,
        phase: Phase::Complaints,
        sender: index(5),
        body,
        signature: liar.signer.sign_digest(&digest).unwrap(),
    };
    let script = Script {
        injected: vec![lie],
        ..Script::default()
    };
    let outcomes = run(&world, &definition, &script);
    assert_blamed(&outcomes, &[1, 2, 3, 4], &["5:false_complaint"]);
}

#[test]
fn an_absurd_slashing_maximum_is_ignored_named_and_the_floor_bounded() {
    let world = world(2, 1, 8);
    let new = [Who::Old(2), Who::Old(3), Who::Old(4), Who::Fresh(0)];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let report = |slot: u64, source: u64, target: u64| SlashingMaxima {
        block_slot: Some(slot),
        source_epoch: Some(source),
        target_epoch: Some(target),
    };
    let script = Script {
        reports: [
            (1, report(u64::MAX, 999, 1_000_000_000)),
            (2, report(31_990, 998, 999)),
            (3, report(32_000, 999, 1000)),
        ]
        .into_iter()
        .collect(),
        ..Script::default()
    };
    let results = successes(run(&world, &definition, &script));
    check_success(&world, &definition, &results);
    for result in &results {
        assert_eq!(result.slashing_floors, vec![report(32_000, 999, 1000); 2]);
        assert_eq!(result.ignored_reports.len(), 2, "one per validator");
        assert!(result
            .ignored_reports
            .iter()
            .all(|r| r.seat == index(1) && r.endpoint == "https://127.0.0.1:9000"));
        let bound = EPOCH + SLASHING_MARGIN_EPOCHS;
        assert!(result
            .slashing_floors
            .iter()
            .all(|f| f.target_epoch.unwrap() <= bound && f.block_slot.unwrap() < (bound + 1) * 32));
    }
}

#[test]
fn too_many_absurd_slashing_reports_abort_naming_them() {
    let world = world(1, 0, 9);
    let new = [Who::Old(1), Who::Old(2), Who::Old(3), Who::Old(4)];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let absurd = SlashingMaxima {
        block_slot: None,
        source_epoch: Some(EPOCH + SLASHING_MARGIN_EPOCHS + 1),
        target_epoch: Some(EPOCH + SLASHING_MARGIN_EPOCHS + 1),
    };
    let script = Script {
        reports: [(1, absurd), (3, absurd)].into_iter().collect(),
        ..Script::default()
    };
    let outcomes = run(&world, &definition, &script);
    assert_blamed(
        &outcomes,
        &[1, 2, 3, 4],
        &["1:malformed_message", "3:malformed_message"],
    );
}

#[test]
fn too_few_old_members_are_refused_and_abort() {
    let world = world(1, 1, 10);
    let new = [Who::Old(1), Who::Old(2), Who::Fresh(0)];
    // Two dealers of a 3-of-4 lock: the definition is refused (no downgrade) …
    let definition = world.definition(&new, 2, &[1, 2]);
    let error = definition.validate().unwrap_err().to_string();
    assert!(error.contains("old threshold 3 must deal"), "{error}");
    let party = &world.old[0];
    assert!(Reshare::new(
        definition.clone(),
        &party.signer.identity(),
        party.seed.clone(),
        None,
        EPOCH
    )
    .is_err());
    // … and even with validation skipped, every seat aborts at the deal check.
    let script = Script {
        unvalidated: true,
        ..Script::default()
    };
    for outcome in run(&world, &definition, &script) {
        match outcome {
            Some(Err(text)) => assert!(text.contains("no downgrade"), "{text}"),
            _ => panic!("a seat finished a downgraded reshare"),
        }
    }
    // A listed dealer that stays silent aborts the reshare, named.
    let definition = world.definition(&new, 2, &[1, 2, 3]);
    let script = Script {
        silent: vec![3],
        ..Script::default()
    };
    let outcomes = run(&world, &definition, &script);
    assert_blamed(&outcomes, &[1, 2, 4], &["3:silence"]);
}

#[test]
fn a_group_key_that_does_not_recompute_aborts() {
    // A previous lock whose group key is not what its public shares interpolate to (validation
    // skipped: `verify_lock` refuses it): the dealers deal their real shares, the recomputed key
    // differs, and no new member keeps anything.
    let world = world(1, 1, 14);
    let new = [Who::Old(1), Who::Old(2), Who::Old(3), Who::Fresh(0)];
    let mut definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let other = super::reshare_tests::world(1, 0, 15);
    definition.previous.validators[0].group_public_key =
        other.lock().validators[0].group_public_key;
    assert!(definition.validate().is_err());
    let script = Script {
        unvalidated: true,
        ..Script::default()
    };
    let outcomes = run(&world, &definition, &script);
    for (seat, outcome) in definition.seats().iter().zip(&outcomes) {
        match outcome {
            Some(Err(text)) => assert!(text.contains("recomputed group key"), "{text}"),
            _ => panic!(
                "seat {:?} finished with a different group key",
                seat.old_index
            ),
        }
    }
}

#[test]
fn dkg_and_foreign_messages_do_not_replay_into_a_reshare() {
    let world = world(1, 1, 11);
    let new = [
        Who::Old(1),
        Who::Old(2),
        Who::Old(3),
        Who::Old(4),
        Who::Fresh(0),
    ];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let mut machines = machines(&world, &definition, &Script::default());
    let party = &world.old[0];
    machines[0].poll(&party.signer, &party.decryptor).unwrap();
    let deal = machines[0].message(Phase::Deal, index(1)).unwrap().clone();
    machines[1].receive(deal.clone()).unwrap();
    // The same body signed under the DKG's message digest is refused.
    let dkg_digest = message_digest(
        &deal.ceremony_id,
        deal.phase,
        deal.sender,
        &sha256(&deal.body),
    );
    let mut replayed = deal.clone();
    replayed.signature = party.signer.sign_digest(&dkg_digest).unwrap();
    assert!(machines[2].receive(replayed).is_err());
    // A message of the old DKG (another ceremony id) is refused.
    let mut foreign = deal.clone();
    foreign.ceremony_id = world.lock().ceremony_id;
    assert!(machines[2].receive(foreign).is_err());
    // The reshare id is not the old ceremony's nor the new lock's.
    assert_ne!(definition.reshare_id(), world.lock().ceremony_id);
    assert_ne!(
        definition.reshare_id(),
        definition.new_definition().ceremony_id()
    );
    // A new-only member sends no deal.
    let mut forged = deal;
    forged.sender = index(5);
    assert!(machines[2].receive(forged).is_err());
}

#[test]
fn a_reshared_lock_is_checked_against_the_previous_one() {
    let world = world(1, 1, 12);
    let other = super::reshare_tests::world(1, 0, 13);
    let new = [Who::Old(1), Who::Old(2), Who::Old(3), Who::Fresh(0)];
    let definition = world.definition(&new, 3, &[1, 2, 3]);
    let results = successes(run(&world, &definition, &Script::default()));
    let lock = &results[0].lock;
    verify_reshared_lock(world.lock(), lock).unwrap();
    let error = verify_reshared_lock(other.lock(), lock)
        .unwrap_err()
        .to_string();
    assert!(error.contains("group key differs"), "{error}");
    let mut tampered = lock.clone();
    tampered.validators[0].public_shares.swap(0, 1);
    assert!(verify_reshared_lock(world.lock(), &tampered).is_err());
}

#[test]
fn the_in_process_runner_reshares() {
    let world = world(1, 1, 16);
    let new = [
        Who::Old(1),
        Who::Old(2),
        Who::Old(3),
        Who::Old(4),
        Who::Fresh(0),
    ];
    let definition = world.definition(&new, 3, &[1, 2, 3, 4]);
    let parties: Vec<&LocalParty> = world.old.iter().chain(&world.fresh).collect();
    let mut holdings: Vec<Option<OldHolding>> = world
        .results
        .iter()
        .map(|r| Some(holding_of(r).unwrap()))
        .collect();
    holdings.push(None);
    let results = run_local_reshare(&definition, &parties, holdings, EPOCH).unwrap();
    check_success(&world, &definition, &results);
}
