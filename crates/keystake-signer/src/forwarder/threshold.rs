//! The threshold forwarder (`connect --cluster`): one Web3Signer endpoint on loopback for an
//! unmodified validator client, in front of the `n` appliances that each hold one share of every
//! distributed validator of the cluster.
//!
//! `POST /api/v1/eth2/sign/{group key}`: the request is decoded here first (its signing root is
//! computed on the cluster's network, so a request the appliances would refuse as malformed is
//! refused at once, 400), then sent unchanged to every appliance concurrently, addressed by the
//! group key. As soon as `t` partials have arrived they are combined (Lagrange at zero,
//! [`threshold::combine_with_keys`]) and checked in one random-linear-combination check that
//! covers every partial under its appliance's share public key and the result under the group
//! key (two pairings, whatever `t`; a wrong partial or result passes it with probability below
//! 2^-64); the answer goes out in Web3Signer's format. The share keys
//! of a validator are decoded and checked against its group key once, on its first signature,
//! not on every one. Later partials are discarded (their requests finish in the background).
//! Only when the batch check fails is each partial checked alone: an invalid partial names its
//! appliance (warning, `keystake_forwarder_partial_failures_total`, `X-KeyStake-Culprits`) and
//! does not stop a combination that still reaches `t` with the partials that arrive later. When
//! fewer than `t` are in and `t` is only reachable if every partial not yet checked is valid,
//! those are checked at once, so an invalid one ends a hopeless request without waiting.
//!
//! Without `t` valid partials the answer says exactly why (see [`verdict`]): 412 when so many
//! appliances refused for slashing protection that no `t` can sign, 503 when fewer than `t`
//! answered at all within the deadline (the unreachable are named), otherwise 503 (some
//! unreachable) or 502, with every appliance's outcome in the body. An appliance that refuses
//! while others sign is logged as a warning: its slashing history now differs from theirs.
//!
//! Retries: a request whose connection could not be made, or broke before an answer, is sent
//! again until the deadline (the forwarder's timeout, counted from the request's arrival).
//! Re-sending is safe: an appliance signs the same signing root again, never a different one.
//!
//! Also: `GET /api/v1/eth2/publicKeys` (the group keys), `GET /upcheck` (200 when at least `t`
//! appliances answer), `GET /healthcheck` (per validator: how many reachable appliances hold its
//! share), `GET /metrics`. Everything else is 404. Host/Origin checks as in [`super`].
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use keystake_core::cluster::{ClusterPlan, ClusterValidator};
use keystake_core::consensus::Network;
use keystake_core::request;
use keystake_core::threshold;
use keystake_core::types::{BlsPublicKey, BlsSignature, ShareIndex};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};
use serde_json::{json, Value};

use super::cluster::{self, ApplianceLink};
use super::error::{ApplianceReport, NotCombined};
use super::{check_browser_headers, check_listen_address, ForwardError, ForwarderError};
use crate::net::client::{ClientError, FailureKind};

/// Largest signing request accepted (a full block with many transactions fits).
pub const MAX_SIGN_BODY: usize = 4 * 1024 * 1024;
/// Pause between connection attempts to an appliance that could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Name of the response header listing the share indices whose partials were invalid.
pub const CULPRITS_HEADER: &str = "x-keystake-culprits";

/// What `connect --cluster` is given.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub listen: SocketAddr,
    pub cluster: PathBuf,
    pub allow_non_loopback: bool,
    /// The deadline of one duty: from the request's arrival to the last retry.
    pub timeout: Duration,
}

/// What one appliance answered to one signing request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A partial signature (not yet verified).
    Partial(BlsSignature),
    /// 412: refused by its slashing protection, with its reason.
    Refused(String),
    /// No connection, or no answer before the deadline.
    Unreachable(String),
    /// Any other answer or failure (an error status, a malformed body, our certificate refused).
    Failed(String),
}

/// Why no combination was possible, from the outcomes of `m` configured appliances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At least `m − t + 1` refused for slashing protection: no `t` can sign (412).
    SlashingRefused,
    /// Fewer than `t` answered at all (503).
    Unavailable,
    /// A mix (invalid partials, errors, some refusals, some unreachable) — 503 when any is
    /// unreachable (it may work again), else 502.
    Mixed { any_unreachable: bool },
}

/// Pure: the verdict for `m` appliances, `t` needed, given how many refused and how many were
/// unreachable (the rest answered with invalid partials or errors, or were not awaited).
pub fn verdict(m: usize, t: usize, refused: usize, unreachable: usize) -> Verdict {
    if refused + t > m {
        Verdict::SlashingRefused
    } else if m - unreachable < t {
        Verdict::Unavailable
    } else {
        Verdict::Mixed {
            any_unreachable: unreachable > 0,
        }
    }
}

/// Per-appliance metrics (label `appliance` = share index; nothing secret is a label).
struct ForwarderMetrics {
    registry: Registry,
    latency: HistogramVec,
    partial_failures: IntCounterVec,
    refusals: IntCounterVec,
    combinations: IntCounterVec,
}

impl ForwarderMetrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("keystake_forwarder".to_owned()), None)
            .expect("valid metrics prefix");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "appliance_seconds",
                "Time from sending a signing request to an appliance to its answer",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["appliance"],
        )
        .expect("valid histogram");
        let partial_failures = IntCounterVec::new(
            Opts::new(
                "partial_failures_total",
                "Signing requests an appliance did not answer with a valid partial, by reason",
            ),
            &["appliance", "reason"],
        )
        .expect("valid counter");
        let refusals = IntCounterVec::new(
            Opts::new(
                "refusals_total",
                "Signing requests an appliance refused for slashing protection",
            ),
            &["appliance"],
        )
        .expect("valid counter");
        let combinations = IntCounterVec::new(
            Opts::new(
                "combinations_total",
                "Signing requests by result (combined, slashing_refused, unavailable, failed)",
            ),
            &["outcome"],
        )
        .expect("valid counter");
        for collector in [
            Box::new(latency.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(partial_failures.clone()),
            Box::new(refusals.clone()),
            Box::new(combinations.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        ForwarderMetrics {
            registry,
            latency,
            partial_failures,
            refusals,
            combinations,
        }
    }

    fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The threshold forwarder.
pub struct ThresholdForwarder {
    plan: ClusterPlan,
    appliances: Vec<ApplianceLink>,
    network: Network,
    timeout: Duration,
    listen: SocketAddr,
    metrics: ForwarderMetrics,
    /// Each validator's share keys, decoded and checked against its group key on its first
    /// signature (a cluster of thousands of validators starts at once; every later signature
    /// of that validator decodes no key).
    share_keys: BTreeMap<BlsPublicKey, OnceLock<threshold::ShareKeys>>,
}

impl std::fmt::Debug for ThresholdForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThresholdForwarder")
            .field("appliances", &self.appliances.len())
            .field("threshold", &self.plan.threshold())
            .finish_non_exhaustive()
    }
}

/// The partials and every appliance's outcome, as the answers arrive.
#[derive(Default)]
struct Tally {
    /// Partials not (yet) found invalid: checked together once `t` have arrived.
    valid: Vec<(ShareIndex, BlsSignature)>,
    /// Indices among `valid` already found valid by a check of their own.
    checked: BTreeSet<ShareIndex>,
    reports: BTreeMap<ShareIndex, (String, &'static str, String)>,
    culprits: Vec<ShareIndex>,
    refused: usize,
    unreachable: usize,
}

impl Tally {
    /// The partials among `valid` that no check of their own has found valid yet.
    fn unchecked(&self) -> Vec<(ShareIndex, BlsSignature)> {
        self.valid
            .iter()
            .filter(|(index, _)| !self.checked.contains(index))
            .copied()
            .collect()
    }
}

impl ThresholdForwarder {
    pub fn new(
        options: &ClusterOptions,
        loaded: cluster::LoadedCluster,
    ) -> Result<Self, ForwarderError> {
        let share_keys = loaded
            .plan
            .validators()
            .map(|validator| (validator.group_public_key, OnceLock::new()))
            .collect();
        Ok(ThresholdForwarder {
            share_keys,
            plan: loaded.plan,
            appliances: loaded.appliances,
            network: loaded.network,
            timeout: options.timeout,
            listen: options.listen,
            metrics: ForwarderMetrics::new(),
        })
    }

    /// Set the address actually bound (port 0 resolved), for the Host check.
    fn bound(mut self, address: SocketAddr) -> Self {
        self.listen = address;
        self
    }

    pub async fn handle(self: &Arc<Self>, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        if let Err(error) = check_browser_headers(request.headers(), self.listen) {
            tracing::warn!(%method, %path, %error, "request refused");
            return error.into_response();
        }
        let result = match (&method, path.as_str()) {
            (&Method::GET, "/upcheck") => Ok(self.upcheck().await),
            (&Method::GET, "/healthcheck") => Ok(self.healthcheck().await),
            (&Method::GET, "/api/v1/eth2/publicKeys") => Ok(self.public_keys()),
            (&Method::GET, "/metrics") => Ok((
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                self.metrics.render(),
            )
                .into_response()),
            (&Method::POST, p) if p.starts_with("/api/v1/eth2/sign/") => {
                let key = p.trim_start_matches("/api/v1/eth2/sign/").to_owned();
                self.sign(&key, request).await
            }
            _ => Err(ForwardError::NotFound(format!(
                "{method} {path}: the threshold forwarder serves signing, publicKeys, upcheck, \
                 healthcheck and metrics only"
            ))),
        };
        match result {
            Ok(response) => response,
            Err(error) => {
                if error.is_upstream() {
                    tracing::warn!(%method, %path, %error, "no signature");
                } else {
                    tracing::debug!(%method, %path, %error, "request refused");
                }
                error.into_response()
            }
        }
    }

    fn public_keys(&self) -> Response<Body> {
        let keys: Vec<String> = self
            .plan
            .validators()
            .map(|v| v.group_public_key.to_hex())
            .collect();
        axum::Json(keys).into_response()
    }

    /// GET `path` on every appliance concurrently: index → answer, or the failure.
    async fn ask_all_get(&self, path: &str) -> Vec<(ShareIndex, Result<Bytes, String>)> {
        let asks = self.appliances.iter().map(|link| {
            let client = link.client.clone().with_timeout(self.timeout);
            let path = path.to_owned();
            async move {
                let answer = match client.request(Method::GET, &path, &[], None).await {
                    Ok(response) if response.status == 200 => Ok(response.body),
                    Ok(response) => Err(format!("answered {}", response.status)),
                    Err(error) => Err(error.to_string()),
                };
                (link.index, answer)
            }
        });
        futures_util::future::join_all(asks).await
    }

    fn url_of(&self, index: ShareIndex) -> &str {
        self.appliances
            .iter()
            .find(|a| a.index == index)
            .map_or("", |a| a.url.as_str())
    }

    async fn upcheck(&self) -> Response<Body> {
        let answers = self.ask_all_get("/upcheck").await;
        let t = self.plan.threshold().get() as usize;
        let down: Vec<Value> = answers
            .iter()
            .filter_map(|(index, answer)| {
                answer.as_ref().err().map(|error| {
                    json!({"index": index.get(), "url": self.url_of(*index), "error": error})
                })
            })
            .collect();
        let reachable = answers.len() - down.len();
        if reachable >= t {
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "OK").into_response()
        } else {
            let body = json!({
                "error": format!("{reachable} of {} appliances reachable, {t} needed to sign", answers.len()),
                "unreachable": down,
            });
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }

    /// Web3Signer's health shape, with one check per appliance and, per validator, how many
    /// reachable appliances list its share key.
    async fn healthcheck(&self) -> Response<Body> {
        let answers = self.ask_all_get("/api/v1/eth2/publicKeys").await;
        let t = self.plan.threshold().get() as usize;
        let mut held: BTreeMap<ShareIndex, Vec<String>> = BTreeMap::new();
        let mut checks = Vec::new();
        for (index, answer) in &answers {
            let keys: Result<Vec<String>, String> =
                answer.as_ref().map_err(Clone::clone).and_then(|body| {
                    serde_json::from_slice(body)
                        .map_err(|e| format!("publicKeys not a key list: {e}"))
                });
            let mut check = json!({
                "id": format!("appliance-{}", index.get()),
                "url": self.url_of(*index),
                "status": if keys.is_ok() { "UP" } else { "DOWN" },
            });
            match keys {
                Ok(keys) => {
                    held.insert(*index, keys);
                }
                Err(error) => check["error"] = json!(error),
            }
            checks.push(check);
        }
        let mut all_up = true;
        let validators: Vec<Value> = self
            .plan
            .validators()
            .map(|validator| {
                let reachable = validator
                    .share_public_keys
                    .iter()
                    .filter(|(index, key)| {
                        held.get(index).is_some_and(|keys| {
                            keys.iter().any(|k| k.eq_ignore_ascii_case(&key.to_hex()))
                        })
                    })
                    .count();
                all_up &= reachable >= t;
                json!({
                    "group_public_key": validator.group_public_key.to_hex(),
                    "reachable": reachable,
                    "needed": t,
                    "status": if reachable >= t { "UP" } else { "DOWN" },
                })
            })
            .collect();
        let status = if all_up { "UP" } else { "DOWN" };
        let body = json!({
            "status": status,
            "outcome": status,
            "checks": checks,
            "validators": validators,
        });
        let code = if all_up {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        (code, axum::Json(body)).into_response()
    }

    async fn sign(
        self: &Arc<Self>,
        key_text: &str,
        request: Request<Body>,
    ) -> Result<Response<Body>, ForwardError> {
        let arrived = Instant::now();
        let deadline = arrived + self.timeout;
        let group_key: BlsPublicKey = key_text.parse().map_err(|e| {
            // The path is the client's: quoted and cut short in the answer.
            let shown: String = key_text.chars().take(100).collect();
            ForwardError::BadRequest(format!("{shown:?} is not a BLS public key: {e}"))
        })?;
        let validator = self
            .plan
            .validator(&group_key)
            .ok_or_else(|| {
                ForwardError::NotFound(format!("no validator with group key {group_key}"))
            })?
            .clone();
        let (parts, body) = request.into_parts();
        let wants_json = crate::net::rest::sign::wants_json(&parts.headers);
        let body = read_body(body).await?;
        let intent = request::parse_sign_request(&body, &self.network)
            .map_err(|e| ForwardError::BadRequest(e.to_string()))?;
        let message = intent.signing_root;
        // Before any appliance is asked: a validator whose keys cannot be checked is never
        // signed for.
        let keys = self.share_keys_of(&validator)?;

        let (sender, mut receiver) = tokio::sync::mpsc::channel(self.appliances.len().max(1));
        let path = format!("/api/v1/eth2/sign/{}", group_key.to_hex());
        for link in &self.appliances {
            let sender = sender.clone();
            let link = link.clone();
            let path = path.clone();
            let body = body.clone();
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = ask(&link, &path, body, deadline).await;
                let label = link.index.get().to_string();
                this.metrics
                    .latency
                    .with_label_values(&[label.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                // Counted and logged here, whether or not the answer still matters.
                let fail = |reason: &str| {
                    this.metrics
                        .partial_failures
                        .with_label_values(&[label.as_str(), reason])
                        .inc();
                };
                let url = link.url.as_str();
                match &outcome {
                    Outcome::Refused(_) => {
                        this.metrics
                            .refusals
                            .with_label_values(&[label.as_str()])
                            .inc();
                    }
                    Outcome::Unreachable(reason) => {
                        fail("unreachable");
                        tracing::warn!(appliance = link.index.get(), %url, %reason, "appliance unreachable");
                    }
                    Outcome::Failed(reason) => {
                        fail("error");
                        tracing::warn!(appliance = link.index.get(), %url, %reason, "appliance failed");
                    }
                    Outcome::Partial(_) => {}
                }
                // The receiver is gone when the request failed: nothing is left to report.
                // After a combination it is held by `report_late_refusals` until every
                // appliance has answered.
                let _ = sender.send((link.index, outcome)).await;
            });
        }
        drop(sender);

        let t = self.plan.threshold().get() as usize;
        let mut pending = self.appliances.len();
        let mut tally = Tally::default();
        while let Some(first) = receiver.recv().await {
            // Whatever else has already arrived is filed with it.
            let mut batch = vec![first];
            while let Ok(more) = receiver.try_recv() {
                batch.push(more);
            }
            pending -= batch.len();
            for (index, outcome) in batch {
                self.record(&mut tally, index, outcome);
            }
            if tally.valid.len() < t {
                // When some appliance has already failed to give a partial and the combination is
                // only still possible if every partial not yet checked is valid, check those now:
                // an invalid one ends the request at once (as it did when each partial was checked
                // on arrival) instead of waiting for appliances that can no longer make up t. (In a
                // healthy t-of-t cluster every arrival is that tight; it waits for the batch.)
                let answered = self.appliances.len() - pending;
                if tally.valid.len() + pending == t
                    && answered > tally.valid.len()
                    && tally.checked.len() < tally.valid.len()
                {
                    let unchecked = tally.unchecked();
                    let invalid = invalid_partials(&validator, &unchecked, message.as_bytes());
                    tally
                        .checked
                        .extend(unchecked.iter().map(|(index, _)| *index));
                    self.set_aside(&mut tally, &invalid);
                }
                if tally.valid.len() + pending < t {
                    break;
                }
                continue;
            }
            // One check covers every partial so far and the result (two pairings); only if
            // it fails is each partial checked alone, and the invalid ones are set aside.
            let combined = match threshold::combine_with_keys(
                keys,
                message.as_bytes(),
                &tally.valid,
                true,
                &mut rand::rngs::OsRng,
            ) {
                Ok(combined) => combined,
                Err(threshold::ThresholdError::NotEnoughValidPartials { culprits, .. }) => {
                    // Each partial was checked alone: what is left is valid.
                    tally
                        .checked
                        .extend(tally.valid.iter().map(|(index, _)| *index));
                    self.set_aside(&mut tally, &culprits);
                    if tally.valid.len() + pending < t {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    return Err(ForwardError::Broken {
                        upstream: "the combination".to_owned(),
                        detail: e.to_string(),
                    })
                }
            };
            self.set_aside(&mut tally, &combined.culprits);
            // The answers still to come are only reported (a refusal among them means the
            // group signature went out without that appliance); they no longer matter here.
            tokio::spawn(report_late_refusals(group_key, receiver));
            self.metrics
                .combinations
                .with_label_values(&["combined"])
                .inc();
            if tally.refused > 0 {
                tracing::warn!(
                    group_key = %group_key,
                    refused = %refusers(&tally),
                    "an appliance refused for slashing protection while others signed: their \
                     slashing histories now differ"
                );
            }
            let mut response =
                crate::net::rest::sign::signature_answer(&combined.signature, wants_json);
            if let Some(value) = culprits_value(&tally.culprits) {
                response.headers_mut().insert(CULPRITS_HEADER, value);
            }
            tracing::debug!(group_key = %group_key, elapsed = ?arrived.elapsed(), "combined");
            return Ok(response);
        }

        // No combination. Partials never checked (fewer than t arrived) are checked now, so
        // that an invalid one is still named; everything still pending was not awaited.
        let invalid = invalid_partials(&validator, &tally.unchecked(), message.as_bytes());
        self.set_aside(&mut tally, &invalid);
        for link in &self.appliances {
            tally.reports.entry(link.index).or_insert_with(|| {
                (
                    link.url.clone(),
                    "not_awaited",
                    "no answer awaited: a combination was already impossible".to_owned(),
                )
            });
        }
        let m = self.appliances.len();
        let verdict = verdict(m, t, tally.refused, tally.unreachable);
        let outcome_label = match verdict {
            Verdict::SlashingRefused => "slashing_refused",
            Verdict::Unavailable => "unavailable",
            Verdict::Mixed { .. } => "failed",
        };
        self.metrics
            .combinations
            .with_label_values(&[outcome_label])
            .inc();
        let mut summary = format!(
            "no signature for {group_key}: {} valid partial signatures of {t} needed",
            tally.valid.len()
        );
        for (index, (url, outcome, detail)) in &tally.reports {
            if *outcome != "signed" {
                let _ = write!(
                    summary,
                    "; appliance {} ({url}) {outcome}: {detail}",
                    index.get()
                );
            }
        }
        let appliances = tally
            .reports
            .iter()
            .map(|(index, (url, outcome, detail))| ApplianceReport {
                index: index.get(),
                url: url.clone(),
                outcome,
                detail: detail.clone(),
            })
            .collect();
        Err(ForwardError::NotCombined(Box::new(NotCombined {
            verdict,
            summary,
            appliances,
            culprits: tally.culprits.iter().map(|i| i.get()).collect(),
        })))
    }

    /// The share keys of `validator`, checked on its first signature (see the field).
    fn share_keys_of(
        &self,
        validator: &ClusterValidator,
    ) -> Result<&threshold::ShareKeys, ForwardError> {
        let broken = |detail: String| ForwardError::Broken {
            upstream: "the cluster's share public keys".to_owned(),
            detail,
        };
        let cell = self
            .share_keys
            .get(&validator.group_public_key)
            .ok_or_else(|| broken(format!("no entry for {}", validator.group_public_key)))?;
        if let Some(keys) = cell.get() {
            return Ok(keys);
        }
        let keys = threshold::ShareKeys::verify(
            validator.threshold,
            &validator.share_public_keys,
            &validator.group_public_key,
        )
        .map_err(|e| broken(e.to_string()))?;
        // Two first signatures at once may both check; either result is the same.
        Ok(cell.get_or_init(|| keys))
    }

    /// Set aside the partials of `culprits` as invalid: each is named (warning, metric, report,
    /// culprits header) and no longer counts towards `t`.
    fn set_aside(&self, tally: &mut Tally, culprits: &[ShareIndex]) {
        for index in culprits {
            let Some(position) = tally.valid.iter().position(|(i, _)| i == index) else {
                continue;
            };
            tally.valid.remove(position);
            tally.culprits.push(*index);
            let url = self.url_of(*index).to_owned();
            self.metrics
                .partial_failures
                .with_label_values(&[index.get().to_string().as_str(), "invalid_partial"])
                .inc();
            tracing::warn!(
                appliance = index.get(),
                %url,
                "invalid partial signature: it does not verify under the appliance's share \
                 public key; discarded"
            );
            tally.reports.insert(
                *index,
                (
                    url,
                    "invalid_partial",
                    "the partial signature does not verify under its share public key".to_owned(),
                ),
            );
        }
        tally.culprits.sort_unstable();
    }

    /// File one appliance's outcome; a partial counts as valid until a check says otherwise.
    fn record(&self, tally: &mut Tally, index: ShareIndex, outcome: Outcome) {
        let url = self.url_of(index).to_owned();
        let report = match outcome {
            Outcome::Partial(signature) => {
                tally.valid.push((index, signature));
                (url, "signed", String::new())
            }
            Outcome::Refused(reason) => {
                tally.refused += 1;
                (url, "refused", reason)
            }
            Outcome::Unreachable(reason) => {
                tally.unreachable += 1;
                (url, "unreachable", reason)
            }
            Outcome::Failed(reason) => (url, "failed", reason),
        };
        tally.reports.insert(index, report);
    }
}

/// The indices among `partials` that do not verify under their appliance's share public key:
/// one random-linear-combination check (`threshold::verify_partials_batch`, which falls back to
/// one check per partial only when the batch fails, so a bad partial is still pinned to its
/// appliance). For the partials of a request that could not be combined.
fn invalid_partials(
    validator: &ClusterValidator,
    partials: &[(ShareIndex, BlsSignature)],
    message: &[u8],
) -> Vec<ShareIndex> {
    let mut indices = Vec::with_capacity(partials.len());
    let mut pairs = Vec::with_capacity(partials.len());
    let mut invalid = Vec::new();
    for (index, signature) in partials {
        match validator.share_public_keys.get(index) {
            Some(key) => {
                indices.push(*index);
                pairs.push((*key, *signature));
            }
            None => invalid.push(*index),
        }
    }
    if let Err(bad) = threshold::verify_partials_batch(message, &pairs, &mut rand::rngs::OsRng) {
        invalid.extend(bad.into_iter().map(|position| indices[position]));
    }
    invalid
}

/// After a combination: wait for the appliances still answering and warn about each refusal
/// among them — the group signature went out, and that appliance's slashing history now differs
/// from the others'. Ends when every appliance's request has finished (by the deadline).
async fn report_late_refusals(
    group_key: BlsPublicKey,
    mut receiver: tokio::sync::mpsc::Receiver<(ShareIndex, Outcome)>,
) {
    while let Some((index, outcome)) = receiver.recv().await {
        if let Outcome::Refused(reason) = outcome {
            tracing::warn!(
                group_key = %group_key,
                refused = %format!("appliance {}: {reason}", index.get()),
                "an appliance refused for slashing protection while others signed: their \
                 slashing histories now differ"
            );
        }
    }
}

fn refusers(tally: &Tally) -> String {
    tally
        .reports
        .iter()
        .filter(|(_, (_, outcome, _))| *outcome == "refused")
        .map(|(index, (_, _, detail))| format!("appliance {}: {detail}", index.get()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// `2,4` for the culprits header; `None` when there are none.
fn culprits_value(culprits: &[ShareIndex]) -> Option<HeaderValue> {
    if culprits.is_empty() {
        return None;
    }
    let text = culprits
        .iter()
        .map(|i| i.get().to_string())
        .collect::<Vec<_>>()
        .join(",");
    HeaderValue::from_str(&text).ok()
}

async fn read_body(body: Body) -> Result<Bytes, ForwardError> {
    Limited::new(body, MAX_SIGN_BODY)
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .map_err(|err| {
            if err.is::<http_body_util::LengthLimitError>() {
                ForwardError::BodyTooLarge {
                    limit: MAX_SIGN_BODY,
                }
            } else {
                ForwardError::BadRequest(format!("reading the request body: {err}"))
            }
        })
}

/// Send the signing request to one appliance until it answers or the deadline passes.
async fn ask(link: &ApplianceLink, path: &str, body: Bytes, deadline: Instant) -> Outcome {
    let headers = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    let mut last_failure = String::from("no attempt made before the deadline");
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Outcome::Unreachable(last_failure);
        }
        let client = link.client.clone().with_timeout(left);
        match client
            .request(Method::POST, path, &headers, Some(body.to_vec()))
            .await
        {
            Ok(response) => return classify(response.status, &response.body),
            Err(ClientError::Timeout { timeout, .. }) => {
                return Outcome::Unreachable(format!("no answer within {timeout:?}"))
            }
            Err(error) => match error.failure_kind() {
                // Nothing reached the appliance, or the exchange broke: sending again is safe.
                Some(FailureKind::Connect) | Some(FailureKind::Other) => {
                    last_failure = error.to_string();
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                }
                Some(FailureKind::ClientCertificateRefused) => {
                    return Outcome::Failed(format!("refused our client certificate: {error}"))
                }
                Some(FailureKind::ServerCertificateRejected) => {
                    return Outcome::Failed(format!("its certificate is not trusted: {error}"))
                }
                None => return Outcome::Failed(error.to_string()),
            },
        }
    }
}

/// An appliance's answer as an [`Outcome`].
pub fn classify(status: u16, body: &[u8]) -> Outcome {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error_text = || {
        json.as_ref()
            .and_then(|j| j["error"].as_str())
            .map(|e| e.chars().take(512).collect::<String>())
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned())
    };
    match status {
        200 => match json
            .as_ref()
            .and_then(|j| j["signature"].as_str())
            .and_then(|s| s.parse::<BlsSignature>().ok())
        {
            Some(signature) => Outcome::Partial(signature),
            None => Outcome::Failed("answered 200 without a signature".to_owned()),
        },
        412 => {
            let rule = json
                .as_ref()
                .and_then(|j| j["rule"].as_str())
                .map(|r| format!("{r}: "))
                .unwrap_or_default();
            Outcome::Refused(format!("{rule}{}", error_text()))
        }
        503 => Outcome::Unreachable(format!("answered 503: {}", error_text())),
        other => Outcome::Failed(format!("answered {other}: {}", error_text())),
    }
}

/// `connect --cluster`: load and check the cluster, bind, probe the appliances once (logged,
/// not fatal), print `forwarding on http://ADDR to N appliances (t-of-n)`, serve until
/// `shutdown`.
pub async fn run(
    options: &ClusterOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwarderError> {
    let exposure = check_listen_address(options.listen, options.allow_non_loopback)?;
    let loaded = cluster::load(&options.cluster)?;
    let (listener, address) = super::bind(options.listen, exposure).await?;
    let forwarder = Arc::new(ThresholdForwarder::new(options, loaded)?.bound(address));
    let t = forwarder.plan.threshold().get();
    let n = forwarder.plan.participants();
    for (index, answer) in forwarder.ask_all_get("/upcheck").await {
        match answer {
            Ok(_) => tracing::info!(
                appliance = index.get(),
                url = forwarder.url_of(index),
                "appliance reachable"
            ),
            Err(error) => {
                tracing::warn!(appliance = index.get(), url = forwarder.url_of(index), %error, "appliance check failed; forwarding anyway")
            }
        }
    }
    tracing::info!(%address, appliances = forwarder.appliances.len(), threshold = t, validators = forwarder.plan.validators().count(), "threshold forwarder ready");
    println!(
        "forwarding on http://{address} to {} appliances ({t}-of-{n})",
        forwarder.appliances.len()
    );
    let handle = move |request| {
        let forwarder = forwarder.clone();
        async move { forwarder.handle(request).await }
    };
    super::serve(listener, handle, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        // 3-of-4: two refusals leave only two that could sign.
        assert_eq!(verdict(4, 3, 2, 0), Verdict::SlashingRefused);
        assert_eq!(verdict(4, 3, 2, 2), Verdict::SlashingRefused);
        assert_eq!(verdict(4, 3, 1, 2), Verdict::Unavailable);
        assert_eq!(verdict(4, 3, 0, 2), Verdict::Unavailable);
        assert_eq!(
            verdict(4, 3, 1, 1),
            Verdict::Mixed {
                any_unreachable: true
            }
        );
        assert_eq!(
            verdict(4, 3, 1, 0),
            Verdict::Mixed {
                any_unreachable: false
            }
        );
        // 3 configured appliances of a 3-of-4 cluster: one refusal is already enough.
        assert_eq!(verdict(3, 3, 1, 0), Verdict::SlashingRefused);
    }

    #[test]
    fn answers_are_classified() {
        let signature = "0x".to_owned() + &"a".repeat(192);
        let body = format!("{{\"signature\":\"{signature}\"}}");
        assert!(matches!(
            classify(200, body.as_bytes()),
            Outcome::Partial(_)
        ));
        assert!(matches!(classify(200, b"{}"), Outcome::Failed(_)));
        assert_eq!(
            classify(412, br#"{"error":"same target","rule":"double_vote"}"#),
            Outcome::Refused("double_vote: same target".to_owned())
        );
        assert!(matches!(classify(503, b"{}"), Outcome::Unreachable(_)));
        assert!(matches!(classify(500, b"oops"), Outcome::Failed(text) if text.contains("oops")));
    }
}
