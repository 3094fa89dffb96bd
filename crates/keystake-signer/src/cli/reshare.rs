//! `keystake-signer dkg reshare-definition`, `dkg reshare` and `dkg verify --previous` (issue 13,
//! docs/resharing.md): writing a reshare definition from the current lock and the new set's
//! identity files, taking part in the reshare (`DIR/lock.json`, or `DIR/failure.json` and a
//! message naming the culprits), and checking a reshared lock against the lock it replaces.
//!
//! Refuses: a lock or identity file that does not parse, a definition the pure core refuses
//! (previous lock not verifying, fewer dealers than the old threshold, a new set the DKG would
//! refuse), an output file that exists; a reshared lock whose group keys, deposits or deposit
//! terms differ from the previous lock's.
#![forbid(unsafe_code)]

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{load_config, read_json, runtime};
use crate::dkg::reshare::{run_reshare, ReshareOutcome};
use crate::dkg::run::{GrpcTransport, Honest, Outgoing, RunOptions};
use crate::files::{write_file, Overwrite};
use keystake_core::dkg::{
    verify_reshared_lock, Lock, Participant, ReshareDefinition, RESHARE_DEFINITION_FORMAT,
};
use keystake_core::types::{ShareIndex, Threshold};

/// The reshare definition of `lock` to the set of `identities` (new indices in that order) with
/// threshold `threshold`. Every old member deals: a reshare needs at least the old threshold of
/// them, and listing all lets any of them be checked against its public share.
pub fn reshare_definition(
    lock: &Path,
    threshold: u32,
    identities: &[std::path::PathBuf],
) -> Result<ReshareDefinition> {
    let previous: Lock = read_json(lock, "lock")?;
    let participants = identities
        .iter()
        .map(|path| read_json::<Participant>(path, "identity file"))
        .collect::<Result<Vec<_>>>()?;
    let dealers = (1..=previous.definition.n())
        .map(ShareIndex::new)
        .collect::<Result<Vec<_>, _>>()
        .context("old indices")?;
    let definition = ReshareDefinition {
        format: RESHARE_DEFINITION_FORMAT.to_owned(),
        previous,
        dealers,
        threshold: Threshold::new(threshold).context("--threshold")?,
        participants,
    };
    definition.validate()?;
    Ok(definition)
}

/// `dkg verify --lock F --previous P`: `F` verifies and hands over exactly `P`'s validators.
pub fn verify_previous(lock: &Lock, previous: &Path) -> Result<()> {
    let previous: Lock = read_json(previous, "previous lock")?;
    verify_reshared_lock(&previous, lock)?;
    println!(
        "reshare OK: {} validators of ceremony {} ({}-of-{}) now {}-of-{}, same group keys",
        lock.validators.len(),
        previous.ceremony_id,
        previous.threshold,
        previous.definition.n(),
        lock.threshold,
        lock.definition.n()
    );
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_file(path, &text, 0o644, Overwrite::Refuse)?;
    Ok(())
}

/// `dkg reshare --config C --definition reshare.json --out DIR [--timeout-secs N]`.
pub fn reshare_command(
    config_path: &Path,
    definition: &Path,
    out: &Path,
    phase_timeout: Duration,
) -> Result<()> {
    reshare_command_with(config_path, definition, out, phase_timeout, &Honest)
}

/// `dkg reshare` with the own-message hook given (`dkg reshare` passes [`Honest`]; the fault
/// tests pass a tampering one).
pub fn reshare_command_with(
    config_path: &Path,
    definition: &Path,
    out: &Path,
    phase_timeout: Duration,
    outgoing: &dyn Outgoing,
) -> Result<()> {
    let definition: ReshareDefinition = read_json(definition, "reshare definition")?;
    definition.validate()?;
    let config = load_config(config_path)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let appliance = super::dkg::CeremonyAppliance::open(&config)?;
    let enrolment = appliance.decryptor.public_key();
    let seats = definition.seats_as_definition();
    let me = seats
        .index_of(&keystake_core::dkg::BroadcastSigner::identity(
            &appliance.identity,
        ))
        .context("this appliance is not a seat of the reshare")?;
    // The channels spawn their workers on the runtime: build them inside it.
    let outcome = runtime()?.block_on(async {
        let transport = GrpcTransport::new(&seats, me, appliance.chain.clone(), &appliance.key)?;
        run_reshare(
            definition,
            appliance.parts(),
            &enrolment,
            &transport,
            RunOptions::with_phase_timeout(phase_timeout),
            outgoing,
        )
        .await
    })?;
    match outcome {
        ReshareOutcome::Success {
            lock,
            role,
            shares,
            retired,
            ignored,
        } => {
            write_json(&out.join("lock.json"), &*lock)?;
            for line in &ignored {
                eprintln!("slashing report ignored: {line}");
            }
            println!(
                "reshare done ({role:?}): {} validators now {}-of-{}, {} new shares sealed (origin dkg), {} old shares retired",
                lock.validators.len(),
                lock.threshold,
                lock.definition.n(),
                shares.len(),
                retired.len()
            );
            Ok(())
        }
        ReshareOutcome::Aborted(abort) => {
            write_json(&out.join("failure.json"), &abort)?;
            bail!("{}", abort.message())
        }
    }
}
