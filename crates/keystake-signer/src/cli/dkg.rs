//! `keystake-signer dkg …`: distributed key generation between appliances (issue 12,
//! docs/dkg.md). The scripted interface operators automate:
//!
//! * `dkg identity --config C --endpoint https://HOST:PORT --out id.json` — this appliance's
//!   public identity (endpoint, enrolment key, identity key, TLS certificate);
//! * `dkg definition --threshold T --validators V --network NAME --withdrawal-address 0x…
//!   --fee-recipient 0x… [--amount-gwei N] --identity id1.json … --out definition.json` — anyone
//!   can write it; participant index = order of `--identity` (1-based);
//! * `dkg run --config C --definition definition.json --out DIR [--timeout-secs N]` — with this
//!   appliance's `serve` running at its identity's endpoint; exit 0 with `DIR/lock.json` and
//!   `DIR/deposit-data.json`, or non-zero with `DIR/failure.json` and a message naming the
//!   culprits ("participant 4 (https://…)");
//! * `dkg verify --lock F [--deposit-data F]` — anyone checks the lock.
//!
//! Refuses: identity files or definitions that do not parse or validate, an appliance not listed
//! in the definition, output files that already exist (never clobbered), a lock or deposit data
//! that does not verify.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{load_config, read_json, runtime};
use crate::dkg::identity::HsmIdentity;
use crate::dkg::run::{
    run_ceremony, GrpcTransport, Honest, Outgoing, Parts, RunOptions, RunOutcome,
};
use crate::files::{write_file, Overwrite};
use crate::hsm::signing_key::KeyRole;
use keystake_core::consensus::ExecutionAddress;
use keystake_core::dkg::{
    deposit_data_entries, verify_deposit_data, verify_lock, BroadcastSigner, Definition,
    DepositDataEntry, Lock, Participant, DEFINITION_FORMAT,
};
use keystake_core::types::Threshold;

/// `keystake-signer dkg …`.
#[derive(Debug, clap::Subcommand)]
pub enum DkgCommand {
    /// Write this appliance's public identity (endpoint, enrolment key, identity key, TLS certificate).
    Identity {
        #[arg(long)]
        config: PathBuf,
        /// `https://HOST:PORT` where this appliance's `serve` listens for its peers.
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a ceremony definition; participant i is the i-th `--identity`.
    Definition {
        #[arg(long)]
        threshold: u32,
        #[arg(long)]
        validators: u32,
        #[arg(long)]
        network: String,
        #[arg(long)]
        withdrawal_address: ExecutionAddress,
        #[arg(long)]
        fee_recipient: ExecutionAddress,
        #[arg(long, default_value_t = 32_000_000_000)]
        amount_gwei: u64,
        /// Identity files (`dkg identity`), in participant order; repeat the flag or list them.
        #[arg(long, num_args = 1.., required = true)]
        identity: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Take part in the ceremony; blocks until it ends.
    Run {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        definition: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How long each phase waits for a silent participant (after retries).
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
    /// Check a lock (shares against commitments, group keys, every signature) and deposit data.
    Verify {
        #[arg(long)]
        lock: PathBuf,
        #[arg(long)]
        deposit_data: Option<PathBuf>,
        /// A reshared lock: the lock it replaces (same validators and group keys).
        #[arg(long)]
        previous: Option<PathBuf>,
    },
    /// Write a reshare definition (issue 13): the current lock handed to the new set; new
    /// participant i is the i-th `--identity`.
    ReshareDefinition {
        #[arg(long)]
        lock: PathBuf,
        #[arg(long)]
        threshold: u32,
        #[arg(long, num_args = 1.., required = true)]
        identity: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Take part in a reshare (old and new members alike); blocks until it ends.
    Reshare {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        definition: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
    },
}

pub fn run(command: DkgCommand) -> Result<()> {
    match command {
        DkgCommand::Identity {
            config,
            endpoint,
            out,
        } => {
            let participant = identity(&config, &endpoint)?;
            write_json(&out, &participant)?;
            println!(
                "identity {} endpoint {}",
                participant.identity_public_key, participant.endpoint
            );
        }
        DkgCommand::Definition {
            threshold,
            validators,
            network,
            withdrawal_address,
            fee_recipient,
            amount_gwei,
            identity,
            out,
        } => {
            let participants = identity
                .iter()
                .map(|path| read_json::<Participant>(path, "identity file"))
                .collect::<Result<Vec<_>>>()?;
            let definition = Definition {
                format: DEFINITION_FORMAT.to_owned(),
                threshold: Threshold::new(threshold).context("--threshold")?,
                validators,
                network,
                withdrawal_address,
                fee_recipient,
                amount_gwei,
                participants,
            };
            definition.validate()?;
            write_json(&out, &definition)?;
            println!("ceremony {}", definition.ceremony_id());
        }
        DkgCommand::Run {
            config,
            definition,
            out,
            timeout_secs,
        } => {
            let definition: Definition = read_json(&definition, "definition")?;
            run_command(&config, definition, &out, Duration::from_secs(timeout_secs))?;
        }
        DkgCommand::ReshareDefinition {
            lock,
            threshold,
            identity,
            out,
        } => {
            let definition = super::reshare::reshare_definition(&lock, threshold, &identity)?;
            write_json(&out, &definition)?;
            println!("reshare {}", definition.reshare_id());
        }
        DkgCommand::Reshare {
            config,
            definition,
            out,
            timeout_secs,
        } => {
            super::reshare::reshare_command(
                &config,
                &definition,
                &out,
                Duration::from_secs(timeout_secs),
            )?;
        }
        DkgCommand::Verify {
            lock,
            deposit_data,
            previous,
        } => {
            let lock: Lock = read_json(&lock, "lock")?;
            verify_lock(&lock)?;
            if let Some(previous) = previous {
                super::reshare::verify_previous(&lock, &previous)?;
            }
            if let Some(path) = deposit_data {
                let entries: Vec<DepositDataEntry> = read_json(&path, "deposit data")?;
                verify_deposit_data(&lock, &entries)?;
            }
            println!(
                "lock OK: ceremony {} {}-of-{} {} validators",
                lock.ceremony_id,
                lock.threshold,
                lock.definition.n(),
                lock.validators.len()
            );
        }
    }
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    write_file(path, &text, 0o644, Overwrite::Refuse)?;
    Ok(())
}

/// This appliance's public identity (its identity key is the token's, made by `init`).
pub fn identity(config_path: &Path, endpoint: &str) -> Result<Participant> {
    let config = load_config(config_path)?;
    let identity = HsmIdentity::new(crate::app::open_signing_key(&config, KeyRole::Identity)?)?;
    let enrolment_public_key = crate::app::enrolment_public_key(&config)?;
    let chain = crate::net::tls::load_certificates(&config.tls.server_cert, "server certificate")?;
    let participant = Participant {
        endpoint: endpoint.to_owned(),
        enrolment_public_key,
        identity_public_key: identity.identity(),
        tls_certificate: chain[0].as_ref().to_vec(),
    };
    Ok(participant)
}

/// What `dkg run` and `dkg reshare` open on this appliance: the share store, the ceremony
/// store, the sealer, the identity key (signs broadcasts) and the enrolment key (opens dealt
/// shares), all in the HSM, and the TLS identity this appliance presents to its peers.
pub(super) struct CeremonyAppliance {
    store: crate::store::Store,
    dkg: crate::store::dkg::DkgStore,
    sealer: std::sync::Arc<dyn crate::hsm::Sealer>,
    pub(super) identity: HsmIdentity,
    pub(super) decryptor: crate::hsm::enrolment::EnrolmentDecryptor,
    pub(super) chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    pub(super) key: crate::net::tls::ServerKey,
}

impl CeremonyAppliance {
    pub(super) fn open(config: &crate::config::Config) -> Result<Self> {
        Ok(CeremonyAppliance {
            store: crate::app::open_store(config)?,
            dkg: crate::app::open_dkg_store(config)?,
            sealer: crate::app::open_sealer(config)?,
            identity: HsmIdentity::new(crate::app::open_signing_key(config, KeyRole::Identity)?)?,
            decryptor: crate::app::open_enrolment_decryptor(config)?,
            chain: crate::net::tls::load_certificates(
                &config.tls.server_cert,
                "server certificate",
            )?,
            key: crate::app::server_key(config)?,
        })
    }

    pub(super) fn parts(&self) -> Parts<'_> {
        Parts {
            store: &self.store,
            dkg: &self.dkg,
            sealer: self.sealer.as_ref(),
            signer: &self.identity,
            decryptor: &self.decryptor,
        }
    }
}

fn run_command(
    config_path: &Path,
    definition: Definition,
    out: &Path,
    phase_timeout: Duration,
) -> Result<()> {
    run_command_with(config_path, definition, out, phase_timeout, &Honest)
}

/// `dkg run` with the own-message hook given (`dkg run` itself passes [`Honest`]; the fault
/// tests pass a tampering one to play a cheating participant with real parts).
pub fn run_command_with(
    config_path: &Path,
    definition: Definition,
    out: &Path,
    phase_timeout: Duration,
    outgoing: &dyn Outgoing,
) -> Result<()> {
    definition.validate()?;
    let config = load_config(config_path)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let appliance = CeremonyAppliance::open(&config)?;
    let enrolment = appliance.decryptor.public_key();
    let me = crate::dkg::run::own_index(&definition, &appliance.identity, &enrolment)?;
    // The channels spawn their workers on the runtime: build them inside it.
    let outcome = runtime()?.block_on(async {
        let transport =
            GrpcTransport::new(&definition, me, appliance.chain.clone(), &appliance.key)?;
        run_ceremony(
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
        RunOutcome::Success { lock, shares } => {
            write_json(&out.join("lock.json"), &*lock)?;
            write_json(&out.join("deposit-data.json"), &deposit_data_entries(&lock))?;
            println!(
                "ceremony {} done: {} validators, {} shares sealed (origin dkg)",
                lock.ceremony_id,
                lock.validators.len(),
                shares.len()
            );
            Ok(())
        }
        RunOutcome::Aborted(abort) => {
            write_json(&out.join("failure.json"), &abort)?;
            bail!("{}", abort.message())
        }
    }
}
