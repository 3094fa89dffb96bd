//! The **enrolment key of a YubiHSM2 appliance**: what share packages from `split` (and DKG
//! shares) are encrypted to, on the backend whose test device has no ECDH.
//!
//! ## Construction: a P-256 scalar derived on demand from an on-device HMAC key
//!
//! The YubiHSM2 has `Derive ECDH`, but the `yubihsm` crate's mock device (the only YubiHSM2 our
//! tests may use) implements neither ECDH, nor wrap/unwrap data, nor RSA decryption; it does
//! implement `Sign HMAC`. So the enrolment private key is **never stored**, on the device or
//! off it. `init` generates on the device an HMAC-SHA256 key ([`ENROLMENT_KEY_ID`],
//! [`ENROLMENT_KEY_LABEL`]: capability `sign-hmac` only, origin `generated`, not exportable under
//! wrap; the same check as the sealing key), and whenever a package is opened the scalar is
//! derived from it:
//!
//! ```text
//! d = first HMAC_device(enrolment HMAC key, LABEL || len(serial) || serial || key id || ctr)
//!     for ctr = 0, 1, … that is a canonical non-zero P-256 scalar (0 < value < n)
//! P = d·G       (the enrolment public key `init` / `enrolment show` publish)
//! ```
//!
//! Rejection sampling, not reduction: an HMAC output is a uniform 256-bit string, and keeping
//! only the values below the group order `n` (≈ 2^256 − 2^224) gives a uniform scalar; about
//! one output in 2^32 is rejected and the next counter tried. Reducing mod `n` would be biased
//! by the same 2^-32, too much for a long-term key. `LABEL` separates this use of the device
//! from the sealer's HMAC inputs (and the key is a different object anyway); the device serial
//! and key id name the appliance, so a restored or relabelled key on another device does not
//! yield the same scalar.
//!
//! Opening a package is then the same ECIES as on a PKCS#11 token ([`crate::hsm::enrolment`]):
//! `K = x(d·E)` for the package's ephemeral key `E` (validated as a P-256 point first),
//! AES-256-GCM with the package AAD. So share packages, `split` and the DKG need no second
//! recipient type. `d`, the shared point and `K` exist on the host only in zeroizing buffers,
//! for the duration of one [`EnrolmentKey::open`]; every open derives `d` again (one device
//! round trip).
//!
//! ## What this costs against a device-resident ECDH key
//!
//! At rest nothing changes: the disk holds no key material, and without the device (and the
//! signer's authentication key) `d` cannot be computed. A **host compromise while a package is
//! opened** sees `d` — as it sees a share while it signs, the general limit of envelope sealing
//! (docs/security.md) — and, unlike with a device-resident key, also while it holds the
//! authentication password it can ask the device for `d` itself. With the real device's
//! `Derive ECDH` the scalar would never leave it; that path cannot be tested here (no mock
//! support), so it is not built.
//!
//! What this module refuses: an enrolment HMAC key that is missing, labelled otherwise, may do
//! more than `sign-hmac`, is exportable, or was imported; an ephemeral key that is not a P-256
//! point ([`EnrolmentError::Integrity`]); a package that fails authentication.
#![forbid(unsafe_code)]

use std::fmt;

use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::{Field, PrimeField};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use yubihsm::{object, Capability, Client};
use zeroize::{Zeroize, Zeroizing};

use crate::hsm::enrolment::{EnrolmentError, EnrolmentKey};
use crate::hsm::yubihsm::{check_hmac_key, hsm_error, YubiHsmSealer};
use crate::hsm::SealError;
use keystake_core::manifest::{EnrolmentPublicKey, PACKAGE_IV_LEN};

/// Object id of the enrolment HMAC key (the HMAC-key namespace; the sealing key's configured
/// id must differ).
pub const ENROLMENT_KEY_ID: object::Id = 0x0103;

/// Label of the enrolment HMAC key.
pub const ENROLMENT_KEY_LABEL: &str = "keystake-enrolment-key";

/// Domain separation of the scalar derivation (versioned: a new construction gets a new label).
const DERIVE_LABEL: &[u8] = b"keystake-enrolment-v1/yubihsm2/p256-scalar";

/// How many counters to try: each is rejected with probability < 2^-32.
const MAX_ATTEMPTS: u8 = 8;

/// The enrolment key of a YubiHSM2 appliance (see the module doc).
pub struct YubiHsmEnrolmentKey {
    client: Client,
    serial: String,
    public: EnrolmentPublicKey,
}

impl fmt::Debug for YubiHsmEnrolmentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "YubiHsmEnrolmentKey(device {}, {})",
            self.serial,
            self.public.fingerprint()
        )
    }
}

fn seal_error(error: SealError) -> EnrolmentError {
    EnrolmentError::Seal(error)
}

fn check_key(client: &Client) -> Result<(), EnrolmentError> {
    let info = client
        .get_object_info(ENROLMENT_KEY_ID, object::Type::HmacKey)
        .map_err(|e| match e.device_error() {
            Some(yubihsm::device::ErrorKind::ObjectNotFound) => EnrolmentError::Missing {
                label: ENROLMENT_KEY_LABEL.to_owned(),
            },
            _ => seal_error(hsm_error("looking up the enrolment key", e)),
        })?;
    check_hmac_key(&info, ENROLMENT_KEY_ID, ENROLMENT_KEY_LABEL).map_err(|e| match e {
        SealError::UnsuitableKey { label, reason } => EnrolmentError::Unsuitable { label, reason },
        other => seal_error(other),
    })
}

/// The device's serial number, which the derivation binds the scalar to.
fn device_serial(client: &Client) -> Result<String, EnrolmentError> {
    Ok(client
        .device_info()
        .map_err(|e| seal_error(hsm_error("reading the device serial number", e)))?
        .serial_number
        .to_string())
}

/// `d` of the module doc, by rejection sampling over HMAC outputs from the device.
fn derive_scalar(client: &Client, serial: &str) -> Result<Zeroizing<p256::Scalar>, EnrolmentError> {
    let serial_len = u8::try_from(serial.len())
        .map_err(|_| EnrolmentError::Crypto("the device serial number is too long"))?;
    for counter in 0..MAX_ATTEMPTS {
        let mut input = Vec::with_capacity(DERIVE_LABEL.len() + 1 + serial.len() + 3);
        input.extend_from_slice(DERIVE_LABEL);
        input.push(serial_len);
        input.extend_from_slice(serial.as_bytes());
        input.extend_from_slice(&ENROLMENT_KEY_ID.to_be_bytes());
        input.push(counter);
        let output = Zeroizing::new(
            client
                .sign_hmac(ENROLMENT_KEY_ID, input)
                .map_err(|e| seal_error(hsm_error("deriving the enrolment key", e)))?
                .into_vec(),
        );
        if output.len() != 32 {
            return Err(seal_error(SealError::Backend(format!(
                "the device returned a {}-byte HMAC-SHA256 output",
                output.len()
            ))));
        }
        let mut repr = p256::FieldBytes::default();
        repr.copy_from_slice(&output);
        // `from_repr` refuses values ≥ n: that is the rejection step.
        let candidate = Option::<p256::Scalar>::from(p256::Scalar::from_repr(repr));
        repr.as_mut_slice().zeroize();
        if let Some(scalar) = candidate {
            let scalar = Zeroizing::new(scalar);
            if !bool::from(scalar.is_zero()) {
                return Ok(scalar);
            }
        }
    }
    Err(EnrolmentError::Crypto(
        "no HMAC output of the device was a P-256 scalar (this happens with probability 2^-256)",
    ))
}

fn public_key_of(scalar: &p256::Scalar) -> Result<EnrolmentPublicKey, EnrolmentError> {
    let point = (p256::ProjectivePoint::GENERATOR * scalar).to_affine();
    Ok(EnrolmentPublicKey::from_sec1(
        point.to_encoded_point(false).as_bytes(),
    )?)
}

impl YubiHsmEnrolmentKey {
    /// Check the enrolment HMAC key on the sealer's device and compute the public key (one
    /// derivation; the scalar is dropped at once).
    pub fn open(sealer: &YubiHsmSealer) -> Result<Self, EnrolmentError> {
        let client = sealer.client().clone();
        check_key(&client)?;
        let serial = device_serial(&client)?;
        let public = public_key_of(&*derive_scalar(&client, &serial)?)?;
        Ok(YubiHsmEnrolmentKey {
            client,
            serial,
            public,
        })
    }

    /// `init`: generate the enrolment HMAC key on the device unless it exists (in the sealing
    /// key's domain, `sign-hmac` only); check it either way, then self-test the derived key
    /// (a value encrypted to the public key in software opens). Idempotent.
    pub fn ensure(sealer: &YubiHsmSealer) -> Result<Self, EnrolmentError> {
        let client = sealer.client();
        match client.get_object_info(ENROLMENT_KEY_ID, object::Type::HmacKey) {
            Ok(_) => {}
            Err(e) if e.device_error() == Some(yubihsm::device::ErrorKind::ObjectNotFound) => {
                let same_label = client
                    .list_objects(&[
                        object::Filter::Type(object::Type::HmacKey),
                        object::Filter::Label(object::Label::from(ENROLMENT_KEY_LABEL)),
                    ])
                    .map_err(|e| seal_error(hsm_error("listing HMAC keys", e)))?;
                if !same_label.is_empty() {
                    return Err(EnrolmentError::Inconsistent {
                        label: ENROLMENT_KEY_LABEL.to_owned(),
                        reason: format!(
                            "another HMAC key carries the label (object {:#06x}); the enrolment \
                             key must be object {ENROLMENT_KEY_ID:#06x}",
                            same_label[0].object_id
                        ),
                    });
                }
                sealer
                    .require_capabilities(Capability::GENERATE_HMAC_KEY, Capability::SIGN_HMAC)
                    .map_err(seal_error)?;
                client
                    .generate_hmac_key(
                        ENROLMENT_KEY_ID,
                        object::Label::from(ENROLMENT_KEY_LABEL),
                        sealer.domain(),
                        Capability::SIGN_HMAC,
                        yubihsm::hmac::Algorithm::Sha256,
                    )
                    .map_err(|e| seal_error(hsm_error("generating the enrolment key", e)))?;
            }
            Err(e) => return Err(seal_error(hsm_error("looking up the enrolment key", e))),
        }
        let key = Self::open(sealer)?;
        crate::hsm::enrolment::self_test(&key)?;
        Ok(key)
    }
}

impl EnrolmentKey for YubiHsmEnrolmentKey {
    fn public_key(&self) -> EnrolmentPublicKey {
        self.public
    }

    fn open(
        &self,
        ephemeral_public_key: &EnrolmentPublicKey,
        iv: &[u8; PACKAGE_IV_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, EnrolmentError> {
        // Validated (on the curve, not the identity) before the secret scalar touches it: the
        // invalid-curve attack needs an unchecked point.
        let peer = p256::PublicKey::from_sec1_bytes(ephemeral_public_key.as_sec1())
            .map_err(|_| EnrolmentError::Integrity)?;
        let scalar = derive_scalar(&self.client, &self.serial)?;
        let shared = Zeroizing::new((peer.to_projective() * *scalar).to_affine());
        drop(scalar);
        let mut key = Zeroizing::new([0u8; 32]);
        let mut x = shared.x();
        key.copy_from_slice(&x);
        x.as_mut_slice().zeroize();
        drop(shared);
        let aead = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, key.as_slice())
                .map_err(|_| EnrolmentError::Crypto("AES-256-GCM key"))?,
        );
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let plaintext_len = aead
            .open_in_place(
                Nonce::assume_unique_for_key(*iv),
                Aad::from(aad),
                buffer.as_mut_slice(),
            )
            .map_err(|_| EnrolmentError::Integrity)?
            .len();
        buffer.truncate(plaintext_len);
        Ok(buffer)
    }

    fn describe(&self) -> String {
        format!(
            "YubiHSM2 {} enrolment key (derived from HMAC key {ENROLMENT_KEY_ID:#06x})",
            self.serial
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::enrolment::contract_tests;
    use crate::hsm::yubihsm::test_support::{config, mock_password};
    use yubihsm::{Connector, Credentials, Domain};

    fn fresh_device() -> (Connector, YubiHsmSealer) {
        let connector = Connector::mockhsm();
        YubiHsmSealer::initialize_with(connector.clone(), &config(), &mock_password()).unwrap();
        let sealer =
            YubiHsmSealer::open_with(connector.clone(), &config(), &mock_password()).unwrap();
        (connector, sealer)
    }

    #[test]
    fn the_enrolment_key_contract_on_the_mock() {
        let (_, device_a) = fresh_device();
        let (_, device_b) = fresh_device();
        let a = YubiHsmEnrolmentKey::ensure(&device_a).unwrap();
        let b = YubiHsmEnrolmentKey::ensure(&device_b).unwrap();
        contract_tests::opens_only_what_was_made_for_it(&a, &b);
    }

    #[test]
    fn the_key_is_derived_the_same_each_time_and_only_the_hmac_key_is_stored() {
        let (connector, sealer) = fresh_device();
        assert!(matches!(
            YubiHsmEnrolmentKey::open(&sealer),
            Err(EnrolmentError::Missing { .. })
        ));
        let first = YubiHsmEnrolmentKey::ensure(&sealer).unwrap().public_key();
        assert_eq!(
            YubiHsmEnrolmentKey::ensure(&sealer).unwrap().public_key(),
            first
        );
        assert_eq!(
            YubiHsmEnrolmentKey::open(&sealer).unwrap().public_key(),
            first
        );
        let admin = Client::open(connector, Credentials::default(), true).unwrap();
        let info = admin
            .get_object_info(ENROLMENT_KEY_ID, object::Type::HmacKey)
            .unwrap();
        assert_eq!(info.capabilities, Capability::SIGN_HMAC);
        assert_eq!(info.origin, object::Origin::Generated);
        // Nothing else was created for it: no asymmetric key, no opaque object.
        let objects = admin.list_objects(&[]).unwrap();
        let kinds: Vec<_> = objects
            .iter()
            .map(|entry| (entry.object_type, entry.object_id))
            .collect();
        assert!(
            kinds.contains(&(object::Type::HmacKey, ENROLMENT_KEY_ID)),
            "{kinds:?}"
        );
        assert!(!kinds.iter().any(|(kind, _)| *kind == object::Type::Opaque));
        // The scalar matches the HMAC the device computes, by the documented derivation.
        let serial = device_serial(&admin).unwrap();
        let scalar = derive_scalar(&admin, &serial).unwrap();
        assert_eq!(public_key_of(&scalar).unwrap(), first);
    }

    /// `dkg run` on a YubiHSM2: the ceremony's share decryptor over the derived key opens a
    /// share encrypted to the published key and answers `None` (dealer to blame) for a
    /// tampered one.
    #[test]
    fn the_dkg_share_decryptor_works_on_the_mock() {
        use keystake_core::dkg::ShareDecryptor;
        let (_, sealer) = fresh_device();
        let key = YubiHsmEnrolmentKey::ensure(&sealer).unwrap();
        let public = key.public_key();
        let decryptor = crate::hsm::enrolment::EnrolmentDecryptor::new(Box::new(key));
        assert_eq!(decryptor.public_key(), public);
        let share = [0x42u8; 32];
        let aad = b"dkg share aad".to_vec();
        let (ephemeral, iv, mut ciphertext) =
            crate::hsm::enrolment::encrypt_to(&public, &share, |_| aad.clone()).unwrap();
        let opened = decryptor
            .open(&ephemeral, &iv, &aad, &ciphertext)
            .unwrap()
            .expect("opens");
        assert_eq!(*opened, share);
        ciphertext[0] ^= 1;
        assert!(decryptor
            .open(&ephemeral, &iv, &aad, &ciphertext)
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_unsuitable_enrolment_hmac_key_is_refused() {
        let (connector, sealer) = fresh_device();
        let admin = Client::open(connector, Credentials::default(), true).unwrap();
        admin
            .generate_hmac_key(
                ENROLMENT_KEY_ID,
                object::Label::from(ENROLMENT_KEY_LABEL),
                Domain::DOM1,
                Capability::SIGN_HMAC | Capability::EXPORTABLE_UNDER_WRAP,
                yubihsm::hmac::Algorithm::Sha256,
            )
            .unwrap();
        for refused in [
            YubiHsmEnrolmentKey::ensure(&sealer),
            YubiHsmEnrolmentKey::open(&sealer),
        ] {
            match refused {
                Err(EnrolmentError::Unsuitable { reason, .. }) => {
                    assert!(reason.contains("exportable"), "{reason}")
                }
                other => panic!("expected Unsuitable, got {other:?}"),
            }
        }
        // The sealing key's id cannot be configured onto the enrolment key's.
        let mut clash = config();
        clash.key_id = ENROLMENT_KEY_ID;
        assert!(matches!(
            YubiHsmSealer::open_with(Connector::mockhsm(), &clash, &mock_password()),
            Err(SealError::InvalidConfig(_))
        ));
    }

    #[test]
    fn rejection_sampling_refuses_values_at_or_above_the_group_order() {
        // n itself and n + 1 are not canonical scalars; n − 1 is.
        let order: [u8; 32] =
            hex::decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
                .unwrap()
                .try_into()
                .unwrap();
        let candidate = |bytes: [u8; 32]| {
            Option::<p256::Scalar>::from(p256::Scalar::from_repr(p256::FieldBytes::from(bytes)))
        };
        assert!(candidate(order).is_none());
        let mut above = order;
        above[31] += 1;
        assert!(candidate(above).is_none());
        assert!(candidate([0xff; 32]).is_none());
        let mut below = order;
        below[31] -= 1;
        assert!(candidate(below).is_some());
    }
}
