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

use super::{load_config, runtime};
use crate::config::Config;

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
    Load {
        #[arg(long)]
        config: PathBuf,
        /// Appliance URL (default: the configuration's listen address).
        #[arg(long)]
        url: Option<String>,
        #[arg(long, default_value_t = 10)]
        duration: u64,
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Use only the first K keys.
        #[arg(long)]
        keys: Option<usize>,
        /// Fixed request rate per second (default: max throughput).
        #[arg(long)]
        rate: Option<u64>,
        /// Fraction of BLOCK_V2 requests in the mix.
        #[arg(long, default_value_t = 0.0)]
        block_fraction: f64,
        /// Threads for the raw blst measurement (default: CPUs).
        #[arg(long)]
        raw_threads: Option<usize>,
        /// Write per-request samples as CSV.
        #[arg(long)]
        csv: Option<PathBuf>,
        /// Send exactly N requests at once (one per key in turn) and report when the last is answered.
        #[arg(long)]
        burst: Option<u64>,
        /// Also sign with keys that are not demo keys (test appliances only).
        #[arg(long)]
        allow_non_demo_keys: bool,
    },
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
        BenchCommand::Load {
            config,
            url,
            duration,
            connections,
            keys,
            rate,
            block_fraction,
            raw_threads,
            csv,
            burst,
            allow_non_demo_keys,
        } => {
            if !(0.0..=1.0).contains(&block_fraction) {
                anyhow::bail!("--block-fraction must be between 0 and 1");
            }
            let config = Config::load(&config)?;
            let options = crate::tools::loadgen::LoadOptions {
                url,
                duration: std::time::Duration::from_secs(duration),
                connections,
                keys,
                rate,
                block_fraction,
                raw_threads,
                csv,
                burst,
                allow_non_demo_keys,
            };
            let report = runtime()?.block_on(crate::tools::loadgen::run(
                &config,
                &options,
                &mut std::io::stdout().lock(),
            ))?;
            if report.errors > 0 {
                anyhow::bail!("{} requests were not answered with 200", report.errors);
            }
        }
    }
    Ok(())
}
