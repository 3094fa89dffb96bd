//! A whole reshare inside one process (software keys, every message delivered to every seat at
//! once): for the benchmark of the pure protocol and for tools, like [`super::run_local`]. No
//! fault injection and no timeouts (a stalled exchange is an error).
#![forbid(unsafe_code)]

use super::reshare::{OldHolding, Reshare, ReshareDefinition, ReshareStep, ReshareSuccess};
use super::{DkgError, LocalParty, SlashingMaxima, Success};
use crate::bls::SecretKey;
use crate::threshold::SecretShare;

/// A DKG participant's holding as a reshare dealer: copies of its shares and empty slashing
/// maxima (it never signed).
pub fn holding_of(success: &Success) -> Result<OldHolding, DkgError> {
    let shares = success
        .shares
        .iter()
        .map(|s| {
            SecretKey::from_scalar(&s.share.secret_key().to_scalar())
                .map(|key| SecretShare::new(s.share.index(), key))
                .map_err(|e| DkgError::Message(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let maxima = vec![SlashingMaxima::default(); shares.len()];
    Ok(OldHolding { shares, maxima })
}

/// Run the reshare to its end: `parties[s-1]` is seat `s`, `holdings[s-1]` its old holding
/// (`Some` exactly for dealers). Every seat's success, or the first abort as an error.
pub fn run_local_reshare(
    definition: &ReshareDefinition,
    parties: &[&LocalParty],
    holdings: Vec<Option<OldHolding>>,
    wall_clock_epoch: u64,
) -> Result<Vec<ReshareSuccess>, DkgError> {
    let mut machines = parties
        .iter()
        .zip(holdings)
        .map(|(party, holding)| {
            Reshare::new(
                definition.clone(),
                &super::BroadcastSigner::identity(&party.signer),
                party.seed.clone(),
                holding,
                wall_clock_epoch,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut done: Vec<Option<ReshareSuccess>> = parties.iter().map(|_| None).collect();
    loop {
        for (i, machine) in machines.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match machine.poll(&parties[i].signer, &parties[i].decryptor)? {
                ReshareStep::Waiting { .. } => {}
                ReshareStep::Finished(success) => done[i] = Some(*success),
                ReshareStep::Aborted(abort) => return Err(DkgError::Message(abort.message())),
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        let mut outgoing = Vec::new();
        for machine in &machines {
            let me = machine.me();
            outgoing.extend(machine.messages().filter(|m| m.sender == me).cloned());
        }
        let mut delivered = 0usize;
        for message in outgoing {
            for machine in machines.iter_mut() {
                if machine.message(message.phase, message.sender) != Some(&message) {
                    machine.receive(message.clone())?;
                    delivered += 1;
                }
            }
        }
        if delivered == 0 {
            return Err(DkgError::Message(
                "the local reshare exchange stalled".into(),
            ));
        }
    }
    Ok(done.into_iter().flatten().collect())
}
