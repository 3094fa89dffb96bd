//! Authorization policy: which client (identified by its certificate) may use which keys for
//! which operations. Pure: parsing a policy text and deciding a request; reading the file and
//! reloading it live in `crate::authz`.
//!
//! Model (after Dirk's rules): client identity → key selector → operations, deny by default.
//!
//! ```toml
//! [[client]]
//! cn = "validator-a"                  # or dns = "vc.example.org", or fingerprint = "<sha256 hex>"
//! [[client.grant]]
//! keys = ["0x93247f…"]                # or keys = "all", or groups = ["0x…group key"]
//! operations = ["attestation", "aggregation"]  # or ["all"]
//! ```
//!
//! Refuses (at parse time): unknown fields, unknown operation names, a client entry that does not
//! name exactly one of `cn` / `dns` / `fingerprint`, a grant without exactly one of `keys` /
//! `groups`, malformed public keys or fingerprints, an empty operation list. At decision time it
//! refuses every client that no entry names, and every (key, operation) that no grant of a
//! matching entry covers. `"all"` operations never include `voluntary_exit` or `deposit`: those
//! two must be named.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::fmt;

use serde::Deserialize;

use crate::request::SignKind;
use crate::types::BlsPublicKey;

/// Something a client can be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Block,
    Attestation,
    Aggregation,
    SyncCommittee,
    Randao,
    VoluntaryExit,
    Deposit,
    ValidatorRegistration,
    Keymanager,
    SlashingAdmin,
    /// Appliance-wide administration: reloading keys, the policy and the TLS configuration, the
    /// reload status. Only a grant on `keys = "all"` covers it (see `Target::AllKeys`).
    Operator,
    /// Taking part in a DKG ceremony or reshare with this appliance (`keystake.v1.Dkg`): granted
    /// to a peer's pinned certificate (usually by `fingerprint`); the ceremony's definition must
    /// pin it too. Key-less (any grant of it covers it); `"all"` never includes it.
    Dkg,
}

impl Operation {
    pub const ALL: [Operation; 12] = [
        Operation::Block,
        Operation::Attestation,
        Operation::Aggregation,
        Operation::SyncCommittee,
        Operation::Randao,
        Operation::VoluntaryExit,
        Operation::Deposit,
        Operation::ValidatorRegistration,
        Operation::Keymanager,
        Operation::SlashingAdmin,
        Operation::Operator,
        Operation::Dkg,
    ];

    /// The spelling used in policy files, logs, metrics and the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Block => "block",
            Operation::Attestation => "attestation",
            Operation::Aggregation => "aggregation",
            Operation::SyncCommittee => "sync_committee",
            Operation::Randao => "randao",
            Operation::VoluntaryExit => "voluntary_exit",
            Operation::Deposit => "deposit",
            Operation::ValidatorRegistration => "validator_registration",
            Operation::Keymanager => "keymanager",
            Operation::SlashingAdmin => "slashing_admin",
            Operation::Operator => "operator",
            Operation::Dkg => "dkg",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == name)
    }

    /// Operations that a wildcard (`"all"`) never grants: exits and deposits move or lock up
    /// stake, and `dkg` makes a certificate a ceremony peer, so a client gets them only by naming
    /// them.
    pub fn needs_explicit_grant(self) -> bool {
        matches!(
            self,
            Operation::VoluntaryExit | Operation::Deposit | Operation::Dkg
        )
    }

    /// The operation a Web3Signer signing request type performs.
    pub fn of_sign_kind(kind: SignKind) -> Self {
        match kind {
            SignKind::Block | SignKind::BlockV2 => Operation::Block,
            SignKind::Attestation => Operation::Attestation,
            SignKind::AggregationSlot
            | SignKind::AggregateAndProof
            | SignKind::AggregateAndProofV2 => Operation::Aggregation,
            SignKind::SyncCommitteeMessage
            | SignKind::SyncCommitteeSelectionProof
            | SignKind::SyncCommitteeContributionAndProof => Operation::SyncCommittee,
            SignKind::RandaoReveal => Operation::Randao,
            SignKind::VoluntaryExit => Operation::VoluntaryExit,
            SignKind::Deposit => Operation::Deposit,
            SignKind::ValidatorRegistration => Operation::ValidatorRegistration,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The parts of a client certificate the policy matches on (see `tls::ClientIdentity`).
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub common_name: Option<&'a str>,
    pub dns_sans: &'a [String],
    pub fingerprint_sha256: &'a [u8; 32],
}

/// The key a request would use: its own public key and, for a threshold share, its group key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    pub public_key: BlsPublicKey,
    pub group_public_key: Option<BlsPublicKey>,
}

/// What an operation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One key.
    Key(KeyRef),
    /// Every key (administrative calls that are not about one key: listing, importing). Only a
    /// grant with `keys = "all"` covers it.
    AllKeys,
    /// No particular key: any grant of the operation, whatever its keys, covers it (combining
    /// public partial signatures, reloading the policy, entering the keymanager API).
    None,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Key(key) => write!(f, "{}", key.public_key),
            Target::AllKeys => f.write_str("all keys"),
            Target::None => f.write_str("any key"),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("client {client} is not named in the authorization policy")]
    UnknownClient { client: String },
    #[error("client {client} may not perform {operation} on {target}")]
    NotGranted {
        client: String,
        operation: Operation,
        target: String,
    },
    #[error("request without a client certificate")]
    NoIdentity,
    #[error("client {client} is named in the authorization policy but granted nothing")]
    NothingGranted { client: String },
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("policy is not valid TOML for this schema: {0}")]
    Syntax(String),
    #[error("policy client #{index}: {message}")]
    Client { index: usize, message: String },
}

/// How a policy entry recognises a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Subject common name, compared exactly.
    CommonName(String),
    /// A DNS subjectAltName, compared ignoring ASCII case.
    DnsName(String),
    /// SHA-256 of the DER certificate.
    Fingerprint([u8; 32]),
}

impl Matcher {
    fn matches(&self, subject: &Subject<'_>) -> bool {
        match self {
            Matcher::CommonName(cn) => subject.common_name == Some(cn.as_str()),
            Matcher::DnsName(dns) => subject.dns_sans.iter().any(|s| s.eq_ignore_ascii_case(dns)),
            Matcher::Fingerprint(fp) => subject.fingerprint_sha256 == fp,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::CommonName(cn) => write!(f, "cn={cn}"),
            Matcher::DnsName(dns) => write!(f, "dns={dns}"),
            Matcher::Fingerprint(fp) => write!(f, "sha256:{}", hex::encode(fp)),
        }
    }
}

/// Which keys a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySelector {
    All,
    /// These public keys (whole keys or share public keys).
    Keys(BTreeSet<BlsPublicKey>),
    /// Every share whose group public key is one of these.
    Groups(BTreeSet<BlsPublicKey>),
}

impl KeySelector {
    fn covers(&self, target: &Target) -> bool {
        match (self, target) {
            (KeySelector::All, _) => true,
            (_, Target::AllKeys) => false,
            (_, Target::None) => true,
            (KeySelector::Keys(keys), Target::Key(key)) => keys.contains(&key.public_key),
            (KeySelector::Groups(groups), Target::Key(key)) => key
                .group_public_key
                .is_some_and(|group| groups.contains(&group)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub keys: KeySelector,
    pub operations: BTreeSet<Operation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRule {
    pub matcher: Matcher,
    pub grants: Vec<Grant>,
}

/// A parsed, validated policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub clients: Vec<ClientRule>,
}

// ---- file schema ---------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    client: Vec<ClientFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    cn: Option<String>,
    dns: Option<String>,
    fingerprint: Option<String>,
    #[serde(default)]
    grant: Vec<GrantFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    keys: Option<KeysFile>,
    groups: Option<Vec<String>>,
    operations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum KeysFile {
    Word(String),
    List(Vec<String>),
}

fn parse_fingerprint(text: &str) -> Result<[u8; 32], String> {
    let cleaned: String = text
        .trim()
        .trim_start_matches("sha256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bytes = hex::decode(&cleaned)
        .map_err(|_| format!("fingerprint {text:?} is not hex (64 hex digits, colons allowed)"))?;
    bytes
        .try_into()
        .map_err(|_| format!("fingerprint {text:?} is not 32 bytes (SHA-256)"))
}

fn parse_keys(list: &[String], what: &str) -> Result<BTreeSet<BlsPublicKey>, String> {
    if list.is_empty() {
        return Err(format!("{what} list is empty (omit the grant instead)"));
    }
    list.iter()
        .map(|text| {
            text.parse::<BlsPublicKey>().map_err(|_| {
                format!("{what} entry {text:?} is not a 0x-prefixed 48-byte public key")
            })
        })
        .collect()
}

fn parse_operations(names: &[String]) -> Result<BTreeSet<Operation>, String> {
    if names.is_empty() {
        return Err("operations list is empty".into());
    }
    let mut operations = BTreeSet::new();
    for name in names {
        if name == "all" {
            operations.extend(
                Operation::ALL
                    .into_iter()
                    .filter(|op| !op.needs_explicit_grant()),
            );
        } else {
            let op = Operation::parse(name).ok_or_else(|| {
                let known: Vec<&str> = Operation::ALL.iter().map(|o| o.as_str()).collect();
                format!(
                    "unknown operation {name:?} (known: all, {})",
                    known.join(", ")
                )
            })?;
            operations.insert(op);
        }
    }
    Ok(operations)
}

fn parse_client(file: ClientFile) -> Result<ClientRule, String> {
    let matcher = match (file.cn, file.dns, file.fingerprint) {
        (Some(cn), None, None) if !cn.is_empty() => Matcher::CommonName(cn),
        (None, Some(dns), None) if !dns.is_empty() => Matcher::DnsName(dns),
        (None, None, Some(fp)) => Matcher::Fingerprint(parse_fingerprint(&fp)?),
        _ => {
            return Err("name the client with exactly one non-empty cn, dns or fingerprint".into())
        }
    };
    let mut grants = Vec::with_capacity(file.grant.len());
    for (n, grant) in file.grant.into_iter().enumerate() {
        let keys = match (grant.keys, grant.groups) {
            (Some(KeysFile::Word(word)), None) if word == "all" => KeySelector::All,
            (Some(KeysFile::Word(word)), None) => {
                return Err(format!(
                    "grant #{}: keys = {word:?}: use \"all\" or a list of public keys",
                    n + 1
                ))
            }
            (Some(KeysFile::List(list)), None) => KeySelector::Keys(
                parse_keys(&list, "keys").map_err(|e| format!("grant #{}: {e}", n + 1))?,
            ),
            (None, Some(list)) => KeySelector::Groups(
                parse_keys(&list, "groups").map_err(|e| format!("grant #{}: {e}", n + 1))?,
            ),
            _ => {
                return Err(format!(
                    "grant #{}: give exactly one of keys or groups",
                    n + 1
                ))
            }
        };
        let operations =
            parse_operations(&grant.operations).map_err(|e| format!("grant #{}: {e}", n + 1))?;
        grants.push(Grant { keys, operations });
    }
    Ok(ClientRule { matcher, grants })
}

impl Policy {
    /// Parse and validate a policy file's text.
    pub fn from_toml_str(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let clients = file
            .client
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                parse_client(c).map_err(|message| PolicyError::Client {
                    index: i + 1,
                    message,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy { clients })
    }

    fn rules_for<'p>(&'p self, subject: &'p Subject<'_>) -> impl Iterator<Item = &'p ClientRule> {
        self.clients
            .iter()
            .filter(move |c| c.matcher.matches(subject))
    }

    /// Whether any entry names this client (an unnamed client is refused everything).
    pub fn knows(&self, subject: &Subject<'_>) -> bool {
        self.rules_for(subject).next().is_some()
    }

    /// Whether this client holds at least one grant. A client named with no grant is refused
    /// everything, so it is refused as early as an unnamed one: before any request body.
    pub fn grants_anything(&self, subject: &Subject<'_>) -> bool {
        self.rules_for(subject).any(|r| !r.grants.is_empty())
    }

    /// Whether this client holds `operation` on any key at all (the cheap check made on a
    /// request's headers, before its body is read; the per-key decision comes later).
    pub fn may_ever(&self, subject: &Subject<'_>, operation: Operation) -> bool {
        self.rules_for(subject)
            .flat_map(|r| r.grants.iter())
            .any(|g| g.operations.contains(&operation))
    }

    /// Decide one request. Grants of every matching entry add up.
    pub fn authorize(
        &self,
        subject: &Subject<'_>,
        client: &str,
        target: &Target,
        operation: Operation,
    ) -> Result<(), Denial> {
        let mut known = false;
        for rule in self.rules_for(subject) {
            known = true;
            if rule
                .grants
                .iter()
                .any(|g| g.operations.contains(&operation) && g.keys.covers(target))
            {
                return Ok(());
            }
        }
        if known {
            Err(Denial::NotGranted {
                client: client.to_owned(),
                operation,
                target: target.to_string(),
            })
        } else {
            Err(Denial::UnknownClient {
                client: client.to_owned(),
            })
        }
    }

    /// Whether the client holds any grant at all on `key` (decides what key listings show).
    pub fn may_use_key(&self, subject: &Subject<'_>, key: &KeyRef) -> bool {
        self.rules_for(subject)
            .flat_map(|r| r.grants.iter())
            .any(|g| g.keys.covers(&Target::Key(*key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0xa99a76ed7796f7be22d5b7e85deeb7c5677e88e511e0b337618f8c4eb61349b4bf2d153f649f7b53359fe8b94a38e44c";
    const K2: &str = "0xb89bebc699769726a318c8e9971bd3171297c61aea4a6578a7a4f94b547dcba5bac16a89108b6b6a1fe3695d1a874a0b";
    const G: &str = "0xa3a32b0f8b4ddb83f1a0a853d81dd725dfe577d4f4c3db8ece52ce2b026eca84815c1a7e8e92a4de3d755733bf7e4a9b";

    fn key(text: &str) -> BlsPublicKey {
        text.parse().unwrap()
    }

    struct Who {
        cn: Option<String>,
        dns: Vec<String>,
        fp: [u8; 32],
    }

    impl Who {
        fn cn(name: &str) -> Who {
            Who {
                cn: Some(name.into()),
                dns: vec![],
                fp: [7; 32],
            }
        }
        fn subject(&self) -> Subject<'_> {
            Subject {
                common_name: self.cn.as_deref(),
                dns_sans: &self.dns,
                fingerprint_sha256: &self.fp,
            }
        }
    }

    fn one(k: &str) -> Target {
        Target::Key(KeyRef {
            public_key: key(k),
            group_public_key: None,
        })
    }

    fn policy() -> Policy {
        Policy::from_toml_str(&format!(
            r#"
            [[client]]
            cn = "a"
            [[client.grant]]
            keys = ["{K1}"]
            operations = ["attestation"]

            [[client]]
            cn = "b"
            [[client.grant]]
            keys = ["{K2}"]
            operations = ["all", "voluntary_exit", "deposit", "dkg"]

            [[client]]
            cn = "wild"
            [[client.grant]]
            keys = "all"
            operations = ["all"]

            [[client]]
            dns = "Middleware.Example.org"
            [[client.grant]]
            groups = ["{G}"]
            operations = ["block"]

            [[client]]
            fingerprint = "{}"
            [[client.grant]]
            keys = "all"
            operations = ["slashing_admin"]

            [[client]]
            cn = "c"
            "#,
            hex::encode([9u8; 32])
        ))
        .unwrap()
    }

    #[test]
    fn every_sign_kind_maps_to_a_signing_operation() {
        for kind in SignKind::ALL {
            let op = Operation::of_sign_kind(kind);
            assert!(!matches!(
                op,
                Operation::Keymanager | Operation::SlashingAdmin
            ));
        }
        assert_eq!(Operation::of_sign_kind(SignKind::BlockV2), Operation::Block);
        assert_eq!(
            Operation::of_sign_kind(SignKind::SyncCommitteeSelectionProof),
            Operation::SyncCommittee
        );
        for op in Operation::ALL {
            assert_eq!(Operation::parse(op.as_str()), Some(op));
        }
    }

    #[test]
    fn grants_are_exact() {
        let p = policy();
        let a = Who::cn("a");
        for op in Operation::ALL {
            let k1 = p.authorize(&a.subject(), "a", &one(K1), op);
            assert_eq!(k1.is_ok(), op == Operation::Attestation, "{op}");
            assert!(p.authorize(&a.subject(), "a", &one(K2), op).is_err());
        }
        let b = Who::cn("b");
        for op in Operation::ALL {
            assert!(p.authorize(&b.subject(), "b", &one(K2), op).is_ok(), "{op}");
            assert!(p.authorize(&b.subject(), "b", &one(K1), op).is_err());
            // A key list never covers "all keys".
            assert!(p
                .authorize(&b.subject(), "b", &Target::AllKeys, op)
                .is_err());
        }
    }

    #[test]
    fn wildcard_never_grants_exit_or_deposit() {
        let p = policy();
        let w = Who::cn("wild");
        for op in Operation::ALL {
            let allowed = p.authorize(&w.subject(), "wild", &one(K1), op).is_ok();
            assert_eq!(allowed, !op.needs_explicit_grant(), "{op}");
        }
        assert!(p
            .authorize(
                &w.subject(),
                "wild",
                &Target::AllKeys,
                Operation::Keymanager
            )
            .is_ok());
    }

    #[test]
    fn dkg_is_granted_only_by_name() {
        let text = r#"
[[client]]
cn = "operator"
[[client.grant]]
keys = "all"
operations = ["all", "voluntary_exit", "deposit"]
[[client]]
cn = "peer"
[[client.grant]]
keys = "all"
operations = ["dkg"]
"#;
        let p = Policy::from_toml_str(text).unwrap();
        let operator = Who::cn("operator");
        assert!(matches!(
            p.authorize(
                &operator.subject(),
                "operator",
                &Target::None,
                Operation::Dkg
            ),
            Err(Denial::NotGranted { .. })
        ));
        let peer = Who::cn("peer");
        assert!(p
            .authorize(&peer.subject(), "peer", &Target::None, Operation::Dkg)
            .is_ok());
        // The grant makes it a ceremony peer, nothing more.
        assert!(p
            .authorize(&peer.subject(), "peer", &one(K1), Operation::Attestation)
            .is_err());
        assert_eq!(Operation::parse("dkg"), Some(Operation::Dkg));
    }

    #[test]
    fn unknown_and_ungranted_clients_are_told_apart() {
        let p = policy();
        let nobody = Who::cn("nobody");
        assert!(!p.knows(&nobody.subject()));
        assert!(matches!(
            p.authorize(&nobody.subject(), "nobody", &Target::None, Operation::Block),
            Err(Denial::UnknownClient { .. })
        ));
        let c = Who::cn("c");
        assert!(p.knows(&c.subject()));
        for op in Operation::ALL {
            assert!(matches!(
                p.authorize(&c.subject(), "c", &one(K1), op),
                Err(Denial::NotGranted { .. })
            ));
        }
        // Key-less calls still need a grant of the operation (on any keys).
        assert!(p
            .authorize(&c.subject(), "c", &Target::None, Operation::Block)
            .is_err());
        let a = Who::cn("a");
        assert!(p
            .authorize(&a.subject(), "a", &Target::None, Operation::Attestation)
            .is_ok());
        assert!(p
            .authorize(&a.subject(), "a", &Target::None, Operation::Keymanager)
            .is_err());
    }

    #[test]
    fn group_dns_and_fingerprint_matchers() {
        let p = policy();
        let mw = Who {
            cn: None,
            dns: vec!["other".into(), "middleware.example.ORG".into()],
            fp: [1; 32],
        };
        let share = Target::Key(KeyRef {
            public_key: key(K1),
            group_public_key: Some(key(G)),
        });
        assert!(p
            .authorize(&mw.subject(), "mw", &share, Operation::Block)
            .is_ok());
        assert!(p
            .authorize(&mw.subject(), "mw", &one(K1), Operation::Block)
            .is_err());
        let admin = Who {
            cn: Some("a".into()),
            dns: vec![],
            fp: [9; 32],
        };
        // Matches both the "a" entry and the fingerprint entry: grants add up.
        assert!(p
            .authorize(
                &admin.subject(),
                "x",
                &Target::AllKeys,
                Operation::SlashingAdmin
            )
            .is_ok());
        assert!(p
            .authorize(&admin.subject(), "x", &one(K1), Operation::Attestation)
            .is_ok());
        assert!(p.may_use_key(
            &admin.subject(),
            &KeyRef {
                public_key: key(K2),
                group_public_key: None
            }
        ));
        assert!(!p.may_use_key(
            &Who::cn("a").subject(),
            &KeyRef {
                public_key: key(K2),
                group_public_key: None
            }
        ));
    }

    #[test]
    fn malformed_policies_are_refused() {
        let cases = [
            ("[[client]]\ngrant = []\n", "exactly one"),
            ("[[client]]\ncn = \"a\"\ndns = \"b\"\n", "exactly one"),
            ("[[client]]\ncn = \"a\"\nrole = \"x\"\n", "unknown field"),
            (
                "[[client]]\ncn = \"a\"\n[[client.grant]]\nkeys = \"all\"\noperations = [\"sign\"]\n",
                "unknown operation",
            ),
            (
                "[[client]]\ncn = \"a\"\n[[client.grant]]\nkeys = \"some\"\noperations = [\"block\"]\n",
                "use \"all\"",
            ),
            (
                "[[client]]\ncn = \"a\"\n[[client.grant]]\nkeys = [\"0x12\"]\noperations = [\"block\"]\n",
                "48-byte",
            ),
            (
                "[[client]]\ncn = \"a\"\n[[client.grant]]\noperations = [\"block\"]\n",
                "exactly one of keys or groups",
            ),
            (
                "[[client]]\ncn = \"a\"\n[[client.grant]]\nkeys = \"all\"\noperations = []\n",
                "empty",
            ),
            ("[[client]]\nfingerprint = \"abcd\"\n", "32 bytes"),
        ];
        for (text, expected) in cases {
            let error = Policy::from_toml_str(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn fingerprint_with_colons_and_prefix() {
        let fp = [0xabu8; 32];
        let colon: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
        let text = format!("[[client]]\nfingerprint = \"sha256:{}\"\n", colon.join(":"));
        let p = Policy::from_toml_str(&text).unwrap();
        assert_eq!(p.clients[0].matcher, Matcher::Fingerprint(fp));
    }
}
