//! The seccomp allow-list of the serving process: after start-up (HSM opened and self-tested,
//! store open, listeners bound), `app::serve` installs a BPF filter on every thread of the
//! process (`SECCOMP_FILTER_FLAG_TSYNC`) that allows only the system calls serving needs —
//! sockets, epoll/futex/threads for tokio, file I/O for SQLite, the SoftHSM2 token files and the
//! policy/CRL reload, memory management, time, randomness — and kills the whole process
//! (`SECCOMP_RET_KILL_PROCESS`, SIGSYS) on anything else.
//!
//! What it refuses, by omission: `execve`/`execveat` (no shell, no helper program), `ptrace`,
//! `process_vm_*`, `mount`/`umount2`/`pivot_root`/`chroot`, `setuid`-family and capability
//! changes, `bpf`, `perf_event_open`, module loading, `kexec_*`, `reboot`, `swapon`, keyring
//! calls, `io_uring_*`, `userfaultfd`, and every other call not listed. It does not stop what
//! the listed calls allow: a compromised process can still read and write the files it may open
//! and talk on its sockets (the systemd unit's `ReadWritePaths=` and `RestrictAddressFamilies=`
//! narrow those), and `clone`/`clone3` stay allowed for threads (their flags cannot be filtered
//! reliably), so a fork without `execve` is possible.
//!
//! `[sandbox] seccomp = false` in `signer.toml` leaves it off (debugging with strace or gdb).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

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
    libc::SYS_clone,
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

/// The compiled allow-list for this architecture.
pub fn serving_filter() -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Architecture(std::env::consts::ARCH.to_owned()))?;
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&number| (number, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(SandboxError::Build)?;
    filter.try_into().map_err(SandboxError::Compile)
}

/// Install [`serving_filter`] on every thread of this process (and `no_new_privs`). Irrevocable:
/// from here on a call outside the list kills the process.
pub fn confine_serving_process() -> Result<(), SandboxError> {
    let program = serving_filter()?;
    seccompiler::apply_filter_all_threads(&program).map_err(SandboxError::Install)
}

/// The hidden `seccomp-probe` command's body, for the test that the filter kills a forbidden
/// call (tests/sandbox.rs): optionally confine, then call `chroot("/")` — which serving never
/// needs — from another thread than the one that installed the filter. Returns only when the
/// call was let through to the kernel (with its result).
pub fn probe_forbidden_call(confine: bool) -> Result<std::io::Result<()>, SandboxError> {
    // A thread started before the filter: TSYNC must confine it too.
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        wait.recv().ok();
        std::os::unix::fs::chroot("/")
    });
    if confine {
        confine_serving_process()?;
    }
    go.send(()).ok();
    Ok(worker
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("probe thread panicked"))))
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
        ] {
            assert!(
                !ALLOWED.contains(&forbidden),
                "{forbidden} must stay forbidden"
            );
        }
    }
}
