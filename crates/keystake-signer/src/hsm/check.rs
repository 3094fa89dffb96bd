//! `hsm check`: does the configured HSM offer every mechanism this appliance needs?
//!
//! [`REQUIREMENTS`] lists each mechanism with what it is used for and the capability the
//! appliance needs from it (encrypt and decrypt, sign, derive, generate with a key size). The
//! question is asked through [`MechanismQuery`] — the token in production ([`Pkcs11Mechanisms`]:
//! `C_GetMechanismInfo` on the configured token's slot, so nothing is generated or changed),
//! and a test double where a mechanism must be missing (SoftHSM2 offers them all). The
//! [`CheckReport`] says supported/missing per mechanism with the reason, and [`CheckReport::ok`]
//! is false when a required one is missing (the command then exits non-zero).
//!
//! It refuses nothing itself; a token that cannot be found or asked is an error of the command
//! (the report needs an answer for every line).
#![forbid(unsafe_code)]

use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::slot::Slot;
use serde::Serialize;

use crate::hsm::pkcs11::{self, Pkcs11Config};
use crate::hsm::SealError;

/// What the appliance needs a mechanism for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Need {
    /// `CKM_AES_KEY_GEN`, 256-bit keys: `init` generates the sealing key inside the token.
    AesKeyGen,
    /// `CKM_AES_GCM` encrypt + decrypt: sealing and unsealing every share.
    AesGcm,
    /// `CKM_EC_KEY_PAIR_GEN` on P-256: `init` generates the TLS, identity and enrolment keys.
    EcKeyPairGen,
    /// `CKM_ECDSA` sign on P-256: TLS handshakes, DKG broadcasts, the signed audit head.
    Ecdsa,
    /// `CKM_ECDH1_DERIVE` on P-256: opening share packages with the enrolment key.
    Ecdh1Derive,
}

/// One line of the requirements.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub need: Need,
    /// The PKCS#11 name.
    pub mechanism: &'static str,
    /// What the appliance uses it for.
    pub used_for: &'static str,
    /// Whether the appliance cannot work without it.
    pub required: bool,
}

/// Everything the appliance needs, in the order `hsm check` prints it.
pub const REQUIREMENTS: [Requirement; 5] = [
    Requirement {
        need: Need::AesKeyGen,
        mechanism: "CKM_AES_KEY_GEN (256-bit)",
        used_for: "generating the sealing key inside the token (init)",
        required: true,
    },
    Requirement {
        need: Need::AesGcm,
        mechanism: "CKM_AES_GCM (encrypt, decrypt)",
        used_for: "sealing and unsealing key shares",
        required: true,
    },
    Requirement {
        need: Need::EcKeyPairGen,
        mechanism: "CKM_EC_KEY_PAIR_GEN (P-256)",
        used_for: "generating the TLS, identity and enrolment keys inside the token (init)",
        required: true,
    },
    Requirement {
        need: Need::Ecdsa,
        mechanism: "CKM_ECDSA (sign, P-256)",
        used_for: "TLS handshakes, DKG broadcast signatures, the signed audit head",
        required: true,
    },
    Requirement {
        need: Need::Ecdh1Derive,
        mechanism: "CKM_ECDH1_DERIVE (P-256)",
        used_for: "opening share packages with the enrolment key (keys import-share)",
        required: true,
    },
];

/// The answer for one mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Support {
    Supported,
    Missing { reason: String },
}

/// Asks an HSM whether it offers a mechanism the way the appliance needs it.
pub trait MechanismQuery {
    fn support(&self, need: Need) -> Result<Support, SealError>;
    /// Which HSM was asked (no secrets).
    fn describe(&self) -> String;
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CheckLine {
    pub mechanism: &'static str,
    pub need: Need,
    pub used_for: &'static str,
    pub required: bool,
    #[serde(flatten)]
    pub support: Support,
}

/// The report `hsm check` prints.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub hsm: String,
    pub ok: bool,
    pub mechanisms: Vec<CheckLine>,
}

impl CheckReport {
    /// Ask `query` about every requirement.
    pub fn run(query: &dyn MechanismQuery) -> Result<CheckReport, SealError> {
        let mut mechanisms = Vec::with_capacity(REQUIREMENTS.len());
        for requirement in REQUIREMENTS {
            mechanisms.push(CheckLine {
                mechanism: requirement.mechanism,
                need: requirement.need,
                used_for: requirement.used_for,
                required: requirement.required,
                support: query.support(requirement.need)?,
            });
        }
        let ok = mechanisms
            .iter()
            .all(|line| !line.required || line.support == Support::Supported);
        Ok(CheckReport {
            hsm: query.describe(),
            ok,
            mechanisms,
        })
    }

    /// The human-readable form: one line per mechanism.
    pub fn text(&self) -> String {
        let mut text = format!("HSM: {}\n", self.hsm);
        for line in &self.mechanisms {
            let (mark, detail) = match &line.support {
                Support::Supported => ("supported", String::new()),
                Support::Missing { reason } => ("MISSING  ", format!(" — {reason}")),
            };
            let required = if line.required {
                "required"
            } else {
                "optional"
            };
            text.push_str(&format!(
                "  {mark}  {:<34} {required}: {}{detail}\n",
                line.mechanism, line.used_for
            ));
        }
        text.push_str(if self.ok {
            "all required mechanisms are supported\n"
        } else {
            "a required mechanism is missing: this HSM cannot run the appliance\n"
        });
        text
    }
}

/// The mechanisms of the configured PKCS#11 token (`C_GetMechanismInfo` on its slot).
pub struct Pkcs11Mechanisms {
    context: cryptoki::context::Pkcs11,
    slot: Slot,
    description: String,
}

impl Pkcs11Mechanisms {
    /// Find the configured token (no login needed to ask about mechanisms).
    pub fn open(config: &Pkcs11Config) -> Result<Self, SealError> {
        let (context, slot) = pkcs11::token_slot(config)?;
        Ok(Pkcs11Mechanisms {
            context,
            slot,
            description: format!(
                "pkcs11 token '{}' slot {} via {}",
                config.token_label,
                slot.id(),
                config.module.display()
            ),
        })
    }
}

/// AES key sizes are in bytes, EC key sizes in bits (PKCS#11 2.40 §2.3, §2.13).
fn size_supported(info: &MechanismInfo, size: usize) -> bool {
    info.min_key_size() <= size && size <= info.max_key_size()
}

fn missing(reason: impl Into<String>) -> Support {
    Support::Missing {
        reason: reason.into(),
    }
}

impl MechanismQuery for Pkcs11Mechanisms {
    fn support(&self, need: Need) -> Result<Support, SealError> {
        let mechanism = match need {
            Need::AesKeyGen => MechanismType::AES_KEY_GEN,
            Need::AesGcm => MechanismType::AES_GCM,
            Need::EcKeyPairGen => MechanismType::ECC_KEY_PAIR_GEN,
            Need::Ecdsa => MechanismType::ECDSA,
            Need::Ecdh1Derive => MechanismType::ECDH1_DERIVE,
        };
        let info = match self.context.get_mechanism_info(self.slot, mechanism) {
            Ok(info) => info,
            Err(CryptokiError::Pkcs11(RvError::MechanismInvalid, _)) => {
                return Ok(missing("the token does not offer it"))
            }
            Err(error) => {
                return Err(SealError::Unavailable(format!(
                    "asking the token about {mechanism}: {error}"
                )))
            }
        };
        Ok(match need {
            Need::AesKeyGen if !info.generate() => missing("offered, but not for key generation"),
            Need::AesKeyGen if !size_supported(&info, 32) => missing(format!(
                "256-bit keys are outside the token's range {}..{} bytes",
                info.min_key_size(),
                info.max_key_size()
            )),
            Need::AesGcm if !(info.encrypt() && info.decrypt()) => {
                missing("offered, but not for both encryption and decryption")
            }
            Need::EcKeyPairGen if !info.generate_key_pair() => {
                missing("offered, but not for key-pair generation")
            }
            Need::Ecdsa if !info.sign() => missing("offered, but not for signing"),
            Need::Ecdh1Derive if !info.derive() => missing("offered, but not for derivation"),
            Need::EcKeyPairGen | Need::Ecdsa | Need::Ecdh1Derive if !size_supported(&info, 256) => {
                missing(format!(
                    "P-256 is outside the token's key sizes {}..{} bits",
                    info.min_key_size(),
                    info.max_key_size()
                ))
            }
            _ => Support::Supported,
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// `hsm check` on the PKCS#11 token `config` names.
pub fn check_pkcs11(config: &Pkcs11Config) -> Result<CheckReport, SealError> {
    CheckReport::run(&Pkcs11Mechanisms::open(config)?)
}

/// The YubiHSM2 offers its own command set, not PKCS#11 mechanisms: the report maps each need
/// to the device algorithm that serves it (the sealing construction uses HMAC-SHA256, not
/// AES-GCM; see `hsm::yubihsm`), from the device's own list of algorithms.
#[cfg(feature = "yubihsm")]
pub struct YubiHsmAlgorithms {
    algorithms: Vec<::yubihsm::Algorithm>,
    description: String,
}

#[cfg(feature = "yubihsm")]
impl YubiHsmAlgorithms {
    pub fn from_client(client: &::yubihsm::Client, description: String) -> Result<Self, SealError> {
        let info = client
            .device_info()
            .map_err(|e| crate::hsm::yubihsm::hsm_error("reading the device info", e))?;
        Ok(YubiHsmAlgorithms {
            algorithms: info.algorithms,
            description,
        })
    }
}

#[cfg(feature = "yubihsm")]
impl MechanismQuery for YubiHsmAlgorithms {
    fn support(&self, need: Need) -> Result<Support, SealError> {
        use ::yubihsm::{asymmetric, ecdsa, hmac, Algorithm};
        let wanted = match need {
            // The YubiHSM2 seals with a device-held HMAC-SHA256 key (hsm::yubihsm).
            Need::AesKeyGen | Need::AesGcm => Algorithm::Hmac(hmac::Algorithm::Sha256),
            Need::EcKeyPairGen => Algorithm::Asymmetric(asymmetric::Algorithm::EcP256),
            Need::Ecdsa => Algorithm::Ecdsa(ecdsa::Algorithm::Sha256),
            // The enrolment scalar is derived from a device-held HMAC-SHA256 key and the ECDH
            // runs on the host (hsm::yubihsm_enrolment); the device's own ECDH is not used.
            Need::Ecdh1Derive => Algorithm::Hmac(hmac::Algorithm::Sha256),
        };
        Ok(if self.algorithms.contains(&wanted) {
            Support::Supported
        } else {
            missing(format!("the device does not list {wanted:?}"))
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}

/// A test double at the trait: the real token with one mechanism taken away.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// What a token without `removed` answers; everything else asks `real`.
    pub(crate) struct Without {
        pub(crate) real: Pkcs11Mechanisms,
        pub(crate) removed: Need,
    }

    impl MechanismQuery for Without {
        fn support(&self, need: Need) -> Result<Support, SealError> {
            if need == self.removed {
                Ok(missing("the token does not offer it"))
            } else {
                self.real.support(need)
            }
        }

        fn describe(&self) -> String {
            self.real.describe()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::Without;
    use super::*;
    use crate::hsm::pkcs11::test_support::{fresh_config, so_pin, user_pin};
    use crate::hsm::pkcs11::Pkcs11Sealer;

    fn token(purpose: &str) -> Pkcs11Config {
        let config = fresh_config(purpose);
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        config
    }

    #[test]
    fn softhsm2_supports_every_mechanism() {
        let config = token("check-all");
        let report = check_pkcs11(&config).unwrap();
        assert!(report.ok, "{}", report.text());
        assert_eq!(report.mechanisms.len(), REQUIREMENTS.len());
        assert!(report
            .mechanisms
            .iter()
            .all(|line| line.support == Support::Supported));
        assert!(report
            .text()
            .contains("all required mechanisms are supported"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["ok"], true);
        assert_eq!(json["mechanisms"][1]["need"], "aes-gcm");
        assert_eq!(json["mechanisms"][1]["status"], "supported");
    }

    #[test]
    fn a_missing_mechanism_fails_the_check_and_names_its_use() {
        let config = token("check-missing");
        for removed in REQUIREMENTS.map(|r| r.need) {
            let query = Without {
                real: Pkcs11Mechanisms::open(&config).unwrap(),
                removed,
            };
            let report = CheckReport::run(&query).unwrap();
            assert!(!report.ok, "{removed:?} missing must fail the check");
            let line = report
                .mechanisms
                .iter()
                .find(|l| l.need == removed)
                .unwrap();
            assert!(matches!(line.support, Support::Missing { .. }));
            let others_supported = report
                .mechanisms
                .iter()
                .filter(|l| l.support == Support::Supported)
                .count();
            assert_eq!(others_supported, REQUIREMENTS.len() - 1);
            assert!(report.text().contains("MISSING"));
            assert!(report.text().contains(line.used_for));
            let json = serde_json::to_value(&report).unwrap();
            assert_eq!(json["ok"], false);
        }
    }

    #[test]
    fn an_unknown_token_is_an_error_not_a_report() {
        let config = fresh_config("check-nothing");
        assert!(matches!(
            check_pkcs11(&config),
            Err(SealError::TokenNotFound { .. })
        ));
    }

    #[cfg(feature = "yubihsm")]
    #[test]
    fn the_yubihsm_mock_lists_its_algorithms() {
        let client = ::yubihsm::Client::open(
            ::yubihsm::Connector::mockhsm(),
            ::yubihsm::Credentials::default(),
            true,
        )
        .unwrap();
        let query = YubiHsmAlgorithms::from_client(&client, "mock".into()).unwrap();
        let report = CheckReport::run(&query).unwrap();
        let supported = |need: Need| {
            report
                .mechanisms
                .iter()
                .find(|l| l.need == need)
                .unwrap()
                .support
                == Support::Supported
        };
        assert!(supported(Need::AesGcm), "{}", report.text());
        assert!(supported(Need::Ecdsa), "{}", report.text());
        // Enrolment needs only HMAC-SHA256 on a YubiHSM2, which the mock has.
        assert!(supported(Need::Ecdh1Derive), "{}", report.text());
    }
}
