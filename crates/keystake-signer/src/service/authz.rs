//! The authorization adapter: holds the policy in force (read from `policy_file`), reloads it
//! on request (SIGHUP, admin call), decides requests with the pure [`keystake_core::policy`] rules and
//! logs every refusal with the client identity.
//!
//! Deny by default: `serve` refuses to start without a policy file unless the configuration
//! says `allow_any_client = true`, in which case any client whose certificate chains to the CA
//! may do everything and a loud warning says so at start-up.
//!
//! Refuses: a missing policy (unless explicitly allowed), a policy file that does not parse (at
//! start-up: the appliance does not start; on reload: the old policy **and** the old TLS
//! configuration stay in force and the reload reports the error), and, with a policy, any
//! request without a client identity, and any request of a client that is unnamed or named
//! with no grant, before its body is read.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use keystake_core::policy::{Denial, KeyRef, Operation, Policy, PolicyError, Subject, Target};

/// Who is on the other end of a mutual-TLS connection, as far as policy and audit care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The first subject CN, if it is a string.
    pub common_name: Option<String>,
    /// DNS names from the subjectAltName extension.
    pub dns_sans: Vec<String>,
    /// SHA-256 of the DER certificate; stable, unique and not chosen by the client.
    pub fingerprint_sha256: [u8; 32],
    /// Let in by a DKG certificate pin, not by the CA (`net::pinned`): it may reach the DKG
    /// service only.
    pub pinned_peer: bool,
}

impl ClientIdentity {
    /// A name for logs and audit records: the CN, else the first DNS SAN, else the fingerprint.
    pub fn display_name(&self) -> String {
        match (&self.common_name, self.dns_sans.first()) {
            (Some(cn), _) if !cn.is_empty() => cn.clone(),
            (_, Some(dns)) => dns.clone(),
            _ => format!("sha256:{}", self.fingerprint_hex()),
        }
    }

    /// Lower-case hex of [`Self::fingerprint_sha256`] (what policy files match on).
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint_sha256)
    }
}

/// Which API a request came through (for logs, metrics and the audit log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Api {
    Rest,
    Grpc,
    /// In-process callers (CLI tools, tests) that hold no client certificate.
    Local,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Rest => "rest",
            Api::Grpc => "grpc",
            Api::Local => "local",
        }
    }
}

/// Who is asking: the verified client certificate (absent only for in-process callers and
/// socket-less router tests) and the API used.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Shared with the connection it came on: one certificate, parsed once per connection.
    pub identity: Option<Arc<ClientIdentity>>,
    pub api: Api,
}

impl Caller {
    pub fn new(identity: Option<Arc<ClientIdentity>>, api: Api) -> Self {
        Caller { identity, api }
    }

    /// An in-process caller without a certificate (CLI tools, tests): admitted only by a
    /// service without a policy, like any caller without an identity.
    pub fn local() -> Self {
        Caller::new(None, Api::Local)
    }

    /// The name used in logs and audit records.
    pub fn name(&self) -> String {
        self.identity.as_ref().map_or_else(
            || "(no client certificate)".to_owned(),
            |i| i.display_name(),
        )
    }

    fn subject(&self) -> Option<Subject<'_>> {
        self.identity.as_ref().map(|i| Subject {
            common_name: i.common_name.as_deref(),
            dns_sans: &i.dns_sans,
            fingerprint_sha256: &i.fingerprint_sha256,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {}: {source}", path.display())]
    Invalid { path: PathBuf, source: PolicyError },
    #[error("reloading the TLS configuration (CRL): {0}; the previous policy and TLS configuration stay in force")]
    Tls(#[source] ReloadError),
    #[error("no policy_file configured: refusing to serve every client of the CA with every key; write a policy (docs/authorization.md) or set allow_any_client = true")]
    NoPolicy,
}

/// Why a [`Reloadable`] could not reload (its own error type, whatever adapter it is).
pub type ReloadError = Box<dyn std::error::Error + Send + Sync>;

/// Something else to re-read when the policy is reloaded (the TLS configuration with its CRL).
pub trait Reloadable: Send + Sync {
    fn reload(&self) -> Result<(), ReloadError>;
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub enforced: bool,
    pub clients: usize,
    pub tls_reloaded: bool,
}

/// The policy in force, shared by both APIs.
pub struct Authorizer {
    policy_file: Option<PathBuf>,
    current: RwLock<Option<Arc<Policy>>>,
    tls: OnceLock<Arc<dyn Reloadable>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("policy_file", &self.policy_file)
            .field("enforced", &self.enforced())
            .finish()
    }
}

fn read_policy(path: &Path) -> Result<Policy, AuthzError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthzError::Read {
        path: path.to_owned(),
        source,
    })?;
    Policy::from_toml_str(&text).map_err(|source| AuthzError::Invalid {
        path: path.to_owned(),
        source,
    })
}

impl Authorizer {
    /// No policy: every client with a valid certificate may do everything (the behaviour before
    /// policies existed).
    pub fn open() -> Self {
        Authorizer {
            policy_file: None,
            current: RwLock::new(None),
            tls: OnceLock::new(),
        }
    }

    /// A fixed policy (tests, embedding).
    pub fn with_policy(policy: Policy) -> Self {
        Authorizer {
            policy_file: None,
            current: RwLock::new(Some(Arc::new(policy))),
            tls: OnceLock::new(),
        }
    }

    /// Read the policy file (refusing to start on any error).
    pub fn from_file(path: &Path) -> Result<Self, AuthzError> {
        let policy = read_policy(path)?;
        Ok(Authorizer {
            policy_file: Some(path.to_owned()),
            current: RwLock::new(Some(Arc::new(policy))),
            tls: OnceLock::new(),
        })
    }

    /// From the configuration: a file if one is named; else open only when `allow_any_client`
    /// says so explicitly (with a loud warning), else refuse ([`AuthzError::NoPolicy`]).
    pub fn from_config(
        policy_file: Option<&Path>,
        allow_any_client: bool,
    ) -> Result<Self, AuthzError> {
        match policy_file {
            Some(path) => {
                let authorizer = Self::from_file(path)?;
                tracing::info!(policy = %path.display(), clients = authorizer.client_count(), "authorization policy loaded");
                Ok(authorizer)
            }
            None if allow_any_client => {
                tracing::warn!(
                    "allow_any_client = true and no policy_file: EVERY client whose certificate chains to the CA may sign with EVERY key, exits and deposits included (see docs/authorization.md)"
                );
                Ok(Self::open())
            }
            None => Err(AuthzError::NoPolicy),
        }
    }

    /// Register the TLS configuration to re-read (CRL) whenever the policy is reloaded.
    pub fn also_reload(&self, tls: Arc<dyn Reloadable>) {
        let _ = self.tls.set(tls);
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn enforced(&self) -> bool {
        self.policy().is_some()
    }

    pub fn client_count(&self) -> usize {
        self.policy().map_or(0, |p| p.clients.len())
    }

    /// Re-read the policy file and the TLS configuration. Both are read and checked before
    /// either is installed: on any error the previous policy **and** TLS configuration stay in
    /// force. (The TLS reloader installs its configuration only when it built; the policy is
    /// swapped after it, and swapping cannot fail.)
    pub fn reload(&self) -> Result<ReloadSummary, AuthzError> {
        let policy = match &self.policy_file {
            Some(path) => Some(read_policy(path)?),
            None => None,
        };
        let tls_reloaded = match self.tls.get() {
            Some(tls) => {
                tls.reload().map_err(AuthzError::Tls)?;
                true
            }
            None => false,
        };
        if let (Some(path), Some(policy)) = (&self.policy_file, policy) {
            let clients = policy.clients.len();
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(policy));
            tracing::info!(policy = %path.display(), clients, "authorization policy reloaded");
        }
        Ok(ReloadSummary {
            enforced: self.enforced(),
            clients: self.client_count(),
            tls_reloaded,
        })
    }

    /// Decide one request; refusals are logged here with the client identity.
    pub fn check(
        &self,
        caller: &Caller,
        target: &Target,
        operation: Operation,
    ) -> Result<(), Denial> {
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        let result = match caller.subject() {
            Some(subject) => policy.authorize(&subject, &caller.name(), target, operation),
            None => Err(Denial::NoIdentity),
        };
        if let Err(denial) = &result {
            tracing::warn!(
                client = %caller.name(),
                fingerprint = caller.identity.as_ref().map(|i| i.fingerprint_hex()).unwrap_or_default(),
                api = caller.api.as_str(),
                operation = operation.as_str(),
                target = %target,
                reason = %denial,
                "authorization refused"
            );
        }
        result
    }

    /// The same decision as [`Self::check`], without logging (for "may it do X for all keys,
    /// else check each key" choices).
    pub fn allows(&self, caller: &Caller, target: &Target, operation: Operation) -> bool {
        match self.policy() {
            None => true,
            Some(policy) => caller.subject().is_some_and(|s| {
                policy
                    .authorize(&s, &caller.name(), target, operation)
                    .is_ok()
            }),
        }
    }

    /// Refuse a client the policy does not name at all, or names with no grant, before looking
    /// at its request.
    pub fn check_known(&self, caller: &Caller) -> Result<(), Denial> {
        let Some(policy) = self.policy() else {
            return Ok(());
        };
        let denial = match caller.subject() {
            Some(s) if policy.grants_anything(&s) => return Ok(()),
            Some(s) if policy.knows(&s) => Denial::NothingGranted {
                client: caller.name(),
            },
            Some(_) => Denial::UnknownClient {
                client: caller.name(),
            },
            None => Denial::NoIdentity,
        };
        tracing::warn!(
            client = %caller.name(),
            fingerprint = caller.identity.as_ref().map(|i| i.fingerprint_hex()).unwrap_or_default(),
            api = caller.api.as_str(),
            reason = %denial,
            "authorization refused"
        );
        Err(denial)
    }

    /// Whether the client holds `operation` on any key (no logging: the header-time check;
    /// the caller records the refusal).
    pub fn may_ever(&self, caller: &Caller, operation: Operation) -> bool {
        match self.policy() {
            None => true,
            Some(policy) => caller
                .subject()
                .is_some_and(|s| policy.may_ever(&s, operation)),
        }
    }

    /// Whether a key appears in this client's key listings.
    pub fn may_use_key(&self, caller: &Caller, key: &KeyRef) -> bool {
        match self.policy() {
            None => true,
            Some(policy) => caller
                .subject()
                .is_some_and(|s| policy.may_use_key(&s, key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(cn: &str) -> ClientIdentity {
        ClientIdentity {
            common_name: Some(cn.into()),
            dns_sans: vec![],
            fingerprint_sha256: [3; 32],
            pinned_peer: false,
        }
    }

    #[test]
    fn open_allows_everything_including_anonymous() {
        let authorizer = Authorizer::open();
        assert!(!authorizer.enforced());
        let anonymous = Caller::new(None, Api::Rest);
        assert!(authorizer.check_known(&anonymous).is_ok());
        assert!(authorizer
            .check(&anonymous, &Target::AllKeys, Operation::Deposit)
            .is_ok());
    }

    #[test]
    fn reload_swaps_policy_and_keeps_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        std::fs::write(
            &path,
            "[[client]]\ncn = \"a\"\n[[client.grant]]\nkeys = \"all\"\noperations = [\"block\"]\n",
        )
        .unwrap();
        let authorizer = Authorizer::from_file(&path).unwrap();
        let a = Caller::new(Some(Arc::new(identity("a"))), Api::Grpc);
        let b = Caller::new(Some(Arc::new(identity("b"))), Api::Grpc);
        assert!(authorizer
            .check(&a, &Target::AllKeys, Operation::Block)
            .is_ok());
        assert!(authorizer.check_known(&b).is_err());
        assert!(authorizer
            .check(
                &Caller::new(None, Api::Rest),
                &Target::None,
                Operation::Block
            )
            .is_err());

        std::fs::write(
            &path,
            "[[client]]\ncn = \"b\"\n[[client.grant]]\nkeys = \"all\"\noperations = [\"block\"]\n",
        )
        .unwrap();
        let summary = authorizer.reload().unwrap();
        assert_eq!(summary.clients, 1);
        assert!(authorizer.check_known(&a).is_err());
        assert!(authorizer
            .check(&b, &Target::AllKeys, Operation::Block)
            .is_ok());

        std::fs::write(&path, "[[client]]\ncn = 5\n").unwrap();
        assert!(authorizer.reload().is_err());
        assert!(authorizer
            .check(&b, &Target::AllKeys, Operation::Block)
            .is_ok());
    }
}
