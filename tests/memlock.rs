//! `serve` locks its memory against swap (`crate::memlock`): with the limit allowing it the
//! serving process's pages are locked (`VmLck` in /proc/PID/status) and it still serves; with
//! `[process] lock_memory = "required"` and an `RLIMIT_MEMLOCK` too small (set in the child by
//! util-linux `prlimit`, and `CAP_IPC_LOCK` dropped by `setpriv` when the tests run as root) it
//! refuses to start and says why; and the serving process is not dumpable.

use std::process::Command;
use std::time::Duration;

use crate::common::{Appliance, Server, BIN};

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix(field).map(|rest| rest.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn kib(value: &str) -> u64 {
    value.trim_end_matches("kB").trim().parse().unwrap()
}

/// Whether this process could lock everything: CAP_IPC_LOCK, or no limit.
fn can_lock_here() -> bool {
    let caps = u64::from_str_radix(&status_field(std::process::id(), "CapEff:"), 16).unwrap();
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::MEMLOCK).unwrap();
    caps & (1 << 14) != 0 || soft == rlimit::INFINITY
}

#[test]
fn serve_locks_its_memory_and_refuses_core_dumps() {
    let appliance = Appliance::create();
    let server = Server::start(&appliance);
    let pid = server.child.id();
    let log = || std::fs::read_to_string(&server.log).unwrap();
    if can_lock_here() {
        let locked = kib(&status_field(pid, "VmLck:"));
        let resident = kib(&status_field(pid, "VmRSS:"));
        println!("serve: VmLck {locked} kB, VmRSS {resident} kB");
        // VmLck counts the locked mappings (with MCL_ONFAULT: their size, touched or not), so
        // with everything locked it is at least the resident set, give or take pages mapped
        // between the two reads.
        assert!(
            locked * 10 >= resident * 9,
            "VmLck {locked} kB of VmRSS {resident} kB"
        );
        assert!(locked > 0, "VmLck is {locked} kB\n{}", log());
        assert!(
            log().contains("process memory locked against swap"),
            "{}",
            log()
        );
    } else {
        // Not allowed to lock here: the default (best-effort) says so and serves anyway.
        println!("NOTE: RLIMIT_MEMLOCK too small and no CAP_IPC_LOCK: checking the warning");
        assert!(log().contains("process memory NOT locked"), "{}", log());
    }
    // RLIMIT_CORE = 0 (hard and soft), as `disable_core_dumps` sets it with PR_SET_DUMPABLE.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
}

#[test]
fn lock_memory_required_refuses_to_start_under_a_small_limit() {
    let appliance = Appliance::create();
    let config = appliance.path().join("signer.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[process]\nlock_memory = \"required\"\n");
    std::fs::write(&config, text).unwrap();
    let root = status_field(std::process::id(), "Uid:").starts_with("0\t");
    let mut command = Command::new("prlimit");
    command.arg("--memlock=65536:65536");
    if root {
        // Root holds CAP_IPC_LOCK, which lifts the limit: drop it for the child.
        command.args(["setpriv", "--bounding-set", "-ipc_lock", "--"]);
    }
    let output = command
        .args([BIN, "serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("KEYSTAKE_LOG", "info")
        .output()
        .expect("prlimit (util-linux) runs the signer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening on"),
        "it must not serve"
    );
    assert!(
        stderr.contains("refusing to start")
            && stderr.contains("lock_memory = \"required\"")
            && stderr.contains("RLIMIT_MEMLOCK is 64 KiB")
            && stderr.contains("LimitMEMLOCK=infinity"),
        "{stderr}"
    );

    // The same limit with the default (best-effort): a warning, and it serves.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "lock_memory = \"required\"",
        "lock_memory = \"best-effort\"",
    );
    std::fs::write(&config, text).unwrap();
    let mut command = Command::new("prlimit");
    command.arg("--memlock=65536:65536");
    if root {
        command.args(["setpriv", "--bounding-set", "-ipc_lock", "--"]);
    }
    let log = appliance.path().join("best-effort.log");
    let mut child = command
        .args([BIN, "serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .env("KEYSTAKE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = crate::common::StdoutLines::of(&mut child);
    let listening = stdout.wait_for("listening on ", Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(listening.is_some(), "best-effort must serve:\n{text}");
    assert!(text.contains("process memory NOT locked"), "{text}");
}

/// PR_SET_DUMPABLE = 0 seen from outside: the kernel hands a non-dumpable process's /proc files
/// to root. Run `serve` as `nobody` (its appliance directory given to that user) and compare
/// the owner of /proc/PID/status with a dumpable `sleep` run the same way. Needs root to switch
/// users; skipped (with a note) otherwise.
#[test]
fn serve_is_not_dumpable() {
    use std::os::unix::fs::MetadataExt;
    if !status_field(std::process::id(), "Uid:").starts_with("0\t") {
        println!("SKIPPED: switching to nobody needs root");
        return;
    }
    let appliance = Appliance::create();
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(appliance.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let as_nobody = |program: &str| {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            program,
        ]);
        command
    };
    let mut control = as_nobody("sleep").arg("30").spawn().unwrap();
    let log = appliance.path().join("nobody.log");
    let config = appliance.path().join("signer.toml");
    let mut child = as_nobody(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stdout = crate::common::StdoutLines::of(&mut child);
    let listening = stdout.wait_for("listening on ", Duration::from_secs(30));
    let owner = |pid: u32| {
        std::fs::metadata(format!("/proc/{pid}/status"))
            .unwrap()
            .uid()
    };
    let (serve_owner, control_owner) = (owner(child.id()), owner(control.id()));
    let serve_uid = status_field(child.id(), "Uid:");
    let _ = child.kill();
    let _ = child.wait();
    let _ = control.kill();
    let _ = control.wait();
    assert!(
        listening.is_some(),
        "serve as nobody did not start:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(serve_uid.starts_with("65534"), "{serve_uid}");
    assert_eq!(
        control_owner, 65534,
        "a dumpable process's /proc files are its own"
    );
    assert_eq!(
        serve_owner, 0,
        "serve's /proc files belong to root: it is not dumpable"
    );
}
