//! The `keystake-signer` command line: the top-level `clap` types, the dispatch to one `run` per
//! subcommand, and the helpers several subcommands share. One file per subcommand, nested as the
//! command line nests; each holds its `clap` types and its body, and its library functions for
//! the tests. Every command is non-interactive: secrets come from files named in the
//! configuration or on the command line, never from arguments or prompts.
//!
//! Refuses: what `clap` refuses (unknown subcommands and flags, missing required ones, values
//! that do not parse), with its usage message and exit code 2; each subcommand's own refusals
//! are listed in its file.
#![forbid(unsafe_code)]

pub mod audit;
#[cfg(feature = "tools")]
pub mod bench;
pub mod certs;
pub mod combine;
pub mod connect;
pub mod demo;
pub mod dkg;
pub mod enrolment;
pub mod healthcheck;
pub mod hsm;
pub mod init;
pub mod keys;
pub mod manifest;
pub mod policy;
pub mod reshare;
pub mod serve;
pub mod slashing;
pub mod split;

use std::path::Path;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "keystake-signer",
    version,
    about = "Hardware-secured remote signer for Ethereum validators"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Set up a complete demo appliance in DIR (certificates, SoftHSM2 token, three sealed keys) and serve it.
    Demo(demo::DemoArgs),
    /// Create the data directory, the SQLite store and the HSM token objects (idempotent).
    Init(init::InitArgs),
    /// Certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: certs::CertsCommand,
    },
    /// Manage validator keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Authorization policy tools.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Benchmarks against a real appliance (built with the `tools` feature only).
    #[cfg(feature = "tools")]
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// This appliance's enrolment key (what share packages are encrypted to).
    Enrolment {
        #[command(subcommand)]
        command: enrolment::EnrolmentCommand,
    },
    /// The HSM: check that it offers what the appliance needs.
    Hsm {
        #[command(subcommand)]
        command: hsm::HsmCommand,
    },
    /// Trusted dealer: split a keystore t-of-n into a cluster manifest and one sealed package per appliance.
    Split(split::SplitArgs),
    /// Combine t partial signatures into the group signature (prints 0x…; names culprits on failure).
    Combine(combine::CombineArgs),
    /// Cluster manifests.
    Manifest {
        #[command(subcommand)]
        command: manifest::ManifestCommand,
    },
    /// Serve the Web3Signer REST API over mutual TLS.
    Serve(serve::ServeArgs),
    /// Run on the validator-client host: accept plain HTTP on loopback and forward each request
    /// to the appliance over mutual TLS (for clients without client certificates, e.g. Lodestar).
    Connect(connect::ConnectArgs),
    /// Distributed key generation between appliances: no party ever holds a validator key.
    Dkg {
        #[command(subcommand)]
        command: dkg::DkgCommand,
    },
    /// EIP-3076 slashing-protection interchange (format version 5).
    Slashing {
        #[command(subcommand)]
        command: slashing::SlashingCommand,
    },
    /// Probe a running appliance: GET /upcheck over mutual TLS (exit 0 when it answers 200).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Test hook (hidden): install the serving seccomp filter, then make a call from another
    /// thread (crate::sandbox::probe).
    #[command(hide = true)]
    SeccompProbe {
        /// Skip the filter (the control case).
        #[arg(long)]
        no_filter: bool,
        /// Which filter (default: the serving filter; --no-filter means none).
        #[arg(long, value_enum, default_value = "serving")]
        filter: crate::sandbox::ProbeFilter,
        /// What to call once confined.
        #[arg(long, value_enum, default_value = "chroot")]
        call: crate::sandbox::ProbeCall,
    },
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Init(args) => init::run(args),
        Command::Certs { command } => certs::run(command),
        Command::Keys { command } => keys::run(command),
        Command::Audit { command } => audit::run(command),
        Command::Policy { command } => policy::run(command),
        #[cfg(feature = "tools")]
        Command::Bench { command } => bench::run(command),
        Command::Enrolment { command } => enrolment::run(command),
        Command::Hsm { command } => hsm::run(command),
        Command::Split(args) => split::run(args),
        Command::Combine(args) => combine::run(args),
        Command::Manifest { command } => manifest::run(command),
        Command::Serve(args) => serve::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Dkg { command } => dkg::run(command),
        Command::Slashing { command } => slashing::run(command),
        Command::Healthcheck(args) => healthcheck::run(args),
        Command::SeccompProbe {
            no_filter,
            filter,
            call,
        } => {
            let filter = if no_filter {
                crate::sandbox::ProbeFilter::None
            } else {
                filter
            };
            println!("{}", crate::sandbox::probe(call, filter)?);
            Ok(())
        }
    }
}

/// Load the configuration and point the HSM library at its token (before any thread starts):
/// what every command that opens the HSM does first.
pub fn load_config(path: &Path) -> Result<Config> {
    let config = Config::load(path)?;
    crate::app::prepare_hsm_environment(&config);
    Ok(config)
}

/// The runtime of the commands that serve or talk over the network.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Blocking-pool threads beyond one per HSM session (or per core, whichever is more) for the
/// rest of what runs there: table builds (at most two at once), the health probe, a scheduled
/// prune, keymanager imports, gRPC combines.
pub const SERVE_SPARE_BLOCKING_THREADS: usize = 8;

/// The runtime of `serve`: [`runtime`] with its blocking pool bounded by what can run at once.
/// Unsealing and signing run there, and beyond one thread per HSM session or core a thread
/// only waits: tokio's default bound (512) made one 631-request slot burst spawn about 350
/// threads — each a clone, a 2 MiB stack and its wake-ups — which expired again before the next
/// slot. Excess work queues instead (measured in docs/performance.md, "Issue 16, session 9":
/// faster bursts and mainnet throughput, a higher p99 at 16 connections). A bound at one per
/// core with two spare was faster still here, and was not taken: a prune, a health probe and
/// a combine at once would leave signing nothing.
pub fn serving_runtime(config: &Config) -> Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let sessions = match &config.hsm {
        crate::config::HsmSection::Pkcs11(section) => section
            .sessions
            .unwrap_or_else(crate::hsm::pkcs11::default_session_count),
        crate::config::HsmSection::YubiHsm(_) => 1,
    };
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cores.max(sessions) + SERVE_SPARE_BLOCKING_THREADS)
        .build()?)
}

/// A keystore password file: only a final line break is removed (EIP-2335 passwords may contain
/// spaces; normalisation is the keystore module's job).
pub fn read_password_file(path: &Path) -> Result<SecretString> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("reading password file {}", path.display()))?,
    );
    let trimmed = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    Ok(SecretString::from(trimmed.to_owned()))
}

/// A JSON file (manifest, share package), with the path of the field at fault on error.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    let mut deserializer = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut deserializer)
        .with_context(|| format!("{what} {} is not valid", path.display()))
}
