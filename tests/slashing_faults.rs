//! Disk faults under the real server: a full disk (a small tmpfs the test mounts), an I/O error
//! (ext4 on a loop device whose backing file lives on a tmpfs that the test fills, so the
//! block layer fails the writes), a file system that turns read-only at runtime (ext4's
//! `trigger_fs_error` with `errors=remount-ro`), and a corrupted database at startup. Each fault
//! must give 503 with a clear error and no signature, and the signer must recover once the
//! fault is gone (without a restart where the file system itself recovers; after repair and
//! restart where it cannot). Skipped, with the reason printed, only where mounts are forbidden.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use keystake_core::slashing::interchange::Interchange;
use serde_json::{json, Value};

use crate::common::*;

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

fn targets(interchange: &Interchange) -> Vec<u64> {
    interchange.data[0]
        .signed_attestations
        .iter()
        .map(|a| a.target_epoch.0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_refuses_with_503_keeps_imports_atomic_and_recovers() {
    let scratch = tempfile::tempdir().unwrap();
    let mount = match Mount::tmpfs(&scratch.path().join("small"), "2m") {
        Ok(mount) => mount,
        Err(reason) => return skip(&format!("cannot mount a tmpfs ({reason})")),
    };
    let data = mount.path.join("data");
    let (appliance, key) = appliance_with_data_in(&data);
    let (server, client) = appliance.serve();
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
    // Recovered without a restart. The refused requests left no record: a different message
    // for target 3 is signed now.
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
async fn io_error_refuses_with_503_and_recovers_without_restart() {
    let scratch = tempfile::tempdir().unwrap();
    let (backing, disk) = match loop_ext4(scratch.path()) {
        Ok(mounts) => mounts,
        Err(reason) => return skip(&format!("cannot loop-mount ext4 on a tmpfs ({reason})")),
    };
    let (appliance, key) = appliance_with_data_in(&disk.path.join("data"));
    let (server, client) = appliance.serve();
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
    let (status, body) = post(&client, &sign, &attestation(2, target, 2)).await;
    assert_eq!(status, 200, "recovers once the device writes again: {body}");
    signed_targets.push(target);
    // The refused requests left no record: another message for the first refused target is
    // signed now, and a conflicting one for a signed target is still refused.
    let refused_target = signed_targets[signed_targets.len() - 2] + 1;
    let (status, body) = post(&client, &sign, &attestation(2, refused_target, 3)).await;
    assert_eq!(status, 200, "{body}");
    signed_targets.push(refused_target);
    signed_targets.sort();
    let (status, body) = post(&client, &sign, &attestation(2, 2, 9)).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(targets(&appliance.export_slashing(&[])), signed_targets);
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
