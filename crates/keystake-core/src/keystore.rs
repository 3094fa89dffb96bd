//! EIP-2335 BLS keystores: the JSON model, password normalisation, decryption and encryption.
//!
//! Pure: the caller reads the file and the password; this module only transforms bytes.
//!
//! Supported, exactly as EIP-2335 version 4: KDF `scrypt` or `pbkdf2` (PRF `hmac-sha256`),
//! checksum `sha256`, cipher `aes-128-ctr`, a 32-byte secret. The password is NFKD-normalised,
//! stripped of C0 (U+0000–U+001F), DEL (U+007F) and C1 (U+0080–U+009F) control codes, then UTF-8
//! encoded.
//!
//! Refused, with an error naming the problem: any other version, KDF, PRF, checksum or cipher;
//! `dklen` other than 32; an IV that is not 16 bytes or a secret that is not 32; KDF parameters that
//! would let a hostile file exhaust memory or time (scrypt `n` not a power of two or above 2^20,
//! scrypt memory above 1 GiB, pbkdf2 `c` above 2^24 …); a wrong password
//! ([`KeystoreError::WrongPassword`], from the checksum); a decrypted key whose public key differs
//! from the keystore's `pubkey` ([`KeystoreError::PublicKeyMismatch`]).
//!
//! The derived key, the normalised password and the plaintext live only in `Zeroizing` buffers.
//! Hex on the wire carries no `0x` prefix (as the EIP writes it); a prefix is tolerated on input.
#![forbid(unsafe_code)]

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{KeyIvInit, StreamCipher};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::bls;
use crate::types::BlsPublicKey;

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// The only keystore version this module reads and writes (EIP-2335).
pub const KEYSTORE_VERSION: u64 = 4;
/// Length of the derived key: 16 bytes of AES-128 key, then 16 bytes for the checksum.
const DERIVED_KEY_LEN: u64 = 32;
/// Largest scrypt `n` accepted (2^20).
const MAX_SCRYPT_LOG_N: u32 = 20;
/// Largest scrypt working memory accepted, `128 · n · r` bytes (1 GiB).
const MAX_SCRYPT_MEMORY_BYTES: u64 = 1 << 30;
/// Largest scrypt `p`: each unit of parallelism repeats the whole memory-hard loop.
const MAX_SCRYPT_P: u64 = 16;
/// Largest pbkdf2 iteration count (2^24, 64 times the EIP's 2^18).
const MAX_PBKDF2_ROUNDS: u64 = 1 << 24;
/// Largest salt accepted (the EIP uses 32 bytes).
const MAX_SALT_LEN: usize = 1024;

/// Why a keystore could not be parsed, decrypted or written. Never contains the password or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeystoreError {
    #[error("not an EIP-2335 keystore: {0}")]
    Json(String),
    #[error("unsupported keystore version {0} (only version 4, EIP-2335, is supported)")]
    UnsupportedVersion(u64),
    #[error("unsupported KDF {0:?} (supported: \"scrypt\", \"pbkdf2\")")]
    UnsupportedKdf(String),
    #[error("unsupported pbkdf2 PRF {0:?} (supported: \"hmac-sha256\")")]
    UnsupportedPrf(String),
    #[error("unsupported checksum function {0:?} (supported: \"sha256\")")]
    UnsupportedChecksum(String),
    #[error("unsupported cipher {0:?} (supported: \"aes-128-ctr\")")]
    UnsupportedCipher(String),
    #[error("refused KDF parameters: {0}")]
    KdfParameters(String),
    #[error("invalid keystore field {field}: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("wrong password (the keystore checksum does not match)")]
    WrongPassword,
    #[error("the decrypted secret is not a valid BLS secret key")]
    InvalidSecretKey,
    #[error(
        "the decrypted key's public key {actual} differs from the keystore's pubkey {expected}"
    )]
    PublicKeyMismatch {
        expected: BlsPublicKey,
        actual: BlsPublicKey,
    },
}

/// An EIP-2335 keystore. Holds only public or encrypted data, so it may be printed and cloned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keystore {
    pub crypto: KeystoreCrypto,
    pub description: Option<String>,
    /// Required by the EIP for a secret key, but some tools omit it; when present, decryption
    /// checks the key against it.
    pub pubkey: Option<BlsPublicKey>,
    /// EIP-2334 derivation path; `""` when unknown (also what a missing field reads as).
    pub path: String,
    pub uuid: Option<Uuid>,
}

/// The `crypto` object: one KDF, one checksum, one cipher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeystoreCrypto {
    pub kdf: Kdf,
    /// `SHA256(derived_key[16..32] | cipher_message)`.
    pub checksum: [u8; 32],
    pub cipher: Aes128CtrCipher,
}

/// The password-based key derivation, with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kdf {
    Scrypt {
        n: u32,
        r: u32,
        p: u32,
        salt: Vec<u8>,
    },
    /// PBKDF2 with HMAC-SHA-256 (the only PRF EIP-2335 names).
    Pbkdf2 { c: u32, salt: Vec<u8> },
}

/// AES-128-CTR over the 32-byte secret key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aes128CtrCipher {
    pub iv: [u8; 16],
    /// The encrypted 32-byte big-endian secret key.
    pub message: [u8; 32],
}

/// KDF and parameters for [`encrypt`]. Salt, IV and UUID come from the RNG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KdfChoice {
    Scrypt { n: u32, r: u32, p: u32 },
    Pbkdf2 { c: u32 },
}

impl KdfChoice {
    /// The EIP-2335 test vector's scrypt parameters (n = 2^18, r = 8, p = 1), also what
    /// staking-deposit-cli writes.
    pub const EIP2335_SCRYPT: KdfChoice = KdfChoice::Scrypt {
        n: 1 << 18,
        r: 8,
        p: 1,
    };
    /// The EIP-2335 test vector's pbkdf2 parameters (c = 2^18).
    pub const EIP2335_PBKDF2: KdfChoice = KdfChoice::Pbkdf2 { c: 1 << 18 };
    /// Fast and worthless against brute force: for tests only, never for a real key.
    pub const INSECURE_FAST_FOR_TESTS: KdfChoice = KdfChoice::Pbkdf2 { c: 2 };
}

impl Default for KdfChoice {
    fn default() -> Self {
        Self::EIP2335_SCRYPT
    }
}

/// Parse keystore JSON, refusing anything outside the supported subset of EIP-2335.
pub fn parse(json: &str) -> Result<Keystore, KeystoreError> {
    let wire: WireKeystore =
        serde_json::from_str(json).map_err(|e| KeystoreError::Json(e.to_string()))?;
    Keystore::try_from(wire)
}

/// Decrypt `keystore` with `password`. A wrong password is [`KeystoreError::WrongPassword`];
/// a key that does not match the keystore's `pubkey` is [`KeystoreError::PublicKeyMismatch`].
pub fn decrypt(
    keystore: &Keystore,
    password: &SecretString,
) -> Result<bls::SecretKey, KeystoreError> {
    let crypto = &keystore.crypto;
    let password = normalize_password(password.expose_secret());
    let derived_key = derive_key(&crypto.kdf, &password)?;
    let expected_checksum = checksum(&derived_key, &crypto.cipher.message);
    if !bool::from(expected_checksum.ct_eq(&crypto.checksum)) {
        return Err(KeystoreError::WrongPassword);
    }
    let mut secret = Zeroizing::new(crypto.cipher.message);
    apply_aes_128_ctr(&derived_key, &crypto.cipher.iv, secret.as_mut_slice());
    let key =
        bls::SecretKey::from_zeroizing(secret).map_err(|_| KeystoreError::InvalidSecretKey)?;
    if let Some(expected) = keystore.pubkey {
        let actual = key.public_key();
        if actual != expected {
            return Err(KeystoreError::PublicKeyMismatch { expected, actual });
        }
    }
    Ok(key)
}

/// Encrypt `key` under `password` into a version-4 keystore with a random salt, IV and UUID, the
/// key's `pubkey`, an empty `path` and no description (callers may set both afterwards).
/// Fails only when `kdf` carries parameters this module would refuse to read back.
pub fn encrypt<R: rand_core::RngCore + rand_core::CryptoRng>(
    key: &bls::SecretKey,
    password: &SecretString,
    kdf: KdfChoice,
    rng: &mut R,
) -> Result<Keystore, KeystoreError> {
    let mut salt = vec![0u8; 32];
    rng.fill_bytes(&mut salt);
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    let mut uuid_bytes = [0u8; 16];
    rng.fill_bytes(&mut uuid_bytes);

    let kdf = match kdf {
        KdfChoice::Scrypt { n, r, p } => Kdf::Scrypt { n, r, p, salt },
        KdfChoice::Pbkdf2 { c } => Kdf::Pbkdf2 { c, salt },
    };
    let password = normalize_password(password.expose_secret());
    let derived_key = derive_key(&kdf, &password)?;
    let mut message = key.to_bytes();
    apply_aes_128_ctr(&derived_key, &iv, message.as_mut_slice());
    let message: [u8; 32] = *message;
    Ok(Keystore {
        crypto: KeystoreCrypto {
            checksum: checksum(&derived_key, &message),
            kdf,
            cipher: Aes128CtrCipher { iv, message },
        },
        description: None,
        pubkey: Some(key.public_key()),
        path: String::new(),
        uuid: Some(uuid::Builder::from_random_bytes(uuid_bytes).into_uuid()),
    })
}

/// EIP-2335 password encoding: NFKD, control codes removed, UTF-8. The output buffer is sized
/// exactly in a first pass so it never reallocates (a reallocation would leave an unwiped copy).
fn normalize_password(password: &str) -> Zeroizing<Vec<u8>> {
    fn is_control(c: char) -> bool {
        matches!(c, '\u{00}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
    }
    let kept = || password.nfkd().filter(|c| !is_control(*c));
    let len = kept().map(char::len_utf8).sum();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let mut buffer = Zeroizing::new([0u8; 4]);
    for c in kept() {
        out.extend_from_slice(c.encode_utf8(buffer.as_mut_slice()).as_bytes());
    }
    out
}

/// Check KDF parameters against the bounds in the module doc.
fn check_kdf(kdf: &Kdf) -> Result<(), KeystoreError> {
    let refuse = |reason: String| Err(KeystoreError::KdfParameters(reason));
    match kdf {
        Kdf::Scrypt { n, r, p, salt } => {
            if !n.is_power_of_two() || *n < 2 {
                return refuse(format!("scrypt n = {n} is not a power of two >= 2"));
            }
            let log_n = n.trailing_zeros();
            if log_n > MAX_SCRYPT_LOG_N {
                return refuse(format!("scrypt n = {n} exceeds 2^{MAX_SCRYPT_LOG_N}"));
            }
            if *r == 0 || *p == 0 {
                return refuse(format!("scrypt r = {r} and p = {p} must be at least 1"));
            }
            let memory = 128 * u64::from(*n) * u64::from(*r);
            if memory > MAX_SCRYPT_MEMORY_BYTES {
                return refuse(format!(
                    "scrypt n = {n}, r = {r} needs {memory} bytes, more than {MAX_SCRYPT_MEMORY_BYTES}"
                ));
            }
            if u64::from(*p) > MAX_SCRYPT_P {
                return refuse(format!("scrypt p = {p} exceeds {MAX_SCRYPT_P}"));
            }
            check_salt(salt)
        }
        Kdf::Pbkdf2 { c, salt } => {
            if *c == 0 || u64::from(*c) > MAX_PBKDF2_ROUNDS {
                return refuse(format!("pbkdf2 c = {c} is not in [1, {MAX_PBKDF2_ROUNDS}]"));
            }
            check_salt(salt)
        }
    }
}

fn check_salt(salt: &[u8]) -> Result<(), KeystoreError> {
    if salt.len() > MAX_SALT_LEN {
        return Err(KeystoreError::KdfParameters(format!(
            "salt of {} bytes exceeds {MAX_SALT_LEN}",
            salt.len()
        )));
    }
    Ok(())
}

/// The 32-byte decryption key derived from the normalised password.
fn derive_key(kdf: &Kdf, password: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeystoreError> {
    check_kdf(kdf)?;
    let mut derived = Zeroizing::new([0u8; 32]);
    match kdf {
        Kdf::Scrypt { n, r, p, salt } => {
            // `check_kdf` made `n` a power of two no larger than 2^20: log2(n) fits a u8.
            let log_n = n.trailing_zeros() as u8;
            let params = scrypt::Params::new(log_n, *r, *p, derived.len())
                .map_err(|e| KeystoreError::KdfParameters(format!("scrypt: {e}")))?;
            scrypt::scrypt(password, salt, &params, derived.as_mut_slice())
                .map_err(|e| KeystoreError::KdfParameters(format!("scrypt: {e}")))?;
        }
        Kdf::Pbkdf2 { c, salt } => {
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, *c, derived.as_mut_slice());
        }
    }
    Ok(derived)
}

fn checksum(derived_key: &[u8; 32], cipher_message: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(&derived_key[16..]);
    hasher.update(cipher_message);
    hasher.finalize().into()
}

/// AES-128-CTR in place, keyed with the first 16 bytes of the derived key (encrypt = decrypt).
fn apply_aes_128_ctr(derived_key: &[u8; 32], iv: &[u8; 16], data: &mut [u8]) {
    let mut cipher = Aes128Ctr::new(
        GenericArray::from_slice(&derived_key[..16]),
        GenericArray::from_slice(iv),
    );
    cipher.apply_keystream(data);
}

// ---- wire format -------------------------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct WireKeystore {
    crypto: WireCrypto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pubkey: Option<String>,
    #[serde(default)]
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    version: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireCrypto {
    kdf: WireModule,
    checksum: WireModule,
    cipher: WireModule,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireModule {
    function: String,
    params: serde_json::Value,
    message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireScryptParams {
    dklen: u64,
    n: u64,
    p: u64,
    r: u64,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePbkdf2Params {
    dklen: u64,
    c: u64,
    prf: String,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAesParams {
    iv: String,
}

fn decode_hex(field: &'static str, text: &str) -> Result<Vec<u8>, KeystoreError> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    hex::decode(digits).map_err(|e| KeystoreError::InvalidField {
        field,
        reason: format!("invalid hex: {e}"),
    })
}

fn decode_hex_array<const N: usize>(
    field: &'static str,
    text: &str,
) -> Result<[u8; N], KeystoreError> {
    let bytes = decode_hex(field, text)?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| KeystoreError::InvalidField {
        field,
        reason: format!("expected {N} bytes, got {}", bytes.len()),
    })
}

fn params_of<T: serde::de::DeserializeOwned>(
    field: &'static str,
    params: serde_json::Value,
) -> Result<T, KeystoreError> {
    serde_json::from_value(params).map_err(|e| KeystoreError::InvalidField {
        field,
        reason: e.to_string(),
    })
}

fn to_u32(name: &str, value: u64) -> Result<u32, KeystoreError> {
    u32::try_from(value)
        .map_err(|_| KeystoreError::KdfParameters(format!("{name} = {value} is far too large")))
}

fn check_dklen(dklen: u64) -> Result<(), KeystoreError> {
    if dklen != DERIVED_KEY_LEN {
        return Err(KeystoreError::KdfParameters(format!(
            "dklen = {dklen}, only {DERIVED_KEY_LEN} is supported"
        )));
    }
    Ok(())
}

fn kdf_from_wire(module: WireModule) -> Result<Kdf, KeystoreError> {
    if !module.message.is_empty() {
        return Err(KeystoreError::InvalidField {
            field: "crypto.kdf.message",
            reason: "must be empty".to_owned(),
        });
    }
    let kdf = match module.function.as_str() {
        "scrypt" => {
            let params: WireScryptParams = params_of("crypto.kdf.params", module.params)?;
            check_dklen(params.dklen)?;
            Kdf::Scrypt {
                n: to_u32("scrypt n", params.n)?,
                r: to_u32("scrypt r", params.r)?,
                p: to_u32("scrypt p", params.p)?,
                salt: decode_hex("crypto.kdf.params.salt", &params.salt)?,
            }
        }
        "pbkdf2" => {
            let params: WirePbkdf2Params = params_of("crypto.kdf.params", module.params)?;
            check_dklen(params.dklen)?;
            if params.prf != "hmac-sha256" {
                return Err(KeystoreError::UnsupportedPrf(params.prf));
            }
            Kdf::Pbkdf2 {
                c: to_u32("pbkdf2 c", params.c)?,
                salt: decode_hex("crypto.kdf.params.salt", &params.salt)?,
            }
        }
        _ => return Err(KeystoreError::UnsupportedKdf(module.function)),
    };
    check_kdf(&kdf)?;
    Ok(kdf)
}

impl TryFrom<WireKeystore> for Keystore {
    type Error = KeystoreError;

    fn try_from(wire: WireKeystore) -> Result<Self, KeystoreError> {
        if wire.version != KEYSTORE_VERSION {
            return Err(KeystoreError::UnsupportedVersion(wire.version));
        }
        let WireCrypto {
            kdf,
            checksum,
            cipher,
        } = wire.crypto;
        let kdf = kdf_from_wire(kdf)?;

        if checksum.function != "sha256" {
            return Err(KeystoreError::UnsupportedChecksum(checksum.function));
        }
        if checksum.params != serde_json::json!({}) {
            return Err(KeystoreError::InvalidField {
                field: "crypto.checksum.params",
                reason: "must be empty for sha256".to_owned(),
            });
        }
        let checksum = decode_hex_array::<32>("crypto.checksum.message", &checksum.message)?;

        if cipher.function != "aes-128-ctr" {
            return Err(KeystoreError::UnsupportedCipher(cipher.function));
        }
        let params: WireAesParams = params_of("crypto.cipher.params", cipher.params)?;
        let cipher = Aes128CtrCipher {
            iv: decode_hex_array::<16>("crypto.cipher.params.iv", &params.iv)?,
            message: decode_hex_array::<32>("crypto.cipher.message", &cipher.message)?,
        };

        let pubkey = wire
            .pubkey
            .map(|text| decode_hex_array::<48>("pubkey", &text).map(BlsPublicKey))
            .transpose()?;
        let uuid = wire
            .uuid
            .map(|text| {
                Uuid::parse_str(&text).map_err(|e| KeystoreError::InvalidField {
                    field: "uuid",
                    reason: e.to_string(),
                })
            })
            .transpose()?;
        Ok(Keystore {
            crypto: KeystoreCrypto {
                kdf,
                checksum,
                cipher,
            },
            description: wire.description,
            pubkey,
            path: wire.path,
            uuid,
        })
    }
}

impl From<&Keystore> for WireKeystore {
    fn from(keystore: &Keystore) -> Self {
        let crypto = &keystore.crypto;
        let kdf = match &crypto.kdf {
            Kdf::Scrypt { n, r, p, salt } => WireModule {
                function: "scrypt".to_owned(),
                params: serde_json::json!({
                    "dklen": DERIVED_KEY_LEN,
                    "n": n,
                    "p": p,
                    "r": r,
                    "salt": hex::encode(salt),
                }),
                message: String::new(),
            },
            Kdf::Pbkdf2 { c, salt } => WireModule {
                function: "pbkdf2".to_owned(),
                params: serde_json::json!({
                    "dklen": DERIVED_KEY_LEN,
                    "c": c,
                    "prf": "hmac-sha256",
                    "salt": hex::encode(salt),
                }),
                message: String::new(),
            },
        };
        WireKeystore {
            crypto: WireCrypto {
                kdf,
                checksum: WireModule {
                    function: "sha256".to_owned(),
                    params: serde_json::json!({}),
                    message: hex::encode(crypto.checksum),
                },
                cipher: WireModule {
                    function: "aes-128-ctr".to_owned(),
                    params: serde_json::json!({ "iv": hex::encode(crypto.cipher.iv) }),
                    message: hex::encode(crypto.cipher.message),
                },
            },
            description: keystore.description.clone(),
            pubkey: keystore.pubkey.map(|key| hex::encode(key.as_bytes())),
            path: keystore.path.clone(),
            uuid: keystore.uuid.map(|uuid| uuid.hyphenated().to_string()),
            version: KEYSTORE_VERSION,
        }
    }
}

/// Writes EIP-2335 JSON (hex without `0x`, `version: 4`).
impl Serialize for Keystore {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WireKeystore::from(self).serialize(serializer)
    }
}

/// Reads with the same checks as [`parse`] (errors become the deserializer's message).
impl<'de> Deserialize<'de> for Keystore {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let wire = WireKeystore::deserialize(deserializer)?;
        Keystore::try_from(wire).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::Value;

    use super::*;
    use crate::test_vectors::{self, unhex};

    fn load(name: &str) -> Value {
        test_vectors::load(&format!("eip2335/{name}"))
    }

    fn password(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    /// Everything a vector file claims: encoding, decryption, equivalent and wrong passwords.
    fn check_vector(name: &str) {
        let started = Instant::now();
        let case = load(name);
        let keystore = parse(&case["keystore"].to_string()).unwrap();
        let text = case["password"].as_str().unwrap();
        assert_eq!(
            normalize_password(text).to_vec(),
            unhex(case["encoded_password"].as_str().unwrap()),
            "{name}"
        );
        let secret = unhex(case["secret"].as_str().unwrap());
        let key = decrypt(&keystore, &password(text)).unwrap();
        assert_eq!(key.to_bytes().to_vec(), secret, "{name}");
        for equivalent in case["equivalent_passwords"].as_array().unwrap() {
            let key = decrypt(&keystore, &password(equivalent.as_str().unwrap())).unwrap();
            assert_eq!(key.to_bytes().to_vec(), secret, "{name}");
        }
        let wrong = case["wrong_passwords"].as_array().unwrap();
        assert!(!wrong.is_empty());
        for wrong in wrong {
            assert_eq!(
                decrypt(&keystore, &password(wrong.as_str().unwrap())).unwrap_err(),
                KeystoreError::WrongPassword,
                "{name}"
            );
        }
        // Writing it back gives the same JSON (modulo key order and whitespace).
        let written: Value = serde_json::to_value(&keystore).unwrap();
        assert_eq!(written, case["keystore"], "{name}");
        let elapsed = started.elapsed();
        assert!(elapsed.as_secs() < 60, "{name} took {elapsed:?}");
    }

    #[test]
    fn eip_scrypt_vector() {
        check_vector("eip2335_scrypt.json");
    }

    #[test]
    fn eip_pbkdf2_vector() {
        check_vector("eip2335_pbkdf2.json");
    }

    #[test]
    fn light_vectors() {
        check_vector("oracle_scrypt_light.json");
        check_vector("oracle_pbkdf2_light.json");
        check_vector("oracle_pbkdf2_control_chars.json");
    }

    #[test]
    fn password_normalisation() {
        assert_eq!(
            normalize_password("a\u{7f}b\u{80}c\u{9f}d\u{a0}").to_vec(),
            "abcd ".as_bytes()
        );
        assert_eq!(normalize_password(" \t\n\r").to_vec(), b" ");
        // NFKD decomposes é into e + U+0301 (kept: it is not a control code).
        assert_eq!(normalize_password("é").to_vec(), "e\u{301}".as_bytes());
        assert_eq!(normalize_password("").to_vec(), b"");
    }

    #[test]
    fn encrypt_decrypt_round_trip() {
        let mut rng = StdRng::seed_from_u64(3);
        let key = bls::SecretKey::random(&mut rng);
        let secret = password("pass\u{0}word ﬁ");
        for choice in [
            KdfChoice::INSECURE_FAST_FOR_TESTS,
            KdfChoice::Scrypt { n: 16, r: 8, p: 1 },
        ] {
            let keystore = encrypt(&key, &secret, choice, &mut rng).unwrap();
            assert_eq!(keystore.pubkey, Some(key.public_key()));
            let json = serde_json::to_string(&keystore).unwrap();
            assert!(!json.contains("0x"), "{json}");
            let reparsed = parse(&json).unwrap();
            assert_eq!(reparsed, keystore);
            let decrypted = decrypt(&reparsed, &password("password fi")).unwrap();
            assert_eq!(decrypted.to_bytes(), key.to_bytes());
            assert_eq!(
                decrypt(&reparsed, &password("password")).unwrap_err(),
                KeystoreError::WrongPassword
            );
        }
        let first = encrypt(&key, &secret, KdfChoice::INSECURE_FAST_FOR_TESTS, &mut rng).unwrap();
        let second = encrypt(&key, &secret, KdfChoice::INSECURE_FAST_FOR_TESTS, &mut rng).unwrap();
        assert_ne!(first.crypto.cipher.iv, second.crypto.cipher.iv);
        assert_ne!(first.uuid, second.uuid);
        assert_eq!(first.uuid.unwrap().get_version_num(), 4);
        assert!(matches!(
            encrypt(
                &key,
                &secret,
                KdfChoice::Scrypt {
                    n: 1000,
                    r: 8,
                    p: 1
                },
                &mut rng
            ),
            Err(KeystoreError::KdfParameters(_))
        ));
    }

    /// A random key and its keystore under password `pw` with the fast test KDF.
    fn fast_keystore(seed: u64) -> (bls::SecretKey, Keystore) {
        let mut rng = StdRng::seed_from_u64(seed);
        let key = bls::SecretKey::random(&mut rng);
        let keystore = encrypt(
            &key,
            &password("pw"),
            KdfChoice::INSECURE_FAST_FOR_TESTS,
            &mut rng,
        )
        .unwrap();
        (key, keystore)
    }

    #[test]
    fn public_key_mismatch_is_its_own_error() {
        let (key, mut keystore) = fast_keystore(4);
        let other = bls::SecretKey::random(&mut StdRng::seed_from_u64(40));
        keystore.pubkey = Some(other.public_key());
        assert_eq!(
            decrypt(&keystore, &password("pw")).unwrap_err(),
            KeystoreError::PublicKeyMismatch {
                expected: other.public_key(),
                actual: key.public_key()
            }
        );
        keystore.pubkey = None;
        assert_eq!(
            decrypt(&keystore, &password("pw")).unwrap().public_key(),
            key.public_key()
        );
    }

    /// The keystore of vector `name` as JSON, edited by `edit`, then parsed.
    fn parse_vector_edited(
        name: &str,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Keystore, KeystoreError> {
        let mut json = load(name)["keystore"].clone();
        edit(&mut json);
        parse(&json.to_string())
    }

    /// The light pbkdf2 vector, edited.
    fn parse_edited(edit: impl FnOnce(&mut Value)) -> Result<Keystore, KeystoreError> {
        parse_vector_edited("oracle_pbkdf2_light.json", edit)
    }

    #[test]
    fn refuses_unsupported_and_hostile_keystores() {
        assert!(parse_edited(|_| {}).is_ok());
        assert_eq!(
            parse_edited(|j| j["version"] = 3.into()).unwrap_err(),
            KeystoreError::UnsupportedVersion(3)
        );
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["function"] = "argon2id".into()),
            Err(KeystoreError::UnsupportedKdf(f)) if f == "argon2id"
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["params"]["prf"] = "hmac-sha512".into()),
            Err(KeystoreError::UnsupportedPrf(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["checksum"]["function"] = "keccak256".into()),
            Err(KeystoreError::UnsupportedChecksum(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["cipher"]["function"] = "aes-256-gcm".into()),
            Err(KeystoreError::UnsupportedCipher(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["params"]["dklen"] = 16.into()),
            Err(KeystoreError::KdfParameters(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["params"]["c"] = 0.into()),
            Err(KeystoreError::KdfParameters(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["params"]["c"] = (1u64 << 40).into()),
            Err(KeystoreError::KdfParameters(_))
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["cipher"]["params"]["iv"] = "00".into()),
            Err(KeystoreError::InvalidField {
                field: "crypto.cipher.params.iv",
                ..
            })
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["cipher"]["message"] = "zz".into()),
            Err(KeystoreError::InvalidField {
                field: "crypto.cipher.message",
                ..
            })
        ));
        assert!(matches!(
            parse_edited(|j| j["pubkey"] = "1234".into()),
            Err(KeystoreError::InvalidField {
                field: "pubkey",
                ..
            })
        ));
        assert!(matches!(
            parse_edited(|j| j["uuid"] = "not-a-uuid".into()),
            Err(KeystoreError::InvalidField { field: "uuid", .. })
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["message"] = "x".into()),
            Err(KeystoreError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_edited(|j| j["crypto"]["kdf"]["params"]["extra"] = 1.into()),
            Err(KeystoreError::InvalidField { .. })
        ));
        assert!(matches!(
            parse_edited(|j| {
                j.as_object_mut().unwrap().remove("crypto");
            }),
            Err(KeystoreError::Json(_))
        ));
        assert!(matches!(parse("not json"), Err(KeystoreError::Json(_))));
        for (n, r, p) in [
            (1000, 8, 1),
            (1 << 21, 1, 1),
            (1 << 20, 16, 1),
            (1024, 0, 1),
            (1024, 8, 17),
            (1, 8, 1),
        ] {
            let result = parse_vector_edited("oracle_scrypt_light.json", |j| {
                let params = &mut j["crypto"]["kdf"]["params"];
                params["n"] = n.into();
                params["r"] = r.into();
                params["p"] = p.into();
            });
            assert!(
                matches!(result, Err(KeystoreError::KdfParameters(_))),
                "n={n} r={r} p={p}: {result:?}"
            );
        }
        // Missing optional fields are fine; a 0x prefix is tolerated.
        let keystore = parse_edited(|j| {
            let object = j.as_object_mut().unwrap();
            object.remove("pubkey");
            object.remove("path");
            object.remove("uuid");
            object.remove("description");
            j["crypto"]["cipher"]["params"]["iv"] = format!(
                "0x{}",
                j["crypto"]["cipher"]["params"]["iv"].as_str().unwrap()
            )
            .into();
        })
        .unwrap();
        assert_eq!(keystore.pubkey, None);
        assert_eq!(keystore.path, "");
        let key = decrypt(&keystore, &password("correct horse battery staple")).unwrap();
        let expected = load("oracle_pbkdf2_light.json")["secret"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(key.to_bytes().to_vec(), unhex(&expected));
    }

    #[test]
    fn decrypted_garbage_is_not_a_key() {
        // A keystore whose checksum matches but whose plaintext is zero (not a valid key).
        let (_, mut keystore) = fast_keystore(5);
        let derived = derive_key(&keystore.crypto.kdf, b"pw").unwrap();
        let mut message = [0u8; 32];
        apply_aes_128_ctr(&derived, &keystore.crypto.cipher.iv, &mut message);
        keystore.crypto.cipher.message = message;
        keystore.crypto.checksum = checksum(&derived, &message);
        assert_eq!(
            decrypt(&keystore, &password("pw")).unwrap_err(),
            KeystoreError::InvalidSecretKey
        );
    }
}
