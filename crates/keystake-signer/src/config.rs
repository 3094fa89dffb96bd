//! The appliance configuration file (`signer.toml`): where the data lives, how to reach the HSM,
//! which certificates to serve with, which network to compute signing roots for.
//!
//! Relative paths are resolved against the directory of the configuration file, so a data
//! directory can be moved as a whole. Secrets are never in this file: PINs come from the files it
//! names (`*_pin_file`). Unknown keys are refused (a misspelt option must not be ignored).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("secret file {path} is empty")]
    EmptySecret { path: PathBuf },
    #[error("secret file {path} is readable or writable by other users (mode {mode:o}); run: chmod 600 {path}")]
    InsecureSecret { path: PathBuf, mode: u32 },
}

/// Default listen address: loopback, as the issue's demo asks; production configs set their own.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding the SQLite database (`signer.sqlite`).
    pub data_dir: PathBuf,
    /// Address of the Web3Signer REST API (mutual TLS).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Network whose fork schedule selects SSZ schemas: `mainnet`, `hoodi`, `sepolia`, or a
    /// network configuration file given by `network_config_file`.
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default)]
    pub network_config_file: Option<PathBuf>,
    pub tls: TlsSection,
    pub hsm: HsmSection,
    /// The client identity the bundled tools (`bench load`) use to reach this appliance.
    #[serde(default)]
    pub client: Option<ClientSection>,
    /// Authorization policy (TOML, see docs/authorization.md). Without one, every client whose
    /// certificate chains to the CA may do everything (a warning is logged at start-up).
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Plain-HTTP Prometheus listener (`/metrics`); off when absent. Keep it on loopback.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Slashing-protection options.
    #[serde(default)]
    pub slashing: SlashingSection,
    /// The Ethereum keymanager API (`/eth/v1/keystores`).
    #[serde(default)]
    pub keymanager: KeymanagerSection,
}

/// `[slashing]`: the low watermark given to a key installed with no slashing history here
/// (DKG, split, keymanager import without an interchange file). Nothing at or below it is
/// signed for such a key: no block at or below `new_key_min_slot`, no attestation with a target
/// at or below `new_key_min_epoch` or a source below it. Set them to the current slot/epoch when
/// installing shares whose history is unknown; keys with history are not affected.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SlashingSection {
    #[serde(default)]
    pub new_key_min_slot: Option<u64>,
    #[serde(default)]
    pub new_key_min_epoch: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeymanagerSection {
    /// File holding the hex bearer token (>= 256 bits) of the keymanager API; `init` generates
    /// it with mode 0600. Default: `keymanager.token` in `data_dir`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address parses")
}

fn default_network() -> String {
    "mainnet".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA that client certificates must chain to.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Optional certificate revocation list (PEM) for client certificates.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HsmSection {
    /// Path of the PKCS#11 module (SoftHSM2: `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token holding the sealing key.
    pub token_label: String,
    /// Label of the AES-256 sealing key inside the token.
    #[serde(default = "default_key_label")]
    pub key_label: String,
    /// File holding the token's user PIN.
    pub user_pin_file: PathBuf,
    /// File holding the security officer PIN; only `init` reads it (to initialise a new token).
    #[serde(default)]
    pub so_pin_file: Option<PathBuf>,
    /// SoftHSM2 only: its configuration file (sets `SOFTHSM2_CONF` before the module loads).
    #[serde(default)]
    pub softhsm2_conf: Option<PathBuf>,
    /// Number of logged-in HSM sessions used in parallel (default: number of CPUs).
    #[serde(default)]
    pub sessions: Option<usize>,
}

fn default_key_label() -> String {
    "keystake-sealing-key".to_owned()
}

impl Config {
    /// Read and parse a configuration file, resolving relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        config.resolve_paths(&base);
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(p) = self.network_config_file.as_mut() {
            fix(p);
        }
        fix(&mut self.tls.ca_cert);
        fix(&mut self.tls.server_cert);
        fix(&mut self.tls.server_key);
        if let Some(p) = self.tls.crl.as_mut() {
            fix(p);
        }
        fix(&mut self.hsm.user_pin_file);
        if let Some(p) = self.hsm.so_pin_file.as_mut() {
            fix(p);
        }
        if let Some(p) = self.hsm.softhsm2_conf.as_mut() {
            fix(p);
        }
        if let Some(p) = self.policy_file.as_mut() {
            fix(p);
        }
        if let Some(client) = self.client.as_mut() {
            fix(&mut client.cert);
            fix(&mut client.key);
        }
        if let Some(p) = self.keymanager.token_file.as_mut() {
            fix(p);
        }
    }

    /// The keymanager API token file (configured, or `keymanager.token` in the data directory).
    pub fn keymanager_token_path(&self) -> PathBuf {
        self.keymanager
            .token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("keymanager.token"))
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("signer.sqlite")
    }
}

/// Read a secret (PIN, password) from a file. Only a final line break is removed (a PIN may
/// contain spaces); an empty secret is refused, and so is a file that group or others may read or
/// write — a PIN that anyone on the host can read protects nothing.
pub fn read_secret_file(path: &Path) -> Result<SecretString, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::InsecureSecret {
            path: path.to_owned(),
            mode,
        });
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        ConfigError::Read {
            path: path.to_owned(),
            source,
        }
    })?);
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        return Err(ConfigError::EmptySecret {
            path: path.to_owned(),
        });
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// A commented example configuration, written by `demo` and shown in the README.
pub fn example(dir: &Path, listen: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"# KeyStake signer configuration. Relative paths are relative to this file.

# Holds signer.sqlite: sealed shares (HSM-encrypted) and slashing-protection history.
data_dir = "data"
# REST (Web3Signer eth2 API) over mutual TLS.
listen = "{listen}"
# mainnet | hoodi | sepolia, or set network_config_file = "devnet.toml"
network = "mainnet"
# Who may do what (docs/authorization.md). Without it any client certificate from the CA may sign.
# policy_file = "policy.toml"
# Prometheus metrics over plain HTTP (docs/metrics.md); keep it on loopback.
# metrics_listen = "127.0.0.1:9464"

[tls]
ca_cert = "certs/ca.pem"          # client certificates must chain to this CA
server_cert = "certs/server.pem"
server_key = "certs/server.key"
# crl = "certs/crl.pem"           # optional revocation list for client certificates

[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"   # any PKCS#11 module
token_label = "keystake"
key_label = "keystake-sealing-key"
user_pin_file = "hsm/user.pin"
so_pin_file = "hsm/so.pin"        # read by `init` only
softhsm2_conf = "hsm/softhsm2.conf"  # SoftHSM2 only; remove for a hardware HSM

# Slashing protection for keys installed without history (DKG, split, keymanager import
# without an interchange file): nothing at or below these is ever signed for such a key.
# [slashing]
# new_key_min_slot = 13600000
# new_key_min_epoch = 425000
# Ethereum keymanager API (/eth/v1/keystores): bearer token written by `init` (mode 0600).
[keymanager]
token_file = "data/keymanager.token"

# Client identity used by the bundled tools (bench load) to reach this appliance.
[client]
cert = "certs/client.pem"
key = "certs/client.key"
# generated for {d}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        std::fs::write(&path, example(dir.path(), default_listen())).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.data_dir, dir.path().join("data"));
        assert_eq!(config.tls.ca_cert, dir.path().join("certs/ca.pem"));
        assert_eq!(
            config.hsm.module,
            PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        let text = example(dir.path(), default_listen()).replace("network = ", "netwrok = ");
        std::fs::write(&path, text).unwrap();
        let error = Config::load(&path).unwrap_err().to_string();
        assert!(error.contains("netwrok"), "{error}");
    }

    #[test]
    fn shared_secret_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(ConfigError::InsecureSecret { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_secret_file(&path).is_ok());
    }

    #[test]
    fn empty_secret_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_secret_file(&path),
            Err(ConfigError::EmptySecret { .. })
        ));
    }
}
