//! `keystake-signer bench load`: a load generator that speaks the real API over mutual TLS with
//! keep-alive connections, and measures, in the same run, the raw blst signing rate of this
//! machine with the same number of threads, so the end-to-end figure can be read as a fraction of
//! what the hardware allows.
//!
//! Requests are non-slashable by construction: every run starts its epochs and slots from the wall
//! clock (far above any earlier run's), every key gets strictly increasing `(e, e+1)` attestation
//! pairs and strictly increasing block slots, so a correct signer answers every one with 200. Any
//! other status is counted as an error and reported.
//!
//! Two mixes: `distinct` (every request a different message: per-key increasing attestations,
//! optionally blocks) and `mainnet` (the slot-structured load of an operator with N keys, where
//! most signing roots repeat across keys: [`super::mainnet_mix`]). With the appliance's process
//! id (from its `/healthcheck` `pid`, or given), the tool also reads the appliance's CPU time
//! before and after and reports CPU-µs per signature and `cpu_efficiency` = raw blst CPU-µs per
//! signature ÷ the appliance's — a figure that does not depend on the load generator sharing
//! the cores.
//!
//! Targets: the appliance over mutual TLS (default), or with `--forwarder http://127.0.0.1:PORT`
//! a `connect` forwarder (single-appliance or threshold) over plain loopback HTTP, so the
//! forwarder's added latency is measured with the same requests (docs/performance.md). Against a
//! threshold forwarder the keys are group keys whose origin cannot be checked: the run refuses
//! unless `--allow-non-demo-keys`.
//!
//! Two modes: max-throughput (each connection sends its next request when the previous answer
//! arrives) and fixed-rate (an open-loop schedule; latency is measured from the moment a request
//! is due — including any wait for a free connection, so a stalled server cannot hide its
//! queueing delay (no coordinated omission) — but not the timer's own millisecond slack).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use super::mainnet_mix::Request;
use crate::config::Config;
use crate::net::client::{MtlsClient, Response};
use crate::net::tls;
use keystake_core::bls;
use keystake_core::types::BlsPublicKey;

/// Load-test parameters.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `https://host:port`; defaults to the configuration's listen address.
    pub url: Option<String>,
    pub duration: Duration,
    pub connections: usize,
    /// Use at most this many of the appliance's keys (all when `None`).
    pub keys: Option<usize>,
    /// Requests per second for the fixed-rate mode; `None` = max throughput.
    pub rate: Option<u64>,
    /// Fraction of requests that are BLOCK_V2 proposals (0.0 ..= 1.0).
    pub block_fraction: f64,
    /// Threads for the raw blst measurement (default: CPUs).
    pub raw_threads: Option<usize>,
    /// Write one CSV line per request (`send_offset_us,latency_us,status,kind`).
    pub csv: Option<std::path::PathBuf>,
    /// Sign with keys that did not come from `demo` (the load tool signs arbitrary messages and
    /// fills the slashing history with far-future epochs: never against real validator keys).
    pub allow_non_demo_keys: bool,
    /// Burst mode: send exactly this many requests at once (spread over the connections, one
    /// key after another) and report the time until the last answer; ignores duration and rate.
    pub burst: Option<u64>,
    /// Which requests to send.
    pub mix: Mix,
    /// The appliance's process id for its CPU time (default: the `pid` of its `/healthcheck`).
    pub appliance_pid: Option<u32>,
    /// `http://127.0.0.1:PORT` of a `connect` forwarder to send the requests to instead.
    pub forwarder: Option<String>,
    /// A `perf record --control` to switch on for the measured window only.
    pub perf_control: Option<PerfControl>,
}

/// The FIFOs of `perf record -D -1 --control fifo:CTL,ACK`: `perf` starts with its events off
/// and switches them on and off on command, so a profile holds the measured window only (not
/// the warm-up's TLS handshakes). perf holds both FIFOs open while it runs; every open here is
/// non-blocking and every wait for perf's answer is bounded, so a perf that is not running (it
/// failed to start, or exited) is an error naming the FIFO, never a hang.
#[derive(Debug, Clone)]
pub struct PerfControl {
    control: std::path::PathBuf,
    ack: std::path::PathBuf,
}

/// How long perf gets to acknowledge a command.
const PERF_ACK_TIMEOUT: Duration = Duration::from_secs(5);

impl PerfControl {
    /// `CTL,ACK`: two paths to existing FIFOs.
    pub fn parse(text: &str) -> Result<Self> {
        use std::os::unix::fs::FileTypeExt;
        let Some((control, ack)) = text
            .split_once(',')
            .filter(|(control, ack)| !control.is_empty() && !ack.is_empty())
        else {
            bail!("--perf-control takes CTL,ACK: the two FIFOs given to `perf record --control fifo:CTL,ACK`");
        };
        for path in [control, ack] {
            let kind = std::fs::metadata(path)
                .with_context(|| format!("--perf-control: {path}"))?
                .file_type();
            if !kind.is_fifo() {
                bail!("--perf-control: {path} is not a FIFO (make both with mkfifo)");
            }
        }
        Ok(PerfControl {
            control: control.into(),
            ack: ack.into(),
        })
    }

    /// Send `enable` or `disable` and wait (at most [`PERF_ACK_TIMEOUT`]) for perf's `ack`.
    /// Blocking: called only outside the measured window's clock.
    fn command(&self, command: &str) -> Result<()> {
        use std::io::{ErrorKind, Read};
        use std::os::unix::fs::OpenOptionsExt;
        // Opened first and emptied: an `ack` left by a run killed before it read it must not
        // answer this command.
        let mut ack = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.ack)
            .with_context(|| format!("opening perf's ack FIFO {}", self.ack.display()))?;
        let mut buffer = [0u8; 64];
        while matches!(ack.read(&mut buffer), Ok(n) if n > 0) {}
        // A FIFO nobody reads refuses a non-blocking writer (ENXIO) instead of blocking.
        let mut control = match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.control)
        {
            Err(error) if error.raw_os_error() == Some(libc::ENXIO) => bail!(
                "nothing reads perf's control FIFO {}: is `perf ... --control fifo:{},{}` running?",
                self.control.display(),
                self.control.display(),
                self.ack.display()
            ),
            other => other.with_context(|| {
                format!("opening perf's control FIFO {}", self.control.display())
            })?,
        };
        writeln!(control, "{command}")?;
        let deadline = Instant::now() + PERF_ACK_TIMEOUT;
        let mut answer = Vec::new();
        while !answer.contains(&b'\n') {
            match ack.read(&mut buffer) {
                Ok(0) => bail!(
                    "perf closed its ack FIFO {} before answering {command:?} (did it exit?)",
                    self.ack.display()
                ),
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        bail!(
                            "perf did not acknowledge {command:?} on {} within {} s",
                            self.ack.display(),
                            PERF_ACK_TIMEOUT.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => return Err(error).context("reading perf's ack FIFO"),
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        // perf writes the C string "ack\n" with its terminating NUL.
        if answer.trim_matches(|c: char| c == '\0' || c.is_whitespace()) != "ack" {
            bail!("perf answered {answer:?} to {command:?}, expected \"ack\"");
        }
        Ok(())
    }
}

/// perf's events switched on for the measured window; switched off by [`PerfWindow::close`], or
/// when dropped on an early error (so perf does not keep sampling the rest).
struct PerfWindow<'a>(Option<&'a PerfControl>);

impl<'a> PerfWindow<'a> {
    fn open(perf: Option<&'a PerfControl>) -> Result<Self> {
        if let Some(perf) = perf {
            perf.command("enable")?;
        }
        Ok(PerfWindow(perf))
    }

    /// Switch the events off. A failure is reported, never fatal: the run's figures are still
    /// printed.
    fn close(mut self, out: &mut dyn Write) -> Result<()> {
        if let Some(perf) = self.0.take() {
            if let Err(error) = perf.command("disable") {
                writeln!(out, "warning: perf's events may still be on: {error:#}")?;
            }
        }
        Ok(())
    }
}

impl Drop for PerfWindow<'_> {
    fn drop(&mut self) {
        if let Some(perf) = self.0.take() {
            if let Err(error) = perf.command("disable") {
                eprintln!("warning: perf's events may still be on: {error:#}");
            }
        }
    }
}

/// What the load consists of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mix {
    /// Every request signs a different message (per-key increasing attestations, blocks).
    #[default]
    Distinct,
    /// Slot-structured mainnet duties of an operator with `--keys` keys.
    Mainnet,
}

/// Where requests go: the appliance over mutual TLS, or a loopback forwarder over plain HTTP.
#[derive(Clone)]
enum Target {
    Mtls(MtlsClient),
    Plain {
        http: hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            http_body_util::Full<bytes::Bytes>,
        >,
        base: String,
    },
}

impl Target {
    fn plain(base: &str) -> Result<Self> {
        if !base.starts_with("http://") {
            bail!("--forwarder must be an http:// URL (the forwarder's loopback listener)");
        }
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Target::Plain {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response> {
        match self {
            Target::Mtls(client) => Ok(client.request(method, path, headers, body).await?),
            Target::Plain { http, base } => {
                use http_body_util::BodyExt;
                let mut request = http::Request::builder()
                    .method(method)
                    .uri(format!("{base}{path}"));
                for (name, value) in headers {
                    request = request.header(*name, *value);
                }
                let request = request.body(http_body_util::Full::new(bytes::Bytes::from(
                    body.unwrap_or_default(),
                )))?;
                let response = http.request(request).await?;
                let (parts, body) = response.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok(Response {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                })
            }
        }
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub throughput: f64,
    pub raw_blst: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The appliance's CPU time per answered request (NaN when it could not be read).
    pub cpu_per_sig_us: f64,
    /// Raw blst CPU time per signature on this machine, measured in the same run.
    pub raw_cpu_per_sig_us: f64,
}

impl LoadReport {
    pub fn ratio(&self) -> f64 {
        if self.raw_blst > 0.0 {
            self.throughput / self.raw_blst
        } else {
            0.0
        }
    }

    /// Raw blst CPU-µs per signature ÷ the appliance's CPU-µs per signature.
    pub fn cpu_efficiency(&self) -> f64 {
        self.raw_cpu_per_sig_us / self.cpu_per_sig_us
    }

    /// The summary line scripts parse: always the last line of the tool's output.
    pub fn summary_line(&self) -> String {
        format!(
            "throughput={:.1} raw_blst={:.1} ratio={:.3} p50_ms={:.3} p99_ms={:.3} cpu_per_sig_us={:.1} cpu_efficiency={:.3}",
            self.throughput,
            self.raw_blst,
            self.ratio(),
            self.p50_ms,
            self.p99_ms,
            self.cpu_per_sig_us,
            self.cpu_efficiency()
        )
    }
}

/// Plain blst on `threads` threads for about `duration`: (signatures per second, CPU-µs per
/// signature from the threads' own CPU clocks, so a shared machine does not inflate it).
pub fn raw_blst_rate(threads: usize, duration: Duration) -> (f64, f64) {
    let results: Vec<(u64, f64, Duration)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let key = bls::SecretKey::random(&mut rand::rngs::OsRng);
                    let mut message = [0u8; 32];
                    message[0] = t as u8;
                    let cpu_start = thread_cpu_time();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < duration {
                        message[1..9].copy_from_slice(&n.to_le_bytes());
                        std::hint::black_box(key.sign(&message));
                        n += 1;
                    }
                    let elapsed = start.elapsed();
                    (
                        n,
                        n as f64 / elapsed.as_secs_f64(),
                        thread_cpu_time() - cpu_start,
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or((0, 0.0, Duration::ZERO)))
            .collect()
    });
    let rate = results.iter().map(|r| r.1).sum::<f64>();
    let signatures = results.iter().map(|r| r.0).sum::<u64>().max(1);
    let cpu = results.iter().map(|r| r.2).sum::<Duration>();
    (rate, cpu.as_secs_f64() * 1e6 / signatures as f64)
}

/// Most requests one burst may hold: they are all made, and held in memory, before it starts.
const MAX_BURST_REQUESTS: u64 = 1_000_000;

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time of this whole process (every thread), at nanosecond resolution: the load tool's
/// own share of the cores it shares with the appliance.
fn own_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Mainnet's genesis validators root, used when the appliance's network has none configured.
pub(crate) const MAINNET_GVR: &str =
    "0x4b363db94e286120d76eb905340fdd4e54bfe9f06bf33ff6cf5ad27f511bfe95";

/// An ATTESTATION for `source → source+1` on the network with genesis validators root `gvr`.
pub fn attestation_body(gvr: &str, source: u64, block_root_byte: u8) -> Vec<u8> {
    let target = source + 1;
    format!(
        r#"{{"type":"ATTESTATION","fork_info":{{"fork":{{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"}},"genesis_validators_root":"{gvr}"}},"attestation":{{"slot":"{slot}","index":"0","beacon_block_root":"0x{root}","source":{{"epoch":"{source}","root":"0x{sroot}"}},"target":{{"epoch":"{target}","root":"0x{troot}"}}}}}}"#,
        slot = target.saturating_mul(32),
        root = hex::encode([block_root_byte; 32]),
        sroot = hex::encode([0x11; 32]),
        troot = hex::encode([0x22; 32]),
    )
    .into_bytes()
}

/// A BLOCK_V2 (Fulu) proposal header at `slot`.
pub fn block_body(gvr: &str, slot: u64) -> Vec<u8> {
    format!(
        r#"{{"type":"BLOCK_V2","fork_info":{{"fork":{{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"}},"genesis_validators_root":"{gvr}"}},"beacon_block":{{"version":"FULU","block_header":{{"slot":"{slot}","proposer_index":"7","parent_root":"0x{p}","state_root":"0x{s}","body_root":"0x{b}"}}}}}}"#,
        p = hex::encode([0x33; 32]),
        s = hex::encode([0x44; 32]),
        b = hex::encode([0x55; 32]),
    )
    .into_bytes()
}

/// Per-key counters handing out fresh, non-slashable duties.
struct Duties {
    gvr: String,
    keys: Vec<String>,
    base: u64,
    next: Vec<AtomicU64>,
    picked: AtomicU64,
}

impl Duties {
    fn new(keys: Vec<BlsPublicKey>, gvr: String) -> Self {
        // Far above anything a previous run used (which also started from the clock), and far
        // below u64::MAX: seconds since 1970 × 2^16 leaves 65k duties per key per second of runs.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Duties {
            gvr,
            next: keys.iter().map(|_| AtomicU64::new(0)).collect(),
            keys: keys.iter().map(|k| k.to_hex()).collect(),
            base: now << 16,
            picked: AtomicU64::new(0),
        }
    }

    /// The next request: (path, body, kind).
    fn next(&self, block_fraction: f64) -> (String, Vec<u8>, &'static str) {
        let pick = self.picked.fetch_add(1, Ordering::Relaxed);
        let key = (pick % self.keys.len() as u64) as usize;
        let n = self.next[key].fetch_add(1, Ordering::Relaxed);
        let path = format!("/api/v1/eth2/sign/{}", self.keys[key]);
        // Deterministic mix: every request whose hash falls under the fraction is a block.
        let is_block = ((pick.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64
            / (1u64 << 53) as f64)
            < block_fraction;
        if is_block {
            (path, block_body(&self.gvr, self.base + n), "block")
        } else {
            (
                path,
                attestation_body(&self.gvr, self.base + 2 * n, (n % 251) as u8),
                "attestation",
            )
        }
    }
}

/// Where requests come from: the mix.
enum Source {
    Distinct { duties: Duties, block_fraction: f64 },
    Mainnet(super::mainnet_mix::SlotMix),
}

impl Source {
    fn next(&self) -> Request {
        match self {
            Source::Distinct {
                duties,
                block_fraction,
            } => duties.next(*block_fraction),
            Source::Mainnet(mix) => mix.next(),
        }
    }
}

struct Sample {
    send_offset: Duration,
    latency: Duration,
    status: u16,
    kind: &'static str,
}

/// Send one request and record it as a sample: `send_offset` is when it was due (from the run's
/// start), and its latency counts from `counted_from` until the answer.
async fn send_and_record(
    client: &Target,
    request: Request,
    send_offset: Duration,
    counted_from: Instant,
    tx: &tokio::sync::mpsc::UnboundedSender<Sample>,
) {
    let (status, kind) = send(client, request).await;
    let _ = tx.send(Sample {
        send_offset,
        latency: counted_from.elapsed(),
        status,
        kind,
    });
}

async fn send(client: &Target, request: Request) -> (u16, &'static str) {
    let (path, body, kind) = request;
    let status = match client
        .request(
            http::Method::POST,
            &path,
            &[
                ("content-type", "application/json"),
                ("accept", "application/json"),
            ],
            Some(body),
        )
        .await
    {
        Ok(response) => response.status,
        Err(_) => 0,
    };
    (status, kind)
}

/// Refuse to load keys that are not demo keys: the tool signs arbitrary messages with them.
async fn refuse_real_keys(probe: &Target, keys: &[BlsPublicKey]) -> Result<()> {
    let response = probe
        .request(http::Method::GET, "/api/v1/keystake/keys", &[], None)
        .await?;
    if response.status != 200 {
        bail!(
            "cannot check where the keys came from (GET /api/v1/keystake/keys answered {}); pass --allow-non-demo-keys only for a test appliance",
            response.status
        );
    }
    let infos: Vec<serde_json::Value> = serde_json::from_slice(&response.body)?;
    let wanted: std::collections::HashSet<String> = keys.iter().map(|k| k.to_hex()).collect();
    let real: Vec<&str> = infos
        .iter()
        .filter(|info| {
            info["public_key"]
                .as_str()
                .is_some_and(|k| wanted.contains(k))
                && info["origin"] != "demo"
        })
        .filter_map(|info| info["public_key"].as_str())
        .collect();
    if !real.is_empty() {
        bail!(
            "refusing to load {} key(s) that are not demo keys (e.g. {}): the load tool signs arbitrary messages and fills their slashing history; use a demo appliance, or --allow-non-demo-keys for a test appliance",
            real.len(),
            real[0]
        );
    }
    Ok(())
}

/// Run the load test described by `options` against the appliance of `config`.
pub async fn run(
    config: &Config,
    options: &LoadOptions,
    out: &mut dyn Write,
) -> Result<LoadReport> {
    let client_section = config
        .client
        .as_ref()
        .context("the configuration has no [client] section (cert, key) for the load tool")?;
    let tls = tls::client_config(
        &config.tls.ca_cert,
        &client_section.cert,
        &client_section.key,
    )?;
    let url = options.url.clone().unwrap_or_else(|| {
        let addr = config.listen;
        let host = if addr.ip().is_unspecified() {
            "127.0.0.1".to_owned()
        } else {
            addr.ip().to_string()
        };
        format!("https://{host}:{}", addr.port())
    });
    let target = |url: &str| -> Result<Target> {
        match &options.forwarder {
            Some(forwarder) => Target::plain(forwarder),
            None => Ok(Target::Mtls(MtlsClient::new(tls.clone(), url)?)),
        }
    };
    let url = options.forwarder.clone().unwrap_or(url);
    let probe = target(&url)?;
    let keys_response = probe
        .request(http::Method::GET, "/api/v1/eth2/publicKeys", &[], None)
        .await
        .with_context(|| format!("cannot reach the appliance at {url}"))?;
    if keys_response.status != 200 {
        bail!(
            "GET /api/v1/eth2/publicKeys answered {}",
            keys_response.status
        );
    }
    let mut keys: Vec<BlsPublicKey> = serde_json::from_slice::<Vec<String>>(&keys_response.body)?
        .iter()
        .map(|k| k.parse())
        .collect::<Result<_, _>>()?;
    if let Some(limit) = options.keys {
        if options.mix == Mix::Mainnet && keys.len() < limit {
            bail!(
                "--mix mainnet --keys {limit}: the appliance holds only {} keys (bench populate adds more)",
                keys.len()
            );
        }
        keys.truncate(limit);
    }
    if keys.is_empty() {
        bail!("the appliance has no keys to sign with");
    }
    if !options.allow_non_demo_keys {
        refuse_real_keys(&probe, &keys).await?;
    }
    let pid = match options.appliance_pid {
        Some(pid) => Some(pid),
        None => appliance_pid(&probe).await,
    };
    let mix = match options.mix {
        Mix::Distinct => format!(
            "distinct messages, {:.0}% blocks",
            options.block_fraction * 100.0
        ),
        Mix::Mainnet => "mainnet slots".to_owned(),
    };
    writeln!(
        out,
        "load: {url}, {} keys, {} connections, {}, {mix}, {:?}",
        keys.len(),
        options.connections,
        match (options.burst, options.rate) {
            (Some(n), _) => format!("burst of {n}"),
            (None, Some(r)) => format!("fixed rate {r}/s"),
            (None, None) => "max throughput".to_owned(),
        },
        options.duration
    )?;
    let gvr = crate::app::network(config)?
        .genesis_validators_root
        .map_or(MAINNET_GVR.to_owned(), |root| root.to_hex());
    let burst = match (options.mix, options.burst) {
        // N slots' bursts at once: every request of the run's first N slots.
        (Mix::Mainnet, Some(slots)) => {
            let mix = super::mainnet_mix::SlotMix::new(&keys, &gvr);
            // Counted slot by slot, stopping past the bound below (a slot holds at least one).
            let mut requests = 0u64;
            for i in 0..slots {
                requests += mix.slot_requests(i).len() as u64;
                if requests > MAX_BURST_REQUESTS {
                    break;
                }
            }
            Some(requests)
        }
        (_, burst) => burst,
    };
    if let Some(n) = burst.filter(|n| *n > MAX_BURST_REQUESTS) {
        bail!("a burst of at least {n} requests: every request of a burst is made before it is sent, so at most {MAX_BURST_REQUESTS}");
    }
    let source = Arc::new(match options.mix {
        Mix::Distinct => Source::Distinct {
            duties: Duties::new(keys, gvr),
            block_fraction: options.block_fraction,
        },
        Mix::Mainnet => Source::Mainnet(super::mainnet_mix::SlotMix::new(&keys, &gvr)),
    });
    // One client (one keep-alive connection) per simulated connection.
    let clients: Vec<Target> = (0..options.connections.max(1))
        .map(|_| target(&url))
        .collect::<Result<_, _>>()?;
    // Warm-up: open every connection (handshakes are not what we measure).
    for client in &clients {
        client
            .request(http::Method::GET, "/upcheck", &[], None)
            .await?;
    }

    // A burst's requests are made before the clock starts, as validator clients on other
    // machines have them ready at the slot's start: making them here is this tool's work on the
    // appliance's cores, not the appliance's.
    let prepared: Arc<Mutex<VecDeque<Request>>> = Arc::new(Mutex::new(
        (0..burst.unwrap_or(0)).map(|_| source.next()).collect(),
    ));
    if options.perf_control.is_some() {
        writeln!(
            out,
            "profiled run (--perf-control): perf's sampling is charged to the appliance's CPU, so its CPU figures are not comparable with unprofiled runs"
        )?;
    }
    let perf_window = PerfWindow::open(options.perf_control.as_ref())?;
    let cpu_before = pid.and_then(|pid| super::mainnet_mix::process_cpu_time(pid).ok());
    let own_cpu_before = own_cpu_time();
    let start = Instant::now();
    let deadline = start + options.duration;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Sample>();
    let mut tasks = Vec::new();
    match options.rate {
        _ if burst.is_some() => {
            for client in clients {
                let tx = tx.clone();
                let prepared = prepared.clone();
                tasks.push(tokio::spawn(async move {
                    // Take one request at a time from the prepared burst until it is spent.
                    loop {
                        let next = prepared
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .pop_front();
                        let Some(request) = next else { break };
                        let sent = Instant::now();
                        // Latency from the burst's start: "answered within" is what counts.
                        send_and_record(&client, request, sent - start, start, &tx).await;
                    }
                }));
            }
        }
        None => {
            for client in clients {
                let source = source.clone();
                let tx = tx.clone();
                tasks.push(tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        send_and_record(&client, source.next(), sent - start, sent, &tx).await;
                    }
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
            let semaphore = Arc::new(tokio::sync::Semaphore::new(clients.len()));
            let clients = Arc::new(tokio::sync::Mutex::new(clients));
            let mut k = 0u64;
            loop {
                let scheduled = start + interval.mul_f64(k as f64);
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                // Latency counts from here: the timer's own lateness (tokio's millisecond
                // granularity) is the tool's, but waiting below for a free connection is the
                // server's (a slow server holds the connections), so it counts.
                let ready = Instant::now();
                k += 1;
                let permit = semaphore.clone().acquire_owned().await?;
                let client = clients.lock().await.pop();
                let Some(client) = client else {
                    continue;
                };
                let source = source.clone();
                let tx = tx.clone();
                let clients = clients.clone();
                tasks.push(tokio::spawn(async move {
                    let offset = scheduled - start;
                    send_and_record(&client, source.next(), offset, ready, &tx).await;
                    clients.lock().await.push(client);
                    drop(permit);
                }));
            }
        }
    }
    drop(tx);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut requests = 0u64;
    let mut errors = 0u64;
    let mut csv = match &options.csv {
        Some(path) => {
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(file, "send_offset_us,latency_us,status,kind")?;
            Some(file)
        }
        None => None,
    };
    while let Some(sample) = rx.recv().await {
        requests += 1;
        if sample.status != 200 {
            errors += 1;
        }
        let micros = sample.latency.as_micros().clamp(1, 60_000_000) as u64;
        histogram.record(micros)?;
        if let Some(file) = csv.as_mut() {
            writeln!(
                file,
                "{},{},{},{}",
                sample.send_offset.as_micros(),
                micros,
                sample.status,
                sample.kind
            )?;
        }
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = start.elapsed();
    let cpu_after = pid.and_then(|pid| super::mainnet_mix::process_cpu_time(pid).ok());
    // Before raw blst runs below: only what sending and receiving cost this process.
    let own_cpu = own_cpu_time().saturating_sub(own_cpu_before);
    perf_window.close(out)?;
    if let Some(mut file) = csv {
        file.flush()?;
    }
    let ok = requests - errors;
    let throughput = ok as f64 / elapsed.as_secs_f64();
    let threads = options
        .raw_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    writeln!(out, "measuring raw blst signing on {threads} threads ...")?;
    let (raw_blst, raw_cpu_per_sig_us) =
        tokio::task::spawn_blocking(move || raw_blst_rate(threads, Duration::from_secs(3))).await?;
    let appliance_cpu = match (cpu_before, cpu_after) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let cpu_per_sig_us = match appliance_cpu {
        Some(cpu) if ok > 0 => cpu.as_secs_f64() * 1e6 / ok as f64,
        _ => {
            writeln!(
                out,
                "appliance CPU time unknown (no pid from /healthcheck, no --appliance-pid, or /proc not readable)"
            )?;
            f64::NAN
        }
    };
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = LoadReport {
        requests,
        errors,
        elapsed,
        throughput,
        raw_blst,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: histogram.max() as f64 / 1000.0,
        cpu_per_sig_us,
        raw_cpu_per_sig_us,
    };
    writeln!(
        out,
        "requests={} ok={} errors={} elapsed_s={:.2} p99.9_ms={:.3} max_ms={:.3}",
        report.requests,
        ok,
        report.errors,
        elapsed.as_secs_f64(),
        report.p999_ms,
        report.max_ms
    )?;
    writeln!(
        out,
        "raw_cpu_per_sig_us={:.1} appliance_pid={} load_cpu_per_req_us={:.1}",
        report.raw_cpu_per_sig_us,
        pid.map_or("unknown".to_owned(), |p| p.to_string()),
        own_cpu.as_secs_f64() * 1e6 / requests.max(1) as f64
    )?;
    if burst.is_some() {
        // How long naive blst on these cores needs for as many signatures.
        let raw_s = ok as f64 / report.raw_blst.max(f64::MIN_POSITIVE);
        writeln!(
            out,
            "burst: requests={} answered_s={:.4} raw_blst_s={:.4} burst_vs_raw={:.3} cores_busy={:.2}",
            ok,
            elapsed.as_secs_f64(),
            raw_s,
            elapsed.as_secs_f64() / raw_s,
            // How many cores the appliance and this tool kept busy on average while the burst
            // was answered: near the core count, the burst is CPU-bound; below it, it waited.
            appliance_cpu.map_or(f64::NAN, |cpu| {
                (cpu + own_cpu).as_secs_f64() / elapsed.as_secs_f64()
            })
        )?;
    }
    writeln!(out, "{}", report.summary_line())?;
    Ok(report)
}

/// The appliance's process id from its `/healthcheck` (`pid`), when it gives one.
async fn appliance_pid(probe: &Target) -> Option<u32> {
    let response = probe
        .request(http::Method::GET, "/healthcheck", &[], None)
        .await
        .ok()?;
    let body: serde_json::Value = serde_json::from_slice(&response.body).ok()?;
    body["pid"].as_u64().and_then(|p| u32::try_from(p).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use keystake_core::consensus::Network;
    use keystake_core::request::{parse_sign_request, SlashingCheck};

    /// Two FIFOs, made with `mkfifo`.
    fn fifos() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let (control, ack) = (dir.path().join("ctl"), dir.path().join("ack"));
        for fifo in [&control, &ack] {
            let made = std::process::Command::new("mkfifo")
                .arg(fifo)
                .status()
                .unwrap();
            assert!(made.success());
        }
        (dir, control, ack)
    }

    /// A thread playing `perf record --control fifo:CTL,ACK`: like perf it holds both FIFOs
    /// open read-write; `stale` is written to ACK before any command (an ack a killed run never
    /// read); then it reads one command and writes `answer`, or closes both (perf exiting) when
    /// `answer` is `None`. Returns the command it read.
    fn fake_perf(
        control: &std::path::Path,
        ack: &std::path::Path,
        stale: &str,
        answer: Option<&'static str>,
    ) -> std::thread::JoinHandle<String> {
        use std::io::BufRead;
        let read_write = |path: &std::path::Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .unwrap()
        };
        let (control, mut ack) = (read_write(control), read_write(ack));
        ack.write_all(stale.as_bytes()).unwrap();
        std::thread::spawn(move || {
            let mut command = String::new();
            std::io::BufReader::new(&control)
                .read_line(&mut command)
                .unwrap();
            if let Some(answer) = answer {
                ack.write_all(answer.as_bytes()).unwrap();
                // perf keeps its FIFOs open after answering.
                std::thread::sleep(Duration::from_millis(200));
            }
            command
        })
    }

    fn perf_control(control: &std::path::Path, ack: &std::path::Path) -> PerfControl {
        PerfControl::parse(&format!("{},{}", control.display(), ack.display())).unwrap()
    }

    #[test]
    fn perf_control_sends_the_command_and_waits_for_the_ack() {
        let (_dir, control, ack) = fifos();
        // As perf writes it: a C string with its NUL.
        let perf = fake_perf(&control, &ack, "", Some("ack\n\0"));
        perf_control(&control, &ack).command("enable").unwrap();
        assert_eq!(perf.join().unwrap(), "enable\n");

        let perf = fake_perf(&control, &ack, "", Some("nope\n"));
        let refused = perf_control(&control, &ack).command("disable").unwrap_err();
        assert!(
            format!("{refused:#}").contains("expected \"ack\""),
            "{refused:#}"
        );
        assert_eq!(perf.join().unwrap(), "disable\n");
    }

    /// An `ack` left in the FIFO by an earlier, killed run does not answer the next command.
    #[test]
    fn a_stale_ack_does_not_answer_a_new_command() {
        let (_dir, control, ack) = fifos();
        let perf = fake_perf(&control, &ack, "ack\n\0", Some("nope\n"));
        let refused = perf_control(&control, &ack).command("enable").unwrap_err();
        assert!(format!("{refused:#}").contains("nope"), "{refused:#}");
        perf.join().unwrap();
    }

    /// No perf running, or perf exiting before it answers: an error naming the FIFO, not a hang.
    #[test]
    fn a_missing_or_exiting_perf_is_an_error_not_a_hang() {
        let (dir, control, ack) = fifos();
        let started = Instant::now();
        let missing = perf_control(&control, &ack).command("enable").unwrap_err();
        assert!(
            format!("{missing:#}").contains("nothing reads perf's control FIFO"),
            "{missing:#}"
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        let perf = fake_perf(&control, &ack, "", None);
        let exited = perf_control(&control, &ack).command("enable").unwrap_err();
        assert!(
            format!("{exited:#}").contains("closed its ack FIFO"),
            "{exited:#}"
        );
        perf.join().unwrap();

        let regular = dir.path().join("regular");
        std::fs::write(&regular, b"").unwrap();
        for bad in [
            String::new(),
            "ctl".to_owned(),
            format!(",{}", ack.display()),
            format!("{},", control.display()),
            format!("{},{}", regular.display(), ack.display()),
            format!(
                "{},{}",
                control.display(),
                dir.path().join("absent").display()
            ),
        ] {
            assert!(PerfControl::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn generated_requests_are_valid_and_never_slashable() {
        let keys = vec![BlsPublicKey([1; 48]), BlsPublicKey([2; 48])];
        let duties = Duties::new(keys, MAINNET_GVR.to_owned());
        let mut history =
            std::collections::HashMap::<String, keystake_core::slashing::MemoryHistory>::new();
        for _ in 0..200 {
            let (path, body, _) = duties.next(0.3);
            let intent = parse_sign_request(&body, &Network::mainnet()).unwrap();
            let h = history.entry(path).or_default();
            let verdict = match intent.slashing.unwrap() {
                SlashingCheck::Block { slot } => {
                    let Ok(v) = keystake_core::slashing::check_block(h, slot, intent.signing_root);
                    h.blocks.push(keystake_core::slashing::SignedBlock {
                        slot,
                        signing_root: Some(intent.signing_root),
                    });
                    v
                }
                SlashingCheck::Attestation { source, target } => {
                    let Ok(v) = keystake_core::slashing::check_attestation(
                        h,
                        source,
                        target,
                        intent.signing_root,
                    );
                    h.attestations
                        .push(keystake_core::slashing::SignedAttestation {
                            source,
                            target,
                            signing_root: Some(intent.signing_root),
                        });
                    v
                }
            };
            assert_eq!(verdict, Ok(keystake_core::slashing::Safe::Valid));
        }
    }

    #[test]
    fn summary_line_format() {
        let report = LoadReport {
            requests: 10,
            errors: 0,
            elapsed: Duration::from_secs(1),
            throughput: 3000.0,
            raw_blst: 4000.0,
            p50_ms: 0.5,
            p99_ms: 2.0,
            p999_ms: 3.0,
            max_ms: 4.0,
            cpu_per_sig_us: 400.0,
            raw_cpu_per_sig_us: 300.0,
        };
        assert_eq!(
            report.summary_line(),
            "throughput=3000.0 raw_blst=4000.0 ratio=0.750 p50_ms=0.500 p99_ms=2.000 cpu_per_sig_us=400.0 cpu_efficiency=0.750"
        );
    }
}
