//! `keystake-signer hsm check --config FILE [--json]`: list every mechanism the appliance needs
//! from the configured HSM (AES-GCM sealing, ECDSA P-256, ECDH P-256 enrolment, key generation),
//! supported or missing, with what each is used for. Exits non-zero when a required one is
//! missing (after printing the report).
//!
//! Refuses: a configuration that does not load, and an HSM that cannot be reached or asked (an
//! error, not a report).
#![forbid(unsafe_code)]

use std::path::PathBuf;

use anyhow::Result;

use super::load_config;
use crate::hsm::check::CheckReport;

/// `keystake-signer hsm …`.
#[derive(Debug, clap::Subcommand)]
pub enum HsmCommand {
    /// Check that the configured HSM offers every mechanism the appliance needs.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: HsmCommand) -> Result<()> {
    match command {
        HsmCommand::Check { config, json } => {
            let report = crate::app::hsm_check(&load_config(&config)?)?;
            finish(&report, json, &mut std::io::stdout())?;
        }
    }
    Ok(())
}

/// Print the report to `out`; an error (so a non-zero exit) when a required mechanism is
/// missing.
pub fn finish(report: &CheckReport, json: bool, out: &mut dyn std::io::Write) -> Result<()> {
    out.write_all(render(report, json)?.as_bytes())?;
    if !report.ok {
        anyhow::bail!("the HSM lacks a mechanism the appliance requires");
    }
    Ok(())
}

/// The report as text, or as JSON (one document, newline-terminated).
pub fn render(report: &CheckReport, json: bool) -> Result<String> {
    Ok(if json {
        format!("{}\n", serde_json::to_string_pretty(report)?)
    } else {
        report.text()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::check::test_support::Without;
    use crate::hsm::check::{Need, Pkcs11Mechanisms};
    use crate::hsm::pkcs11::test_support::{fresh_config, so_pin, user_pin};
    use crate::hsm::pkcs11::Pkcs11Sealer;

    /// The command's ending with the test double: ECDH missing → an error (non-zero exit),
    /// after a JSON report saying so; the real token → success.
    #[test]
    fn a_missing_mechanism_exits_non_zero_with_the_json_report() {
        let config = fresh_config("cli-check");
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let without = Without {
            real: Pkcs11Mechanisms::open(&config).unwrap(),
            removed: Need::Ecdh1Derive,
        };
        let report = CheckReport::run(&without).unwrap();
        let mut out = Vec::new();
        assert!(finish(&report, true, &mut out).is_err());
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["ok"], false);
        let ecdh = json["mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["need"] == "ecdh1-derive")
            .unwrap();
        assert_eq!(ecdh["status"], "missing");
        assert!(ecdh["used_for"]
            .as_str()
            .unwrap()
            .contains("share packages"));

        let real = CheckReport::run(&Pkcs11Mechanisms::open(&config).unwrap()).unwrap();
        let mut out = Vec::new();
        finish(&real, false, &mut out).unwrap();
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("all required mechanisms are supported"));
    }
}
