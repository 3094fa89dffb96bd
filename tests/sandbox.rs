//! Process hardening of `serve`: the seccomp allow-list kills a forbidden call (in a child
//! process, never the test runner), the start-up self-test and the filter run before serving,
//! `serve` refuses files other users may read, and `healthcheck` probes over mutual TLS.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use crate::common::{Appliance, Server, BIN};

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("seccomp-probe")
        .args(args)
        .env("KEYSTAKE_LOG", "warn")
        .output()
        .unwrap()
}

#[test]
fn a_forbidden_call_after_the_filter_kills_the_child_with_sigsys() {
    let confined = probe(&[]);
    assert_eq!(
        confined.status.signal(),
        Some(libc::SIGSYS),
        "expected death by SIGSYS, got {:?}; stdout {}",
        confined.status,
        String::from_utf8_lossy(&confined.stdout)
    );
    assert!(confined.stdout.is_empty(), "the call must not return");

    // Control: the same call without the filter returns to the program (allowed or EPERM).
    let free = probe(&["--no-filter"]);
    assert!(free.status.success(), "{free:?}");
    assert!(String::from_utf8_lossy(&free.stdout).contains("let through to the kernel"));
}

#[test]
fn starting_a_process_under_the_filter_kills_the_child_but_threads_and_sqlite_work() {
    // fork/posix_spawn: a clone without CLONE_THREAD (clone3 answers ENOSYS first).
    let confined = probe(&["--call", "fork"]);
    assert_eq!(
        confined.status.signal(),
        Some(libc::SIGSYS),
        "expected death by SIGSYS, got {:?}; stdout {}",
        confined.status,
        String::from_utf8_lossy(&confined.stdout)
    );
    assert!(confined.stdout.is_empty(), "the spawn must not return");

    // Control: the same allow-list with `clone` unconditional lets the process start (its
    // exec of /bin/true is then refused in the new process, which the probe reports and
    // survives), so the threads-only clone rule is what stops it above.
    let control = probe(&["--call", "fork", "--filter", "clone-anything"]);
    assert!(control.status.success(), "{control:?}");
    let stdout = String::from_utf8_lossy(&control.stdout);
    assert!(stdout.contains("a process was started"), "{stdout}");

    // What serving needs still works under the serving filter: std threads, tokio workers and
    // its blocking pool, SQLite on them.
    let threads = probe(&["--call", "threads"]);
    let stdout = String::from_utf8_lossy(&threads.stdout);
    assert!(threads.status.success(), "{threads:?}");
    assert!(
        stdout.contains("threads ok: std thread Ok(42), 16 blocking SQLite tasks Ok(136)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_self_tests_then_confines_itself_and_still_signs_and_probes() {
    let appliance = Appliance::create();
    let public_key = appliance.import_vector_key(0);
    let server = Server::start(&appliance);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("start-up self-test passed"), "{log}");

    // Signing (HSM unseal through SoftHSM2, SQLite write) works under the filter.
    let client = server.client(appliance.client_config("client"));
    let case = crate::common::vector_case("attestation__key0");
    let (status, body) = crate::common::post(
        &client,
        &crate::common::sign_path(&public_key),
        &case["request"],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // The healthcheck subcommand, from the configuration's [client] identity.
    let (ok, stdout, stderr) = crate::common::run_with_config(
        &appliance.config,
        &["healthcheck"],
        &["--url", &server.url],
    );
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("/upcheck: OK"));
    // A wrong client identity is refused by the server: the probe fails.
    let certs = appliance.certs();
    let (ok, _, stderr) = crate::common::run(&[
        "healthcheck",
        "--url",
        &server.url,
        "--ca-cert",
        certs.join("ca.pem").to_str().unwrap(),
        "--cert",
        certs.join("server.pem").to_str().unwrap(),
        "--key",
        certs.join("server.key").to_str().unwrap(),
    ]);
    assert!(!ok, "a server certificate is no client identity: {stderr}");
    // The filter went on right after "listening on" was printed, before the first request.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("seccomp allow-list installed"), "{log}");
}

#[test]
fn serve_refuses_a_readable_config_data_dir_or_token_file() {
    let appliance = Appliance::create();
    let data = appliance.path().join("data");
    let token = data.join("keymanager.token");
    for (path, open, private) in [
        (appliance.config.clone(), 0o644, 0o600),
        (data.clone(), 0o750, 0o700),
        (token.clone(), 0o640, 0o600),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(open)).unwrap();
        let (ok, _, stderr) = crate::common::run_with_config(
            &appliance.config,
            &["serve"],
            &["--listen", "127.0.0.1:0"],
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(private)).unwrap();
        assert!(!ok, "served with {} at {open:o}", path.display());
        assert!(
            stderr.contains("refusing to start") && stderr.contains(path.to_str().unwrap()),
            "{stderr}"
        );
    }
}
