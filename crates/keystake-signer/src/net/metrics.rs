//! Prometheus metrics: what the appliance is doing, on a separate plain-HTTP listener
//! (`metrics_listen`, loopback in every example; a warning is logged for any other address).
//!
//! Families (all prefixed `keystake_`): `requests_total{api,type,outcome}`,
//! `signing_phase_seconds{phase}` (slashing_db, unseal, bls, total), `keys_loaded`,
//! `hsm_session_up`, `slashing_db_up`, `authorization_refusals_total{api,operation}`,
//! `message_cache{event}` (hits, misses, hashes, tables of the shared hash-to-G2 cache since
//! start: whether hot roots get their fixed-base tables), `build_info{version}`. Nothing secret is ever a label: keys and clients are not labels (the
//! audit log has them), so cardinality stays fixed.
//!
//! The listener answers `GET /metrics` only (404 otherwise) and refuses nothing else: it carries
//! no secrets and changes nothing, but it is plain HTTP, so keep it off public interfaces.
//!
//! A scrape does no work on the HSM or the database (issue 17): the health gauges are a cache,
//! refreshed every [`HEALTH_REFRESH`] by one background task through the service's one health
//! probe. Scraping as fast as an unauthenticated client can no longer open HSM sessions or take
//! the database's write lock (which the probe's `BEGIN IMMEDIATE` does) per request.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use keystake_core::bls::message_cache::CacheStats;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::net::error::status_of;
use crate::service::authz::Api;
use crate::service::observe::{Observer, Phase};
use crate::service::{ServiceError, SigningService};

/// Latency buckets (seconds): a few hundred microseconds (BLS) to seconds (a stalled disk).
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The outcome label of a request, from its HTTP status (itself from the one mapping in
/// `api::error`).
pub fn outcome_label(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        400 | 413 | 415 => "bad_request",
        403 => "forbidden",
        404 => "not_found",
        412 => "slashing_refused",
        503 => "unavailable",
        _ => "error",
    }
}

/// How a scheduled prune of the slashing history ended (`keystake_slashing_prunes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneOutcome {
    /// Every key visited.
    Completed,
    /// Stopped between two transactions at shutdown (what it committed is covered).
    Stopped,
    /// Ended by an error (logged).
    Failed,
}

impl PruneOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PruneOutcome::Completed => "completed",
            PruneOutcome::Stopped => "stopped",
            PruneOutcome::Failed => "failed",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    phases: HistogramVec,
    keys_loaded: IntGauge,
    hsm_up: IntGauge,
    db_up: IntGauge,
    refusals: IntCounterVec,
    message_cache: IntGaugeVec,
    pruned_attestations: IntCounter,
    prunes: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("keystake".into()), None).expect("a static prefix is valid");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Signing requests by API, request type and outcome",
            ),
            &["api", "type", "outcome"],
        )
        .expect("valid metric");
        let phases = HistogramVec::new(
            HistogramOpts::new(
                "signing_phase_seconds",
                "Time spent per phase of the signing path (slashing_db, unseal, bls, total)",
            )
            .buckets(BUCKETS.to_vec()),
            &["phase"],
        )
        .expect("valid metric");
        let keys_loaded = IntGauge::new("keys_loaded", "Keys (or shares) loaded for signing")
            .expect("valid metric");
        let hsm_up = IntGauge::new(
            "hsm_session_up",
            "1 when the HSM session answered the last health probe (refreshed every 5 s, not per scrape)",
        )
        .expect("valid metric");
        let db_up = IntGauge::new(
            "slashing_db_up",
            "1 when the slashing-protection database answered the last health probe (refreshed every 5 s)",
        )
        .expect("valid metric");
        let refusals = IntCounterVec::new(
            Opts::new(
                "authorization_refusals_total",
                "Requests refused by the authorization policy, by API and operation",
            ),
            &["api", "operation"],
        )
        .expect("valid metric");
        let message_cache = IntGaugeVec::new(
            Opts::new(
                "message_cache",
                "Shared message cache since start: lookups that hit or missed, hash-to-G2 computations, fixed-base tables built (refreshed every 5 s)",
            ),
            &["event"],
        )
        .expect("valid metric");
        let pruned_attestations = IntCounter::new(
            "slashing_pruned_attestations_total",
            "Attestations removed from the slashing history by scheduled prunes ([slashing] prune), their watermarks raised over them",
        )
        .expect("valid metric");
        let prunes = IntCounterVec::new(
            Opts::new(
                "slashing_prunes_total",
                "Scheduled prunes of the slashing history by outcome (completed, stopped at shutdown, failed)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let build = IntGaugeVec::new(
            Opts::new("build_info", "Build of the running signer (value 1)"),
            &["version"],
        )
        .expect("valid metric");
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(phases.clone()),
            Box::new(keys_loaded.clone()),
            Box::new(hsm_up.clone()),
            Box::new(db_up.clone()),
            Box::new(refusals.clone()),
            Box::new(message_cache.clone()),
            Box::new(pruned_attestations.clone()),
            Box::new(prunes.clone()),
            Box::new(build),
        ] {
            registry.register(collector).expect("names are unique");
        }
        Metrics {
            registry,
            requests,
            phases,
            keys_loaded,
            hsm_up,
            db_up,
            refusals,
            message_cache,
            pruned_attestations,
            prunes,
        }
    }

    /// A scheduled prune ended, having removed `removed` attestations.
    pub fn pruned(&self, removed: usize, outcome: PruneOutcome) {
        self.pruned_attestations
            .inc_by(u64::try_from(removed).unwrap_or(u64::MAX));
        self.prunes.with_label_values(&[outcome.as_str()]).inc();
    }

    pub fn request(&self, api: &str, kind: &str, status: u16) {
        self.requests
            .with_label_values(&[api, kind, outcome_label(status)])
            .inc();
    }

    pub fn phase(&self, phase: Phase, elapsed: Duration) {
        self.phases
            .with_label_values(&[phase.as_str()])
            .observe(elapsed.as_secs_f64());
    }

    pub fn refusal(&self, api: &str, operation: &str) {
        self.refusals.with_label_values(&[api, operation]).inc();
    }

    pub fn set_keys_loaded(&self, count: usize) {
        self.keys_loaded
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn set_message_cache(&self, stats: CacheStats) {
        for (event, count) in [
            ("hits", stats.hits),
            ("misses", stats.misses),
            ("hashes", stats.hashes),
            ("tables", stats.tables),
        ] {
            self.message_cache
                .with_label_values(&[event])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    pub fn set_health(&self, hsm_up: bool, db_up: bool) {
        self.hsm_up.set(i64::from(hsm_up));
        self.db_up.set(i64::from(db_up));
    }

    /// The Prometheus text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(error) = encoder.encode(&self.registry.gather(), &mut out) {
            tracing::error!(%error, "metrics encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The service reports typed results; the labels are decided here, from the one status mapping
/// in `net::error`.
impl Observer for Metrics {
    fn phase(&self, phase: Phase, elapsed: Duration) {
        Metrics::phase(self, phase, elapsed);
    }

    fn signing_outcome(&self, api: Api, kind: &str, result: Result<(), &ServiceError>) {
        let status = result.map_or_else(|error| status_of(error).as_u16(), |()| 200);
        self.request(api.as_str(), kind, status);
    }

    fn refusal(&self, api: Api, operation: &str) {
        Metrics::refusal(self, api.as_str(), operation);
    }

    fn keys_loaded(&self, count: usize) {
        self.set_keys_loaded(count);
    }
}

#[derive(Clone)]
struct Scraped {
    metrics: Arc<Metrics>,
}

/// How often the health gauges are refreshed from the health probe (a usual Prometheus scrape
/// interval is 15 s or more, so every scrape sees a fresh value).
pub const HEALTH_REFRESH: Duration = Duration::from_secs(5);

/// The metrics listener's router: `GET /metrics`, rendering what the gauges hold. The health
/// gauges are set by [`refresh_health`], never by a scrape.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Scraped { metrics })
}

/// Probe health now and every `interval` after, setting the health and key gauges; runs until
/// the process ends. The one place the metrics listener touches the HSM or the database.
pub async fn refresh_health(
    metrics: Arc<Metrics>,
    service: Arc<SigningService>,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    // A slow probe (a stalled disk) delays the next one instead of queueing a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let health = service.probe_health().await;
        metrics.set_health(health.hsm.is_ok(), health.database.is_ok());
        metrics.set_keys_loaded(health.keys_loaded);
        metrics.set_message_cache(service.message_cache_stats());
    }
}

async fn scrape(State(Scraped { metrics }): State<Scraped>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// Bind the metrics listener (a non-loopback address is allowed but logged as a warning).
pub async fn bind(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    if !address.ip().is_loopback() {
        tracing::warn!(%address, "metrics listener is not on loopback: it is plain HTTP without authentication");
    }
    tokio::net::TcpListener::bind(address).await
}

/// Serve the metrics router until the process ends, through `crate::net::listen`, with the
/// health gauges refreshed in the background every [`HEALTH_REFRESH`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    service: Arc<SigningService>,
) {
    let refresher = tokio::spawn(refresh_health(metrics.clone(), service, HEALTH_REFRESH));
    // The one accept loop, plain HTTP: the same connection cap and header timeout as the API.
    crate::net::listen::serve(
        listener,
        crate::net::listen::PlainHttp,
        router(metrics),
        std::future::pending::<()>(),
    )
    .await;
    refresher.abort();
    tracing::error!("metrics listener stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exposed_with_their_labels() {
        let metrics = Metrics::new();
        metrics.request("rest", "ATTESTATION", 200);
        metrics.request("grpc", "BLOCK_V2", 412);
        metrics.phase(Phase::Bls, Duration::from_micros(700));
        metrics.refusal("grpc", "deposit");
        metrics.set_keys_loaded(3);
        metrics.set_health(true, false);
        metrics.set_message_cache(CacheStats {
            hits: 40,
            misses: 2,
            hashes: 2,
            tables: 1,
        });
        let text = metrics.render();
        for line in [
            "keystake_requests_total{api=\"rest\",outcome=\"ok\",type=\"ATTESTATION\"} 1",
            "keystake_requests_total{api=\"grpc\",outcome=\"slashing_refused\",type=\"BLOCK_V2\"} 1",
            "keystake_signing_phase_seconds_bucket{phase=\"bls\",le=\"0.001\"} 1",
            "keystake_signing_phase_seconds_bucket{phase=\"bls\",le=\"0.0005\"} 0",
            "keystake_authorization_refusals_total{api=\"grpc\",operation=\"deposit\"} 1",
            "keystake_message_cache{event=\"hits\"} 40",
            "keystake_message_cache{event=\"tables\"} 1",
            "keystake_keys_loaded 3",
            "keystake_hsm_session_up 1",
            "keystake_slashing_db_up 0",
            "keystake_build_info{version=\"",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    /// The real SoftHSM2 sealer, counting the health probes that reach it (each opens and uses an
    /// HSM session).
    struct CountingSealer {
        inner: crate::hsm::pkcs11::Pkcs11Sealer,
        health_checks: std::sync::atomic::AtomicUsize,
    }

    impl crate::hsm::Sealer for CountingSealer {
        fn seal(
            &self,
            secret: &zeroize::Zeroizing<[u8; crate::hsm::SHARE_LEN]>,
            context: &crate::hsm::SealContext,
        ) -> Result<crate::hsm::SealedShare, crate::hsm::SealError> {
            self.inner.seal(secret, context)
        }

        fn unseal(
            &self,
            sealed: &crate::hsm::SealedShare,
            context: &crate::hsm::SealContext,
        ) -> Result<zeroize::Zeroizing<[u8; crate::hsm::SHARE_LEN]>, crate::hsm::SealError>
        {
            self.inner.unseal(sealed, context)
        }

        fn health_check(&self) -> Result<(), crate::hsm::SealError> {
            self.health_checks
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.health_check()
        }

        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    /// `GET /metrics` over a real socket; the response body.
    async fn scrape_once(address: SocketAddr) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        stream
            .write_all(
                format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut response = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("scrape answered")
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
    }

    /// Issue 17: scraping as fast as possible opens no HSM session and never waits for the
    /// database's write lock; only the timer probes. Real SoftHSM2 token, real SQLite file, real
    /// socket. Before the fix every scrape ran the probe (one HSM session each, and up to 2 s
    /// waiting for the lock held below).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_open_no_hsm_session_and_wait_for_no_database_lock() {
        use crate::hsm::pkcs11::test_support::fresh_sealer;
        use std::sync::atomic::Ordering;
        let (_config, inner) = fresh_sealer("metrics-scrape");
        let sealer = Arc::new(CountingSealer {
            inner,
            health_checks: Default::default(),
        });
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("signer.sqlite");
        let store = Arc::new(crate::store::Store::open(&database).unwrap());
        let service = Arc::new(
            SigningService::new(
                store,
                sealer.clone(),
                keystake_core::consensus::Network::mainnet(),
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let socket = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let address = socket.local_addr().unwrap();
        let server = tokio::spawn(serve(socket, metrics, service));
        // The first timer probe has run: the gauges are set.
        for _ in 0..200 {
            if sealer.health_checks.load(Ordering::SeqCst) >= 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first = scrape_once(address).await;
        assert!(first.contains("keystake_hsm_session_up 1"), "{first}");
        assert!(first.contains("keystake_slashing_db_up 1"), "{first}");

        // Another process holds the write lock while someone scrapes as fast as it can.
        let locker = rusqlite::Connection::open(&database).unwrap();
        locker.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let started = std::time::Instant::now();
        let before = sealer.health_checks.load(Ordering::SeqCst);
        const SCRAPES: usize = 40;
        for _ in 0..SCRAPES {
            scrape_once(address).await;
        }
        let probes = sealer.health_checks.load(Ordering::SeqCst) - before;
        // One probe per HEALTH_REFRESH elapsed, plus one in flight.
        let timer_probes = (started.elapsed().as_secs() / HEALTH_REFRESH.as_secs() + 1) as usize;
        assert!(
            probes <= timer_probes && probes < SCRAPES,
            "{probes} HSM health probes for {SCRAPES} scrapes"
        );
        locker.execute_batch("COMMIT").unwrap();
        server.abort();
    }
}
