//! The gRPC API (`proto/keystake/v1/*.proto`): a thin adapter over the same
//! [`SigningService`] as REST. Served on the REST port: the mutual-TLS accept loop hands every
//! request whose content-type is `application/grpc…` to [`router`] (see [`super::app`]), so
//! both APIs share one TLS configuration, one client identity and one authorization policy.
//!
//! Statuses come from the one mapping in [`super::error`]. Refuses: batches over
//! [`MAX_BATCH_ITEMS`], messages over [`MAX_MESSAGE_BYTES`], malformed bytes fields
//! (INVALID_ARGUMENT), and whatever the service refuses.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::net::tls::ClientIdentity;
use crate::service::authz::{Api, Caller};
use crate::service::health::HealthError;
use crate::service::{KeyInfo, ServiceError, Signed, SigningService};
use keystake_core::policy::{Operation, Target};
use keystake_core::threshold;
use keystake_core::types::{BlsPublicKey, BlsSignature, ShareIndex, Threshold};

pub mod dkg;

/// Generated protobuf types and service stubs of package `keystake.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("keystake.v1");
}

use pb::admin_server::{Admin, AdminServer};
use pb::signer_server::{Signer, SignerServer};

/// Most items one `SignBatch` call may carry.
pub const MAX_BATCH_ITEMS: usize = 1024;
/// Largest gRPC message accepted or sent. A signing request is at most
/// `crate::net::rest::body::MAX_BODY_BYTES` (1 MiB) on REST; a batch is bounded by this and by
/// [`MAX_BATCH_ITEMS`], so one call can no longer make the appliance hold 64 MiB.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The gRPC services as an axum router (paths `/keystake.v1.Signer/*`, `/keystake.v1.Admin/*`).
pub fn router(service: Arc<SigningService>) -> axum::Router {
    let signer = SignerServer::new(GrpcSigner {
        service: service.clone(),
    })
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let admin = AdminServer::new(GrpcAdmin { service })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tonic::service::Routes::new(signer)
        .add_service(admin)
        .prepare()
        .into_axum_router()
}

fn caller<T>(request: &Request<T>) -> Caller {
    Caller::new(
        request.extensions().get::<Arc<ClientIdentity>>().cloned(),
        Api::Grpc,
    )
}

fn bad_argument(message: String) -> Status {
    ApiError::bad_request(message).into()
}

fn signed_to_pb(signed: &Signed) -> pb::SignResponse {
    pb::SignResponse {
        signature: signed.signature.0.to_vec(),
        signing_root: signed.signing_root.0.to_vec(),
        public_key: signed.public_key.0.to_vec(),
        kind: signed.kind.as_str().to_owned(),
    }
}

fn error_to_pb(error: ServiceError) -> pb::Error {
    let api_error = ApiError::from(error);
    let body = api_error.body();
    pb::Error {
        code: super::error::grpc_code(api_error.status()) as i32,
        http_status: u32::from(api_error.status().as_u16()),
        message: api_error.message().to_owned(),
        rule: body["rule"].as_str().unwrap_or_default().to_owned(),
        detail_json: body.to_string(),
    }
}

fn key_info_to_pb(info: &KeyInfo) -> pb::KeyInfo {
    pb::KeyInfo {
        public_key: info.public_key.0.to_vec(),
        share_index: info.share_index.unwrap_or(0),
        threshold: info.threshold.unwrap_or(0),
        participants: info.participants.unwrap_or(0),
        group_public_key: info
            .group_public_key
            .map(|k| k.0.to_vec())
            .unwrap_or_default(),
    }
}

fn public_key(bytes: &[u8], what: &str) -> Result<BlsPublicKey, Status> {
    BlsPublicKey::from_slice(bytes)
        .map_err(|_| bad_argument(format!("{what}: expected 48 bytes, got {}", bytes.len())))
}

struct GrpcSigner {
    service: Arc<SigningService>,
}

#[tonic::async_trait]
impl Signer for GrpcSigner {
    async fn sign(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::SignResponse>, Status> {
        let caller = caller(&request);
        let item = request.into_inner();
        let signed = self
            .service
            .sign_as(&caller, &item.identifier, item.json_body.as_bytes())
            .await?;
        Ok(Response::new(signed_to_pb(&signed)))
    }

    /// Items for the same identifier run one after another in request order; different keys
    /// run concurrently (their slashing histories are independent).
    async fn sign_batch(
        &self,
        request: Request<pb::SignBatchRequest>,
    ) -> Result<Response<pb::SignBatchResponse>, Status> {
        let caller = caller(&request);
        let items = request.into_inner().items;
        if items.len() > MAX_BATCH_ITEMS {
            return Err(bad_argument(format!(
                "batch of {} items; at most {MAX_BATCH_ITEMS} per call",
                items.len()
            )));
        }
        let mut by_key: HashMap<String, Vec<(usize, pb::SignRequest)>> = HashMap::new();
        for (position, item) in items.into_iter().enumerate() {
            by_key
                .entry(item.identifier.to_ascii_lowercase())
                .or_default()
                .push((position, item));
        }
        let caller = &caller;
        let service = &self.service;
        let groups = by_key.into_values().map(|group| async move {
            let mut done = Vec::with_capacity(group.len());
            for (position, item) in group {
                let outcome = match service
                    .sign_as(caller, &item.identifier, item.json_body.as_bytes())
                    .await
                {
                    Ok(signed) => pb::sign_result::Outcome::Signed(signed_to_pb(&signed)),
                    Err(error) => pb::sign_result::Outcome::Error(error_to_pb(error)),
                };
                done.push((position, outcome));
            }
            done
        });
        let mut results: Vec<(usize, pb::sign_result::Outcome)> =
            futures_util::future::join_all(groups)
                .await
                .into_iter()
                .flatten()
                .collect();
        results.sort_by_key(|(position, _)| *position);
        Ok(Response::new(pb::SignBatchResponse {
            results: results
                .into_iter()
                .map(|(_, outcome)| pb::SignResult {
                    outcome: Some(outcome),
                })
                .collect(),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<pb::ListKeysRequest>,
    ) -> Result<Response<pb::ListKeysResponse>, Status> {
        let caller = caller(&request);
        let keys = self.service.key_infos_for(&caller).await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.iter().map(key_info_to_pb).collect(),
        }))
    }

    async fn health(
        &self,
        _request: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let report = self.service.probe_health().await;
        let check = |id: &str, result: Result<(), String>| pb::HealthCheck {
            id: id.to_owned(),
            up: result.is_ok(),
            error: result.err().unwrap_or_default(),
        };
        let down =
            |result: &Result<(), HealthError>| result.as_ref().map_err(|e| e.to_string()).copied();
        let checks = vec![
            check("hsm-session", down(&report.hsm)),
            check("slashing-protection-db", down(&report.database)),
            check(
                "keys-loaded",
                report
                    .reload_error()
                    .map_or(Ok(()), |e| Err(format!("Reload failed: {e}"))),
            ),
        ];
        Ok(Response::new(pb::HealthResponse {
            up: report.is_up(),
            checks,
            keys_loaded: u32::try_from(report.keys_loaded).unwrap_or(u32::MAX),
        }))
    }

    async fn check_slashing(
        &self,
        request: Request<pb::SignRequest>,
    ) -> Result<Response<pb::CheckSlashingResponse>, Status> {
        let caller = caller(&request);
        let item = request.into_inner();
        let answer = self
            .service
            .check_slashable_as(&caller, &item.identifier, item.json_body.as_bytes())
            .await?;
        Ok(Response::new(pb::CheckSlashingResponse {
            refused: answer.refused,
            protected: answer.protected,
            verdict: answer.verdict,
            reason: answer.reason.unwrap_or_default(),
            conflict_json: answer
                .conflict
                .map(|c| serde_json::to_string(&c).unwrap_or_default())
                .unwrap_or_default(),
            kind: answer.kind.to_owned(),
            signing_root: answer.signing_root.0.to_vec(),
            public_key: answer.public_key.0.to_vec(),
        }))
    }

    async fn combine(
        &self,
        request: Request<pb::CombineRequest>,
    ) -> Result<Response<pb::CombineResponse>, Status> {
        let caller = caller(&request);
        // Pure computation on public values; any client the policy names may use it.
        self.service.check_known(&caller, "combine").await?;
        let request = request.into_inner();
        let t = Threshold::new(request.threshold)
            .map_err(|e| bad_argument(format!("threshold: {e}")))?;
        // Refuse oversized input before parsing any of it (the core checks again, with the rest).
        for (what, got) in [
            ("threshold", request.threshold as usize),
            ("share public keys", request.share_public_keys.len()),
            ("partial signatures", request.partials.len()),
        ] {
            if got > threshold::MAX_COMBINE_SHARES {
                return Err(
                    ServiceError::from(threshold::ThresholdError::CombineTooLarge {
                        what,
                        got,
                        max: threshold::MAX_COMBINE_SHARES,
                    })
                    .into(),
                );
            }
        }
        let group = public_key(&request.group_public_key, "group_public_key")?;
        let mut share_public_keys = BTreeMap::new();
        for (i, bytes) in request.share_public_keys.iter().enumerate() {
            let index = u32::try_from(i + 1)
                .ok()
                .and_then(|i| ShareIndex::new(i).ok())
                .ok_or_else(|| bad_argument("too many share public keys".into()))?;
            share_public_keys.insert(
                index,
                public_key(bytes, &format!("share_public_keys[{i}]"))?,
            );
        }
        let mut partials = Vec::with_capacity(request.partials.len());
        for partial in &request.partials {
            let index = ShareIndex::new(partial.share_index)
                .map_err(|e| bad_argument(format!("share_index: {e}")))?;
            let signature = BlsSignature::from_slice(&partial.signature).map_err(|_| {
                bad_argument(format!(
                    "partial {}: signature must be 96 bytes",
                    partial.share_index
                ))
            })?;
            partials.push((index, signature));
        }
        // Milliseconds of pairings and multi-scalar multiplications: on the blocking pool, so
        // concurrent combines never stall the runtime's workers (health, signing).
        // Share keys are checked once per key set: a DVT middleware sends the same set with
        // every signature of a validator.
        let cache = self.service.combine_keys();
        let combined = tokio::task::spawn_blocking(move || {
            cache.combine(
                t,
                &share_public_keys,
                &group,
                &request.message,
                &partials,
                request.verify_partials,
                &mut rand::rngs::OsRng,
            )
        })
        .await
        .map_err(ServiceError::from)?
        .map_err(ServiceError::from)?;
        Ok(Response::new(pb::CombineResponse {
            signature: combined.signature.0.to_vec(),
            culprits: combined.culprits.iter().map(|i| i.get()).collect(),
        }))
    }
}

struct GrpcAdmin {
    service: Arc<SigningService>,
}

#[tonic::async_trait]
impl Admin for GrpcAdmin {
    async fn export_slashing_protection(
        &self,
        request: Request<pb::ExportSlashingProtectionRequest>,
    ) -> Result<Response<pb::ExportSlashingProtectionResponse>, Status> {
        let caller = caller(&request);
        let keys = request
            .into_inner()
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, bytes)| public_key(bytes, &format!("public_keys[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let interchange = self.service.export_interchange_as(&caller, &keys).await?;
        Ok(Response::new(pb::ExportSlashingProtectionResponse {
            interchange_json: interchange.to_json(),
        }))
    }

    async fn import_slashing_protection(
        &self,
        request: Request<pb::ImportSlashingProtectionRequest>,
    ) -> Result<Response<pb::ImportSlashingProtectionResponse>, Status> {
        let caller = caller(&request);
        let text = request.into_inner().interchange_json;
        let summary = self.service.import_interchange_as(&caller, &text).await?;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::ImportSlashingProtectionResponse {
            validators: count(summary.validators),
            blocks_imported: count(summary.blocks_imported),
            attestations_imported: count(summary.attestations_imported),
            duplicates_skipped: count(summary.duplicates_skipped),
        }))
    }

    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        let caller = caller(&request);
        self.service
            .authorize(&caller, &Target::AllKeys, Operation::Operator)
            .await?;
        let summary = self.service.authorizer().reload().map_err(ApiError::from)?;
        Ok(Response::new(pb::ReloadPolicyResponse {
            enforced: summary.enforced,
            clients: u32::try_from(summary.clients).unwrap_or(u32::MAX),
            crl_reloaded: summary.tls_reloaded,
        }))
    }
}
