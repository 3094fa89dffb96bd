//! Networks: preset, genesis fork version, slots per epoch and fork schedule. The schedule decides
//! which SSZ schema a full block or an aggregate at a given slot uses (as Web3Signer does); the
//! genesis fork version signs builder registrations.
//!
//! There is one way to define a network: TOML text read by `Network::from_toml_str`, which
//! refuses unknown keys, zero slots per epoch, a fork scheduled without all of its predecessors,
//! fork epochs that go backwards, and a fork listed twice. Custom devnets come from the operator's
//! `network_config_file`; the built-in networks (mainnet, hoodi, sepolia: the values of the
//! public `config.yaml` of each) are TOML files in `networks/`, compiled in with `include_str!`
//! and read by the same parser.
#![forbid(unsafe_code)]

use std::fmt;

use serde::{Deserialize, Deserializer};

use super::quoted_u64;
use crate::types::{Epoch, ForkVersion, Root, Slot};

/// The built-in networks: the name `Network::by_name` answers to and the network's TOML file.
const BUILTIN: [(&str, &str); 3] = [
    ("mainnet", include_str!("networks/mainnet.toml")),
    ("hoodi", include_str!("networks/hoodi.toml")),
    ("sepolia", include_str!("networks/sepolia.toml")),
];

/// The consensus preset (list and committee sizes) a network runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    Mainnet,
    Minimal,
}

impl Preset {
    /// `SLOTS_PER_EPOCH` of the preset (the default of a custom network).
    pub fn slots_per_epoch(self) -> u64 {
        match self {
            Preset::Mainnet => 32,
            Preset::Minimal => 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Mainnet => "mainnet",
            Preset::Minimal => "minimal",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Consensus forks in activation order (`Ord` follows that order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForkName {
    Phase0,
    Altair,
    Bellatrix,
    Capella,
    Deneb,
    Electra,
    Fulu,
}

impl ForkName {
    /// Every fork, in activation order.
    pub const ALL: [ForkName; 7] = [
        ForkName::Phase0,
        ForkName::Altair,
        ForkName::Bellatrix,
        ForkName::Capella,
        ForkName::Deneb,
        ForkName::Electra,
        ForkName::Fulu,
    ];

    /// The spelling of the beacon and Web3Signer APIs (`version` fields): `"PHASE0"`, `"ALTAIR"` …
    pub fn as_str(self) -> &'static str {
        match self {
            ForkName::Phase0 => "PHASE0",
            ForkName::Altair => "ALTAIR",
            ForkName::Bellatrix => "BELLATRIX",
            ForkName::Capella => "CAPELLA",
            ForkName::Deneb => "DENEB",
            ForkName::Electra => "ELECTRA",
            ForkName::Fulu => "FULU",
        }
    }

    /// Parse an API `version` name, ignoring ASCII case.
    pub fn from_api_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|fork| fork.as_str().eq_ignore_ascii_case(name))
    }

    /// Whether attestations of this fork are EIP-7549 ones (`committee_bits`, Electra on).
    pub fn has_electra_attestations(self) -> bool {
        self >= ForkName::Electra
    }
}

impl fmt::Display for ForkName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fork after genesis: its version and activation epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledFork {
    pub fork: ForkName,
    pub version: ForkVersion,
    pub epoch: Epoch,
}

/// Why a network definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetworkConfigError {
    #[error("invalid network config: {0}")]
    Toml(String),
    #[error("slots_per_epoch must be at least 1")]
    ZeroSlotsPerEpoch,
    #[error("PHASE0 is the genesis fork; set genesis_fork_version instead of scheduling it")]
    Phase0Scheduled,
    #[error("fork {0} is listed more than once")]
    DuplicateFork(ForkName),
    #[error("fork {fork} is scheduled but the earlier fork {missing} is not")]
    MissingEarlierFork { fork: ForkName, missing: ForkName },
    #[error("fork {fork} at epoch {epoch} activates before {previous} at epoch {previous_epoch}")]
    EpochsOutOfOrder {
        fork: ForkName,
        epoch: Epoch,
        previous: ForkName,
        previous_epoch: Epoch,
    },
}

/// A beacon-chain network as the signer needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub preset: Preset,
    pub genesis_fork_version: ForkVersion,
    pub slots_per_epoch: u64,
    /// Forks after genesis in activation order; only scheduled forks are listed.
    forks: Vec<ScheduledFork>,
    /// The network's genesis validators root when known (built-in networks, or set in a custom
    /// network file). The appliance binds its slashing database to it at start, so a request
    /// carrying another network's root is refused from the very first one.
    pub genesis_validators_root: Option<Root>,
    /// Unix time of slot 0, when known (built-in networks; optional `genesis_time` in a custom
    /// file). Without it the far-future duty check (`crate::clock`) cannot run.
    pub genesis_time: Option<u64>,
    /// Seconds per slot (12 unless a custom file says otherwise).
    pub seconds_per_slot: u64,
}

/// Seconds per slot on every public network.
pub const DEFAULT_SECONDS_PER_SLOT: u64 = 12;

impl Network {
    /// The chain clock, when the genesis time is known.
    pub fn clock(&self) -> Option<crate::clock::ChainClock> {
        self.genesis_time
            .map(|genesis_time| crate::clock::ChainClock {
                genesis_time,
                seconds_per_slot: self.seconds_per_slot.max(1),
                slots_per_epoch: self.slots_per_epoch.max(1),
            })
    }

    /// A validated network. `forks` may come in any order; unscheduled forks are left out.
    pub fn new(
        name: impl Into<String>,
        preset: Preset,
        genesis_fork_version: ForkVersion,
        slots_per_epoch: u64,
        mut forks: Vec<ScheduledFork>,
    ) -> Result<Self, NetworkConfigError> {
        if slots_per_epoch == 0 {
            return Err(NetworkConfigError::ZeroSlotsPerEpoch);
        }
        forks.sort_by_key(|scheduled| scheduled.fork);
        let mut previous: Option<ScheduledFork> = None;
        for (position, scheduled) in forks.iter().enumerate() {
            if scheduled.fork == ForkName::Phase0 {
                return Err(NetworkConfigError::Phase0Scheduled);
            }
            if previous.is_some_and(|earlier| earlier.fork == scheduled.fork) {
                return Err(NetworkConfigError::DuplicateFork(scheduled.fork));
            }
            // Sorted, without PHASE0 and without duplicates, the n-th entry must be the n-th fork
            // after genesis; otherwise an earlier fork is missing.
            let expected = ForkName::ALL
                .get(position + 1)
                .copied()
                .unwrap_or(ForkName::Fulu);
            if scheduled.fork != expected {
                return Err(NetworkConfigError::MissingEarlierFork {
                    fork: scheduled.fork,
                    missing: expected,
                });
            }
            if let Some(earlier) = previous {
                if scheduled.epoch < earlier.epoch {
                    return Err(NetworkConfigError::EpochsOutOfOrder {
                        fork: scheduled.fork,
                        epoch: scheduled.epoch,
                        previous: earlier.fork,
                        previous_epoch: earlier.epoch,
                    });
                }
            }
            previous = Some(*scheduled);
        }
        Ok(Self {
            name: name.into(),
            preset,
            genesis_fork_version,
            slots_per_epoch,
            forks,
            genesis_validators_root: None,
            genesis_time: None,
            seconds_per_slot: DEFAULT_SECONDS_PER_SLOT,
        })
    }

    /// Ethereum mainnet (`networks/mainnet.toml`).
    pub fn mainnet() -> Self {
        Self::builtin("mainnet")
    }

    /// The Hoodi testnet (`networks/hoodi.toml`).
    pub fn hoodi() -> Self {
        Self::builtin("hoodi")
    }

    /// The Sepolia testnet (`networks/sepolia.toml`).
    pub fn sepolia() -> Self {
        Self::builtin("sepolia")
    }

    /// A built-in network by name (`mainnet`, `hoodi`, `sepolia`; ASCII case ignored).
    pub fn by_name(name: &str) -> Option<Self> {
        BUILTIN
            .iter()
            .find(|(builtin, _)| builtin.eq_ignore_ascii_case(name))
            .map(|(_, text)| Self::from_builtin_toml(text))
    }

    /// A custom network from the text of a TOML file. Unknown keys are refused; a fork left out
    /// is not scheduled; `slots_per_epoch` defaults to the preset's (32 mainnet, 8 minimal);
    /// epochs are TOML integers or decimal strings (for values above 2^63-1).
    ///
    /// ```toml
    /// name = "kurtosis-devnet"
    /// preset = "minimal"                 # "mainnet" or "minimal"
    /// genesis_fork_version = "0x10000038"
    /// slots_per_epoch = 8                # optional
    /// # optional: bind the slashing database to this network at start
    /// genesis_validators_root = "0x83431ec7fcf92cfc44947fc0418e831c25e1d0806590231c439830db7ad54fda"
    /// # optional: Unix time of slot 0 (without it far-future duties are not refused)
    /// genesis_time = 1700000000
    /// seconds_per_slot = 6               # optional, default 12
    ///
    /// [forks]
    /// altair    = { version = "0x20000038", epoch = 0 }
    /// bellatrix = { version = "0x30000038", epoch = 0 }
    /// capella   = { version = "0x40000038", epoch = 0 }
    /// deneb     = { version = "0x50000038", epoch = 0 }
    /// electra   = { version = "0x60000038", epoch = 10 }
    /// # fulu left out: not scheduled
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, NetworkConfigError> {
        let file: NetworkFile =
            toml::from_str(text).map_err(|e| NetworkConfigError::Toml(e.to_string()))?;
        let table = file.forks;
        let forks = [
            (ForkName::Altair, table.altair),
            (ForkName::Bellatrix, table.bellatrix),
            (ForkName::Capella, table.capella),
            (ForkName::Deneb, table.deneb),
            (ForkName::Electra, table.electra),
            (ForkName::Fulu, table.fulu),
        ]
        .into_iter()
        .filter_map(|(fork, entry)| {
            entry.map(|entry| ScheduledFork {
                fork,
                version: entry.version,
                epoch: Epoch(entry.epoch),
            })
        })
        .collect();
        let mut network = Self::new(
            file.name,
            file.preset,
            file.genesis_fork_version,
            file.slots_per_epoch
                .unwrap_or_else(|| file.preset.slots_per_epoch()),
            forks,
        )?;
        network.genesis_validators_root = file.genesis_validators_root;
        network.genesis_time = file.genesis_time;
        if let Some(seconds) = file.seconds_per_slot {
            if seconds == 0 {
                return Err(NetworkConfigError::Toml(
                    "seconds_per_slot must be at least 1".into(),
                ));
            }
            network.seconds_per_slot = seconds;
        }
        Ok(network)
    }

    /// Scheduled forks after genesis, in activation order.
    pub fn forks(&self) -> &[ScheduledFork] {
        &self.forks
    }

    /// The epoch of `slot`. (`slots_per_epoch` is public; a value of 0 set after construction is
    /// treated as 1 rather than dividing by zero.)
    pub fn epoch_at_slot(&self, slot: Slot) -> Epoch {
        slot.epoch(self.slots_per_epoch.max(1))
    }

    /// The fork active at `epoch`.
    pub fn fork_at_epoch(&self, epoch: Epoch) -> ForkName {
        self.forks
            .iter()
            .rev()
            .find(|scheduled| scheduled.epoch <= epoch)
            .map_or(ForkName::Phase0, |scheduled| scheduled.fork)
    }

    /// The fork active at `slot`: it decides the SSZ schema of full blocks and aggregates.
    pub fn fork_at_slot(&self, slot: Slot) -> ForkName {
        self.fork_at_epoch(self.epoch_at_slot(slot))
    }

    /// The version of `fork` on this network, if it is scheduled.
    pub fn fork_version(&self, fork: ForkName) -> Option<ForkVersion> {
        if fork == ForkName::Phase0 {
            return Some(self.genesis_fork_version);
        }
        self.forks
            .iter()
            .find(|scheduled| scheduled.fork == fork)
            .map(|scheduled| scheduled.version)
    }

    /// One of [`BUILTIN`], by its exact name.
    fn builtin(name: &str) -> Self {
        Self::by_name(name).expect("every built-in constructor names an entry of BUILTIN")
    }

    /// A built-in network file. They are part of the source and the tests parse every one of
    /// them, so a file that fails to parse is a bug caught before release, not input.
    fn from_builtin_toml(text: &str) -> Self {
        Self::from_toml_str(text).expect("built-in network files are valid (see the tests)")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkFile {
    name: String,
    #[serde(default)]
    genesis_validators_root: Option<Root>,
    /// Unix seconds of slot 0 (optional; enables the far-future duty check).
    #[serde(default, deserialize_with = "optional_uint64")]
    genesis_time: Option<u64>,
    #[serde(default, deserialize_with = "optional_uint64")]
    seconds_per_slot: Option<u64>,
    preset: Preset,
    genesis_fork_version: ForkVersion,
    #[serde(default, deserialize_with = "optional_uint64")]
    slots_per_epoch: Option<u64>,
    #[serde(default)]
    forks: ForkTable,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForkTable {
    altair: Option<ForkEntry>,
    bellatrix: Option<ForkEntry>,
    capella: Option<ForkEntry>,
    deneb: Option<ForkEntry>,
    electra: Option<ForkEntry>,
    fulu: Option<ForkEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForkEntry {
    version: ForkVersion,
    #[serde(with = "quoted_u64")]
    epoch: u64,
}

fn optional_uint64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    quoted_u64::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVNET: &str = r#"
        name = "kurtosis-devnet"
        preset = "minimal"
        genesis_fork_version = "0x10000038"

        [forks]
        altair    = { version = "0x20000038", epoch = 0 }
        bellatrix = { version = "0x30000038", epoch = 0 }
        capella   = { version = "0x40000038", epoch = 0 }
        deneb     = { version = "0x50000038", epoch = 0 }
        electra   = { version = "0x60000038", epoch = 10 }
        fulu      = { version = "0x70000038", epoch = "18446744073709551615" }
    "#;

    /// The example of `Network::from_toml_str`'s documentation, verbatim.
    const DOC_EXAMPLE: &str = r#"
name = "kurtosis-devnet"
preset = "minimal"                 # "mainnet" or "minimal"
genesis_fork_version = "0x10000038"
slots_per_epoch = 8                # optional

[forks]
altair    = { version = "0x20000038", epoch = 0 }
bellatrix = { version = "0x30000038", epoch = 0 }
capella   = { version = "0x40000038", epoch = 0 }
deneb     = { version = "0x50000038", epoch = 0 }
electra   = { version = "0x60000038", epoch = 10 }
# fulu left out: not scheduled
"#;

    #[test]
    fn documented_example_parses() {
        let network = Network::from_toml_str(DOC_EXAMPLE).expect("documented example");
        assert_eq!(network.forks().len(), 5);
        assert_eq!(network.fork_version(ForkName::Fulu), None);
        assert_eq!(
            network.fork_version(ForkName::Electra),
            Some(ForkVersion([0x60, 0, 0, 0x38]))
        );
        assert_eq!(network.fork_at_slot(Slot(u64::MAX)), ForkName::Electra);
    }

    fn root(text: &str) -> Option<Root> {
        let mut root = [0u8; 32];
        hex::decode_to_slice(text, &mut root).expect("constant root is 64 hex digits");
        Some(Root(root))
    }

    /// Mainnet's values, written out here independently of `networks/mainnet.toml`.
    #[test]
    fn mainnet_values_are_pinned() {
        let mainnet = Network::mainnet();
        assert_eq!(mainnet.name, "mainnet");
        assert_eq!(mainnet.preset, Preset::Mainnet);
        assert_eq!(mainnet.slots_per_epoch, 32);
        assert_eq!(mainnet.genesis_fork_version, ForkVersion([0, 0, 0, 0]));
        assert_eq!(
            mainnet.genesis_validators_root,
            root("4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95")
        );
        let schedule: Vec<(ForkName, [u8; 4], u64)> = mainnet
            .forks()
            .iter()
            .map(|scheduled| (scheduled.fork, scheduled.version.0, scheduled.epoch.0))
            .collect();
        assert_eq!(
            schedule,
            [
                (ForkName::Altair, [1, 0, 0, 0], 74_240),
                (ForkName::Bellatrix, [2, 0, 0, 0], 144_896),
                (ForkName::Capella, [3, 0, 0, 0], 194_048),
                (ForkName::Deneb, [4, 0, 0, 0], 269_568),
                (ForkName::Electra, [5, 0, 0, 0], 364_032),
                (ForkName::Fulu, [6, 0, 0, 0], 411_392),
            ]
        );
    }

    /// The testnets' genesis validators roots and last forks, written out independently too.
    #[test]
    fn testnet_values_are_pinned() {
        let hoodi = Network::hoodi();
        assert_eq!(
            hoodi.genesis_validators_root,
            root("212f13fc4df078b6cb7db228f1c8307566dcecf900867401a92023d7ba99cb5f")
        );
        assert_eq!(
            hoodi.genesis_fork_version,
            ForkVersion([0x10, 0, 0x09, 0x10])
        );
        assert_eq!(
            hoodi.fork_version(ForkName::Fulu),
            Some(ForkVersion([0x70, 0, 0x09, 0x10]))
        );
        let sepolia = Network::sepolia();
        assert_eq!(
            sepolia.genesis_validators_root,
            root("d8ea171f3c94aea21ebc42a1ed61052acf3f9209c00e4efbaaddac09ed9b8078")
        );
        assert_eq!(
            sepolia.fork_version(ForkName::Electra),
            Some(ForkVersion([0x90, 0, 0, 0x74]))
        );
        assert_eq!(sepolia.fork_at_epoch(Epoch(222_463)), ForkName::Deneb);
        assert_eq!(sepolia.fork_at_epoch(Epoch(222_464)), ForkName::Electra);
    }

    /// Every built-in file parses, under the name it is listed by, as a mainnet-preset network
    /// with the whole schedule and a genesis validators root.
    #[test]
    fn builtin_files_parse_under_their_names() {
        for (name, text) in BUILTIN {
            let network = Network::from_toml_str(text).expect(name);
            assert_eq!(network.name, name);
            assert_eq!(network.preset, Preset::Mainnet, "{name}");
            assert_eq!(network.slots_per_epoch, 32, "{name}");
            assert_eq!(network.forks().len(), ForkName::ALL.len() - 1, "{name}");
            assert!(network.genesis_validators_root.is_some(), "{name}");
        }
    }

    #[test]
    fn mainnet_fork_boundaries() {
        let mainnet = Network::mainnet();
        assert_eq!(mainnet.fork_at_slot(Slot(0)), ForkName::Phase0);
        assert_eq!(
            mainnet.fork_at_slot(Slot(74_240 * 32 - 1)),
            ForkName::Phase0
        );
        assert_eq!(mainnet.fork_at_slot(Slot(74_240 * 32)), ForkName::Altair);
        assert_eq!(
            mainnet.fork_at_slot(Slot(364_032 * 32 - 1)),
            ForkName::Deneb
        );
        assert_eq!(mainnet.fork_at_slot(Slot(364_032 * 32)), ForkName::Electra);
        assert_eq!(mainnet.fork_at_slot(Slot(u64::MAX)), ForkName::Fulu);
        assert_eq!(
            mainnet.fork_version(ForkName::Deneb),
            Some(ForkVersion([4, 0, 0, 0]))
        );
    }

    #[test]
    fn builtins_are_valid_and_found_by_name() {
        for name in ["mainnet", "Hoodi", "SEPOLIA"] {
            let network = Network::by_name(name).expect("built-in network");
            let rebuilt = Network::new(
                network.name.clone(),
                network.preset,
                network.genesis_fork_version,
                network.slots_per_epoch,
                network.forks().to_vec(),
            )
            .map(|mut rebuilt| {
                rebuilt.genesis_validators_root = network.genesis_validators_root;
                rebuilt.genesis_time = network.genesis_time;
                rebuilt
            });
            assert_eq!(rebuilt.as_ref(), Ok(&network), "{name}");
            assert!(network.genesis_validators_root.is_some(), "{name}");
            assert!(network.clock().is_some(), "{name}: genesis_time");
            assert_eq!(network.forks().len(), 6);
        }
        assert!(Network::by_name("holesky-ish").is_none());
        assert_eq!(Network::mainnet().genesis_time, Some(1_606_824_023));
        let custom = Network::from_toml_str(
            "name = \"d\"\npreset = \"minimal\"\ngenesis_fork_version = \"0x10000038\"\ngenesis_time = \"1700000000\"\nseconds_per_slot = 6\n",
        )
        .unwrap();
        let clock = custom.clock().unwrap();
        assert_eq!(
            (
                clock.genesis_time,
                clock.seconds_per_slot,
                clock.slots_per_epoch
            ),
            (1_700_000_000, 6, 8)
        );
        assert!(Network::from_toml_str(
            "name = \"d\"\npreset = \"minimal\"\ngenesis_fork_version = \"0x10000038\"\nseconds_per_slot = 0\n",
        )
        .is_err());
        let hoodi = Network::hoodi();
        assert_eq!(hoodi.fork_at_slot(Slot(0)), ForkName::Deneb);
        assert_eq!(hoodi.fork_at_epoch(Epoch(2_047)), ForkName::Deneb);
        assert_eq!(hoodi.fork_at_epoch(Epoch(2_048)), ForkName::Electra);
        assert_eq!(hoodi.fork_at_epoch(Epoch(50_688)), ForkName::Fulu);
        let sepolia = Network::sepolia();
        assert_eq!(sepolia.fork_at_epoch(Epoch(272_639)), ForkName::Electra);
        assert_eq!(sepolia.fork_at_epoch(Epoch(272_640)), ForkName::Fulu);
        assert_eq!(
            sepolia.fork_version(ForkName::Phase0),
            Some(ForkVersion([0x90, 0, 0, 0x69]))
        );
        assert_eq!(
            Network::sepolia().fork_at_slot(Slot(50 * 32)),
            ForkName::Altair
        );
    }

    #[test]
    fn devnet_from_toml() {
        let network = Network::from_toml_str(DEVNET).expect("valid devnet");
        assert_eq!(network.name, "kurtosis-devnet");
        assert_eq!(network.preset, Preset::Minimal);
        assert_eq!(network.slots_per_epoch, 8);
        assert_eq!(
            network.genesis_fork_version,
            ForkVersion([0x10, 0, 0, 0x38])
        );
        assert_eq!(network.fork_at_slot(Slot(79)), ForkName::Deneb);
        assert_eq!(network.fork_at_slot(Slot(80)), ForkName::Electra);
        assert_eq!(network.fork_at_slot(Slot(u64::MAX)), ForkName::Electra);
    }

    #[test]
    fn toml_refusals() {
        let unknown_key = DEVNET.replace("preset = ", "color = \"blue\"\npreset = ");
        assert!(matches!(
            Network::from_toml_str(&unknown_key),
            Err(NetworkConfigError::Toml(_))
        ));
        let unknown_fork = format!("{DEVNET}\ngloas = {{ version = \"0x80000038\", epoch = 1 }}");
        assert!(matches!(
            Network::from_toml_str(&unknown_fork),
            Err(NetworkConfigError::Toml(_))
        ));
        let gap = DEVNET.replace("capella   = { version = \"0x40000038\", epoch = 0 }", "");
        assert_eq!(
            Network::from_toml_str(&gap),
            Err(NetworkConfigError::MissingEarlierFork {
                fork: ForkName::Deneb,
                missing: ForkName::Capella
            })
        );
        let backwards = DEVNET.replace("epoch = 10", "epoch = 0").replace(
            "deneb     = { version = \"0x50000038\", epoch = 0 }",
            "deneb     = { version = \"0x50000038\", epoch = 5 }",
        );
        assert!(matches!(
            Network::from_toml_str(&backwards),
            Err(NetworkConfigError::EpochsOutOfOrder { .. })
        ));
        let zero_slots = DEVNET.replace(
            "genesis_fork_version = \"0x10000038\"",
            "genesis_fork_version = \"0x10000038\"\nslots_per_epoch = 0",
        );
        assert_eq!(
            Network::from_toml_str(&zero_slots),
            Err(NetworkConfigError::ZeroSlotsPerEpoch)
        );
        let negative = DEVNET.replace("epoch = 10", "epoch = -1");
        assert!(Network::from_toml_str(&negative).is_err());
        let short_version = DEVNET.replace("0x60000038", "0x600000");
        assert!(Network::from_toml_str(&short_version).is_err());
        let duplicate = Network::new(
            "x",
            Preset::Mainnet,
            ForkVersion([0; 4]),
            32,
            vec![
                ScheduledFork {
                    fork: ForkName::Altair,
                    version: ForkVersion([1, 0, 0, 0]),
                    epoch: Epoch(1),
                },
                ScheduledFork {
                    fork: ForkName::Altair,
                    version: ForkVersion([1, 0, 0, 0]),
                    epoch: Epoch(2),
                },
            ],
        );
        assert_eq!(
            duplicate,
            Err(NetworkConfigError::DuplicateFork(ForkName::Altair))
        );
    }
}
