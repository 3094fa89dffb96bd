//! The seccomp allow-list of the serving process: after start-up (HSM opened and self-tested,
//! store open, listeners bound), `app::serve` installs a BPF filter on every thread of the
//! process (`SECCOMP_FILTER_FLAG_TSYNC`) that allows only the system calls serving needs —
//! sockets, epoll/futex/threads for tokio, file I/O for SQLite, the SoftHSM2 token files and the
//! policy/CRL reload, memory management, time, randomness — and kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, SIGSYS) on anything else.
//!
//! Threads, not processes: `clone` is allowed only with `CLONE_THREAD` in its flags (a new thread
//! of this process; `fork`, `vfork` and `posix_spawn` lack it and kill the process), and
//! `clone3` — whose flags live in a struct in memory, out of a BPF filter's reach — fails with
//! `ENOSYS`, so glibc's `pthread_create` falls back to `clone`, where the flags are checked.
//! That second rule is its own filter (installed first; seccomp applies the strictest answer of
//! all filters, and `ERRNO` is stricter than `ALLOW`).
//!
//! What it refuses, by omission: `execve`/`execveat` (no shell, no helper program), `ptrace`,
//! `process_vm_*`, `mount`/`umount2`/`pivot_root`/`chroot`, `setuid`-family and capability
//! changes, `bpf`, `perf_event_open`, module loading, `kexec_*`, `reboot`, `swapon`, keyring
//! calls, `io_uring_*`, `userfaultfd`, and every other call not listed. It does not stop what
//! the listed calls allow: a compromised process can still read and write the files it may open
//! and talk on its sockets (the systemd unit's `ReadWritePaths=` and `RestrictAddressFamilies=`
//! narrow those); a new thread it starts runs under the same filter.
//!
//! `[sandbox] seccomp = false` in `signer.toml` leaves it off (debugging with strace or gdb).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why the filter could not be built or installed (`serve` then refuses to serve).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("no seccomp support for architecture {0}")]
    Architecture(String),
    #[error("building the seccomp filter: {0}")]
    Build(#[source] seccompiler::BackendError),
    #[error("compiling the seccomp filter: {0}")]
    Compile(#[source] seccompiler::BackendError),
    #[error("installing the seccomp filter on every thread: {0}")]
    Install(#[source] seccompiler::Error),
}

/// The system calls the serving process makes (tokio, hyper, rustls, SQLite, SoftHSM2 through
/// cryptoki, the yubihsm HTTP connector, tracing to stderr).
const ALLOWED: &[libc::c_long] = &[
    // file and socket I/O
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_close,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_mkdirat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_unlinkat,
    libc::SYS_fchmod,
    // SQLite hands a new -wal/-journal file to the database's owner when it runs as root
    libc::SYS_fchown,
    libc::SYS_fchmodat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_readlinkat,
    libc::SYS_umask,
    libc::SYS_ioctl,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    // sockets (accept on the bound listeners; connect for the yubihsm HTTP connector)
    libc::SYS_socket,
    libc::SYS_connect,
    libc::SYS_accept4,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_shutdown,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    // event loop, threads, synchronisation
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    libc::SYS_futex,
    // `clone` only with CLONE_THREAD (CLONED_THREAD_ONLY); `clone3` answers ENOSYS (NO_CLONE3)
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_set_tid_address,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_prctl,
    libc::SYS_madvise,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_brk,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_membarrier,
    // signals (SIGTERM/SIGINT/SIGHUP handling, thread wake-ups)
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_tgkill,
    libc::SYS_restart_syscall,
    // identity, time, randomness, limits
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    libc::SYS_prlimit64,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_getrandom,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
];

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Architecture(std::env::consts::ARCH.to_owned()))
}

/// `clone(flags, …)` is allowed when `flags & CLONE_THREAD == CLONE_THREAD` (argument 0 on every
/// architecture seccompiler supports): a thread, never a new process.
fn cloned_thread_only() -> Result<SeccompRule, SandboxError> {
    let thread = libc::CLONE_THREAD as u64;
    let condition = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(thread),
        thread,
    )
    .map_err(SandboxError::Build)?;
    SeccompRule::new(vec![condition]).map_err(SandboxError::Build)
}

/// The compiled allow-list for this architecture: [`ALLOWED`] unconditionally, `clone` with
/// `CLONE_THREAD` only, anything else kills the process.
pub fn serving_filter() -> Result<BpfProgram, SandboxError> {
    allow_list(true)
}

/// [`ALLOWED`] with `clone` limited to threads (`threads_only`, what serving installs) or, for
/// the probe's control case only, unconditional.
fn allow_list(threads_only: bool) -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&number| (number, Vec::new())).collect();
    let clone = if threads_only {
        vec![cloned_thread_only()?]
    } else {
        Vec::new()
    };
    rules.insert(libc::SYS_clone, clone);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        target_arch()?,
    )
    .map_err(SandboxError::Build)?;
    filter.try_into().map_err(SandboxError::Compile)
}

/// The filter installed before [`serving_filter`]: `clone3` fails with `ENOSYS` (glibc then
/// uses `clone`, whose flags the allow-list checks); every other call is left to the allow-list.
pub fn no_clone3_filter() -> Result<BpfProgram, SandboxError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> = [(libc::SYS_clone3, Vec::new())].into();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        target_arch()?,
    )
    .map_err(SandboxError::Build)?;
    filter.try_into().map_err(SandboxError::Compile)
}

/// Install [`no_clone3_filter`] and then [`serving_filter`] on every thread of this process (and
/// `no_new_privs`). Irrevocable: from here on a call outside the list kills the process. The
/// order matters: `seccomp(2)` itself is not on the allow-list.
pub fn confine_serving_process() -> Result<(), SandboxError> {
    let no_clone3 = no_clone3_filter()?;
    let serving = serving_filter()?;
    seccompiler::apply_filter_all_threads(&no_clone3).map_err(SandboxError::Install)?;
    seccompiler::apply_filter_all_threads(&serving).map_err(SandboxError::Install)
}

/// What the hidden `seccomp-probe` command does once confined (tests/sandbox.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeCall {
    /// `chroot("/")`, which serving never needs, from a thread started before the filter.
    Chroot,
    /// Start a process (`std::process::Command::spawn`: posix_spawn/fork, then exec of
    /// `/bin/true`), without waiting for it.
    Fork,
    /// What serving does: new threads (std and a tokio runtime's workers and blocking pool) and
    /// SQLite on them; returns normally when all of it works under the filter.
    Threads,
}

/// How the probe confines itself first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeFilter {
    /// No filter (the control case).
    None,
    /// The serving filter, as `serve` installs it.
    Serving,
    /// Control for `fork`: the allow-list with `clone` unconditional and `clone3` allowed (the
    /// filter before threads-only `clone`), so that the clone rule is shown to be what stops it.
    CloneAnything,
}

/// The hidden `seccomp-probe` command's body: confine as `filter` says, then make `call` from
/// another thread than the one that installed the filter (a thread started before it: TSYNC
/// must confine it too). Returns only when the call came back (with what it returned).
pub fn probe(call: ProbeCall, filter: ProbeFilter) -> Result<String, SandboxError> {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (ready, started) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // Like `serve`: the runtime exists before the filter; its blocking pool grows after.
        let runtime = (call == ProbeCall::Threads).then(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .max_blocking_threads(4)
                .enable_all()
                .build()
        });
        ready.send(()).ok();
        wait.recv().ok();
        match call {
            ProbeCall::Chroot => format!(
                "chroot was let through to the kernel: {:?}",
                std::os::unix::fs::chroot("/")
            ),
            // Not waited for: wait4 is not on the allow-list either (serving starts no process).
            ProbeCall::Fork => format!(
                "a process was started: {:?}",
                std::process::Command::new("/bin/true")
                    .spawn()
                    .map(|child| child.id())
            ),
            ProbeCall::Threads => match runtime {
                Some(Ok(runtime)) => threads_and_sqlite(&runtime),
                Some(Err(error)) => format!("no tokio runtime: {error}"),
                None => "no tokio runtime was built".to_owned(),
            },
        }
    });
    started.recv().ok();
    match filter {
        ProbeFilter::None => {}
        ProbeFilter::Serving => confine_serving_process()?,
        ProbeFilter::CloneAnything => seccompiler::apply_filter_all_threads(&allow_list(false)?)
            .map_err(SandboxError::Install)?,
    }
    go.send(()).ok();
    Ok(worker
        .join()
        .unwrap_or_else(|_| "probe thread panicked".to_owned()))
}

/// Threads started after the filter — a std thread and 16 tasks on the (pre-existing) tokio
/// runtime's blocking pool, which starts its threads now, each opening an SQLite database and
/// querying it — and what they computed.
fn threads_and_sqlite(runtime: &tokio::runtime::Runtime) -> String {
    let std_thread = std::thread::spawn(|| 6 * 7).join();
    let sums: Vec<Result<i64, String>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..16i64)
            .map(|i| {
                tokio::task::spawn_blocking(move || {
                    let db = rusqlite::Connection::open_in_memory().map_err(|e| e.to_string())?;
                    db.query_row("SELECT ?1 + 1", [i], |row| row.get::<_, i64>(0))
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        let mut sums = Vec::new();
        for task in tasks {
            sums.push(task.await.map_err(|e| e.to_string()).and_then(|r| r));
        }
        sums
    });
    let total: Result<i64, String> = sums.into_iter().sum();
    format!("threads ok: std thread {std_thread:?}, 16 blocking SQLite tasks {total:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles_for_this_architecture_and_lists_no_call_twice() {
        let program = serving_filter().unwrap();
        assert!(program.len() > ALLOWED.len(), "one jump per allowed call");
        let mut sorted = ALLOWED.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALLOWED.len());
        for forbidden in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_chroot,
            libc::SYS_setuid,
            libc::SYS_bpf,
            libc::SYS_process_vm_readv,
            // `clone` has its own rule (threads only), never an unconditional entry
            libc::SYS_clone,
            libc::SYS_fork,
            libc::SYS_vfork,
        ] {
            assert!(
                !ALLOWED.contains(&forbidden),
                "{forbidden} must stay forbidden"
            );
        }
        assert!(no_clone3_filter().unwrap().len() > 1);
    }
}
