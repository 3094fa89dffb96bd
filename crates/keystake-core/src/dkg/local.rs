//! A whole ceremony inside one process, every participant with software keys
//! ([`SoftwareSigner`], [`SoftwareDecryptor`]) and every message delivered to everyone at once:
//! for benchmarks of the pure protocol and for tools. No fault injection, no timeouts (a
//! stalled exchange is an error): the real transport is the adapter's.
#![forbid(unsafe_code)]

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::crypto::{BroadcastSigner, SoftwareDecryptor, SoftwareSigner};
use super::{Ceremony, Definition, DkgError, Participant, Step, Success, DEFINITION_FORMAT};
use crate::consensus::ExecutionAddress;
use crate::types::{ShareIndex, Threshold};

/// One simulated appliance.
#[derive(Debug)]
pub struct LocalParty {
    pub signer: SoftwareSigner,
    pub decryptor: SoftwareDecryptor,
    pub seed: Zeroizing<[u8; 32]>,
}

/// `n` parties with fresh keys and a `t`-of-`n` definition for `validators` on `network`.
pub fn local_setup<R: RngCore + CryptoRng>(
    t: u32,
    n: u32,
    validators: u32,
    network: &str,
    rng: &mut R,
) -> Result<(Definition, Vec<LocalParty>), DkgError> {
    let parties: Vec<LocalParty> = (0..n)
        .map(|_| {
            let mut seed = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(seed.as_mut_slice());
            LocalParty {
                signer: SoftwareSigner::random(rng),
                decryptor: SoftwareDecryptor::random(rng),
                seed,
            }
        })
        .collect();
    let definition = Definition {
        format: DEFINITION_FORMAT.to_owned(),
        threshold: Threshold::new(t).map_err(|e| DkgError::Definition(e.to_string()))?,
        validators,
        network: network.to_owned(),
        withdrawal_address: ExecutionAddress([0x11; 20]),
        fee_recipient: ExecutionAddress([0x22; 20]),
        amount_gwei: 32_000_000_000,
        participants: parties
            .iter()
            .enumerate()
            .map(|(i, p)| Participant {
                endpoint: format!("https://127.0.0.1:{}", 9000 + i),
                enrolment_public_key: p.decryptor.public_key(),
                identity_public_key: p.signer.identity(),
                tls_certificate: vec![i as u8 + 1; 16],
            })
            .collect(),
    };
    definition.validate()?;
    Ok((definition, parties))
}

/// Run the ceremony to its end; every participant's success, or the first abort.
pub fn run_local(
    definition: &Definition,
    parties: &[LocalParty],
) -> Result<Vec<Success>, DkgError> {
    let mut machines = parties
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let index =
                ShareIndex::new(i as u32 + 1).map_err(|e| DkgError::Definition(e.to_string()))?;
            Ceremony::new(definition.clone(), index, p.seed.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut done: Vec<Option<Success>> = parties.iter().map(|_| None).collect();
    let mut delivered_count = 0usize;
    loop {
        for (i, machine) in machines.iter_mut().enumerate() {
            if done[i].is_some() {
                continue;
            }
            match machine.poll(&parties[i].signer, &parties[i].decryptor)? {
                Step::Waiting { .. } => {}
                Step::Finished(success) => done[i] = Some(*success),
                Step::Aborted(abort) => return Err(DkgError::Message(abort.message())),
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        let mut outgoing = Vec::new();
        for (i, machine) in machines.iter().enumerate() {
            let me = i as u32 + 1;
            outgoing.extend(machine.messages().filter(|m| m.sender.get() == me).cloned());
        }
        let before = delivered_count;
        for message in outgoing {
            for machine in machines.iter_mut() {
                if machine.message(message.phase, message.sender) != Some(&message) {
                    machine.receive(message.clone())?;
                    delivered_count += 1;
                }
            }
        }
        if delivered_count == before {
            return Err(DkgError::Message("the local exchange stalled".into()));
        }
    }
    Ok(done.into_iter().flatten().collect())
}
