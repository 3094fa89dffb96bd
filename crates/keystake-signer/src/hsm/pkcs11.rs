//! PKCS#11 sealing backend (any token reachable through a PKCS#11 module; SoftHSM2 in tests).
//!
//! The token holds one AES-256 sealing key (`CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, not
//! extractable, not modifiable, encrypt/decrypt only) generated inside the token by
//! [`Pkcs11Sealer::initialize`]. Shares are sealed with `CKM_AES_GCM`: a random 96-bit IV per seal,
//! a 128-bit tag, and as additional authenticated data the blob header followed by
//! [`SealContext::aad`]. Blob body: `IV (12) || ciphertext (32) || tag (16)`.
//!
//! [`Pkcs11Sealer::open`] refuses a key that is extractable, not sensitive, was ever extractable or
//! non-sensitive (`CKA_NEVER_EXTRACTABLE`/`CKA_ALWAYS_SENSITIVE` false: its value was seen outside the
//! token), is a session object, or may also wrap, unwrap, derive, sign or verify; it refuses two
//! tokens with the same label and two objects with the key's label.
//!
//! Sessions: a PKCS#11 session must not be used by two threads at once, so the sealer keeps a pool
//! of up to `sessions` logged-in sessions; a call borrows one for the duration of one HSM operation,
//! so parallel unseals run in parallel. Any HSM failure other than a failed tag check closes the
//! whole pool and answers [`SealError::Unavailable`]; the next call opens fresh sessions (finding the
//! token by label again and logging in again), which is how a restarted or re-inserted token
//! recovers. The user PIN is kept (in a `SecretString`) for exactly that re-login.
//!
//! A failed tag check is [`SealError::Integrity`]. Tokens report it differently (SoftHSM2 2.6 says
//! `CKR_GENERAL_ERROR`), so an unexplained `C_Decrypt` failure is settled by decrypting a canary
//! sealed when the sealer opened: if the canary still opens on that session, the blob was at fault.
//!
//! The module library is loaded and `C_Initialize`d once per process per module path (a second
//! `C_Initialize` fails), in a process-wide cache of loaded libraries; each sealer has its own
//! sessions. PKCS#11 login state is per process and token: a second sealer opened on a token this
//! process is already logged in to is not asked for the PIN again by the token.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use rand::RngCore;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::{SealBackend, SealContext, SealError, SealedShare, Sealer, SHARE_LEN};

/// AES-GCM IV length: 96 bits, the length GCM is designed for.
const IV_LEN: usize = 12;
/// AES-GCM tag length: 128 bits.
const TAG_LEN: usize = 16;
/// Blob body: IV, ciphertext, tag.
const BODY_LEN: usize = IV_LEN + SHARE_LEN + TAG_LEN;
/// PKCS#11 token labels are a 32-byte blank-padded field.
const MAX_TOKEN_LABEL_LEN: usize = 32;
/// How long a caller waits for a pooled session before the HSM counts as unavailable.
const SESSION_WAIT: Duration = Duration::from_secs(10);
/// `CKR_AEAD_DECRYPT_FAILED` (PKCS#11 3.0), which cryptoki 0.12 has no name for.
const CKR_AEAD_DECRYPT_FAILED: u64 = 0x0000_0035;

/// DER of the OID of NIST P-256 (prime256v1, 1.2.840.10045.3.1.7): `CKA_EC_PARAMS` of every EC
/// key this appliance keeps (enrolment and signing keys).
pub(crate) const P256_EC_PARAMS: [u8; 10] =
    [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Length of an uncompressed SEC1 P-256 point (`0x04 || x || y`).
pub(crate) const P256_SEC1_LEN: usize = 65;

/// The uncompressed SEC1 point in a `CKA_EC_POINT` value: PKCS#11 says a DER OCTET STRING
/// around the point, some tokens give the bare point. `None` for anything else.
pub(crate) fn sec1_from_ec_point(value: &[u8]) -> Option<[u8; P256_SEC1_LEN]> {
    let point = match value {
        [0x04, len, rest @ ..]
            if usize::from(*len) == P256_SEC1_LEN && rest.len() == P256_SEC1_LEN =>
        {
            rest
        }
        bare if bare.len() == P256_SEC1_LEN => bare,
        _ => return None,
    };
    if point[0] != 0x04 {
        return None;
    }
    point.try_into().ok()
}

/// Where the sealing key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token holding the sealing key (at most 32 bytes).
    pub token_label: String,
    /// `CKA_LABEL` of the sealing key.
    pub key_label: String,
    /// Maximum number of concurrent HSM sessions (at least 1).
    pub sessions: usize,
}

impl Pkcs11Config {
    /// A configuration with one session per CPU.
    pub fn new(module: impl Into<PathBuf>, token_label: &str, key_label: &str) -> Self {
        Pkcs11Config {
            module: module.into(),
            token_label: token_label.to_string(),
            key_label: key_label.to_string(),
            sessions: default_session_count(),
        }
    }

    fn validate(&self) -> Result<(), SealError> {
        check_label("token label", &self.token_label, MAX_TOKEN_LABEL_LEN)?;
        check_label("key label", &self.key_label, 255)?;
        if self.sessions == 0 {
            return Err(SealError::InvalidConfig(
                "sessions must be at least 1".to_string(),
            ));
        }
        Ok(())
    }
}

/// One session per CPU: more cannot run in parallel anyway.
pub fn default_session_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn check_label(what: &str, label: &str, max_len: usize) -> Result<(), SealError> {
    if label.is_empty() || label.len() > max_len {
        return Err(SealError::InvalidConfig(format!(
            "{what} must be 1 to {max_len} bytes, got {}",
            label.len()
        )));
    }
    // Tokens blank-pad their labels, so surrounding spaces could never match.
    if label.trim() != label || label.chars().any(char::is_control) {
        return Err(SealError::InvalidConfig(format!(
            "{what} '{}' has surrounding whitespace or control characters",
            label.escape_debug()
        )));
    }
    Ok(())
}

/// Write a SoftHSM2 configuration `dir/softhsm2.conf` whose tokens live in `dir/tokens`
/// (created, mode 0700), and return the configuration's path. Point `SOFTHSM2_CONF` at it before
/// the first use of the SoftHSM2 module in the process.
pub fn write_softhsm2_conf(dir: &Path) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;

    let token_dir = dir.join("tokens");
    std::fs::create_dir_all(&token_dir)?;
    std::fs::set_permissions(&token_dir, std::fs::Permissions::from_mode(0o700))?;
    let token_dir_text = token_dir.to_str().ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "SoftHSM2 token directory path is not UTF-8",
        )
    })?;
    if token_dir_text.contains('\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "SoftHSM2 token directory path contains a newline",
        ));
    }
    let conf_path = dir.join("softhsm2.conf");
    let text = format!(
        "# SoftHSM2 configuration written by keystake-signer\n\
         directories.tokendir = {token_dir_text}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n"
    );
    crate::files::write_file(
        &conf_path,
        text.as_bytes(),
        crate::files::PUBLIC_FILE_MODE,
        crate::files::Overwrite::Replace,
    )
    .map_err(std::io::Error::other)?;
    Ok(conf_path)
}

// ---------------------------------------------------------------------------------------------
// Process-wide cache of loaded PKCS#11 modules.

/// A loaded, `C_Initialize`d module. `initialization` serializes `C_InitToken` within the process:
/// two threads initializing tokens at once would both pick the same free slot.
struct LoadedModule {
    context: Pkcs11,
    initialization: Mutex<()>,
    /// When [`reinitialize_module`] last ran (it is rate-limited).
    last_reinitialization: Mutex<Option<Instant>>,
}

/// At most one module re-initialization per this interval: it invalidates every session of the
/// process on this module, so a token that stays gone must not make it run on every call.
const REINITIALIZE_INTERVAL: Duration = Duration::from_secs(2);

/// `C_Finalize` + `C_Initialize` the module, so it scans its slots and tokens again. Some
/// modules only discover a token that came back this way: SoftHSM2 keeps a slot whose token
/// directory vanished answering `CKR_GENERAL_ERROR`, and finds the restored directory only when
/// initialized again; vendor modules document the same for a device that was reset or
/// re-attached. Every session of the process on this module becomes invalid: their pools see
/// the failure once and reconnect (and log in again). Returns whether it ran.
fn reinitialize_module(module: &LoadedModule) -> bool {
    let _one_at_a_time = lock_ignoring_poison(&module.initialization);
    let mut last = lock_ignoring_poison(&module.last_reinitialization);
    if last.is_some_and(|at| at.elapsed() < REINITIALIZE_INTERVAL) {
        return false;
    }
    *last = Some(Instant::now());
    // Errors are moot: a module that was not initialized any more finalizes with an error,
    // and a failed initialize shows up at the next call as the token being unavailable.
    let _ = module.context.clone().finalize();
    match module
        .context
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
    {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            tracing::warn!("re-initialized the PKCS#11 module to find the token again");
        }
        Err(error) => tracing::warn!(%error, "re-initializing the PKCS#11 module failed"),
    }
    true
}

fn loaded_module(module: &Path) -> Result<Arc<LoadedModule>, SealError> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<LoadedModule>>>> = OnceLock::new();
    // Canonical path, so a symlink and its target share one C_Initialize.
    let key = module.canonicalize().map_err(|e| SealError::ModuleLoad {
        module: module.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut modules = lock_ignoring_poison(MODULES.get_or_init(Default::default));
    if let Some(loaded) = modules.get(&key) {
        return Ok(Arc::clone(loaded));
    }
    let context = Pkcs11::new(&key).map_err(|e| SealError::ModuleLoad {
        module: module.display().to_string(),
        reason: e.to_string(),
    })?;
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        // Another component of this process initialized it already: that is fine.
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(SealError::ModuleLoad {
                module: module.display().to_string(),
                reason: e.to_string(),
            })
        }
    }
    let loaded = Arc::new(LoadedModule {
        context,
        initialization: Mutex::new(()),
        last_reinitialization: Mutex::new(None),
    });
    modules.insert(key, Arc::clone(&loaded));
    Ok(loaded)
}

/// The protected data stays consistent across a panic in these short critical sections (pushes and
/// pops), so a poisoned lock is still usable.
fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Token, login and key helpers shared by `initialize` and `open`.

/// The slot of the one initialized token labelled `label`, if any.
fn find_token(context: &Pkcs11, label: &str) -> Result<Option<Slot>, SealError> {
    let slots = context
        .get_slots_with_token()
        .map_err(|e| unavailable("listing slots", &e))?;
    let mut matches = Vec::new();
    // A slot whose token cannot be read (SoftHSM2 keeps a slot whose token directory vanished,
    // answering CKR_GENERAL_ERROR for ever; the directory back shows up as a new slot) is
    // skipped: the token may be in another slot now. If none matches, the error is the answer.
    let mut unreadable = None;
    for slot in slots {
        let info = match context.get_token_info(slot) {
            Ok(info) => info,
            Err(e) => {
                unreadable = Some(e);
                continue;
            }
        };
        if info.token_initialized() && info.label() == label {
            matches.push(slot);
        }
    }
    match matches.as_slice() {
        [] => match unreadable {
            Some(e) => Err(unavailable("reading token info", &e)),
            None => Ok(None),
        },
        [slot] => Ok(Some(*slot)),
        _ => Err(SealError::AmbiguousToken {
            label: label.to_string(),
            count: matches.len(),
        }),
    }
}

fn require_token(context: &Pkcs11, label: &str) -> Result<Slot, SealError> {
    find_token(context, label)?.ok_or_else(|| SealError::TokenNotFound {
        label: label.to_string(),
    })
}

/// Log the user in unless this process already is (login state is shared by all sessions).
fn ensure_user_login(session: &Session, pin: &SecretString) -> Result<(), SealError> {
    let state = session
        .get_session_info()
        .map_err(|e| unavailable("reading session state", &e))?
        .session_state();
    if matches!(state, SessionState::RoUser | SessionState::RwUser) {
        return Ok(());
    }
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(e) => Err(login_error(&e)),
    }
}

fn login_error(error: &CryptokiError) -> SealError {
    match error {
        CryptokiError::Pkcs11(RvError::PinIncorrect | RvError::PinInvalid, _)
        | CryptokiError::Pkcs11(RvError::PinLenRange, _) => SealError::WrongPin,
        CryptokiError::Pkcs11(RvError::PinLocked, _) => SealError::PinLocked,
        CryptokiError::Pkcs11(RvError::UserPinNotInitialized, _) => SealError::Backend(
            "the token's user PIN is not set; run the HSM initialization first".to_string(),
        ),
        other => unavailable("logging in", other),
    }
}

/// An HSM failure while talking to the token: answered as 503.
fn unavailable(doing: &str, error: &CryptokiError) -> SealError {
    SealError::Unavailable(format!("{doing}: {error}"))
}

/// The one object labelled `label` (any class, so that a same-named object of another kind is
/// noticed rather than silently skipped).
fn find_key(session: &Session, label: &str) -> Result<Option<ObjectHandle>, SealError> {
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| unavailable("searching for the sealing key", &e))?;
    match found.as_slice() {
        [] => Ok(None),
        [key] => Ok(Some(*key)),
        _ => Err(SealError::DuplicateKey {
            label: label.to_string(),
            count: found.len(),
        }),
    }
}

/// What a long-term key object of this appliance must be: one definition for generating the key
/// and for checking it whenever it is used, so the two cannot drift apart. Every such key is also
/// a token object, private, sensitive, never extractable, not modifiable and not copyable.
pub(crate) struct KeyProfile {
    /// What the key is, e.g. "an AES-256 secret key" (for the refusal message).
    pub kind: &'static str,
    /// Attributes that must have exactly these values: class, key type, length or curve.
    pub exact: Vec<Attribute>,
    /// Usage the key must allow, with the refusal when it does not.
    pub required: &'static [(AttributeType, &'static str)],
    /// Usage the key must not allow, with the refusal when it does. A usage flag the token does
    /// not report for this kind of key counts as off.
    pub forbidden: &'static [(AttributeType, &'static str)],
}

/// Why [`check_key`] refused a key.
pub(crate) enum KeyCheckError {
    /// The token could not be asked.
    Hsm(CryptokiError),
    /// The key's attributes do not prove what the profile asks for.
    Unsuitable(String),
}

/// The security attributes every long-term key must have, and the refusal when one does not.
/// An absent attribute proves nothing: it counts as the unsafe value.
const LOCKED_DOWN: [(AttributeType, &str); 5] = [
    (
        AttributeType::Token,
        "is a session object, not a token object",
    ),
    (
        AttributeType::Private,
        "is readable without logging in (CKA_PRIVATE false)",
    ),
    (
        AttributeType::Sensitive,
        "is not sensitive (CKA_SENSITIVE false)",
    ),
    (
        AttributeType::AlwaysSensitive,
        "was not always sensitive (its value was once readable)",
    ),
    (
        AttributeType::NeverExtractable,
        "was extractable once (its value may exist outside the token)",
    ),
];

impl KeyProfile {
    /// The attributes to generate such a key with (besides its class, type and size, which the
    /// caller's mechanism and template give): locked down, with exactly the profile's usage.
    pub(crate) fn generation_template(&self) -> Vec<Attribute> {
        let mut template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Copyable(false),
        ];
        for (usage, _) in self.required {
            template.extend(bool_attribute(*usage, true));
        }
        for (usage, _) in self.forbidden {
            template.extend(bool_attribute(*usage, false));
        }
        template
    }
}

/// Read `key`'s attributes in one call and refuse it unless they prove it is `profile.kind`,
/// never left the token, cannot leave it, and allows exactly the usage of the profile. Used for
/// the sealing key (here) and the enrolment key ([`crate::hsm::enrolment`]).
pub(crate) fn check_key(
    session: &Session,
    key: ObjectHandle,
    profile: &KeyProfile,
) -> Result<(), KeyCheckError> {
    let wanted: Vec<AttributeType> = profile
        .exact
        .iter()
        .map(Attribute::attribute_type)
        .chain(LOCKED_DOWN.iter().map(|(attribute, _)| *attribute))
        .chain([AttributeType::Extractable])
        .chain(profile.required.iter().map(|(attribute, _)| *attribute))
        .chain(profile.forbidden.iter().map(|(attribute, _)| *attribute))
        .collect();
    let attributes = session
        .get_attributes(key, &wanted)
        .map_err(KeyCheckError::Hsm)?;
    let unsuitable = |reason: &str| Err(KeyCheckError::Unsuitable(reason.to_string()));

    for expected in &profile.exact {
        if !attributes.contains(expected) {
            return unsuitable(&format!("not {}", profile.kind));
        }
    }
    let flag = |wanted: AttributeType| -> Option<bool> {
        attributes
            .iter()
            .filter(|attribute| attribute.attribute_type() == wanted)
            .find_map(bool_value)
    };
    for (attribute, reason) in LOCKED_DOWN.iter().chain(profile.required) {
        if flag(*attribute) != Some(true) {
            return unsuitable(reason);
        }
    }
    if flag(AttributeType::Extractable) != Some(false) {
        return unsuitable("is extractable (CKA_EXTRACTABLE true)");
    }
    for (attribute, reason) in profile.forbidden {
        if flag(*attribute) == Some(true) {
            return unsuitable(reason);
        }
    }
    Ok(())
}

/// The value of a boolean attribute (`None` for the others).
fn bool_value(attribute: &Attribute) -> Option<bool> {
    match attribute {
        Attribute::Token(v)
        | Attribute::Private(v)
        | Attribute::Sensitive(v)
        | Attribute::AlwaysSensitive(v)
        | Attribute::Extractable(v)
        | Attribute::NeverExtractable(v)
        | Attribute::Encrypt(v)
        | Attribute::Decrypt(v)
        | Attribute::Wrap(v)
        | Attribute::Unwrap(v)
        | Attribute::Derive(v)
        | Attribute::Sign(v)
        | Attribute::Verify(v) => Some(*v),
        _ => None,
    }
}

/// The usage attribute `usage` set to `value` (`None` for a type that is not a usage flag).
fn bool_attribute(usage: AttributeType, value: bool) -> Option<Attribute> {
    Some(match usage {
        AttributeType::Encrypt => Attribute::Encrypt(value),
        AttributeType::Decrypt => Attribute::Decrypt(value),
        AttributeType::Wrap => Attribute::Wrap(value),
        AttributeType::Unwrap => Attribute::Unwrap(value),
        AttributeType::Derive => Attribute::Derive(value),
        AttributeType::Sign => Attribute::Sign(value),
        AttributeType::Verify => Attribute::Verify(value),
        _ => return None,
    })
}

/// The sealing key: an AES-256 key that never left the token and can only encrypt and decrypt.
fn sealing_key_profile() -> KeyProfile {
    KeyProfile {
        kind: "an AES-256 secret key",
        exact: vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32u64.into()),
        ],
        required: &[
            (AttributeType::Encrypt, "cannot encrypt"),
            (AttributeType::Decrypt, "cannot decrypt"),
        ],
        forbidden: &[
            (AttributeType::Wrap, "may wrap keys"),
            (AttributeType::Unwrap, "may unwrap keys"),
            (
                AttributeType::Derive,
                "may derive keys (derivation can leak the key value)",
            ),
            (AttributeType::Sign, "may sign"),
            (AttributeType::Verify, "may verify"),
        ],
    }
}

/// Refuse a key that is not what [`sealing_key_profile`] describes.
fn verify_key_attributes(
    session: &Session,
    key: ObjectHandle,
    label: &str,
) -> Result<(), SealError> {
    check_key(session, key, &sealing_key_profile()).map_err(|error| match error {
        KeyCheckError::Hsm(e) => unavailable("reading the sealing key's attributes", &e),
        KeyCheckError::Unsuitable(reason) => SealError::UnsuitableKey {
            label: label.to_string(),
            reason,
        },
    })
}

/// Generate the sealing key inside the token.
fn generate_sealing_key(session: &Session, label: &str) -> Result<ObjectHandle, SealError> {
    let profile = sealing_key_profile();
    let mut template = profile.generation_template();
    template.extend(profile.exact);
    template.push(Attribute::Label(label.as_bytes().to_vec()));
    session
        .generate_key(&Mechanism::AesKeyGen, &template)
        .map_err(|e| SealError::Backend(format!("generating the sealing key: {e}")))
}

fn require_mechanism(context: &Pkcs11, slot: Slot) -> Result<(), SealError> {
    // Ask for the two mechanisms by type: listing them all makes cryptoki log an error for every
    // vendor mechanism it does not know, which reads like a fault in the operator's log.
    for needed in [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM] {
        context
            .get_mechanism_info(slot, needed)
            .map_err(|e| SealError::Backend(format!("the token does not offer {needed}: {e}")))?;
    }
    Ok(())
}

/// The loaded module and the slot of the configured token (no session, no login): what
/// `hsm check` asks about mechanisms.
pub(crate) fn token_slot(config: &Pkcs11Config) -> Result<(Pkcs11, Slot), SealError> {
    config.validate()?;
    let module = loaded_module(&config.module)?;
    let slot = require_token(&module.context, &config.token_label)?;
    Ok((module.context.clone(), slot))
}

/// A logged-in read-write session on the configured token, for the other key objects this
/// appliance keeps on the same token (the enrolment key pair of [`crate::hsm::enrolment`]). The caller
/// owns the session; the sealer's pool is not involved.
pub(crate) fn user_session(
    config: &Pkcs11Config,
    user_pin: &SecretString,
) -> Result<Session, SealError> {
    config.validate()?;
    let module = loaded_module(&config.module)?;
    let slot = require_token(&module.context, &config.token_label)?;
    let session = module
        .context
        .open_rw_session(slot)
        .map_err(|e| unavailable("opening a session", &e))?;
    ensure_user_login(&session, user_pin)?;
    Ok(session)
}

// ---------------------------------------------------------------------------------------------
// The sealer and its session pool.

/// A logged-in session and the sealing key's handle as seen from it.
struct PooledSession {
    session: Session,
    key: ObjectHandle,
    /// Pool generation at opening time: sessions of an older generation are closed, not reused.
    generation: u64,
}

struct PoolState {
    idle: Vec<PooledSession>,
    /// Idle plus borrowed sessions (and sessions being opened).
    open: usize,
    /// Bumped whenever the HSM failed: every session opened before is discarded.
    generation: u64,
    /// The token's slot, found by label; forgotten on failure, since a re-inserted token may get
    /// another slot.
    slot: Option<Slot>,
}

/// A [`Sealer`] backed by an AES-256 key inside a PKCS#11 token.
pub struct Pkcs11Sealer {
    module: Arc<LoadedModule>,
    config: Pkcs11Config,
    /// Kept for logging in again after the token or its sessions were lost.
    user_pin: SecretString,
    pool: Mutex<PoolState>,
    session_returned: Condvar,
    /// Set by `open`; see [`Canary`].
    canary: Option<Canary>,
}

impl std::fmt::Debug for Pkcs11Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Sealer")
            .field("config", &self.config)
            .field("user_pin", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Pkcs11Sealer {
    /// Find or initialise the token labelled `config.token_label` (an uninitialised slot gets
    /// `C_InitToken` with the SO PIN, then the user PIN is set), then create the sealing key if it
    /// is absent. Idempotent: a second run finds the token and the key (and checks the key's
    /// attributes) and never creates a second key with the same label.
    ///
    /// Run it from one process at a time: concurrent initializations in different processes could
    /// pick the same free slot.
    pub fn initialize(
        config: &Pkcs11Config,
        so_pin: &SecretString,
        user_pin: &SecretString,
    ) -> Result<(), SealError> {
        config.validate()?;
        let module = loaded_module(&config.module)?;
        let _one_initialization_at_a_time = lock_ignoring_poison(&module.initialization);
        let context = &module.context;

        let slot = match find_token(context, &config.token_label)? {
            Some(slot) => slot,
            None => {
                let free_slot = context
                    .get_slots_with_token()
                    .map_err(|e| unavailable("listing slots", &e))?
                    .into_iter()
                    .find(|slot| {
                        context
                            .get_token_info(*slot)
                            .map(|info| !info.token_initialized())
                            .unwrap_or(false)
                    })
                    .ok_or_else(|| SealError::NoFreeSlot {
                        label: config.token_label.clone(),
                    })?;
                context
                    .init_token(free_slot, so_pin, &config.token_label)
                    .map_err(|e| match e {
                        CryptokiError::Pkcs11(RvError::PinIncorrect, _) => SealError::WrongPin,
                        other => SealError::Backend(format!("initializing the token: {other}")),
                    })?;
                // Some modules (SoftHSM2) renumber slots after C_InitToken: look the token up again.
                require_token(context, &config.token_label)?
            }
        };
        require_mechanism(context, slot)?;

        let token = context
            .get_token_info(slot)
            .map_err(|e| unavailable("reading token info", &e))?;
        if !token.user_pin_initialized() {
            let session = context
                .open_rw_session(slot)
                .map_err(|e| unavailable("opening a session", &e))?;
            session
                .login(UserType::So, Some(so_pin))
                .map_err(|e| login_error(&e))?;
            session
                .init_pin(user_pin)
                .map_err(|e| SealError::Backend(format!("setting the user PIN: {e}")))?;
            session
                .logout()
                .map_err(|e| unavailable("logging the SO out", &e))?;
        }

        let session = context
            .open_rw_session(slot)
            .map_err(|e| unavailable("opening a session", &e))?;
        ensure_user_login(&session, user_pin)?;
        match find_key(&session, &config.key_label)? {
            Some(key) => verify_key_attributes(&session, key, &config.key_label),
            None => {
                let key = generate_sealing_key(&session, &config.key_label)?;
                verify_key_attributes(&session, key, &config.key_label)
            }
        }
    }

    /// Find the token by label, log in with the user PIN and find the sealing key by label;
    /// refuse a key that is extractable, not sensitive, or otherwise not fit (see module doc).
    pub fn open(config: &Pkcs11Config, user_pin: &SecretString) -> Result<Self, SealError> {
        config.validate()?;
        let module = loaded_module(&config.module)?;
        let mut sealer = Pkcs11Sealer {
            module,
            config: config.clone(),
            user_pin: user_pin.clone(),
            pool: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                generation: 0,
                slot: None,
            }),
            session_returned: Condvar::new(),
            canary: None,
        };
        // Open the first session now, so a wrong label, PIN or key fails here and not at the
        // first signature; seal the canary on it, which also proves the key encrypts.
        let first = sealer.borrow_session()?;
        let canary = Canary::create(&first.session, first.key);
        sealer.give_back(first, SessionOutcome::Healthy);
        let canary = canary.map_err(|e| SealError::Backend(format!("AES-GCM self-test: {e}")))?;
        sealer.canary = Some(canary);
        Ok(sealer)
    }

    /// The token's slot: cached, or found by label. Once the sealer is open (the token was
    /// there), a token that cannot be found or read makes the module scan again
    /// ([`reinitialize_module`], rate-limited) before the sealer gives up for this call.
    fn slot(&self) -> Result<Slot, SealError> {
        if let Some(slot) = lock_ignoring_poison(&self.pool).slot {
            return Ok(slot);
        }
        let slot = match require_token(&self.module.context, &self.config.token_label) {
            Err(SealError::TokenNotFound { .. } | SealError::Unavailable(_))
                if self.canary.is_some() && reinitialize_module(&self.module) =>
            {
                require_token(&self.module.context, &self.config.token_label)?
            }
            other => other?,
        };
        lock_ignoring_poison(&self.pool).slot = Some(slot);
        Ok(slot)
    }

    fn open_session(&self, generation: u64) -> Result<PooledSession, SealError> {
        let slot = self.slot()?;
        let session = self
            .module
            .context
            .open_ro_session(slot)
            .map_err(|e| unavailable("opening a session", &e))?;
        ensure_user_login(&session, &self.user_pin)?;
        let key =
            find_key(&session, &self.config.key_label)?.ok_or_else(|| SealError::KeyNotFound {
                label: self.config.key_label.clone(),
            })?;
        verify_key_attributes(&session, key, &self.config.key_label)?;
        Ok(PooledSession {
            session,
            key,
            generation,
        })
    }

    /// Borrow an idle session, open a new one if fewer than `sessions` exist, or wait for one.
    fn borrow_session(&self) -> Result<PooledSession, SealError> {
        let mut pool = lock_ignoring_poison(&self.pool);
        loop {
            if let Some(pooled) = pool.idle.pop() {
                return Ok(pooled);
            }
            if pool.open < self.config.sessions {
                pool.open += 1;
                let generation = pool.generation;
                drop(pool);
                return self.open_session(generation).inspect_err(|_| {
                    let mut pool = lock_ignoring_poison(&self.pool);
                    pool.open -= 1;
                    pool.slot = None;
                    self.session_returned.notify_one();
                });
            }
            let (guard, wait) = self
                .session_returned
                .wait_timeout(pool, SESSION_WAIT)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            pool = guard;
            if wait.timed_out() && pool.idle.is_empty() && pool.open >= self.config.sessions {
                return Err(SealError::Unavailable(format!(
                    "all {} HSM sessions stayed busy for {} s",
                    self.config.sessions,
                    SESSION_WAIT.as_secs()
                )));
            }
        }
    }

    fn give_back(&self, pooled: PooledSession, outcome: SessionOutcome) {
        let mut pool = lock_ignoring_poison(&self.pool);
        let mut to_close = Vec::new();
        if outcome == SessionOutcome::HsmFailed && pooled.generation == pool.generation {
            // One failure usually means the token, the login or the connection is gone for every
            // session: start over with fresh sessions on the next call.
            pool.generation += 1;
            pool.slot = None;
            to_close = std::mem::take(&mut pool.idle);
            pool.open -= to_close.len();
        }
        if outcome == SessionOutcome::Healthy && pooled.generation == pool.generation {
            pool.idle.push(pooled);
        } else {
            pool.open -= 1;
            to_close.push(pooled);
        }
        drop(pool);
        // Wake everyone waiting: closed sessions make room for new ones, too.
        self.session_returned.notify_all();
        // Closing talks to the HSM: not under the lock. Errors closing a dead session are moot.
        drop(to_close);
    }

    /// Run one HSM operation on a borrowed session. A failed tag check leaves the session in the
    /// pool (the operation ended normally); any other HSM error discards the whole pool.
    fn with_session<T>(
        &self,
        doing: &str,
        operation: impl FnOnce(&Session, ObjectHandle) -> Result<T, OperationFailure>,
    ) -> Result<T, SealError> {
        let pooled = self.borrow_session()?;
        let result = operation(&pooled.session, pooled.key);
        match result {
            Ok(value) => {
                self.give_back(pooled, SessionOutcome::Healthy);
                Ok(value)
            }
            Err(OperationFailure::TagMismatch) => {
                self.give_back(pooled, SessionOutcome::Healthy);
                Err(SealError::Integrity)
            }
            Err(OperationFailure::Hsm(error)) => {
                self.give_back(pooled, SessionOutcome::HsmFailed);
                Err(unavailable(doing, &error))
            }
        }
    }

    /// Run one HSM operation on a borrowed pooled session for another key object of the token
    /// (the signing keys of [`crate::hsm::signing_key`]). `operation` gets the session and the
    /// pool generation it belongs to (object handles cached for an older generation may be
    /// stale: the token may have been re-inserted). An HSM error (outer `Err`) discards the pool
    /// and answers [`SealError::Unavailable`], as for the sealer's own operations; a refusal
    /// (inner `Err`, e.g. the key object is missing or unfit) leaves the session in the pool.
    pub(crate) fn with_pooled_session<T>(
        &self,
        doing: &str,
        operation: impl FnOnce(&Session, u64) -> Result<Result<T, SealError>, CryptokiError>,
    ) -> Result<T, SealError> {
        let pooled = self.borrow_session()?;
        match operation(&pooled.session, pooled.generation) {
            Ok(outcome) => {
                self.give_back(pooled, SessionOutcome::Healthy);
                outcome
            }
            Err(error) => {
                self.give_back(pooled, SessionOutcome::HsmFailed);
                Err(unavailable(doing, &error))
            }
        }
    }

    /// Sessions open now (idle and borrowed): never more than `sessions`.
    #[cfg(test)]
    pub(crate) fn open_sessions(&self) -> usize {
        lock_ignoring_poison(&self.pool).open
    }

    /// The configuration this sealer was opened with.
    pub(crate) fn config(&self) -> &Pkcs11Config {
        &self.config
    }

    /// Classify a failed `C_Decrypt`. Tokens disagree on how they report a failed GCM tag check:
    /// the standard codes are taken at their word, obvious session/token failures too, and for
    /// anything else (SoftHSM2 2.6 answers `CKR_GENERAL_ERROR`) the canary sealed at open time is
    /// decrypted on the same session: if it still opens, the token is fine and the blob is bad.
    fn classify_decrypt_failure(
        &self,
        session: &Session,
        key: ObjectHandle,
        error: CryptokiError,
    ) -> OperationFailure {
        if is_authentication_failure(&error) {
            return OperationFailure::TagMismatch;
        }
        let ambiguous = matches!(
            &error,
            CryptokiError::Pkcs11(rv, cryptoki::context::Function::Decrypt)
                if !is_session_or_token_failure(rv)
        );
        if ambiguous {
            if let Some(canary) = &self.canary {
                if canary.opens_on(session, key) {
                    return OperationFailure::TagMismatch;
                }
            }
        }
        OperationFailure::Hsm(error)
    }

    /// The slot the token currently sits in, if known.
    fn current_slot(&self) -> Option<Slot> {
        lock_ignoring_poison(&self.pool).slot
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionOutcome {
    Healthy,
    HsmFailed,
}

/// How one HSM operation on a pooled session failed.
enum OperationFailure {
    /// The AES-GCM tag did not verify: wrong context, tampered blob or another key.
    TagMismatch,
    /// Anything else: the session, login, token or module is in trouble.
    Hsm(CryptokiError),
}

impl From<CryptokiError> for OperationFailure {
    fn from(error: CryptokiError) -> Self {
        OperationFailure::Hsm(error)
    }
}

/// Additional authenticated data of the canary; it cannot collide with a share's, which starts
/// with the blob header `0x01 0x01`.
const CANARY_AAD: &[u8] = b"keystake-seal-v1 pkcs11 canary";

/// A known non-secret value sealed under the sealing key when the sealer opens; decrypting it tells
/// a token that works (and rejected a blob) from a token that fails.
struct Canary {
    iv: [u8; IV_LEN],
    ciphertext: Vec<u8>,
    plaintext: [u8; SHARE_LEN],
}

impl Canary {
    fn create(session: &Session, key: ObjectHandle) -> Result<Self, CryptokiError> {
        let mut plaintext = [0u8; SHARE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut plaintext);
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let (iv, ciphertext) = gcm_encrypt(session, key, iv, CANARY_AAD, &plaintext)?;
        Ok(Canary {
            iv,
            ciphertext,
            plaintext,
        })
    }

    fn opens_on(&self, session: &Session, key: ObjectHandle) -> bool {
        gcm_decrypt(session, key, &self.iv, CANARY_AAD, &self.ciphertext)
            .map(|opened| opened.as_slice() == self.plaintext)
            .unwrap_or(false)
    }
}

/// AES-GCM encryption in the token; returns the IV actually used with the ciphertext. The IV
/// buffer holds our random IV on input, and PKCS#11 lets the token write the IV it used back
/// into it: tokens that generate the IV themselves (AWS CloudHSM mandates it; Luna in some FIPS
/// configurations) return theirs there, so the IV stored in the blob is the buffer's content
/// after the call, not the one we drew.
fn gcm_encrypt(
    session: &Session,
    key: ObjectHandle,
    iv: [u8; IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; IV_LEN], Vec<u8>), CryptokiError> {
    let mut iv = iv;
    let ciphertext = {
        let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())?;
        session.encrypt(&Mechanism::AesGcm(params), key, plaintext)?
    };
    Ok((iv, ciphertext))
}

fn gcm_decrypt(
    session: &Session,
    key: ObjectHandle,
    iv: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptokiError> {
    let mut iv = iv.to_vec();
    let params = GcmParams::new(&mut iv, aad, ((TAG_LEN * 8) as u64).into())?;
    // Zeroizing from the first moment the plaintext exists in our memory.
    session
        .decrypt(&Mechanism::AesGcm(params), key, ciphertext)
        .map(Zeroizing::new)
}

/// Errors that say the session, login, token or device is gone, whatever the operation.
fn is_session_or_token_failure(rv: &RvError) -> bool {
    matches!(
        rv,
        RvError::SessionHandleInvalid
            | RvError::SessionClosed
            | RvError::DeviceRemoved
            | RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::HostMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::UserNotLoggedIn
            | RvError::CryptokiNotInitialized
            | RvError::KeyHandleInvalid
            | RvError::ObjectHandleInvalid
            | RvError::OperationActive
            | RvError::FunctionCanceled
    )
}

/// The codes with which tokens report a failed GCM tag check.
fn is_authentication_failure(error: &CryptokiError) -> bool {
    match error {
        CryptokiError::Pkcs11(rv, _) => match rv {
            RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange => true,
            RvError::UnknownErrorCode(code) => *code == CKR_AEAD_DECRYPT_FAILED,
            _ => false,
        },
        _ => false,
    }
}

fn gcm_aad(context: &SealContext) -> Vec<u8> {
    let mut aad = SealedShare::header_for(SealBackend::Pkcs11AesGcm).to_vec();
    aad.extend_from_slice(&context.aad());
    aad
}

impl Sealer for Pkcs11Sealer {
    fn seal(
        &self,
        secret: &Zeroizing<[u8; SHARE_LEN]>,
        context: &SealContext,
    ) -> Result<SealedShare, SealError> {
        let aad = gcm_aad(context);
        let mut iv = [0u8; IV_LEN];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let (iv, ciphertext) = self.with_session("sealing", |session, key| {
            Ok(gcm_encrypt(session, key, iv, &aad, secret.as_slice())?)
        })?;
        if ciphertext.len() != SHARE_LEN + TAG_LEN {
            return Err(SealError::Backend(format!(
                "the token returned {} bytes of AES-GCM output, expected {}",
                ciphertext.len(),
                SHARE_LEN + TAG_LEN
            )));
        }
        Ok(SealedShare::assemble(
            SealBackend::Pkcs11AesGcm,
            &[&iv, &ciphertext],
        ))
    }

    fn unseal(
        &self,
        sealed: &SealedShare,
        context: &SealContext,
    ) -> Result<Zeroizing<[u8; SHARE_LEN]>, SealError> {
        let body = sealed.body_for(SealBackend::Pkcs11AesGcm, BODY_LEN)?;
        let (iv, ciphertext) = body.split_at(IV_LEN);
        let aad = gcm_aad(context);
        let plaintext = self.with_session("unsealing", |session, key| {
            gcm_decrypt(session, key, iv, &aad, ciphertext)
                .map_err(|error| self.classify_decrypt_failure(session, key, error))
        })?;
        if plaintext.len() != SHARE_LEN {
            return Err(SealError::MalformedBlob(format!(
                "authenticated plaintext is {} bytes, expected {SHARE_LEN}",
                plaintext.len()
            )));
        }
        // Copied straight into the zeroizing buffer: no unzeroized stack copy of the share.
        let mut share = Zeroizing::new([0u8; SHARE_LEN]);
        share.copy_from_slice(&plaintext);
        Ok(share)
    }

    fn health_check(&self) -> Result<(), SealError> {
        self.with_session("health check", |session, key| {
            let state = session.get_session_info()?.session_state();
            if !matches!(state, SessionState::RoUser | SessionState::RwUser) {
                return Err(OperationFailure::Hsm(CryptokiError::Pkcs11(
                    RvError::UserNotLoggedIn,
                    cryptoki::context::Function::GetSessionInfo,
                )));
            }
            // The key handle still resolves (the token was not swapped underneath us).
            session.get_attributes(key, &[AttributeType::KeyType])?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        let slot = match self.current_slot() {
            Some(slot) => format!("slot {}", slot.id()),
            None => "slot not connected".to_string(),
        };
        format!(
            "pkcs11 token '{}' {slot} key '{}' via {}",
            self.config.token_label,
            self.config.key_label,
            self.config.module.display()
        )
    }
}

/// SoftHSM2 for tests: one token directory per test process, distinct token labels per test.
#[cfg(test)]
pub(crate) mod test_support {
    use std::sync::{Once, OnceLock};

    use secrecy::SecretString;

    use super::{write_softhsm2_conf, Pkcs11Config, Pkcs11Sealer};

    /// Debian's path; `SOFTHSM2_MODULE` overrides it (Fedora: /usr/lib64/pkcs11/libsofthsm2.so).
    pub(crate) fn softhsm_module() -> std::path::PathBuf {
        std::env::var_os("SOFTHSM2_MODULE")
            .map(Into::into)
            .unwrap_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into())
    }

    /// Point `SOFTHSM2_CONF` at a fresh token directory, once per process, before any module use.
    pub(crate) fn ensure_softhsm_env() {
        static TOKEN_DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        static SETUP: Once = Once::new();
        SETUP.call_once(|| {
            let dir = TOKEN_DIR.get_or_init(|| {
                tempfile::Builder::new()
                    .prefix("keystake-softhsm-")
                    .tempdir()
                    .expect("temporary directory for SoftHSM2 tokens")
            });
            let conf = write_softhsm2_conf(dir.path()).expect("write softhsm2.conf");
            std::env::set_var("SOFTHSM2_CONF", conf);
        });
    }

    /// A configuration for a token label unique to this call.
    pub(crate) fn fresh_config(purpose: &str) -> Pkcs11Config {
        ensure_softhsm_env();
        let suffix: u32 = rand::random();
        let mut config = Pkcs11Config::new(
            softhsm_module(),
            &format!("{purpose}-{suffix:08x}"),
            "keystake-seal",
        );
        config.sessions = 4;
        config
    }

    pub(crate) fn so_pin() -> SecretString {
        SecretString::from("so-pin-1234")
    }

    pub(crate) fn user_pin() -> SecretString {
        SecretString::from("user-pin-5678")
    }

    /// Log the token's user out from a session of its own: every session of every sealer on
    /// that token loses access to the key (as after a token reset), until a sealer logs in again.
    pub(crate) fn log_out_token(config: &Pkcs11Config) {
        let module = super::loaded_module(&config.module).unwrap();
        let slot = super::require_token(&module.context, &config.token_label).unwrap();
        let intruder = module.context.open_ro_session(slot).unwrap();
        intruder.logout().unwrap();
    }

    /// A fresh initialized token and a sealer opened on it.
    pub(crate) fn fresh_sealer(purpose: &str) -> (Pkcs11Config, Pkcs11Sealer) {
        let config = fresh_config(purpose);
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).expect("initialize token");
        let sealer = Pkcs11Sealer::open(&config, &user_pin()).expect("open sealer");
        (config, sealer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use cryptoki::object::AttributeInfo;

    use super::test_support::*;
    use super::*;
    use crate::hsm::contract_tests;

    contract_tests::sealer_contract_tests!(
        |label: &str| fresh_sealer(label).1,
        "pkcs11 token 'roundtrip-"
    );

    #[test]
    fn blob_layout_is_iv_ciphertext_tag() {
        let (_, sealer) = fresh_sealer("layout");
        let sealed = sealer
            .seal(&contract_tests::secret(1), &contract_tests::context(1))
            .unwrap();
        assert_eq!(sealed.0.len(), 2 + BODY_LEN);
        assert_eq!(sealed.0[..2], [1, 0x01]);
        assert_eq!(sealed.backend().unwrap(), SealBackend::Pkcs11AesGcm);
    }

    #[test]
    fn initialize_is_idempotent() {
        let config = fresh_config("idempotent");
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let sealer = Pkcs11Sealer::open(&config, &user_pin()).unwrap();
        let ctx = contract_tests::context(2);
        let sealed = sealer.seal(&contract_tests::secret(2), &ctx).unwrap();

        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();

        // Still exactly one token and one key with these labels, and it is the same key.
        let module = loaded_module(&config.module).unwrap();
        let slot = require_token(&module.context, &config.token_label).unwrap();
        let session = module.context.open_ro_session(slot).unwrap();
        ensure_user_login(&session, &user_pin()).unwrap();
        let keys = session
            .find_objects(&[Attribute::Label(config.key_label.as_bytes().to_vec())])
            .unwrap();
        assert_eq!(keys.len(), 1);
        let reopened = Pkcs11Sealer::open(&config, &user_pin()).unwrap();
        assert_eq!(
            *reopened.unseal(&sealed, &ctx).unwrap(),
            *contract_tests::secret(2)
        );
    }

    #[test]
    fn sealing_key_is_sensitive_and_not_extractable() {
        let (config, sealer) = fresh_sealer("attributes");
        let pooled = sealer.borrow_session().unwrap();
        let info = pooled
            .session
            .get_attribute_info(pooled.key, &[AttributeType::Value])
            .unwrap();
        assert!(
            matches!(info.as_slice(), [AttributeInfo::Sensitive]),
            "{info:?}"
        );
        // Asking for the value anyway yields no value attribute at all.
        let attributes = pooled
            .session
            .get_attributes(pooled.key, &[AttributeType::Value])
            .unwrap();
        assert!(attributes.is_empty(), "CKA_VALUE was returned");
        // Attempting to make it extractable is refused (CKA_MODIFIABLE false).
        assert!(pooled
            .session
            .update_attributes(pooled.key, &[Attribute::Extractable(true)])
            .is_err());
        verify_key_attributes(&pooled.session, pooled.key, &config.key_label).unwrap();
        sealer.give_back(pooled, SessionOutcome::Healthy);
    }

    #[test]
    fn open_refuses_an_extractable_key() {
        let config = fresh_config("weak-key");
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let module = loaded_module(&config.module).unwrap();
        let slot = require_token(&module.context, &config.token_label).unwrap();
        let session = module.context.open_rw_session(slot).unwrap();
        ensure_user_login(&session, &user_pin()).unwrap();
        let weak_label = "weak-key";
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::ValueLen(32u64.into()),
                    Attribute::Label(weak_label.as_bytes().to_vec()),
                    Attribute::Token(true),
                    Attribute::Private(true),
                    Attribute::Sensitive(false),
                    Attribute::Extractable(true),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                ],
            )
            .unwrap();
        let mut weak = config.clone();
        weak.key_label = weak_label.to_string();
        match Pkcs11Sealer::open(&weak, &user_pin()) {
            Err(SealError::UnsuitableKey { label, .. }) => assert_eq!(label, weak_label),
            other => panic!("expected UnsuitableKey, got {other:?}"),
        }
        // `initialize` refuses to adopt it, too.
        assert!(matches!(
            Pkcs11Sealer::initialize(&weak, &so_pin(), &user_pin()),
            Err(SealError::UnsuitableKey { .. })
        ));
    }

    #[test]
    fn wrong_pin_is_refused() {
        let config = fresh_config("wrong-pin");
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        match Pkcs11Sealer::open(&config, &SecretString::from("not-the-pin")) {
            Err(SealError::WrongPin) => {}
            other => panic!("expected WrongPin, got {other:?}"),
        }
        // The right PIN still works afterwards.
        Pkcs11Sealer::open(&config, &user_pin()).unwrap();
    }

    #[test]
    fn unknown_token_and_key_are_reported() {
        let config = fresh_config("missing");
        match Pkcs11Sealer::open(&config, &user_pin()) {
            Err(SealError::TokenNotFound { label }) => assert_eq!(label, config.token_label),
            other => panic!("expected TokenNotFound, got {other:?}"),
        }
        Pkcs11Sealer::initialize(&config, &so_pin(), &user_pin()).unwrap();
        let mut other_key = config.clone();
        other_key.key_label = "no-such-key".to_string();
        match Pkcs11Sealer::open(&other_key, &user_pin()) {
            Err(SealError::KeyNotFound { label }) => assert_eq!(label, "no-such-key"),
            other => panic!("expected KeyNotFound, got {other:?}"),
        }
    }

    #[test]
    fn bad_configuration_is_refused() {
        let mut config = fresh_config("config");
        config.token_label = "x".repeat(33);
        assert!(matches!(
            Pkcs11Sealer::open(&config, &user_pin()),
            Err(SealError::InvalidConfig(_))
        ));
        let mut config = fresh_config("config");
        config.token_label = " padded".to_string();
        assert!(matches!(
            Pkcs11Sealer::open(&config, &user_pin()),
            Err(SealError::InvalidConfig(_))
        ));
        let mut config = fresh_config("config");
        config.sessions = 0;
        assert!(matches!(
            Pkcs11Sealer::open(&config, &user_pin()),
            Err(SealError::InvalidConfig(_))
        ));
        let mut config = fresh_config("config");
        config.module = "/nonexistent/libpkcs11.so".into();
        assert!(matches!(
            Pkcs11Sealer::open(&config, &user_pin()),
            Err(SealError::ModuleLoad { .. })
        ));
    }

    #[test]
    fn lost_login_is_unavailable_then_recovers() {
        let (config, sealer) = fresh_sealer("recovery");
        let ctx = contract_tests::context(7);
        let sealed = sealer.seal(&contract_tests::secret(7), &ctx).unwrap();

        // Another session of this process logs out: the login state is shared, so every session
        // of the sealer loses access to the key, as after a token reset.
        let module = loaded_module(&config.module).unwrap();
        let slot = require_token(&module.context, &config.token_label).unwrap();
        let intruder = module.context.open_ro_session(slot).unwrap();
        intruder.logout().unwrap();
        drop(intruder);

        match sealer.unseal(&sealed, &ctx) {
            Err(SealError::Unavailable(_)) => {}
            other => panic!("expected Unavailable after the login was lost, got {other:?}"),
        }
        // The next call opens fresh sessions, logs in again and succeeds.
        assert_eq!(
            *sealer.unseal(&sealed, &ctx).unwrap(),
            *contract_tests::secret(7)
        );
        sealer.health_check().unwrap();
    }

    #[test]
    fn pool_never_exceeds_its_size() {
        let (config, sealer) = fresh_sealer("pool-size");
        let sealer = Arc::new(sealer);
        contract_tests::parallel_unseals(Arc::clone(&sealer) as Arc<dyn Sealer>, 8, 20);
        let pool = lock_ignoring_poison(&sealer.pool);
        assert!(pool.open <= config.sessions);
        assert_eq!(pool.open, pool.idle.len());
    }

    #[test]
    fn softhsm2_conf_names_the_token_dir() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write_softhsm2_conf(dir.path()).unwrap();
        let text = std::fs::read_to_string(&conf).unwrap();
        let tokens = dir.path().join("tokens");
        assert!(text.contains(&format!("directories.tokendir = {}", tokens.display())));
        assert!(text.contains("objectstore.backend = file"));
        assert!(text.contains("log.level = ERROR"));
        assert!(tokens.is_dir());
    }

    #[test]
    fn debug_output_redacts_the_pin() {
        let (_, sealer) = fresh_sealer("debug");
        let printed = format!("{sealer:?}");
        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains("user-pin-5678"));
        assert!(!sealer.describe().contains("user-pin-5678"));
    }
}
