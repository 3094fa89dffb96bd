//! `bench load --mix mainnet`: the signing load a beacon chain gives an operator with N keys,
//! slot by slot, and the appliance's own CPU time (`/proc/PID/stat`).
//!
//! Per slot (mainnet: 32 slots an epoch, [`ACTIVE_VALIDATORS`] active validators):
//! * the keys whose turn it is (key `k` attests in slot `k mod 32` of every epoch, so N/32 a
//!   slot) each sign one ATTESTATION over the slot's one `AttestationData` (source = epoch − 1,
//!   target = epoch, committee index 0 as since Electra) and one AGGREGATION_SLOT selection
//!   proof over the slot;
//! * the keys in the sync committee (`max(1, N × 512 / ACTIVE_VALIDATORS)`, the first ones) each
//!   sign a SYNC_COMMITTEE_MESSAGE over the slot's block root;
//! * every `ACTIVE_VALIDATORS / N` slots (at least every slot) one key proposes: a RANDAO_REVEAL
//!   for the epoch and a BLOCK_V2 at the slot. The first slot of a run has no proposal, so a
//!   one-slot burst is exactly attestations + selection proofs + sync messages.
//!
//! A slot's requests are handed out in that order, as the burst at slot start that validator
//! clients produce; slots follow each other without waiting (a connection takes the next slot's
//! first request while the last answers of the previous one are in flight), so the run measures
//! throughput, not 12-second slot timing. Epochs start from the wall clock far above any earlier
//! run's, so a correct signer answers every request with 200 (nothing is slashable).
//!
//! Refuses: fewer keys on the appliance than `--keys` asks for (the load tool's caller checks).
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use keystake_core::types::BlsPublicKey;

/// Active validators on mainnet assumed for the sync-committee share and the proposal rate.
pub const ACTIVE_VALIDATORS: u64 = 1_000_000;
/// Sync committee size (mainnet preset).
pub const SYNC_COMMITTEE_SIZE: u64 = 512;
/// Slots per epoch (mainnet preset).
pub const SLOTS_PER_EPOCH: u64 = 32;

/// One request: (path, body, kind).
pub type Request = (String, Vec<u8>, &'static str);

fn fork_info(gvr: &str) -> String {
    format!(
        r#""fork_info":{{"fork":{{"previous_version":"0x05000000","current_version":"0x06000000","epoch":"411392"}},"genesis_validators_root":"{gvr}"}}"#
    )
}

/// A 32-byte root derived from a number (block roots, target roots): distinct per input.
fn root_of(tag: u8, n: u64) -> String {
    let mut bytes = [tag; 32];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    hex::encode(bytes)
}

/// The per-slot request generator (see the module documentation).
pub struct SlotMix {
    fork_info: String,
    paths: Vec<String>,
    base_slot: u64,
    sync_members: usize,
    proposal_period: u64,
    queue: Mutex<(u64, VecDeque<Request>)>,
}

impl SlotMix {
    pub fn new(keys: &[BlsPublicKey], gvr: &str) -> Self {
        // Seconds since 1970 × 2^16 epochs: above any earlier run (which started from an
        // earlier clock), and × 32 slots still far below u64::MAX.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let n = keys.len().max(1) as u64;
        SlotMix {
            fork_info: fork_info(gvr),
            paths: keys
                .iter()
                .map(|k| format!("/api/v1/eth2/sign/{}", k.to_hex()))
                .collect(),
            base_slot: (now << 16) * SLOTS_PER_EPOCH,
            sync_members: (n * SYNC_COMMITTEE_SIZE / ACTIVE_VALIDATORS).max(1) as usize,
            proposal_period: (ACTIVE_VALIDATORS / n).max(1),
            queue: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Keys signing sync committee messages every slot.
    pub fn sync_members(&self) -> usize {
        self.sync_members.min(self.paths.len())
    }

    /// The requests of slot number `i` of the run, in the order they are sent.
    pub fn slot_requests(&self, i: u64) -> Vec<Request> {
        let slot = self.base_slot + i;
        let epoch = slot / SLOTS_PER_EPOCH;
        let position = slot % SLOTS_PER_EPOCH;
        let n = self.paths.len() as u64;
        let fork = &self.fork_info;
        let mut out = Vec::new();
        if n > 0 && i % self.proposal_period == self.proposal_period - 1 && i > 0 {
            let proposer = &self.paths[((i / self.proposal_period) % n) as usize];
            out.push((
                proposer.clone(),
                format!(
                    r#"{{"type":"RANDAO_REVEAL",{fork},"randao_reveal":{{"epoch":"{epoch}"}}}}"#
                )
                .into_bytes(),
                "randao",
            ));
            out.push((
                proposer.clone(),
                format!(
                    r#"{{"type":"BLOCK_V2",{fork},"beacon_block":{{"version":"FULU","block_header":{{"slot":"{slot}","proposer_index":"7","parent_root":"0x{p}","state_root":"0x{s}","body_root":"0x{b}"}}}}}}"#,
                    p = root_of(0x33, slot),
                    s = root_of(0x44, slot),
                    b = root_of(0x55, slot),
                )
                .into_bytes(),
                "block",
            ));
        }
        let attesters: Vec<&String> = self
            .paths
            .iter()
            .enumerate()
            .filter(|(k, _)| *k as u64 % SLOTS_PER_EPOCH == position)
            .map(|(_, path)| path)
            .collect();
        let attestation = format!(
            r#"{{"type":"ATTESTATION",{fork},"attestation":{{"slot":"{slot}","index":"0","beacon_block_root":"0x{root}","source":{{"epoch":"{source}","root":"0x{sroot}"}},"target":{{"epoch":"{epoch}","root":"0x{troot}"}}}}}}"#,
            root = root_of(0xb1, slot),
            source = epoch - 1,
            sroot = root_of(0x11, epoch - 1),
            troot = root_of(0x11, epoch),
        );
        for path in &attesters {
            out.push((
                (*path).clone(),
                attestation.clone().into_bytes(),
                "attestation",
            ));
        }
        let selection = format!(
            r#"{{"type":"AGGREGATION_SLOT",{fork},"aggregation_slot":{{"slot":"{slot}"}}}}"#
        );
        for path in &attesters {
            out.push(((*path).clone(), selection.clone().into_bytes(), "selection"));
        }
        let sync = format!(
            r#"{{"type":"SYNC_COMMITTEE_MESSAGE",{fork},"sync_committee_message":{{"beacon_block_root":"0x{root}","slot":"{slot}"}}}}"#,
            root = root_of(0xb1, slot),
        );
        for path in self.paths.iter().take(self.sync_members()) {
            out.push((path.clone(), sync.clone().into_bytes(), "sync"));
        }
        out
    }

    /// The next request of the run (slot after slot).
    pub fn next(&self) -> Request {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(request) = queue.1.pop_front() {
                return request;
            }
            let slot = queue.0;
            queue.0 += 1;
            queue.1 = self.slot_requests(slot).into();
        }
    }
}

/// CPU time (user + system) of process `pid` so far, from `/proc/PID/stat`.
pub fn process_cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may contain spaces: split after it.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let (Some(utime), Some(stime)) = (fields.get(11), fields.get(12)) else {
        bail!("{path}: too few fields");
    };
    let ticks: u64 = utime.parse::<u64>()? + stime.parse::<u64>()?;
    let per_second = rustix::param::clock_ticks_per_second();
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use keystake_core::consensus::Network;
    use keystake_core::request::parse_sign_request;

    fn keys(n: usize) -> Vec<BlsPublicKey> {
        (0..n)
            .map(|i| {
                let mut k = [0u8; 48];
                k[..8].copy_from_slice(&(i as u64).to_be_bytes());
                BlsPublicKey(k)
            })
            .collect()
    }

    #[test]
    fn a_10k_key_slot_is_313_attestations_313_proofs_and_sync_messages() {
        let mix = SlotMix::new(&keys(10_000), super::super::loadgen::MAINNET_GVR);
        let first = mix.slot_requests(0);
        let count = |kind: &str| first.iter().filter(|r| r.2 == kind).count();
        // 10,000 / 32 = 312.5: the slot's position decides 312 or 313.
        assert!((312..=313).contains(&count("attestation")));
        assert_eq!(count("attestation"), count("selection"));
        assert_eq!(count("sync"), 5);
        assert_eq!(count("block") + count("randao"), 0);
        // A proposal every 100 slots.
        let proposals: usize = (0..200)
            .map(|i| {
                mix.slot_requests(i)
                    .iter()
                    .filter(|r| r.2 == "block")
                    .count()
            })
            .sum();
        assert_eq!(proposals, 2);
    }

    #[test]
    fn slot_requests_parse_share_roots_and_are_never_slashable() {
        let network = Network::mainnet();
        let mix = SlotMix::new(&keys(64), super::super::loadgen::MAINNET_GVR);
        let mut history = HashMap::<String, keystake_core::slashing::MemoryHistory>::new();
        let mut roots_per_kind = HashMap::<(u64, &str), std::collections::HashSet<_>>::new();
        let mut sent = 0;
        for i in 0..100u64 {
            for (path, body, kind) in mix.slot_requests(i) {
                let intent = parse_sign_request(&body, &network).unwrap();
                roots_per_kind
                    .entry((i, kind))
                    .or_default()
                    .insert(intent.signing_root);
                let h = history.entry(path).or_default();
                if let Some(check) = intent.slashing {
                    use keystake_core::request::SlashingCheck;
                    match check {
                        SlashingCheck::Block { slot } => {
                            assert_eq!(
                                keystake_core::slashing::check_block(h, slot, intent.signing_root),
                                Ok(Ok(keystake_core::slashing::Safe::Valid))
                            );
                            h.blocks.push(keystake_core::slashing::SignedBlock {
                                slot,
                                signing_root: Some(intent.signing_root),
                            });
                        }
                        SlashingCheck::Attestation { source, target } => {
                            assert_eq!(
                                keystake_core::slashing::check_attestation(
                                    h,
                                    source,
                                    target,
                                    intent.signing_root
                                ),
                                Ok(Ok(keystake_core::slashing::Safe::Valid))
                            );
                            h.attestations
                                .push(keystake_core::slashing::SignedAttestation {
                                    source,
                                    target,
                                    signing_root: Some(intent.signing_root),
                                });
                        }
                    }
                }
                sent += 1;
            }
        }
        assert!(sent > 100 * 4);
        // Within a slot every attester signs the same root, and so do selection proofs and
        // sync messages: the point of the mix.
        for ((_, kind), roots) in &roots_per_kind {
            if ["attestation", "selection", "sync"].contains(kind) {
                assert_eq!(roots.len(), 1, "{kind}");
            }
        }
        // The queue hands the same sequence out.
        let first: Vec<_> = mix.slot_requests(0).into_iter().map(|r| r.1).collect();
        let queued: Vec<_> = (0..first.len()).map(|_| mix.next().1).collect();
        assert_eq!(first, queued);
    }

    #[test]
    fn own_cpu_time_is_read() {
        let before = process_cpu_time(std::process::id()).unwrap();
        // Spin until the kernel has charged at least one more clock tick (or give up).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after <= before && start.elapsed() < Duration::from_secs(10) {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            after = process_cpu_time(std::process::id()).unwrap();
        }
        assert!(after > before, "{before:?} → {after:?}");
        assert!(process_cpu_time(u32::MAX).is_err());
    }
}
