//! `keystake-signer`: command-line entry point. Parses arguments, sets up logging, and calls
//! `keystake_signer::cli`. No prompts: every secret comes from a file.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use keystake_core::types::BlsPublicKey;
use keystake_signer::cli as commands;
use keystake_signer::cli::admin as admin_commands;
use keystake_signer::cli::threshold as threshold_cmd;
use keystake_signer::config::{self, Config};
use keystake_signer::store::InsertOutcome;

#[derive(Parser)]
#[command(
    name = "keystake-signer",
    version,
    about = "Hardware-secured remote signer for Ethereum validators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up a complete demo appliance in DIR (certificates, SoftHSM2 token, three sealed keys) and serve it.
    Demo {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Prepare everything, print the instructions, and exit without serving.
        #[arg(long)]
        no_serve: bool,
    },
    /// Create the data directory, the SQLite store and the HSM token objects (idempotent).
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Certificates for mutual TLS.
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Manage validator keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// The tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Authorization policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Benchmarks against a real appliance (built with the `tools` feature only).
    #[cfg(feature = "tools")]
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// This appliance's enrolment key (what share packages are encrypted to).
    Enrolment {
        #[command(subcommand)]
        command: threshold_cmd::EnrolmentCommand,
    },
    /// Trusted dealer: split a keystore t-of-n into a cluster manifest and one sealed package per appliance.
    Split(threshold_cmd::SplitArgs),
    /// Combine t partial signatures into the group signature (prints 0x…; names culprits on failure).
    Combine(threshold_cmd::CombineArgs),
    /// Cluster manifests.
    Manifest {
        #[command(subcommand)]
        command: threshold_cmd::ManifestCommand,
    },
    /// Serve the Web3Signer REST API over mutual TLS.
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Override the configured listen address (port 0 picks a free port; the bound address is logged).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Serve Prometheus metrics on this address (overrides metrics_listen; port 0 allowed).
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
    },
    /// Run on the validator-client host: accept plain HTTP on loopback and forward each request
    /// to the appliance over mutual TLS (for clients without client certificates, e.g. Lodestar).
    Connect {
        /// Loopback address to accept plain HTTP on (port 0 picks a free port; it is printed).
        #[arg(long)]
        listen: SocketAddr,
        /// The appliance, e.g. https://signer.example:9000
        #[arg(long)]
        upstream: String,
        /// This host's client certificate (PEM), issued by the appliance's CA.
        #[arg(long)]
        client_cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        client_key: PathBuf,
        /// CA certificate (PEM) the appliance's server certificate must chain to.
        #[arg(long)]
        ca: PathBuf,
        /// Allow a non-loopback listen address (exposes unauthenticated signing; loud warning).
        #[arg(long)]
        allow_non_loopback: bool,
        /// Upper bound on one upstream exchange, in seconds.
        #[arg(long, default_value_t = keystake_signer::forwarder::DEFAULT_UPSTREAM_TIMEOUT.as_secs())]
        timeout_secs: u64,
    },
    /// EIP-3076 slashing-protection interchange (format version 5).
    Slashing {
        #[command(subcommand)]
        command: SlashingCommand,
    },
}

#[derive(Subcommand)]
enum SlashingCommand {
    /// Import an interchange file atomically (whole file or nothing); raises each key's watermark.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        file: PathBuf,
        /// Import only these keys' history (repeatable; default: every key in the file).
        #[arg(long = "pubkey")]
        pubkeys: Vec<BlsPublicKey>,
    },
    /// Export the history (complete form) of all keys or the chosen ones.
    Export {
        #[arg(long)]
        config: PathBuf,
        /// Export only these keys (repeatable; default: every key the database knows).
        #[arg(long = "pubkey")]
        pubkeys: Vec<BlsPublicKey>,
        /// Output file (`-` for standard output).
        #[arg(long)]
        out: PathBuf,
        /// Minimal form: per key one block and one attestation at the maxima, without roots.
        #[arg(long)]
        minimal: bool,
    },
}

#[derive(Subcommand)]
enum CertsCommand {
    /// Generate a CA, a server certificate and client certificates (demo/test PKI).
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// Client certificate to issue (repeatable; default: one named "client").
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Name clients use to reach the appliance: DNS name or IP address (repeatable; default:
        /// localhost and 127.0.0.1). The server certificate carries each as a SAN.
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Issue only the named client certificates, from the existing CA in this directory
        /// (ca.pem + ca.key), into --out.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
    },
    /// Write a certificate revocation list (signed by the CA) revoking the given certificates.
    Revoke {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Certificate (PEM) to revoke (repeatable; none writes an empty CRL).
        #[arg(long = "cert")]
        certs: Vec<PathBuf>,
        /// Where to write the CRL (replaced if it exists).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of the audit log; exits non-zero and names the first bad entry.
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// A head printed by an earlier verify (SEQ:HASH): that entry must still be there.
        #[arg(long)]
        expect_head: Option<String>,
    },
    /// Write every audit entry as JSON lines (to stdout, or --out FILE).
    Export {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Parse an authorization policy file and print what it grants.
    Check {
        #[arg(long)]
        policy: PathBuf,
    },
}

#[cfg(feature = "tools")]
#[derive(Subcommand)]
enum BenchCommand {
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

#[derive(Subcommand)]
enum KeysCommand {
    /// Import an EIP-2335 keystore; the key is sealed by the HSM, never written in plaintext.
    Import {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        keystore: PathBuf,
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Import a threshold share package from `split`; it is opened by the HSM and sealed, never written in plaintext.
    ImportShare(threshold_cmd::ImportShareArgs),
    /// List stored keys.
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config> {
    let config = Config::load(path)?;
    keystake_signer::app::prepare_hsm_environment(&config);
    Ok(config)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo {
            dir,
            listen,
            no_serve,
        } => {
            let demo = commands::prepare_demo(&dir, listen)?;
            let config = Config::load(&demo.config_path)?;
            print!("{}", commands::demo_instructions(&demo, &config, listen));
            if !no_serve {
                runtime()?.block_on(commands::serve(&config, Some(listen)))?;
            }
        }
        Command::Init { config } => commands::init(&load(&config)?)?,
        Command::Certs {
            command:
                CertsCommand::Generate {
                    out,
                    clients,
                    server_names: _,
                    ca_dir: Some(ca_dir),
                },
        } => {
            for issued in admin_commands::issue_clients(&ca_dir, &out, &clients)? {
                println!("{} {}", issued.cert.display(), issued.key.display());
            }
        }
        Command::Certs {
            command:
                CertsCommand::Generate {
                    out,
                    clients,
                    ca_dir: None,
                    server_names,
                },
        } => {
            commands::generate_certs_for_servers(&out, &server_names, &clients)?;
            println!("certificates written to {}", out.display());
        }
        Command::Certs {
            command: CertsCommand::Revoke { ca_dir, certs, out },
        } => {
            admin_commands::revoke(&ca_dir, &certs, &out)?;
            println!("CRL written to {}", out.display());
        }
        Command::Audit {
            command:
                AuditCommand::Verify {
                    config,
                    expect_head,
                },
        } => {
            admin_commands::verify_audit(
                &load(&config)?,
                expect_head.as_deref(),
                &mut std::io::stdout().lock(),
            )?;
        }
        Command::Audit {
            command: AuditCommand::Export { config, out },
        } => {
            let config = load(&config)?;
            match out {
                Some(path) => {
                    let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
                    let n = admin_commands::export_audit(&config, &mut file)?;
                    eprintln!("{n} audit entries written to {}", path.display());
                }
                None => {
                    admin_commands::export_audit(&config, &mut std::io::stdout().lock())?;
                }
            }
        }
        Command::Policy {
            command: PolicyCommand::Check { policy },
        } => admin_commands::check_policy(&policy, &mut std::io::stdout().lock())?,
        Command::Keys { command } => match command {
            KeysCommand::Import {
                config,
                keystore,
                password_file,
            } => {
                let (public_key, outcome) =
                    commands::import_keystore(&load(&config)?, &keystore, &password_file)?;
                let status = match outcome {
                    InsertOutcome::Inserted => "imported",
                    InsertOutcome::Duplicate => "duplicate",
                    InsertOutcome::Reenabled => "imported (re-enabled)",
                };
                println!("{public_key} {status}");
            }
            KeysCommand::ImportShare(args) => {
                let imported = threshold_cmd::import_share(
                    &load(&args.config)?,
                    &args.package,
                    args.manifest.as_deref(),
                )?;
                let status = match imported.outcome {
                    InsertOutcome::Inserted => "imported",
                    InsertOutcome::Duplicate => "duplicate",
                    InsertOutcome::Reenabled => "imported (re-enabled)",
                };
                println!(
                    "{} {status} share {}/{} threshold {} group {}",
                    imported.public_key,
                    imported.index,
                    imported.participants,
                    imported.threshold,
                    imported.group_public_key
                );
            }
            KeysCommand::List { config } => {
                commands::list_keys(&load(&config)?, &mut std::io::stdout().lock())?
            }
        },
        Command::Slashing { command } => match command {
            SlashingCommand::Import {
                config,
                file,
                pubkeys,
            } => {
                let summary = commands::slashing::import(&Config::load(&config)?, &file, &pubkeys)?;
                println!(
                    "imported {} validators ({} blocks, {} attestations; {} duplicates skipped, {} validators not chosen)",
                    summary.validators,
                    summary.blocks_imported,
                    summary.attestations_imported,
                    summary.duplicates_skipped,
                    summary.validators_skipped
                );
            }
            SlashingCommand::Export {
                config,
                pubkeys,
                out,
                minimal,
            } => {
                let count =
                    commands::slashing::export(&Config::load(&config)?, &pubkeys, &out, minimal)?;
                if out != std::path::Path::new("-") {
                    println!("exported {count} validators to {}", out.display());
                }
            }
        },
        #[cfg(feature = "tools")]
        Command::Bench { command } => run_bench(command)?,
        Command::Enrolment {
            command: threshold_cmd::EnrolmentCommand::Show { config },
        } => println!("{}", threshold_cmd::enrolment_show(&load(&config)?)?),
        Command::Split(args) => print!(
            "{}",
            threshold_cmd::describe_split(&threshold_cmd::split(&args)?)
        ),
        Command::Combine(args) => {
            let combined = threshold_cmd::combine(&args)?;
            if !combined.culprits.is_empty() {
                eprintln!(
                    "warning: partial signatures that do not verify were left out; culprits: {}",
                    threshold_cmd::join_indices(&combined.culprits)
                );
            }
            println!("{}", combined.signature);
        }
        Command::Manifest {
            command: threshold_cmd::ManifestCommand::Verify { manifest },
        } => print!(
            "{}",
            threshold_cmd::describe_manifest(&threshold_cmd::load_manifest(&manifest)?)
        ),
        Command::Serve {
            config,
            listen,
            metrics_listen,
        } => {
            let config = load(&config)?;
            runtime()?.block_on(keystake_signer::app::serve(
                &config,
                keystake_signer::app::Listen {
                    api: listen,
                    metrics: metrics_listen,
                },
            ))?;
        }
        Command::Connect {
            listen,
            upstream,
            client_cert,
            client_key,
            ca,
            allow_non_loopback,
            timeout_secs,
        } => {
            let options = keystake_signer::forwarder::ForwarderOptions {
                listen,
                upstream,
                ca,
                client_cert,
                client_key,
                allow_non_loopback,
                timeout: std::time::Duration::from_secs(timeout_secs.max(1)),
            };
            runtime()?.block_on(keystake_signer::forwarder::run(
                &options,
                keystake_signer::app::shutdown_signal(),
            ))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KEYSTAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: log files and journald get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    if let Err(error) = keystake_signer::app::disable_core_dumps() {
        eprintln!("error: cannot protect this process's memory: {error:#}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "tools")]
fn run_bench(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Populate { config, keys } => keystake_signer::tools::bench::populate(
            &load(&config)?,
            keys,
            &mut std::io::stdout().lock(),
        )?,
        BenchCommand::Startup { config } => {
            let binary = std::env::current_exe()?;
            keystake_signer::tools::bench::startup(
                &binary,
                &config,
                &mut std::io::stdout().lock(),
            )?;
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
            let options = keystake_signer::tools::loadgen::LoadOptions {
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
            let report = runtime()?.block_on(keystake_signer::tools::loadgen::run(
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
