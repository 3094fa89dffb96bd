//! `cluster.toml`, the threshold forwarder's one configuration file: which manifests describe the
//! distributed validators, and one `[[appliance]]` per share index with its URL and the mutual-TLS
//! identity this host presents to it (each operator runs its own CA).
//!
//! ```toml
//! manifests = ["split-a/manifest.json", "dkg/lock.json"]   # trusted-split manifests, DKG locks
//! network = "mainnet"                  # optional: mainnet | hoodi | sepolia (default mainnet)
//! # network_config_file = "devnet.toml"   # optional: a custom network, as in signer.toml
//!
//! [[appliance]]
//! index = 1
//! url = "https://signer-1.example:9000"
//! ca = "operator-1/ca.pem"
//! client_cert = "operator-1/forwarder.pem"
//! client_key = "operator-1/forwarder.key"
//!
//! [[appliance]]
//! index = 2
//! url = "https://signer-2.example:9000"
//! ca = "operator-2/ca.pem"
//! client_pkcs12 = "operator-2/forwarder.p12"          # instead of client_cert + client_key
//! client_pkcs12_password_file = "operator-2/forwarder.p12.pass"
//! ```
//!
//! Relative paths are relative to the cluster file. Refuses: unknown keys, an appliance with
//! neither or both identity forms, unreadable or invalid manifests, everything
//! [`keystake_core::cluster::ClusterPlan::new`] refuses (disagreeing manifests, fewer than `t`
//! appliances, two appliances for one index), and TLS files that do not load.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use keystake_core::cluster::{self, ClusterPlan, MAX_SOURCE_BYTES};
use keystake_core::consensus::Network;
use keystake_core::types::ShareIndex;
use serde::Deserialize;

use super::ForwarderError;
use crate::net::client::MtlsClient;
use crate::net::tls;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    manifests: Vec<PathBuf>,
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    network_config_file: Option<PathBuf>,
    #[serde(default, rename = "appliance")]
    appliances: Vec<ApplianceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplianceEntry {
    index: ShareIndex,
    url: String,
    ca: PathBuf,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    client_pkcs12: Option<PathBuf>,
    client_pkcs12_password_file: Option<PathBuf>,
}

/// One appliance, ready to be asked: its share index, URL and pooled mTLS client.
#[derive(Debug, Clone)]
pub struct ApplianceLink {
    pub index: ShareIndex,
    pub url: String,
    pub client: MtlsClient,
}

/// A loaded, checked cluster.
#[derive(Debug)]
pub struct LoadedCluster {
    pub plan: ClusterPlan,
    /// By share index.
    pub appliances: Vec<ApplianceLink>,
    pub network: Network,
}

fn cluster_error(path: &Path, detail: impl std::fmt::Display) -> ForwarderError {
    ForwarderError::Cluster(format!("{}: {detail}", path.display()))
}

/// Read `path` and everything it names.
pub fn load(path: &Path) -> Result<LoadedCluster, ForwarderError> {
    let text = std::fs::read_to_string(path).map_err(|e| cluster_error(path, e))?;
    let file: ClusterFile = toml::from_str(&text).map_err(|e| cluster_error(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let resolve = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base.join(p)
        }
    };

    let mut sources = Vec::with_capacity(file.manifests.len());
    for manifest in &file.manifests {
        let manifest_path = resolve(manifest);
        let size = std::fs::metadata(&manifest_path)
            .map_err(|e| cluster_error(&manifest_path, e))?
            .len();
        if size > MAX_SOURCE_BYTES as u64 {
            return Err(cluster_error(
                &manifest_path,
                format!("larger than {MAX_SOURCE_BYTES} bytes"),
            ));
        }
        let text = std::fs::read_to_string(&manifest_path)
            .map_err(|e| cluster_error(&manifest_path, e))?;
        let name = manifest_path.display().to_string();
        let validators = cluster::parse_source(&name, &text)
            .map_err(|e| ForwarderError::Cluster(e.to_string()))?;
        sources.push((name, validators));
    }
    let indices: Vec<ShareIndex> = file.appliances.iter().map(|a| a.index).collect();
    let plan = ClusterPlan::new(&sources, &indices).map_err(|e| cluster_error(path, e))?;

    let network = match (&file.network_config_file, &file.network) {
        (Some(network_file), _) => {
            let network_file = resolve(network_file);
            let text = std::fs::read_to_string(&network_file)
                .map_err(|e| cluster_error(&network_file, e))?;
            Network::from_toml_str(&text).map_err(|e| cluster_error(&network_file, e))?
        }
        (None, name) => {
            let name = name.as_deref().unwrap_or("mainnet");
            Network::by_name(name).ok_or_else(|| {
                cluster_error(
                    path,
                    format!(
                        "unknown network {name:?} (mainnet, hoodi, sepolia, or set network_config_file)"
                    ),
                )
            })?
        }
    };

    let mut appliances = Vec::with_capacity(file.appliances.len());
    for entry in &file.appliances {
        let tls = identity(entry, &resolve)
            .map_err(|e| cluster_error(path, format!("appliance {}: {e}", entry.index.get())))?;
        let url = entry.url.trim_end_matches('/').to_owned();
        let client = MtlsClient::new(tls, &url)
            .map_err(|e| cluster_error(path, format!("appliance {}: {e}", entry.index.get())))?;
        appliances.push(ApplianceLink {
            index: entry.index,
            url,
            client,
        });
    }
    appliances.sort_by_key(|a| a.index);
    Ok(LoadedCluster {
        plan,
        appliances,
        network,
    })
}

fn identity(
    entry: &ApplianceEntry,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let ca = resolve(&entry.ca);
    match (
        &entry.client_cert,
        &entry.client_key,
        &entry.client_pkcs12,
        &entry.client_pkcs12_password_file,
    ) {
        (Some(cert), Some(key), None, None) => {
            tls::client_config(&ca, &resolve(cert), &resolve(key)).map_err(|e| e.to_string())
        }
        (None, None, Some(p12), Some(password)) => {
            tls::client_config_pkcs12(&ca, &resolve(p12), &resolve(password))
                .map_err(|e| e.to_string())
        }
        _ => Err(
            "give either client_cert and client_key, or client_pkcs12 and \
             client_pkcs12_password_file"
                .to_owned(),
        ),
    }
}
