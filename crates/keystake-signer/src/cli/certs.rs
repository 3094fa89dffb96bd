//! `keystake-signer certs generate|csr|revoke`: the certificates for mutual TLS. `generate` writes a
//! demo/test PKI (CA, server certificate with the given names as SANs, client certificates), or
//! with `--ca-dir` issues further client certificates from an existing CA; `revoke` writes a CRL
//! signed by the CA. With `--config`, `generate` issues the server certificate to the TLS key
//! inside the configured HSM (created by `init`) and writes no server key file; without it the
//! server key is a file (the opt-out, for test PKIs). `csr --config` writes a certificate
//! signing request signed by the HSM's TLS key, for an operator's own CA. `generate --ca-dir CA
//! --config C` issues the server certificate to that HSM key from an existing CA (what the
//! appliance's first boot does with the issuing CA on its provisioning volume), and `install
//! --config C --cert F` puts a certificate an operator's CA issued where `serve` reads it.
//!
//! Refuses: issuing into a directory that already holds the files (nothing is written then), CA
//! directories without `ca.pem` + `ca.key` (or whose key does not match), `--ca-dir` without any
//! `--client` (unless `--config` asks for the server certificate), invalid client or server
//! names, installing a certificate that is not for the HSM's TLS key (nothing is replaced then),
//! and revoking certificates another CA issued.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::hsm::signing_key::KeyRole;
use crate::net::pki::{self as certs, IssuedCert, Overwrite};
use crate::net::tls::HsmTlsKey;

/// `keystake-signer certs …`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
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
        /// (ca.pem + ca.key), into --out; with --config, the server certificate (--out/server.pem)
        /// for the HSM's TLS key as well.
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Issue the server certificate to the TLS key in this configuration's HSM (run `init`
        /// first); no server key file is written.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write a certificate signing request for the server certificate, signed by the TLS key in
    /// the configured HSM, for an operator's own CA (install the issued chain as tls.server_cert).
    Csr {
        #[arg(long)]
        config: PathBuf,
        /// Name clients use to reach the appliance (repeatable; default: localhost, 127.0.0.1).
        #[arg(long = "server-name")]
        server_names: Vec<String>,
        /// Where to write the PEM CSR.
        #[arg(long)]
        out: PathBuf,
    },
    /// Install a server certificate (PEM chain, end-entity first) at the configuration's
    /// tls.server_cert, after checking it certifies the TLS key in the configured HSM.
    Install {
        #[arg(long)]
        config: PathBuf,
        /// The certificate the operator's CA issued for `certs csr`'s request.
        #[arg(long)]
        cert: PathBuf,
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

pub fn run(command: CertsCommand) -> Result<()> {
    match command {
        CertsCommand::Generate {
            out,
            clients,
            server_names,
            ca_dir: Some(ca_dir),
            config: Some(config),
        } => {
            let config = super::load_config(&config)?;
            let server = issue_server_for_hsm_key(&config, &ca_dir, &out, &server_names)?;
            println!("{} (issued to the HSM's TLS key)", server.display());
            if !clients.is_empty() {
                for issued in issue_clients(&ca_dir, &out, &clients)? {
                    println!("{} {}", issued.cert.display(), issued.key.display());
                }
            }
        }
        CertsCommand::Generate {
            out,
            clients,
            server_names: _,
            ca_dir: Some(ca_dir),
            config: None,
        } => {
            for issued in issue_clients(&ca_dir, &out, &clients)? {
                println!("{} {}", issued.cert.display(), issued.key.display());
            }
        }
        CertsCommand::Generate {
            out,
            clients,
            ca_dir: None,
            server_names,
            config: None,
        } => {
            generate_certs_for_servers(&out, &server_names, &clients)?;
            println!("certificates written to {}", out.display());
        }
        CertsCommand::Generate {
            out,
            clients,
            ca_dir: None,
            server_names,
            config: Some(config),
        } => {
            let config = super::load_config(&config)?;
            generate_certs_for_hsm_key(&config, &out, &server_names, &clients)?;
            println!(
                "certificates written to {} (server certificate issued to the HSM's TLS key)",
                out.display()
            );
        }
        CertsCommand::Csr {
            config,
            server_names,
            out,
        } => {
            let config = super::load_config(&config)?;
            let key = crate::app::open_signing_key(&config, KeyRole::Tls)?;
            let pem = certs::server_csr(&server_names, key.as_ref())?;
            crate::files::write_file(
                &out,
                pem.as_bytes(),
                crate::files::PUBLIC_FILE_MODE,
                Overwrite::Refuse,
            )?;
            println!("certificate signing request written to {}", out.display());
        }
        CertsCommand::Install { config, cert } => {
            let config = super::load_config(&config)?;
            let installed = install_server_cert(&config, &cert)?;
            println!(
                "{} installed (it certifies the HSM's TLS key)",
                installed.display()
            );
        }
        CertsCommand::Revoke { ca_dir, certs, out } => {
            revoke(&ca_dir, &certs, &out)?;
            println!("CRL written to {}", out.display());
        }
    }
    Ok(())
}

/// Validity of generated certificates (demo and test PKI).
pub const DEMO_CERT_VALIDITY_DAYS: u32 = 365;

/// `certs generate` with the default server names (loopback).
pub fn generate_certs(out: &Path, clients: &[String]) -> Result<()> {
    generate_certs_for_servers(out, &[], clients)
}

/// `certs generate --server-name NAME...`: the server certificate carries each name (DNS or IP)
/// as a SAN; none means [`certs::DEFAULT_SERVER_NAMES`].
pub fn generate_certs_for_servers(
    out: &Path,
    server_names: &[String],
    clients: &[String],
) -> Result<()> {
    let clients = if clients.is_empty() {
        vec!["client".to_owned()]
    } else {
        clients.to_vec()
    };
    certs::generate(
        out,
        server_names,
        &clients,
        DEMO_CERT_VALIDITY_DAYS,
        certs::Overwrite::Refuse,
    )?;
    Ok(())
}

/// `certs generate --config C`: a demo/test PKI whose server certificate certifies the TLS key
/// in the configured HSM (no server key file). `server_names` empty means loopback.
pub fn generate_certs_for_hsm_key(
    config: &Config,
    out: &Path,
    server_names: &[String],
    clients: &[String],
) -> Result<()> {
    let clients = if clients.is_empty() {
        vec!["client".to_owned()]
    } else {
        clients.to_vec()
    };
    let key = crate::app::open_signing_key(config, KeyRole::Tls)?;
    certs::generate_with_server_key(
        out,
        server_names,
        &clients,
        DEMO_CERT_VALIDITY_DAYS,
        certs::Overwrite::Refuse,
        Some(HsmTlsKey(key)),
    )?;
    Ok(())
}

/// `certs generate --ca-dir CA --config C --out DIR`: `DIR/server.pem`, issued by the CA in
/// `ca_dir` to the TLS key in the configured HSM. `server_names` empty means loopback.
pub fn issue_server_for_hsm_key(
    config: &Config,
    ca_dir: &Path,
    out: &Path,
    server_names: &[String],
) -> Result<PathBuf> {
    let key = crate::app::open_signing_key(config, KeyRole::Tls)?;
    let path = certs::issue_server(
        ca_dir,
        &out.join(certs::SERVER_CERT_FILE),
        server_names,
        DEMO_CERT_VALIDITY_DAYS,
        Overwrite::Refuse,
        key.as_ref(),
    )
    .with_context(|| format!("issuing the server certificate from {}", ca_dir.display()))?;
    Ok(path)
}

/// `certs install --config C --cert F`: `F` replaces the configuration's `tls.server_cert` once
/// it is known to certify the HSM's TLS key (a certificate for any other key would only make
/// `serve` refuse to start, or, with a key file configured, be served with the wrong key).
pub fn install_server_cert(config: &Config, cert: &Path) -> Result<PathBuf> {
    if let Some(file) = &config.tls.server_key {
        anyhow::bail!(
            "the configuration names a server key file ({}): `certs install` installs \
             certificates for the HSM's TLS key only",
            file.display()
        );
    }
    let key = crate::app::open_signing_key(config, KeyRole::Tls)?;
    certs::check_certifies(cert, key.as_ref())?;
    let pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let target = &config.tls.server_cert;
    crate::files::write_file(
        target,
        &pem,
        crate::files::PUBLIC_FILE_MODE,
        Overwrite::Replace,
    )?;
    Ok(target.clone())
}

/// `certs generate --out DIR --ca-dir CA --client NAME…`: more client certificates from an
/// existing CA, written as `DIR/NAME.pem` and `DIR/NAME.key`.
pub fn issue_clients(ca_dir: &Path, out: &Path, clients: &[String]) -> Result<Vec<IssuedCert>> {
    if clients.is_empty() {
        anyhow::bail!(
            "name at least one --client to issue from {}",
            ca_dir.display()
        );
    }
    clients
        .iter()
        .map(|client| {
            certs::issue_client(
                ca_dir,
                out,
                client,
                DEMO_CERT_VALIDITY_DAYS,
                Overwrite::Refuse,
            )
            .with_context(|| format!("issuing client certificate {client:?}"))
        })
        .collect()
}

/// `certs revoke --ca-dir CA --cert X.pem… --out crl.pem`: a CRL revoking those certificates
/// (replaces `out`; point `tls.crl` at it and reload with SIGHUP or the admin call).
pub fn revoke(ca_dir: &Path, revoked: &[PathBuf], out: &Path) -> Result<()> {
    certs::write_crl(ca_dir, revoked, out, CRL_VALIDITY_DAYS, Overwrite::Replace)
        .with_context(|| format!("writing CRL {}", out.display()))?;
    Ok(())
}

/// `nextUpdate` of generated CRLs (not enforced by the appliance, see `crate::net::tls`).
pub const CRL_VALIDITY_DAYS: u32 = 30;
