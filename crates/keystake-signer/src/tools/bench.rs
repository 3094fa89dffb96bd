//! Benchmark set-up and start-up measurement for a test appliance:
//! `bench populate` fills it with N random demo keys (sealed by the HSM like any other key, stored
//! in batches), and `bench startup` starts the real `serve` binary and reports the time until it
//! listens and the process's peak resident memory.
//!
//! Refuses: populating an appliance that holds non-demo keys (benchmarks belong on test
//! appliances), and zero keys.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::service;
use crate::store::ShareOrigin;
use keystake_core::bls;

/// Keys sealed and stored per transaction.
const BATCH: usize = 5_000;

/// Add `count` random demo keys to the appliance of `config`.
pub fn populate(config: &Config, count: usize, out: &mut dyn Write) -> Result<()> {
    if count == 0 {
        bail!("--keys must be at least 1");
    }
    let store = crate::app::open_store(config)?;
    if let Some(real) = store
        .shares()?
        .iter()
        .find(|r| r.origin != ShareOrigin::Demo)
    {
        bail!(
            "this appliance holds a non-demo key ({}); populate only test appliances",
            real.public_key
        );
    }
    let sealer = crate::app::open_sealer(config)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let per_thread = n.div_ceil(threads);
        let records: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let sealer = sealer.clone();
                    let mine = per_thread.min(n.saturating_sub(t * per_thread));
                    scope.spawn(move || {
                        (0..mine)
                            .map(|_| {
                                let secret = bls::SecretKey::random(&mut rand::rngs::OsRng);
                                service::seal_record(
                                    sealer.as_ref(),
                                    &secret,
                                    ShareOrigin::Demo,
                                    None,
                                )
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("sealing thread panicked"))
                })
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
        store.insert_shares(&records)?;
        done += n;
        writeln!(
            out,
            "populated {done}/{count} keys ({:.1}s)",
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(())
}

/// Start `binary serve --config CONFIG --listen 127.0.0.1:0`, wait for its "listening" line, and
/// report (time to listen, peak RSS in KiB). The server is stopped afterwards.
pub fn startup(binary: &Path, config_path: &Path, out: &mut dyn Write) -> Result<(Duration, u64)> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["serve", "--config"])
        .arg(config_path)
        .args(["--listen", "127.0.0.1:0"])
        .env("KEYSTAKE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut listening = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.starts_with("listening on ") {
            listening = Some(started.elapsed());
            break;
        }
    }
    let pid = child.id();
    let peak_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let _ = child.kill();
    let _ = child.wait();
    let Some(elapsed) = listening else {
        bail!("the server exited before listening");
    };
    writeln!(
        out,
        "startup_s={:.3} peak_rss_mib={:.1}",
        elapsed.as_secs_f64(),
        peak_kib as f64 / 1024.0
    )?;
    Ok((elapsed, peak_kib))
}
