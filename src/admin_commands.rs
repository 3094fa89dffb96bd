//! CLI commands for authorization (issuing further client certificates from an existing CA,
//! checking a policy file). The binary only parses arguments and calls these.
//!
//! Refuses: issuing into a directory that already holds the client's files, CA directories
//! without `ca.pem` + `ca.key`, invalid client names, and policy files that do not parse.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::certs::{self, IssuedCert, Overwrite};
use crate::commands::DEMO_CERT_VALIDITY_DAYS;
use crate::policy::{KeySelector, Policy};

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
pub fn revoke(ca_dir: &Path, revoked: &[std::path::PathBuf], out: &Path) -> Result<()> {
    certs::write_crl(ca_dir, revoked, out, CRL_VALIDITY_DAYS, Overwrite::Replace)
        .with_context(|| format!("writing CRL {}", out.display()))?;
    Ok(())
}

/// `nextUpdate` of generated CRLs (not enforced by the appliance, see `crate::tls`).
pub const CRL_VALIDITY_DAYS: u32 = 30;

/// `policy check --policy FILE`: parse a policy and print what it grants.
pub fn check_policy(path: &Path, out: &mut dyn Write) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let policy =
        Policy::from_toml_str(&text).with_context(|| format!("policy {}", path.display()))?;
    writeln!(
        out,
        "{}: {} client(s)",
        path.display(),
        policy.clients.len()
    )?;
    for client in &policy.clients {
        writeln!(out, "  {}", client.matcher)?;
        if client.grants.is_empty() {
            writeln!(out, "    (no grants: refused everything)")?;
        }
        for grant in &client.grants {
            let keys = match &grant.keys {
                KeySelector::All => "all keys".to_owned(),
                KeySelector::Keys(keys) => format!("{} key(s)", keys.len()),
                KeySelector::Groups(groups) => format!("{} group(s)", groups.len()),
            };
            let ops: Vec<&str> = grant.operations.iter().map(|o| o.as_str()).collect();
            writeln!(out, "    {keys}: {}", ops.join(", "))?;
        }
    }
    Ok(())
}
