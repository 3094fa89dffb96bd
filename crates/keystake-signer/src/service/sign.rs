//! The one signing path, shared by REST `sign`, gRPC `Sign` and every item of `SignBatch`, as
//! consecutive steps: admit the client → resolve the key → decode the request → authorize the
//! operation on that key → slashing check + durable record (with the audit entry, one
//! transaction) → unseal + sign → audit a failure. Also the authorization (and its audit) of
//! the calls that are not signatures.
//!
//! The record and the signature overlap: once the store's writer has found a request safe inside
//! its open transaction (`PendingCheck::tentative`), the share is unsealed and the signature
//! computed while the transaction commits; the signature is released only on the committed
//! outcome (`PendingCheck::durable`) and dropped unseen when the commit fails. A request the
//! writer refuses is never signed. A signature slashing protection does not cover is computed
//! while its audit entry commits, and released only once the entry is durable.
//!
//! Every signing request leaves exactly one audit entry before its answer leaves, plus a second
//! one if signing fails after it was allowed: a slashable request's entry is chained in the
//! slashing record's own transaction (signed, or refused by slashing protection); any other
//! signature's entry is committed before the signature is released; every other refusal
//! (unknown client, not granted, unknown key, malformed request, database down) gets its own
//! entry. For non-signing calls (listing, dry run, combine, administration) authorization
//! refusals are audited.
//!
//! Refuses: clients the policy does not name (before their request is read), then unknown keys
//! and malformed requests, then (key, operation) pairs without a grant.
#![forbid(unsafe_code)]

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::{KeyInfo, ServiceError, Signed, SigningService, SlashableAnswer};
use crate::service::authz::Caller;
use crate::service::observe::Phase;
use crate::store::StoreError;
use keystake_core::audit::{Outcome, Record};
use keystake_core::policy::{Operation, Target};
use keystake_core::request::SignKind;
use keystake_core::slashing::{CheckOutcome, Safe};

/// Longest reason written into an audit entry: server-made text around at most a few
/// client strings, each already cut to `keystake_core::text::MAX_ECHOED_BYTES`.
const MAX_AUDITED_REASON: usize = 1024;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What is known about a request so far, for its audit entry.
struct Draft {
    record: Record,
    /// The store already holds this request's entry (written with the slashing record).
    recorded: bool,
}

impl Draft {
    fn new(caller: &Caller, key: &str, kind: &str) -> Draft {
        let key = keystake_core::text::echo(key);
        Draft {
            record: Record {
                time_ms: now_ms(),
                api: caller.api.as_str().to_owned(),
                client: keystake_core::text::echo(&caller.name()),
                fingerprint: caller
                    .identity
                    .as_ref()
                    .map(|i| i.fingerprint_hex())
                    .unwrap_or_default(),
                key,
                kind: keystake_core::text::echo(kind),
                signing_root: String::new(),
                outcome: Outcome::Signed,
                reason: String::new(),
            },
            recorded: false,
        }
    }

    fn with(&self, outcome: Outcome, reason: String) -> Record {
        Record {
            outcome,
            reason: keystake_core::text::bounded(&reason, MAX_AUDITED_REASON),
            ..self.record.clone()
        }
    }
}

/// What a request is, for the record of an unknown client's refusal.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A signature for `identifier` (counted as a signing request of unknown type).
    Signing { identifier: String },
    /// Any other operation, by name (`slashing_dry_run`, `keymanager`, …).
    Operation(&'static str),
}

impl SigningService {
    /// Append an entry; a database that cannot take it is logged (the request is answered with
    /// its own error either way).
    async fn audit(&self, record: Record) {
        // The entry is public data; when the database refuses it (a latched store), the log is
        // the only place the refusal is accounted for, so it carries the entry's fields.
        let logged = record.clone();
        if let Err(error) = self.store.record_audit(record).await {
            tracing::error!(
                %error,
                api = logged.api,
                client = logged.client,
                fingerprint = logged.fingerprint,
                key = logged.key,
                kind = logged.kind,
                signing_root = logged.signing_root,
                outcome = logged.outcome.as_str(),
                reason = logged.reason,
                "audit entry could not be written"
            );
        }
    }

    /// The signing path on behalf of a client (see the module documentation).
    pub async fn sign_as(
        &self,
        caller: &Caller,
        identifier: &str,
        body: &[u8],
    ) -> Result<Signed, ServiceError> {
        let started = Instant::now();
        let mut draft = Draft::new(caller, identifier, "");
        let result = self.sign_steps(caller, identifier, body, &mut draft).await;
        let kind = if draft.record.kind.is_empty() {
            "unknown"
        } else {
            draft.record.kind.as_str()
        };
        self.observer
            .signing_outcome(caller.api, kind, result.as_ref().map(|_| ()));
        match &result {
            Ok(_) => self.observer.phase(Phase::Total, started.elapsed()),
            Err(error) => {
                if let ServiceError::Forbidden(_) = error {
                    let operation = SignKind::from_api_name(kind)
                        .map_or("any", |k| Operation::of_sign_kind(k).as_str());
                    self.observer.refusal(caller.api, operation);
                }
                if !draft.recorded {
                    let record = draft.with(Outcome::Refused, error.to_string());
                    self.audit(record).await;
                }
            }
        }
        result
    }

    async fn sign_steps(
        &self,
        caller: &Caller,
        identifier: &str,
        body: &[u8],
        draft: &mut Draft,
    ) -> Result<Signed, ServiceError> {
        self.authorizer.check_known(caller)?;
        let key = self.resolve(identifier)?;
        draft.record.key = key.public_key.to_hex();
        let intent = self.decode(body)?;
        draft.record.kind = intent.kind.as_str().to_owned();
        draft.record.signing_root = intent.signing_root.to_hex();
        self.authorizer.check(
            caller,
            &Target::Key(key.key_ref()),
            Operation::of_sign_kind(intent.kind),
        )?;
        if let (Some(check), Some(clock)) = (&intent.slashing, self.network.clock()) {
            // Before anything is recorded: a far-future record would block the key for good.
            clock.check_duty(check, now_ms() / 1000, self.future_margin_epochs)?;
        }
        let signed_entry = draft.with(Outcome::Signed, String::new());
        // The signature is computed while its record (slashing record and audit entry, or the
        // audit entry alone) commits — the fsync is I/O wait, signing is CPU — and released only
        // once that record is durable. Signing starts only on the writer's tentative safe
        // verdict, so nothing is unsealed for a request it refuses or while the store is
        // latched; a commit that fails drops the signature unseen (design: a signature leaves
        // the appliance only after the record that allows it is on disk).
        let db_started = Instant::now();
        let mut pending = match intent.slashing {
            Some(check) => self.store.check_and_record_audited(
                key.public_key,
                intent.genesis_validators_root,
                check.with_signing_root(intent.signing_root),
                signed_entry,
            )?,
            None => self.store.record_audit_pending(signed_entry)?,
        };
        let early = match pending.tentative().await {
            Some(Ok(Safe::Valid | Safe::SameData)) => {
                Some(self.sign_root(key.clone(), intent.signing_root))
            }
            _ => None,
        };
        let durable = async {
            let verdict = pending.durable().await;
            self.observer.phase(Phase::SlashingDb, db_started.elapsed());
            verdict
        };
        let (verdict, early) = match early {
            Some(signing) => released_after(durable, signing).await,
            None => (durable.await, None),
        };
        match verdict? {
            Ok(Safe::Valid) | Ok(Safe::SameData) => {}
            Err(refusal) => {
                draft.recorded = true;
                return Err(ServiceError::Refused(refusal));
            }
        }
        draft.recorded = true;
        let signature = match early {
            Some(signature) => signature,
            // Not reached (the writer decides every job before it commits), but a durable safe
            // verdict is all signing needs.
            None => self.sign_root(key.clone(), intent.signing_root).await,
        };
        match signature {
            Ok(signature) => Ok(Signed {
                signature,
                kind: intent.kind,
                signing_root: intent.signing_root,
                public_key: key.public_key,
            }),
            Err(error) => {
                let record = draft.with(
                    Outcome::Failed,
                    format!("allowed and recorded, but signing failed: {error}"),
                );
                self.audit(record).await;
                Err(error)
            }
        }
    }

    /// Refuse a client the policy does not name, before anything of its request is read:
    /// audited, counted, and for a signing request also counted as a refused signing request.
    pub async fn admit(&self, caller: &Caller, admission: Admission) -> Result<(), ServiceError> {
        let Err(denial) = self.authorizer.check_known(caller) else {
            return Ok(());
        };
        let error = ServiceError::from(denial);
        let draft = match &admission {
            Admission::Signing { identifier } => {
                self.observer
                    .signing_outcome(caller.api, "unknown", Err(&error));
                self.observer.refusal(caller.api, "any");
                Draft::new(caller, identifier, "")
            }
            Admission::Operation(what) => {
                self.observer.refusal(caller.api, what);
                Draft::new(caller, "", what)
            }
        };
        self.audit(draft.with(Outcome::Refused, error.to_string()))
            .await;
        Err(error)
    }

    /// Refuse a client the policy does not name (audited), for an operation called `what`.
    pub async fn check_known(
        &self,
        caller: &Caller,
        what: &'static str,
    ) -> Result<(), ServiceError> {
        self.admit(caller, Admission::Operation(what)).await
    }

    /// Authorize an operation that is not a signature (administration, key-less calls);
    /// refusals are audited.
    pub async fn authorize(
        &self,
        caller: &Caller,
        target: &Target,
        operation: Operation,
    ) -> Result<(), ServiceError> {
        let decision = self
            .authorizer
            .check_known(caller)
            .and_then(|()| self.authorizer.check(caller, target, operation));
        if let Err(denial) = decision {
            self.observer.refusal(caller.api, operation.as_str());
            let error = ServiceError::from(denial);
            let key = match target {
                Target::Key(key) => key.public_key.to_hex(),
                Target::AllKeys => "all".to_owned(),
                Target::None => String::new(),
            };
            let record = Draft::new(caller, &key, operation.as_str())
                .with(Outcome::Refused, error.to_string());
            self.audit(record).await;
            return Err(error);
        }
        Ok(())
    }

    /// The keys `caller` holds any grant on (all keys without a policy). A client the policy
    /// does not name is refused.
    pub async fn key_infos_for(&self, caller: &Caller) -> Result<Vec<KeyInfo>, ServiceError> {
        self.check_known(caller, "list_keys").await?;
        Ok(self.key_infos_where(|key| self.authorizer.may_use_key(caller, &key.key_ref())))
    }

    /// The slashing dry run on behalf of `caller`: needs the same grant as signing the request
    /// would. Authorization refusals are audited; the dry run itself records nothing.
    pub async fn check_slashable_as(
        &self,
        caller: &Caller,
        identifier: &str,
        body: &[u8],
    ) -> Result<SlashableAnswer, ServiceError> {
        self.check_known(caller, "slashing_dry_run").await?;
        let key = self.resolve(identifier)?;
        let intent = self.decode(body)?;
        self.authorize(
            caller,
            &Target::Key(key.key_ref()),
            Operation::of_sign_kind(intent.kind),
        )
        .await?;
        self.check_slashable(identifier, body).await
    }
}

/// Run `signing` alongside the `durable` outcome of its record: the signature is handed back
/// only with a durable outcome that is safe; when the commit fails first, `signing` is dropped
/// unfinished (a blocking-pool job still running finishes detached and zeroizes its share) and
/// the refusal is not held back by the HSM.
async fn released_after<D, S>(durable: D, signing: S) -> (D::Output, Option<S::Output>)
where
    D: std::future::Future<Output = Result<CheckOutcome, StoreError>>,
    S: std::future::Future,
{
    let mut durable = std::pin::pin!(durable);
    let mut signing = std::pin::pin!(signing);
    enum First<V, T> {
        Durable(V),
        Signed(T),
    }
    let first = tokio::select! {
        verdict = &mut durable => First::Durable(verdict),
        signature = &mut signing => First::Signed(signature),
    };
    match first {
        First::Durable(verdict @ Ok(Ok(_))) => {
            let signature = signing.await;
            (verdict, Some(signature))
        }
        First::Durable(refused) => (refused, None),
        First::Signed(signature) => (durable.await, Some(signature)),
    }
}
