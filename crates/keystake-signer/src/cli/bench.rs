//! `keystake-signer bench populate|startup|load`: benchmarks against a test appliance, built
//! with the `tools` feature only (never in an appliance build; docs/performance.md). `populate`
//! adds N random demo keys (HSM-sealed), `startup` starts `serve` and reports the time until it
//! listens and its peak RSS, `load` drives the appliance over mutual TLS with non-slashable
//! attestations (and blocks) and compares with raw blst in the same run (`crate::tools`).
//!
//! Refuses: `--block-fraction` outside 0..=1; populating an appliance that holds non-demo keys,
//! or zero keys; loading keys that are not demo keys unless `--allow-non-demo-keys` (the load
//! signs arbitrary messages and fills their slashing history); and (as a failed command) a load
//! run in which any request was not answered with 200.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;

use super::load_config;
use crate::config::Config;
use crate::tools::loadgen::LoadOptions;

/// `keystake-signer bench …`.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Add N random demo keys (HSM-sealed) to a test appliance, for start-up and burst benchmarks.
    Populate {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        keys: usize,
    },
    /// Start `serve` for CONFIG and report the time until it listens and its peak RSS.
    Startup {
        #[arg(long)]
        config: PathBuf,
    },
    /// Load the appliance that CONFIG describes over mutual TLS (client identity from its [client]
    /// section) with non-slashable attestations (and blocks), and compare with raw blst in the same run.
    /// It signs arbitrary messages: never run it against an appliance holding real validator keys.
    Load(LoadArgs),
}

/// `keystake-signer bench load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Appliance URL (default: the configuration's listen address).
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Use only the first K keys.
    #[arg(long)]
    pub keys: Option<usize>,
    /// Fixed request rate per second (default: max throughput).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Fraction of BLOCK_V2 requests in the mix.
    #[arg(long, default_value_t = 0.0)]
    pub block_fraction: f64,
    /// Threads for the raw blst measurement (default: CPUs).
    #[arg(long)]
    pub raw_threads: Option<usize>,
    /// Write per-request samples as CSV.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Send exactly N requests at once (one per key in turn) and report when the last is answered;
    /// with --mix mainnet, the requests of the first N slots.
    #[arg(long)]
    pub burst: Option<u64>,
    /// Also sign with keys that are not demo keys (test appliances only).
    #[arg(long)]
    pub allow_non_demo_keys: bool,
    /// `distinct`: every request a different message; `mainnet`: the slot-structured duties of
    /// an operator with --keys keys (most signing roots shared across keys).
    #[arg(long, value_enum, default_value_t = crate::tools::loadgen::Mix::Distinct)]
    pub mix: crate::tools::loadgen::Mix,
    /// The appliance's process id, for its CPU time (default: the pid its /healthcheck reports).
    #[arg(long)]
    pub appliance_pid: Option<u32>,
    /// Send the requests to a `connect` forwarder (http://127.0.0.1:PORT) instead of the
    /// appliance, to measure what the forwarder adds.
    #[arg(long)]
    pub forwarder: Option<String>,
    /// Profile only the measured window: the control and acknowledgement FIFOs of
    /// `perf record -D -1 --control fifo:CTL,ACK -p <appliance pid>`, given as `CTL,ACK`. The
    /// tool enables perf's events when the clock starts (after the warm-up handshakes and, for a
    /// burst, after its requests are made) and disables them when the last answer is in; a perf
    /// that is not running, or does not acknowledge within 5 s, is an error, not a wait.
    #[arg(long, value_name = "CTL,ACK")]
    pub perf_control: Option<String>,
}

pub fn run(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Populate { config, keys } => crate::tools::bench::populate(
            &load_config(&config)?,
            keys,
            &mut std::io::stdout().lock(),
        )?,
        BenchCommand::Startup { config } => {
            let binary = std::env::current_exe()?;
            crate::tools::bench::startup(&binary, &config, &mut std::io::stdout().lock())?;
        }
        BenchCommand::Load(args) => load(args)?,
    }
    Ok(())
}

/// `bench load`: fails when any request was not answered with 200.
fn load(args: LoadArgs) -> Result<()> {
    if !(0.0..=1.0).contains(&args.block_fraction) {
        anyhow::bail!("--block-fraction must be between 0 and 1");
    }
    let config = Config::load(&args.config)?;
    let options = LoadOptions {
        url: args.url,
        duration: std::time::Duration::from_secs(args.duration),
        connections: args.connections,
        keys: args.keys,
        rate: args.rate,
        block_fraction: args.block_fraction,
        raw_threads: args.raw_threads,
        csv: args.csv,
        burst: args.burst,
        allow_non_demo_keys: args.allow_non_demo_keys,
        mix: args.mix,
        appliance_pid: args.appliance_pid,
        forwarder: args.forwarder,
        perf_control: args
            .perf_control
            .as_deref()
            .map(crate::tools::loadgen::PerfControl::parse)
            .transpose()?,
    };
    // One thread drives every connection: a load generator on the appliance's own cores should
    // take as little of them as it can, and a single-threaded runtime wakes no other thread per
    // request (the pool's connection tasks and the request tasks share it). The raw blst
    // measurement runs on its own threads either way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(crate::tools::loadgen::run(
        &config,
        &options,
        &mut std::io::stdout().lock(),
    ))?;
    if report.errors > 0 {
        anyhow::bail!("{} requests were not answered with 200", report.errors);
    }
    Ok(())
}
