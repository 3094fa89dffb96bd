//! The dry run behind `POST /api/v1/eth2/slashable/{identifier}`: would this signing request be
//! refused by slashing protection, and why? Same body and key resolution as signing; the check
//! runs on the store's writer (so it sees every committed record) but records nothing, binds no
//! network and creates no row. Nothing is unsealed or signed.
//!
//! Refuses (as signing does): unknown keys (404), malformed requests (400), and every request
//! while the database is unavailable (503). A request that *would* be refused is not an error
//! here: it is the answer.
#![forbid(unsafe_code)]

use serde::Serialize;

use super::{ServiceError, SigningService};
use crate::store::Refusal;
use keystake_core::slashing::{NotSafe, Safe};
use keystake_core::types::{BlsPublicKey, Root};

/// The dry-run answer (serialized as the endpoint's JSON body).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlashableAnswer {
    /// True when signing this request now would be refused.
    pub refused: bool,
    /// False for message types slashing protection does not cover (they are never refused
    /// by it).
    pub protected: bool,
    /// `valid` (would be signed and recorded), `same_data` (identical message signed before,
    /// would be answered again) or the refusing rule's name.
    pub verdict: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The earlier record (or watermark) the request conflicts with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<NotSafe>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub signing_root: Root,
    pub public_key: BlsPublicKey,
}

impl SigningService {
    /// Decode the request as [`SigningService::sign`] does and check it without recording.
    pub async fn check_slashable(
        &self,
        identifier: &str,
        body: &[u8],
    ) -> Result<SlashableAnswer, ServiceError> {
        let key = self.resolve(identifier)?;
        let intent = self.decode(body)?;
        let mut answer = SlashableAnswer {
            refused: false,
            protected: intent.slashing.is_some(),
            verdict: "valid".to_owned(),
            reason: None,
            conflict: None,
            kind: intent.kind.as_str(),
            signing_root: intent.signing_root,
            public_key: key.public_key,
        };
        let Some(check) = intent.slashing else {
            return Ok(answer);
        };
        let request = check.with_signing_root(intent.signing_root);
        match self
            .store
            .check_only(key.public_key, intent.genesis_validators_root, request)
            .await?
        {
            Ok(Safe::Valid) => {}
            Ok(Safe::SameData) => answer.verdict = "same_data".to_owned(),
            Err(refusal) => {
                answer.refused = true;
                answer.reason = Some(refusal.to_string());
                match refusal {
                    Refusal::Slashable(not_safe) => {
                        answer.verdict = not_safe.rule().to_owned();
                        answer.conflict = Some(not_safe);
                    }
                    Refusal::WrongNetwork { .. } => {
                        answer.verdict = "genesis_validators_root_mismatch".to_owned();
                    }
                }
            }
        }
        Ok(answer)
    }
}
