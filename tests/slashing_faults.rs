//! Disk faults under the real server: a full disk (a small tmpfs the test mounts), an I/O error
//! (ext4 on a loop device whose backing file lives on a tmpfs that the test fills, so the
//! block layer fails the writes), a file system that turns read-only at runtime (ext4's
//! `trigger_fs_error` with `errors=remount-ro`), and a corrupted database at startup. Each fault
//! must give 503 with a clear error and no signature. Signing then stays stopped (latched, issue
//! 17) even once the fault is gone — `/healthcheck` DOWN, every request 503 — until the operator
//! runs `slashing verify` and restarts. A database file moved away under the running signer
//! latches it the same way. Skipped, with the reason printed, only where mounts are forbidden.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use keystake_core::slashing::interchange::Interchange;
use serde_json::{json, Value};

use crate::common::*;
use keystake_signer::net::client::MtlsClient;

fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A mounted file system, unmounted (and its loop device detached) on drop.
struct Mount {
    path: PathBuf,
    loop_device: Option<String>,
}

impl Mount {
    fn tmpfs(path: &Path, size: &str) -> Result<Mount, String> {
        std::fs::create_dir_all(path).unwrap();
        sh(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                path.to_str().unwrap(),
            ],
        )?;
        Ok(Mount {
            path: path.to_owned(),
            loop_device: None,
        })
    }

    /// ext4 on a loop device backed by `image` (a sparse file of `size`).
    fn ext4(image: &Path, size: &str, path: &Path) -> Result<Mount, String> {
        std::fs::create_dir_all(path).unwrap();
        sh("truncate", &["-s", size, image.to_str().unwrap()])?;
        // Inode tables written now and no journal, so that filling the backing store later
        // fails only writes of new data blocks (EIO to the reader), not metadata (which would
        // make ext4 go read-only at once).
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=0,nodiscard",
                image.to_str().unwrap(),
            ],
        )?;
        let device = sh("losetup", &["-f", "--show", image.to_str().unwrap()])?;
        let mount = Mount {
            path: path.to_owned(),
            loop_device: Some(device.clone()),
        };
        sh(
            "mount",
            &["-o", "errors=continue", &device, path.to_str().unwrap()],
        )?;
        Ok(mount)
    }

    fn unmount(&mut self) {
        let _ = sh("umount", &[self.path.to_str().unwrap()]);
        if let Some(device) = self.loop_device.take() {
            let _ = sh("losetup", &["-d", &device]);
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.loop_device.is_some() || is_mounted(&self.path) {
            self.unmount();
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(path.to_str().unwrap()))
}

/// Fill the file system holding `dir` until it reports "no space left".
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0xa5u8; 64 * 1024];
    loop {
        if let Err(error) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
            assert_eq!(error.raw_os_error(), Some(28), "expected ENOSPC: {error}");
            break;
        }
    }
    // Single bytes, so not even a page is left.
    while file.write_all(&[0]).and_then(|()| file.sync_all()).is_ok() {}
    filler
}

/// An appliance with one key, its database moved to `data_dir` (an absolute path).
fn appliance_with_data_in(data_dir: &Path) -> (Appliance, String) {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    // `serve` refuses a data directory other users may enter.
    keystake_signer::files::create_private_dir(data_dir).unwrap();
    for entry in std::fs::read_dir(appliance.path().join("data")).unwrap() {
        let entry = entry.unwrap();
        let target = data_dir.join(entry.file_name());
        std::fs::copy(entry.path(), &target).unwrap();
        // On disk before any fault is injected, as an installed appliance's files are.
        std::fs::File::open(&target).unwrap().sync_all().unwrap();
    }
    std::fs::File::open(data_dir).unwrap().sync_all().unwrap();
    let config = std::fs::read_to_string(&appliance.config).unwrap();
    let config = config.replace(
        "data_dir = \"data\"",
        &format!("data_dir = \"{}\"", data_dir.display()),
    );
    std::fs::write(&appliance.config, config).unwrap();
    (appliance, key)
}

fn skip(reason: &str) {
    println!("SKIPPED: {reason}");
}

fn assert_unavailable(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 503, "{what}: {body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains(what), "error should name {what:?}: {error}");
    assert!(error.contains("nothing was signed"), "{error}");
    assert!(body.get("signature").is_none());
}

/// After a latching fault: signing stays refused although the fault is gone, and the health
/// check says why.
async fn assert_latched(client: &MtlsClient, sign: &str, target: u64, cause: &str) {
    let (status, body) = post(client, sign, &attestation(2, target, 7)).await;
    assert_unavailable(status, &body, cause);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("signing stopped after a storage fault"),
        "{error}"
    );
    assert!(error.contains("slashing verify"), "{error}");
    let (status, health) = get(client, "/healthcheck").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["status"], "DOWN", "{health}");
    assert!(
        health
            .to_string()
            .contains("signing stopped after a storage fault"),
        "{health}"
    );
}

/// The operator's way back after a latch: `slashing verify` passes, then a restart.
fn verify_and_restart(appliance: &Appliance, server: &mut Server) -> (Server, MtlsClient) {
    server.kill();
    let verified = appliance.cli_ok(&["slashing", "verify"], &[]);
    assert!(
        verified.contains("OK (integrity_check passed)"),
        "{verified}"
    );
    appliance.serve()
}

fn targets(interchange: &Interchange) -> Vec<u64> {
    interchange.data[0]
        .signed_attestations
        .iter()
        .map(|a| a.target_epoch.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_with_503_keeps_imports_atomic_and_latches_until_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let mount = match Mount::tmpfs(&scratch.path().join("small"), "2m") {
        Ok(mount) => mount,
        Err(reason) => return skip(&format!("cannot mount a tmpfs ({reason})")),
    };
    let data = mount.path.join("data");
    let (appliance, key) = appliance_with_data_in(&data);
    let (mut server, client) = appliance.serve();
    let sign = sign_path(&key);
    assert_eq!(post(&client, &sign, &attestation(1, 2, 1)).await.0, 200);

    let filler = fill(&mount.path);
    // Every request is refused while the disk is full; none is signed.
    for target in 3..6 {
        let (status, body) = post(&client, &sign, &attestation(2, target, 1)).await;
        assert_unavailable(status, &body, "disk full");
    }
    // An import on the full disk fails as a whole.
    let file = scratch.path().join("history.json");
    let records: Vec<Value> = (0..200)
        .map(|i| {
            json!({"pubkey": format!("0x{:096x}", i + 1), "signed_blocks": [{"slot": "5"}],
                   "signed_attestations": (0..20).map(|t| json!({"source_epoch": "0", "target_epoch": t.to_string()})).collect::<Vec<_>>()})
        })
        .collect();
    let document = json!({"metadata": {"interchange_format_version": "5", "genesis_validators_root": MAINNET_GVR}, "data": records});
    std::fs::write(&file, document.to_string()).unwrap();
    let import_args = ["--file", file.to_str().unwrap()];
    let (ok, _, stderr) = appliance.cli(&["slashing", "import"], &import_args);
    assert!(!ok, "import on a full disk must fail");
    assert!(stderr.contains("full"), "{stderr}");

    std::fs::remove_file(filler).unwrap();
    // Space is back, but signing stays stopped until the operator has looked (issue 17).
    assert_latched(&client, &sign, 3, "disk full").await;
    let (server, client) = verify_and_restart(&appliance, &mut server);
    // The refused requests left no record: a different message for target 3 is signed now.
    let (status, body) = post(&client, &sign, &attestation(2, 3, 2)).await;
    assert_eq!(status, 200, "{body}");
    let exported = appliance.export_slashing(&[]);
    assert_eq!(exported.data.len(), 1, "the failed import left nothing");
    assert_eq!(targets(&exported), vec![2, 3]);
    appliance.cli_ok(&["slashing", "import"], &import_args);
    assert_eq!(appliance.export_slashing(&[]).data.len(), 201);
    drop(server);
}

/// ext4 on a loop device whose backing file lives on a tmpfs, or the reason it cannot be made.
fn loop_ext4(scratch: &Path) -> Result<(Mount, Mount), String> {
    let backing = Mount::tmpfs(&scratch.join("backing"), "48m")?;
    let image = backing.path.join("disk.img");
    let disk = Mount::ext4(&image, "40m", &scratch.join("disk"))?;
    Ok((backing, disk))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_error_refuses_with_503_and_latches_until_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let (backing, disk) = match loop_ext4(scratch.path()) {
        Ok(mounts) => mounts,
        Err(reason) => return skip(&format!("cannot loop-mount ext4 on a tmpfs ({reason})")),
    };
    let (appliance, key) = appliance_with_data_in(&disk.path.join("data"));
    let (mut server, client) = appliance.serve();
    let sign = sign_path(&key);
    assert_eq!(post(&client, &sign, &attestation(1, 2, 1)).await.0, 200);

    // The device under ext4 runs out of space: writes of new blocks fail in the block layer
    // (EIO). Room left in blocks already allocated may take a commit or two; then every
    // request fails.
    let filler = fill(&backing.path);
    let mut signed_targets = vec![2];
    let mut failures = 0;
    let mut target = 3;
    while failures < 3 {
        assert!(target < 60, "no I/O error after {target} requests");
        let (status, body) = post(&client, &sign, &attestation(2, target, 1)).await;
        if status == 200 {
            assert_eq!(failures, 0, "signed after an I/O error while still failing");
            signed_targets.push(target);
        } else {
            assert_unavailable(status, &body, "I/O error");
            failures += 1;
        }
        target += 1;
    }
    std::fs::remove_file(filler).unwrap();
    // The device writes again, but records near an I/O error may be lost: no signing until the
    // operator has verified the database and restarted (before issue 17 the next request signed).
    assert_latched(&client, &sign, target, "I/O error").await;
    let (server, client) = verify_and_restart(&appliance, &mut server);
    let (status, body) = post(&client, &sign, &attestation(2, target, 2)).await;
    assert_eq!(status, 200, "signs again after verify and restart: {body}");
    signed_targets.push(target);
    // Every signature released is recorded. A refused request may have left its record too
    // (its write reached the page cache before the fsync failed): refused over-recorded is the
    // safe direction, so the export is a superset of what was signed.
    let (status, body) = post(&client, &sign, &attestation(2, 2, 9)).await;
    assert_eq!(status, 412, "{body}");
    let recorded = targets(&appliance.export_slashing(&[]));
    for signed in &signed_targets {
        assert!(
            recorded.contains(signed),
            "{signed} missing from {recorded:?}"
        );
    }
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_system_turning_read_only_refuses_with_503_and_loses_nothing() {
    let scratch = tempfile::tempdir().unwrap();
    let (_backing, mut disk) = match loop_ext4(scratch.path()) {
        Ok(mounts) => mounts,
        Err(reason) => return skip(&format!("cannot loop-mount ext4 on a tmpfs ({reason})")),
    };
    let (appliance, key) = appliance_with_data_in(&disk.path.join("data"));
    let (mut server, client) = appliance.serve();
    let sign = sign_path(&key);
    for target in 2..5 {
        assert_eq!(
            post(&client, &sign, &attestation(1, target, 1)).await.0,
            200
        );
    }
    // What ext4 does after an error with errors=remount-ro: read-only under the running signer.
    sh(
        "mount",
        &[
            "-o",
            "remount,errors=remount-ro",
            disk.path.to_str().unwrap(),
        ],
    )
    .unwrap();
    let device = disk.loop_device.clone().unwrap();
    let name = device.trim_start_matches("/dev/");
    std::fs::write(format!("/sys/fs/ext4/{name}/trigger_fs_error"), "test\n").unwrap();
    for target in 5..8 {
        let (status, body) = post(&client, &sign, &attestation(4, target, 1)).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("I/O error") || error.contains("read-only"),
            "{error}"
        );
        assert!(error.contains("nothing was signed"), "{error}");
    }
    // The operator's way out: stop, check the file system, mount it again, start.
    server.kill();
    let image = scratch.path().join("backing/disk.img");
    disk.unmount();
    let _ = sh("e2fsck", &["-fy", image.to_str().unwrap()]);
    let device = sh("losetup", &["-f", "--show", image.to_str().unwrap()]).unwrap();
    disk.loop_device = Some(device.clone());
    sh("mount", &[&device, disk.path.to_str().unwrap()]).unwrap();
    let (server, client) = appliance.serve();
    // Every signature released before is recorded; the refused requests left nothing.
    let (status, body) = post(&client, &sign, &attestation(1, 4, 9)).await;
    assert_eq!(status, 412, "{body}");
    let (status, body) = post(&client, &sign, &attestation(4, 5, 2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(targets(&appliance.export_slashing(&[])), vec![2, 3, 4, 5]);
    drop(server);
}

/// Run `serve` and expect it to exit (refusing to start) within a few seconds.
fn serve_must_refuse(appliance: &Appliance) -> String {
    let log = appliance.path().join("refused.log");
    let mut child = serve_command(appliance, "127.0.0.1:0")
        .env("KEYSTAKE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
        panic!("serve started on a database it must refuse");
    }
    assert!(!child.wait().unwrap().success());
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn corrupted_database_or_read_only_file_system_refuses_to_start() {
    let appliance = Appliance::create();
    appliance.import_vector_key(1);
    let database = appliance.path().join("data/signer.sqlite");
    // Fold the write-ahead log into the main file, so all pages are in one place.
    rusqlite::Connection::open(&database)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    let pristine = std::fs::read(&database).unwrap();
    let page = 4096;
    assert!(pristine.len() >= 4 * page, "{} bytes", pristine.len());
    // Scribble over the second page (a b-tree page): the header is intact, the tree is not.
    let mut corrupted = pristine.clone();
    corrupted[page..2 * page].fill(0x5a);
    std::fs::write(&database, &corrupted).unwrap();
    let log = serve_must_refuse(&appliance);
    assert!(log.contains("corrupted"), "{log}");
    assert!(log.contains("restore it from a backup"), "{log}");
    // The CLI refuses it too.
    let (ok, _, stderr) = appliance.cli(&["keys", "list"], &[]);
    assert!(!ok && stderr.contains("corrupted"), "{stderr}");
    std::fs::write(&database, &pristine).unwrap();

    // A database on a read-only file system: refused at startup with the reason.
    let scratch = tempfile::tempdir().unwrap();
    let mount = match Mount::tmpfs(&scratch.path().join("ro"), "4m") {
        Ok(mount) => mount,
        Err(reason) => return skip(&format!("cannot mount a tmpfs ({reason})")),
    };
    let data = mount.path.join("data");
    keystake_signer::files::create_private_dir(&data).unwrap();
    std::fs::copy(&database, data.join("signer.sqlite")).unwrap();
    let config = std::fs::read_to_string(&appliance.config).unwrap().replace(
        "data_dir = \"data\"",
        &format!("data_dir = \"{}\"", data.display()),
    );
    std::fs::write(&appliance.config, config).unwrap();
    sh("mount", &["-o", "remount,ro", mount.path.to_str().unwrap()]).unwrap();
    let log = serve_must_refuse(&appliance);
    assert!(
        log.contains("read-only") || log.contains("cannot open"),
        "{log}"
    );
    sh("mount", &["-o", "remount,rw", mount.path.to_str().unwrap()]).unwrap();
    let server = Server::start(&appliance);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_moved_away_while_serving_latches_signing_until_restart() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    let (mut server, client) = appliance.serve();
    let sign = sign_path(&key);
    assert_eq!(post(&client, &sign, &attestation(1, 2, 1)).await.0, 200);

    // Someone moves the database away (or swaps in another one) under the running signer. Records
    // written through the open descriptor would vanish at restart: refuse instead.
    let database = appliance.path().join("data/signer.sqlite");
    let moved = appliance.path().join("data/elsewhere.sqlite");
    std::fs::rename(&database, &moved).unwrap();
    let (status, body) = post(&client, &sign, &attestation(2, 3, 1)).await;
    assert_unavailable(
        status,
        &body,
        "no longer the database file this signer opened",
    );
    // Putting it back does not resume signing by itself.
    std::fs::rename(&moved, &database).unwrap();
    assert_latched(&client, &sign, 3, "no longer the database file").await;

    let (server, client) = verify_and_restart(&appliance, &mut server);
    let (status, body) = post(&client, &sign, &attestation(2, 3, 2)).await;
    assert_eq!(status, 200, "{body}");
    // Only what was signed is recorded.
    assert_eq!(targets(&appliance.export_slashing(&[])), vec![2, 3]);
    drop(server);
}

/// Every attestation record the writer inserts also inserts a row whose foreign key SQLite checks
/// only at `COMMIT` (deferred), and that check fails: the writer finds the request safe, hands the
/// service its tentative verdict (signing starts), and then the transaction cannot commit.
const FAILING_COMMIT: &str = "CREATE TABLE failing_commit (validator INTEGER
         REFERENCES validators(id) DEFERRABLE INITIALLY DEFERRED);
     CREATE TRIGGER failing_commit_on_attestation AFTER INSERT ON signed_attestations
     BEGIN INSERT INTO failing_commit VALUES (-1); END;";

/// Issue 16 signs while the record commits: a commit that fails after a safe verdict answers 503
/// without the signature computed meanwhile, records nothing, and latches like any storage
/// fault; after the fault is removed, verified and restarted, a different attestation for the
/// same target signs (it would be a double vote had the failed one left its record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_failing_after_a_safe_verdict_answers_503_and_releases_no_signature() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    let database = appliance.path().join("data/signer.sqlite");
    rusqlite::Connection::open(&database)
        .unwrap()
        .execute_batch(FAILING_COMMIT)
        .unwrap();
    let (mut server, client) = appliance.serve();
    let sign = sign_path(&key);
    let (status, body) = post(&client, &sign, &attestation(1, 2, 1)).await;
    assert_unavailable(status, &body, "FOREIGN KEY constraint failed");
    // A signature slashing protection does not cover is refused too (latched), never signed.
    let randao_reveal = json!({
        "type": "RANDAO_REVEAL",
        "fork_info": attestation(1, 2, 1)["fork_info"].clone(),
        "randao_reveal": {"epoch": "5"}
    });
    let (status, body) = post(&client, &sign, &randao_reveal).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.get("signature").is_none(), "{body}");
    // Its audit entry cannot go into the database that refuses it: the log accounts for it.
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.lines()
            .any(|line| line.contains("audit entry could not be written")
                && line.contains("RANDAO_REVEAL")
                && line.contains("refused")),
        "{log}"
    );
    assert_latched(&client, &sign, 3, "FOREIGN KEY constraint failed").await;
    rusqlite::Connection::open(&database)
        .unwrap()
        .execute_batch("DROP TRIGGER failing_commit_on_attestation; DROP TABLE failing_commit;")
        .unwrap();
    let (server, client) = verify_and_restart(&appliance, &mut server);
    let (status, body) = post(&client, &sign, &attestation(1, 2, 2)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(targets(&appliance.export_slashing(&[])), vec![2]);
    drop(server);
}

/// Fold the write-ahead log into the main file, so every page is in one place.
fn checkpoint_into_main_file(database: &Path) {
    rusqlite::Connection::open(database)
        .unwrap()
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_index_page_is_detected_and_start_refused() {
    let appliance = Appliance::create();
    let key = appliance.import_vector_key(0);
    let sign = sign_path(&key);
    let database = appliance.path().join("data/signer.sqlite");
    let index = "signed_attestations_by_target";
    {
        let (_server, client) = appliance.serve();
        assert_eq!(post(&client, &sign, &attestation(1, 2, 1)).await.0, 200);
        assert_eq!(post(&client, &sign, &attestation(3, 10, 1)).await.0, 200);
    }
    checkpoint_into_main_file(&database);
    // A copy in which (3, 10) reads (3, 5), its indexes updated to match: its index page has
    // as many entries as the real one, with other content.
    let copy = appliance.path().join("copy.sqlite");
    std::fs::copy(&database, &copy).unwrap();
    rusqlite::Connection::open(&copy)
        .unwrap()
        .execute(
            "UPDATE signed_attestations SET target_epoch = ?1 WHERE target_epoch = ?2",
            [(5u64 ^ (1 << 63)) as i64, (10u64 ^ (1 << 63)) as i64],
        )
        .unwrap();
    let old = std::fs::read(&copy).unwrap();
    // The attack (or a lost write): put that copy's page of the index into the real file. Every
    // page is still a well-formed b-tree page and the entry count matches.
    let (root, page_size): (usize, usize) = {
        let conn = rusqlite::Connection::open(&database).unwrap();
        let root: i64 = conn
            .query_row(
                "SELECT rootpage FROM sqlite_master WHERE name = ?1",
                [index],
                |r| r.get(0),
            )
            .unwrap();
        let size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        (root as usize, size as usize)
    };
    let mut damaged = std::fs::read(&database).unwrap();
    let page = (root - 1) * page_size..root * page_size;
    assert_ne!(
        damaged[page.clone()],
        old[page.clone()],
        "the index pages differ"
    );
    damaged[page.clone()].copy_from_slice(&old[page]);
    std::fs::write(&database, &damaged).unwrap();
    {
        let conn = rusqlite::Connection::open(&database).unwrap();
        // What the start-up check used to be does not notice …
        let quick: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(quick, "ok");
        // … and the surround query, forced through the index, no longer sees (3, 10): (4, 9)
        // would be signed although (3, 10) surrounds it.
        let hidden: Option<i64> = conn
            .query_row(
                &format!(
                    "SELECT target_epoch FROM signed_attestations INDEXED BY {index}
                     WHERE source_epoch < ?1 AND target_epoch > ?2"
                ),
                [(4u64 ^ (1 << 63)) as i64, (9u64 ^ (1 << 63)) as i64],
                |r| r.get(0),
            )
            .ok();
        assert_eq!(hidden, None, "the stale index hides the surrounding record");
    }
    let log = serve_must_refuse(&appliance);
    assert!(log.contains("corrupted"), "{log}");
    assert!(log.contains(index), "the finding names the index: {log}");
    let (ok, _, stderr) = appliance.cli(&["slashing", "verify"], &[]);
    assert!(!ok && stderr.contains(index), "{stderr}");
}
