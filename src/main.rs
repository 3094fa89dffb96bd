//! `keystake-signer`: command-line entry point. Parses arguments, sets up logging, and calls
//! `keystake_signer::commands`. No prompts: every secret comes from a file.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use keystake_signer::config::{self, Config};
use keystake_signer::store::InsertOutcome;
use keystake_signer::types::BlsPublicKey;
use keystake_signer::{admin_commands, commands};

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
    /// List stored keys.
    List {
        #[arg(long)]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<Config> {
    let config = Config::load(path)?;
    commands::prepare_hsm_environment(&config);
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
                },
        } => {
            commands::generate_certs(&out, &clients)?;
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
        Command::Serve {
            config,
            listen,
            metrics_listen,
        } => {
            let config = load(&config)?;
            runtime()?.block_on(keystake_signer::server::serve(
                &config,
                keystake_signer::server::Listen {
                    api: listen,
                    metrics: metrics_listen,
                },
            ))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    commands::disable_core_dumps();
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
