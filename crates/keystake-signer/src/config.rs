//! The appliance configuration file (`signer.toml`): where the data lives, how to reach the HSM
//! (`[hsm] backend = "pkcs11"`, the default, or `"yubihsm"`), which certificates to serve with,
//! which network to compute signing roots for.
//!
//! Relative paths are resolved against the directory of the configuration file, so a data
//! directory can be moved as a whole. Secrets are never in this file: PINs and passwords come from
//! the files it names (`*_pin_file`, `password_file`), read by [`read_secret_file`], which refuses
//! a file other users may read. Unknown keys are refused (a misspelt option must not be ignored),
//! and so are an unknown HSM backend and a key of the other backend. A YubiHSM2 configuration
//! parses in every build; a build without the `yubihsm` feature refuses it when the HSM is opened.
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
    #[error("directory {path} is open to other users (mode {mode:o}); run: chmod 700 {path}")]
    InsecureDirectory { path: PathBuf, mode: u32 },
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
    /// Serve without a policy file: every client whose certificate chains to the CA may do
    /// everything. Off by default — `serve` refuses to start without `policy_file` unless this
    /// is set explicitly (and then warns loudly at start-up).
    #[serde(default)]
    pub allow_any_client: bool,
    /// Plain-HTTP Prometheus listener (`/metrics`); off when absent. Keep it on loopback.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Slashing-protection options.
    #[serde(default)]
    pub slashing: SlashingSection,
    /// The Ethereum keymanager API (`/eth/v1/keystores`).
    #[serde(default)]
    pub keymanager: KeymanagerSection,
    /// Process sandbox of `serve` (see `crate::sandbox`).
    #[serde(default)]
    pub sandbox: SandboxSection,
    /// Process-wide protections of `serve` (see `crate::memlock`).
    #[serde(default)]
    pub process: ProcessSection,
}

/// `[process]`: `lock_memory = "best-effort" | "required" | "off"` — lock every page of the
/// serving process against swap (`mlockall`) when `RLIMIT_MEMLOCK` allows (default
/// best-effort: warn and serve unlocked otherwise; required: refuse to start).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessSection {
    #[serde(default)]
    pub lock_memory: crate::memlock::LockMemory,
}

/// `[sandbox]`: `seccomp = false` leaves the serving process's seccomp allow-list off (for
/// debugging with strace or gdb only; on by default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SandboxSection {
    #[serde(default = "default_true")]
    pub seccomp: bool,
}

impl Default for SandboxSection {
    fn default() -> Self {
        SandboxSection { seccomp: true }
    }
}

fn default_true() -> bool {
    true
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
    /// How many epochs ahead of the wall clock (from the network's genesis time) a block slot
    /// or attestation epoch may be; anything later is refused before it is recorded. Default 1.
    #[serde(default)]
    pub future_margin_epochs: Option<u64>,
    /// Automatic pruning of old attestations while `serve` runs (off when absent): see
    /// [`PruneSetting`].
    #[serde(default)]
    pub prune: Option<PruneSetting>,
}

/// `[slashing] prune = { keep_epochs = 1000, interval_secs = 43200 }`: while `serve` runs, remove
/// each key's attestations older than its newest `keep_epochs` epochs under a watermark that
/// covers them (`slashing prune`, docs/slashing.md "Pruning old attestations") once at start and
/// then every `interval_secs` after the previous prune ended (default 43,200: 12 hours). Absent:
/// never automatically (the default: an upgrade does not start removing history by itself).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PruneSetting {
    pub keep_epochs: u64,
    #[serde(default = "default_prune_interval_secs")]
    pub interval_secs: u64,
}

/// The default of [`PruneSetting::interval_secs`]: twice a day, as Web3Signer prunes.
pub const DEFAULT_PRUNE_INTERVAL_SECS: u64 = 43_200;

/// The longest [`PruneSetting::interval_secs`]: a year (a longer one is a typo).
pub const MAX_PRUNE_INTERVAL_SECS: u64 = 366 * 86_400;

fn default_prune_interval_secs() -> u64 {
    DEFAULT_PRUNE_INTERVAL_SECS
}

impl PruneSetting {
    /// The time between the end of one prune and the start of the next; refuses 0 and anything
    /// above [`MAX_PRUNE_INTERVAL_SECS`].
    pub fn interval(&self) -> Result<std::time::Duration, String> {
        if self.interval_secs == 0 || self.interval_secs > MAX_PRUNE_INTERVAL_SECS {
            return Err(format!(
                "slashing.prune.interval_secs = {}: expected 1 to {MAX_PRUNE_INTERVAL_SECS} seconds (default {DEFAULT_PRUNE_INTERVAL_SECS}, 12 hours)",
                self.interval_secs
            ));
        }
        Ok(std::time::Duration::from_secs(self.interval_secs))
    }
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
    /// The server certificate's private key as a PEM file: an explicit opt-out. Absent (the
    /// default) means the TLS key inside the HSM that `init` generates, which never leaves it
    /// (docs/hsm.md); the certificate is then issued with `certs generate --config` or `certs csr`.
    #[serde(default)]
    pub server_key: Option<PathBuf>,
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

/// `[hsm]`: which HSM holds the sealing key. `backend` picks the backend — `"pkcs11"` (the
/// default, so configurations written before there was a choice keep working) or `"yubihsm"` —
/// and every other key belongs to that backend. An unknown backend, a key of the other backend
/// (named as such) and a misspelt key are refused.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "backend")]
pub enum HsmSection {
    /// Any token reachable through a PKCS#11 module (SoftHSM2, Luna, nShield, CloudHSM, …).
    #[serde(rename = "pkcs11")]
    Pkcs11(Pkcs11Section),
    /// A YubiHSM2 through the `yubihsm` crate (needs the cargo feature `yubihsm`).
    #[serde(rename = "yubihsm")]
    YubiHsm(YubiHsmSection),
}

/// `[hsm]` with `backend = "pkcs11"` (or no `backend`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Section {
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
    /// The unseal policy (off when absent): see [`UnsealCacheSetting`].
    #[serde(default)]
    pub unseal_cache: Option<UnsealCacheSetting>,
}

/// `[hsm] unseal_cache = { ttl_secs = 60, max_entries = 10000 }`: keep unsealed shares in memory
/// for at most `ttl_secs` after their unseal, at most `max_entries` of them (oldest out first),
/// zeroized when they leave (`crate::service::unseal_cache`). Absent: every signature unseals
/// in the HSM (the default). For slow devices; docs/hsm.md weighs the trade.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UnsealCacheSetting {
    pub ttl_secs: u64,
    pub max_entries: usize,
}

/// `[hsm]` with `backend = "yubihsm"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct YubiHsmSection {
    /// `"http://HOST:PORT"` (through `yubihsm-connector`; port 12345 when absent) or `"usb"`.
    pub connector: YubiHsmConnectorSetting,
    /// With `connector = "usb"`: the 10-digit serial number of the device to use, when several
    /// are plugged in.
    #[serde(default)]
    pub usb_serial: Option<String>,
    /// Connector timeout in milliseconds (default: 5000 over HTTP, 30000 over USB).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Object id of the authentication key the signer logs in with.
    pub auth_key_id: u16,
    /// File holding that authentication key's password (mode 0600).
    pub password_file: PathBuf,
    /// Object id of the HMAC-SHA256 sealing key (`init` creates it there if it is absent).
    pub key_id: u16,
    /// Label of the sealing key (at most 40 bytes).
    #[serde(default = "default_key_label")]
    pub key_label: String,
    /// Domain (1–16) the sealing key is created in; the authentication key must have it.
    #[serde(default = "default_domain")]
    pub domain: u8,
    /// The unseal policy (off when absent): see [`UnsealCacheSetting`].
    #[serde(default)]
    pub unseal_cache: Option<UnsealCacheSetting>,
}

/// How to reach a YubiHSM2: `"http://HOST:PORT"` or `"usb"` in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum YubiHsmConnectorSetting {
    /// `yubihsm-connector` over plain HTTP (keep it on loopback); `host` is a name, an IPv4
    /// address or a bracketed IPv6 address.
    Http { host: String, port: u16 },
    /// Directly over USB (libusb).
    Usb,
}

/// The port `yubihsm-connector` listens on by default.
pub const YUBIHSM_CONNECTOR_PORT: u16 = 12345;

impl TryFrom<String> for YubiHsmConnectorSetting {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let wrong = |why: &str| {
            format!("hsm.connector {text:?}: {why} (expected \"http://HOST:PORT\" or \"usb\")")
        };
        if text == "usb" {
            return Ok(YubiHsmConnectorSetting::Usb);
        }
        if text.starts_with("https://") {
            return Err(wrong(
                "yubihsm-connector is reached over plain HTTP only; keep it on loopback",
            ));
        }
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| wrong("unknown scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(wrong("only a host and a port may follow http://"));
        }
        let (host, port) = if rest.starts_with('[') {
            let close = rest
                .find(']')
                .ok_or_else(|| wrong("unclosed IPv6 bracket"))?;
            let (host, after) = rest.split_at(close + 1);
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(wrong("junk after the IPv6 address")),
                },
            }
        } else {
            match rest.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err(wrong(
                        "an IPv6 address needs brackets, e.g. http://[::1]:12345",
                    ))
                }
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(wrong("no host"));
        }
        let port = match port {
            None => YUBIHSM_CONNECTOR_PORT,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| wrong("the port must be 1 to 65535"))?,
        };
        Ok(YubiHsmConnectorSetting::Http {
            host: host.to_owned(),
            port,
        })
    }
}

impl From<YubiHsmConnectorSetting> for String {
    fn from(setting: YubiHsmConnectorSetting) -> String {
        setting.to_string()
    }
}

impl std::fmt::Display for YubiHsmConnectorSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            YubiHsmConnectorSetting::Http { host, port } => write!(f, "http://{host}:{port}"),
            YubiHsmConnectorSetting::Usb => f.write_str("usb"),
        }
    }
}

impl YubiHsmSection {
    /// Checks across fields that serde cannot express. (Ids, label and domain are checked by the
    /// backend, which also serves callers without a configuration file.)
    fn validate(&self) -> Result<(), String> {
        if let Some(serial) = &self.usb_serial {
            if self.connector != YubiHsmConnectorSetting::Usb {
                return Err(format!(
                    "hsm.usb_serial is for connector = \"usb\", not {:?}",
                    self.connector.to_string()
                ));
            }
            if serial.len() != 10 || !serial.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!(
                    "hsm.usb_serial {serial:?}: a YubiHSM2 serial number is 10 decimal digits \
                     (with leading zeros), as a string"
                ));
            }
        }
        Ok(())
    }
}

/// The keys of each backend, to name a key of the wrong backend as such (a test checks these
/// against the structs).
const PKCS11_KEYS: &[&str] = &[
    "module",
    "token_label",
    "key_label",
    "user_pin_file",
    "so_pin_file",
    "softhsm2_conf",
    "sessions",
    "unseal_cache",
];
const YUBIHSM_KEYS: &[&str] = &[
    "connector",
    "usb_serial",
    "timeout_ms",
    "auth_key_id",
    "password_file",
    "key_id",
    "key_label",
    "domain",
    "unseal_cache",
];

impl<'de> Deserialize<'de> for HsmSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(deserializer)?;
        let explicit = table.contains_key("backend");
        let backend = match table.remove("backend") {
            None => "pkcs11".to_owned(),
            Some(toml::Value::String(name)) => name,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "hsm.backend must be a string, \"pkcs11\" or \"yubihsm\", not {other}"
                )))
            }
        };
        let (own, other, other_name) = match backend.as_str() {
            "pkcs11" => (PKCS11_KEYS, YUBIHSM_KEYS, "yubihsm"),
            "yubihsm" => (YUBIHSM_KEYS, PKCS11_KEYS, "pkcs11"),
            unknown => {
                return Err(D::Error::custom(format!(
                    "unknown hsm.backend {unknown:?}: expected \"pkcs11\" or \"yubihsm\""
                )))
            }
        };
        for key in table.keys() {
            if !own.contains(&key.as_str()) && other.contains(&key.as_str()) {
                return Err(D::Error::custom(format!(
                    "hsm.{key} belongs to backend = \"{other_name}\", but this [hsm] has \
                     backend = \"{backend}\"{}",
                    if !explicit {
                        " (the default when backend is absent)"
                    } else {
                        ""
                    }
                )));
            }
        }
        let value = toml::Value::Table(table);
        if backend == "pkcs11" {
            Pkcs11Section::deserialize(value)
                .map(HsmSection::Pkcs11)
                .map_err(|e| D::Error::custom(format!("[hsm] (backend = \"pkcs11\"): {e}")))
        } else {
            let section = YubiHsmSection::deserialize(value)
                .map_err(|e| D::Error::custom(format!("[hsm] (backend = \"yubihsm\"): {e}")))?;
            section.validate().map_err(D::Error::custom)?;
            Ok(HsmSection::YubiHsm(section))
        }
    }
}

impl HsmSection {
    /// The unseal policy, checked (`None`: unseal for every signature).
    pub fn unseal_cache(
        &self,
    ) -> Result<
        Option<crate::service::unseal_cache::UnsealCachePolicy>,
        crate::service::unseal_cache::UnsealPolicyError,
    > {
        let setting = match self {
            HsmSection::Pkcs11(section) => section.unseal_cache,
            HsmSection::YubiHsm(section) => section.unseal_cache,
        };
        setting
            .map(|s| {
                crate::service::unseal_cache::UnsealCachePolicy::new(s.ttl_secs, s.max_entries)
            })
            .transpose()
    }

    /// The backend's name as `backend` spells it.
    pub fn backend(&self) -> &'static str {
        match self {
            HsmSection::Pkcs11(_) => "pkcs11",
            HsmSection::YubiHsm(_) => "yubihsm",
        }
    }
}

/// Where the sealing key lives, for logs (no secrets).
impl std::fmt::Display for HsmSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HsmSection::Pkcs11(p) => write!(
                f,
                "pkcs11 token '{}' key '{}' via {}",
                p.token_label,
                p.key_label,
                p.module.display()
            ),
            HsmSection::YubiHsm(y) => write!(
                f,
                "yubihsm2 {}{} key {:#06x} '{}'",
                y.connector,
                y.usb_serial
                    .as_deref()
                    .map(|serial| format!(" serial {serial}"))
                    .unwrap_or_default(),
                y.key_id,
                y.key_label
            ),
        }
    }
}

fn default_key_label() -> String {
    "keystake-sealing-key".to_owned()
}

fn default_domain() -> u8 {
    1
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
        if let Some(prune) = &config.slashing.prune {
            prune.interval().map_err(|message| ConfigError::Invalid {
                path: path.to_owned(),
                message,
            })?;
        }
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
        if let Some(p) = self.tls.server_key.as_mut() {
            fix(p);
        }
        if let Some(p) = self.tls.crl.as_mut() {
            fix(p);
        }
        match &mut self.hsm {
            HsmSection::Pkcs11(hsm) => {
                fix(&mut hsm.user_pin_file);
                if let Some(p) = hsm.so_pin_file.as_mut() {
                    fix(p);
                }
                if let Some(p) = hsm.softhsm2_conf.as_mut() {
                    fix(p);
                }
            }
            HsmSection::YubiHsm(hsm) => fix(&mut hsm.password_file),
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
    check_private(path)?;
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

/// Refuse a file or directory that group or others may read, write or enter (any bit of 0o077):
/// the one mode check behind [`read_secret_file`] and `serve`'s start-up checks
/// (`app::check_private_files`).
pub fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let metadata = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(());
    }
    let path = path.to_owned();
    Err(if metadata.is_dir() {
        ConfigError::InsecureDirectory { path, mode }
    } else {
        ConfigError::InsecureSecret { path, mode }
    })
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
# Who may do what (docs/authorization.md). `init` writes one naming the [client] certificate
# below when the file does not exist. Without a policy, `serve` refuses to start unless
# allow_any_client = true (then any client certificate from the CA may sign anything).
policy_file = "policy.toml"
# Prometheus metrics over plain HTTP (docs/metrics.md); keep it on loopback.
# metrics_listen = "127.0.0.1:9464"

[tls]
ca_cert = "certs/ca.pem"          # client certificates must chain to this CA
server_cert = "certs/server.pem"  # issued to the HSM's TLS key (`certs generate --config`)
# server_key = "certs/server.key" # opt-out: a key FILE instead of the key inside the HSM
# crl = "certs/crl.pem"           # optional revocation list for client certificates

[hsm]
backend = "pkcs11"                # "pkcs11" (the default) or "yubihsm" (see below)
module = "/usr/lib/softhsm/libsofthsm2.so"   # any PKCS#11 module
token_label = "keystake"
key_label = "keystake-sealing-key"
user_pin_file = "hsm/user.pin"
so_pin_file = "hsm/so.pin"        # read by `init` only
softhsm2_conf = "hsm/softhsm2.conf"  # SoftHSM2 only; remove for a hardware HSM
# Keep unsealed shares in memory for slow HSMs (off when absent; either backend; docs/hsm.md):
# unseal_cache = {{ ttl_secs = 60, max_entries = 10000 }}
# A YubiHSM2 instead (hsm-config/yubihsm2/README.md): replace the [hsm] keys above by
# backend = "yubihsm"
# connector = "http://127.0.0.1:12345"  # yubihsm-connector; or "usb" (+ usb_serial = "0012345678")
# auth_key_id = 0x0002                  # the signer's authentication key
# password_file = "hsm/yubihsm.password" # its password (mode 0600)
# key_id = 0x0064                       # the HMAC sealing key `init` creates
# key_label = "keystake-sealing-key"
# domain = 1

# Slashing protection for keys installed without history (DKG, split, keymanager import
# without an interchange file): nothing at or below these is ever signed for such a key.
# [slashing]
# new_key_min_slot = 13600000
# new_key_min_epoch = 425000
# future_margin_epochs = 1         # duties further ahead of the wall clock are refused
# Remove attestations older than each key's newest 1000 epochs (about 4.4 days) at start and
# every 12 hours, under a watermark that covers them (docs/slashing.md); off when absent.
# prune = {{ keep_epochs = 1000, interval_secs = 43200 }}
# Ethereum keymanager API (/eth/v1/keystores): bearer token written by `init` (mode 0600).
[keymanager]
token_file = "data/keymanager.token"

# The serving process's seccomp allow-list (docs/security.md); off only for debugging.
# [sandbox]
# seccomp = false

# Lock the serving process's memory against swap (mlockall; needs LimitMEMLOCK=infinity or
# CAP_IPC_LOCK): "best-effort" warns and serves unlocked when it cannot, "required" refuses.
# [process]
# lock_memory = "best-effort"

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
        let HsmSection::Pkcs11(hsm) = &config.hsm else {
            panic!("the example is a PKCS#11 configuration")
        };
        assert_eq!(hsm.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(hsm.user_pin_file, dir.path().join("hsm/user.pin"));
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

    /// The example's commented prune line, uncommented, parses to its default interval; a zero
    /// or absurd interval and an unknown key are refused with the setting named.
    #[test]
    fn the_prune_setting_parses_and_refuses_bad_intervals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        let with = |line: &str| {
            let text = example(dir.path(), default_listen())
                .replace("# [slashing]\n", "[slashing]\n")
                .replace(
                    "# prune = { keep_epochs = 1000, interval_secs = 43200 }",
                    line,
                );
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        };
        let config = with("prune = { keep_epochs = 1000, interval_secs = 43200 }").unwrap();
        assert_eq!(
            config.slashing.prune,
            Some(PruneSetting {
                keep_epochs: 1000,
                interval_secs: DEFAULT_PRUNE_INTERVAL_SECS
            })
        );
        let defaulted = with("prune = { keep_epochs = 250 }").unwrap();
        assert_eq!(
            defaulted.slashing.prune.unwrap().interval().unwrap(),
            std::time::Duration::from_secs(43_200)
        );
        assert_eq!(with("").unwrap().slashing.prune, None, "off when absent");
        for bad in ["0", "31708800000"] {
            let error = with(&format!(
                "prune = {{ keep_epochs = 5, interval_secs = {bad} }}"
            ))
            .unwrap_err()
            .to_string();
            assert!(error.contains("slashing.prune.interval_secs"), "{error}");
        }
        let error = with("prune = { keep_epoch = 5 }").unwrap_err().to_string();
        assert!(error.contains("keep_epoch"), "{error}");
    }

    /// The example configuration with its `[hsm]` table replaced by `hsm`.
    fn load_with_hsm(dir: &Path, hsm: &str) -> Result<Config, ConfigError> {
        let example = example(dir, default_listen());
        let start = example.find("[hsm]\n").unwrap();
        let end = start + example[start..].find("\n# Slashing").unwrap();
        let text = format!("{}[hsm]\n{hsm}\n{}", &example[..start], &example[end..]);
        let path = dir.join("signer.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const YUBIHSM: &str = r#"
backend = "yubihsm"
connector = "http://127.0.0.1:12345"
auth_key_id = 0x0002
password_file = "hsm/yubihsm.password"
key_id = 0x0064
"#;

    fn error_of(dir: &Path, hsm: &str) -> String {
        load_with_hsm(dir, hsm).unwrap_err().to_string()
    }

    #[test]
    fn the_example_is_pkcs11_and_a_config_without_backend_still_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signer.toml");
        std::fs::write(&path, example(dir.path(), default_listen())).unwrap();
        let HsmSection::Pkcs11(explicit) = Config::load(&path).unwrap().hsm else {
            panic!("the example is a PKCS#11 configuration")
        };
        // A configuration written before there was a choice: no `backend` key.
        let old = r#"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "keystake"
user_pin_file = "hsm/user.pin"
so_pin_file = "hsm/so.pin"
softhsm2_conf = "hsm/softhsm2.conf"
"#;
        let config = load_with_hsm(dir.path(), old).unwrap();
        assert_eq!(config.hsm, HsmSection::Pkcs11(explicit));
        assert_eq!(config.hsm.backend(), "pkcs11");
    }

    #[test]
    fn a_yubihsm_config_parses_and_resolves() {
        let dir = tempfile::tempdir().unwrap();
        let config = load_with_hsm(dir.path(), YUBIHSM).unwrap();
        assert_eq!(
            config.hsm,
            HsmSection::YubiHsm(YubiHsmSection {
                connector: YubiHsmConnectorSetting::Http {
                    host: "127.0.0.1".into(),
                    port: 12345
                },
                usb_serial: None,
                timeout_ms: None,
                auth_key_id: 2,
                password_file: dir.path().join("hsm/yubihsm.password"),
                key_id: 0x64,
                key_label: "keystake-sealing-key".into(),
                domain: 1,
                unseal_cache: None,
            })
        );
        assert_eq!(
            config.hsm.to_string(),
            "yubihsm2 http://127.0.0.1:12345 key 0x0064 'keystake-sealing-key'"
        );

        let usb = r#"
backend = "yubihsm"
connector = "usb"
usb_serial = "0012345678"
timeout_ms = 10000
auth_key_id = 3
password_file = "/etc/keystake/yubihsm.password"
key_id = 100
key_label = "seal"
domain = 4
"#;
        let HsmSection::YubiHsm(section) = load_with_hsm(dir.path(), usb).unwrap().hsm else {
            panic!("a YubiHSM2 section")
        };
        assert_eq!(section.connector, YubiHsmConnectorSetting::Usb);
        assert_eq!(section.usb_serial.as_deref(), Some("0012345678"));
        assert_eq!(section.timeout_ms, Some(10000));
        assert_eq!(
            section.password_file,
            PathBuf::from("/etc/keystake/yubihsm.password")
        );
        assert_eq!((section.key_id, section.domain), (100, 4));
    }

    #[test]
    fn connector_urls() {
        let parse = |text: &str| YubiHsmConnectorSetting::try_from(text.to_owned());
        let http = |host: &str, port| {
            Ok(YubiHsmConnectorSetting::Http {
                host: host.into(),
                port,
            })
        };
        assert_eq!(parse("http://localhost"), http("localhost", 12345));
        assert_eq!(parse("http://10.0.0.2:8080/"), http("10.0.0.2", 8080));
        assert_eq!(parse("http://[::1]:12345"), http("[::1]", 12345));
        assert_eq!(parse("http://[::1]"), http("[::1]", 12345));
        assert_eq!(parse("usb"), Ok(YubiHsmConnectorSetting::Usb));
        for (bad, why) in [
            ("https://127.0.0.1:12345", "plain HTTP"),
            ("tcp://127.0.0.1:12345", "unknown scheme"),
            ("127.0.0.1:12345", "unknown scheme"),
            ("http://", "no host"),
            ("http://:12345", "no host"),
            ("http://host:0", "port"),
            ("http://host:99999", "port"),
            ("http://host:12345/connector/api", "only a host and a port"),
            ("http://::1:12345", "brackets"),
            ("http://[::1", "unclosed"),
            ("USB", "unknown scheme"),
        ] {
            let error = parse(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        // Written back as it is read.
        for text in ["http://[::1]:12345", "http://keystake-hsm:12345", "usb"] {
            assert_eq!(String::from(parse(text).unwrap()), text);
        }
    }

    #[test]
    fn an_unknown_backend_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = error_of(dir.path(), &YUBIHSM.replace("\"yubihsm\"", "\"yubihsm2\""));
        assert!(
            error.contains(r#"unknown hsm.backend "yubihsm2": expected "pkcs11" or "yubihsm""#),
            "{error}"
        );
        let error = error_of(dir.path(), &YUBIHSM.replace("\"yubihsm\"", "2"));
        assert!(error.contains("hsm.backend must be a string"), "{error}");
    }

    #[test]
    fn a_key_of_the_other_backend_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // PKCS#11 keys under a YubiHSM2 backend.
        for key in [
            "module = \"/usr/lib/x.so\"",
            "user_pin_file = \"pin\"",
            "sessions = 2",
        ] {
            let error = error_of(dir.path(), &format!("{YUBIHSM}{key}\n"));
            let name = key.split(' ').next().unwrap();
            assert!(
                error.contains(&format!(
                    r#"hsm.{name} belongs to backend = "pkcs11", but this [hsm] has backend = "yubihsm""#
                )),
                "{error}"
            );
        }
        // YubiHSM2 keys under PKCS#11, explicit or by default.
        let pkcs11 = "module = \"/usr/lib/x.so\"\ntoken_label = \"t\"\nuser_pin_file = \"pin\"\n";
        for backend in ["backend = \"pkcs11\"\n", ""] {
            let error = error_of(
                dir.path(),
                &format!("{backend}{pkcs11}password_file = \"pw\"\n"),
            );
            assert!(
                error.contains(r#"hsm.password_file belongs to backend = "yubihsm""#),
                "{error}"
            );
            assert_eq!(backend.is_empty(), error.contains("the default"), "{error}");
        }
        // `key_label` belongs to both.
        load_with_hsm(dir.path(), &format!("{YUBIHSM}key_label = \"k\"\n")).unwrap();
        load_with_hsm(dir.path(), &format!("{pkcs11}key_label = \"k\"\n")).unwrap();
    }

    #[test]
    fn yubihsm_section_mistakes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (extra, why) in [
            ("pasword_file = \"x\"\n", "unknown field `pasword_file`"),
            (
                "usb_serial = \"0012345678\"\n",
                "hsm.usb_serial is for connector = \"usb\"",
            ),
            ("auth_key_id = 70000\n", "auth_key_id"),
        ] {
            let text = if extra.starts_with("auth_key_id") {
                YUBIHSM.replace("auth_key_id = 0x0002\n", extra)
            } else {
                format!("{YUBIHSM}{extra}")
            };
            let error = error_of(dir.path(), &text);
            assert!(error.contains(why), "{extra}: {error}");
        }
        let usb = YUBIHSM.replace("http://127.0.0.1:12345", "usb");
        for serial in ["\"12345\"", "\"00123456789\"", "\"00123x5678\""] {
            let error = error_of(dir.path(), &format!("{usb}usb_serial = {serial}\n"));
            assert!(error.contains("10 decimal digits"), "{serial}: {error}");
        }
        let error = error_of(
            dir.path(),
            &YUBIHSM.replace("password_file = \"hsm/yubihsm.password\"\n", ""),
        );
        assert!(error.contains("missing field `password_file`"), "{error}");
    }

    #[test]
    fn backend_key_lists_match_the_sections() {
        let keys = |value: toml::Value| -> Vec<String> {
            let mut keys: Vec<String> = value.as_table().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        let sorted = |list: &[&str]| {
            let mut list: Vec<String> = list.iter().map(|k| k.to_string()).collect();
            list.sort();
            list
        };
        let pkcs11 = Pkcs11Section {
            module: "m".into(),
            token_label: "t".into(),
            key_label: "k".into(),
            user_pin_file: "u".into(),
            so_pin_file: Some("s".into()),
            softhsm2_conf: Some("c".into()),
            sessions: Some(1),
            unseal_cache: Some(UnsealCacheSetting {
                ttl_secs: 1,
                max_entries: 1,
            }),
        };
        let yubihsm = YubiHsmSection {
            connector: YubiHsmConnectorSetting::Usb,
            usb_serial: Some("0012345678".into()),
            timeout_ms: Some(1),
            auth_key_id: 1,
            password_file: "p".into(),
            key_id: 1,
            key_label: "k".into(),
            domain: 1,
            unseal_cache: Some(UnsealCacheSetting {
                ttl_secs: 1,
                max_entries: 1,
            }),
        };
        assert_eq!(
            keys(toml::Value::try_from(&pkcs11).unwrap()),
            sorted(PKCS11_KEYS)
        );
        assert_eq!(
            keys(toml::Value::try_from(&yubihsm).unwrap()),
            sorted(YUBIHSM_KEYS)
        );
        // The section serializes with its backend, and reads back the same.
        let section = HsmSection::YubiHsm(yubihsm);
        let text = toml::to_string(&section).unwrap();
        assert!(text.starts_with("backend = \"yubihsm\""), "{text}");
        assert_eq!(toml::from_str::<HsmSection>(&text).unwrap(), section);
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
