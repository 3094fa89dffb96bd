//! Keeping the serving process's memory out of swap: unsealed shares, the HSM PIN or password,
//! TLS session keys and the enrolment scalar all live in ordinary heap and stack pages, and a
//! page written to a swap device outlives the process. `serve` locks **every** page of the
//! process (`mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`, through `rustix`, no `unsafe`)
//! rather than chasing individual buffers: a share is copied through stack frames, BLS scratch
//! space and TLS buffers that no wrapper type could reach. `MCL_ONFAULT` locks pages as they
//! are touched, so reserved but unused address space (thread stacks, allocator arenas) costs
//! nothing. Core dumps and same-user inspection are refused separately
//! (`app::disable_core_dumps`, `PR_SET_DUMPABLE = 0`).
//!
//! `MCL_FUTURE` makes every later mapping count against `RLIMIT_MEMLOCK`; above it `mmap` and
//! `brk` fail and the process aborts on its next allocation. The kernel counts the size of the
//! locked mappings, not the pages touched (`VmLck` of a serving signer here: ~390 MB of mappings
//! for ~38 MB resident), and the mappings grow with threads (tokio's blocking pool may start up
//! to 512, each with a 2 MiB stack), so no finite limit is known to be safe. The lock is taken
//! only when the limit cannot be reached: `RLIMIT_MEMLOCK` unlimited, or the process holds
//! `CAP_IPC_LOCK` (which lifts the limit). Otherwise, by `[process] lock_memory`:
//! `"best-effort"` (default) warns with the fix and serves unlocked, `"required"` refuses to
//! start, `"off"` does not try. The appliance's unit sets `LimitMEMLOCK=infinity`; a container
//! needs `--ulimit memlock=-1` (or `CAP_IPC_LOCK`).
//!
//! What this module refuses: under `"required"`, a limit too small to lock safely, and a
//! `mlockall` the kernel refuses (the error names the limit and how to raise it).
#![forbid(unsafe_code)]

use std::fmt;

use rustix::mm::{mlockall, MlockAllFlags};
use serde::{Deserialize, Serialize};

/// `CAP_IPC_LOCK`'s bit in the capability sets of `/proc/self/status`.
const CAP_IPC_LOCK_BIT: u32 = 14;

/// `[process] lock_memory`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockMemory {
    /// Lock when the limit allows, otherwise warn and serve unlocked.
    #[default]
    BestEffort,
    /// Lock or refuse to start.
    Required,
    /// Do not lock (hosts without swap, or debugging).
    Off,
}

/// What [`lock_process_memory`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemoryLock {
    /// Every current and future page is locked.
    Locked,
    /// Not locked (best-effort); why, with the fix.
    Unlocked(String),
    /// `lock_memory = "off"`.
    Disabled,
}

#[derive(Debug, thiserror::Error)]
#[error("[process] lock_memory = \"required\": {0}")]
pub struct MemlockError(String);

/// The soft `RLIMIT_MEMLOCK`, `None` when unlimited.
fn memlock_limit() -> Option<u64> {
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::MEMLOCK).unwrap_or((0, 0));
    (soft != rlimit::INFINITY).then_some(soft)
}

/// Whether the effective capability set holds `CAP_IPC_LOCK` (from `/proc/self/status`; an
/// unreadable file counts as "no").
fn has_cap_ipc_lock() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK_BIT) != 0)
}

struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1 << 20 {
            write!(f, "{} MiB", self.0 >> 20)
        } else {
            write!(f, "{} KiB", self.0 >> 10)
        }
    }
}

/// Why locking is not safe under `limit` (`None` when it is).
fn too_small(limit: Option<u64>, cap_ipc_lock: bool) -> Option<String> {
    match limit {
        Some(bytes) if !cap_ipc_lock => Some(format!(
            "RLIMIT_MEMLOCK is {} (locking every page needs it unlimited, or CAP_IPC_LOCK; under \
             a finite limit later allocations could fail): set LimitMEMLOCK=infinity in the \
             systemd unit, `ulimit -l unlimited`, or `--ulimit memlock=-1` for a container",
            Bytes(bytes)
        )),
        _ => None,
    }
}

/// Lock the process's memory as `mode` says (see the module doc). Call once, early in `serve`,
/// before the HSM is opened.
pub fn lock_process_memory(mode: LockMemory) -> Result<MemoryLock, MemlockError> {
    if mode == LockMemory::Off {
        return Ok(MemoryLock::Disabled);
    }
    let refuse_or_warn = |reason: String| match mode {
        LockMemory::Required => Err(MemlockError(reason)),
        _ => Ok(MemoryLock::Unlocked(reason)),
    };
    if let Some(reason) = too_small(memlock_limit(), has_cap_ipc_lock()) {
        return refuse_or_warn(reason);
    }
    let flags = MlockAllFlags::CURRENT | MlockAllFlags::FUTURE;
    // MCL_ONFAULT needs Linux 4.4; an older kernel refuses the flag, so fall back without it.
    match mlockall(flags | MlockAllFlags::ONFAULT).or_else(|_| mlockall(flags)) {
        Ok(()) => Ok(MemoryLock::Locked),
        Err(errno) => refuse_or_warn(format!(
            "mlockall failed ({errno}); RLIMIT_MEMLOCK is {}",
            memlock_limit().map_or("unlimited".to_owned(), |b| Bytes(b).to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_is_refused_unless_the_capability_lifts_it() {
        let reason = too_small(Some(8 << 20), false).unwrap();
        assert!(reason.contains("RLIMIT_MEMLOCK is 8 MiB"), "{reason}");
        assert!(reason.contains("LimitMEMLOCK=infinity"), "{reason}");
        assert!(too_small(Some(64 << 10), false).unwrap().contains("64 KiB"));
        assert_eq!(too_small(Some(8 << 20), true), None);
        assert_eq!(too_small(None, false), None);
        // Even a large finite limit: locked mappings grow with threads.
        assert!(too_small(Some(16 << 30), false).is_some());
    }

    #[test]
    fn off_does_not_lock() {
        assert_eq!(
            lock_process_memory(LockMemory::Off).unwrap(),
            MemoryLock::Disabled
        );
    }

    #[test]
    fn the_setting_parses_in_kebab_case() {
        #[derive(Deserialize)]
        struct Probe {
            lock_memory: LockMemory,
        }
        for (text, expected) in [
            ("best-effort", LockMemory::BestEffort),
            ("required", LockMemory::Required),
            ("off", LockMemory::Off),
        ] {
            let probe: Probe = toml::from_str(&format!("lock_memory = \"{text}\"")).unwrap();
            assert_eq!(probe.lock_memory, expected);
        }
        assert!(toml::from_str::<Probe>("lock_memory = \"always\"").is_err());
    }
}
