//! What the appliance's first boot runs to certify the TLS key `init` generated inside the HSM
//! (firmware/rootfs/usr/local/lib/keystake/provision.sh): `certs generate --ca-dir CA --config C`
//! issues the server certificate to that key from an issuing CA, `certs csr` + `certs install`
//! are the round for a CA whose key never travels. Real binary, SoftHSM2, real TLS sockets.

use crate::common::{identity_config, run_ok, Appliance, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuing_ca_certifies_the_token_key_and_serve_uses_it() {
    let appliance = Appliance::create();
    let config = appliance.config.to_str().unwrap();
    // An issuing CA of its own (a file-key demo PKI: only its ca.pem + ca.key are used).
    let issuing = appliance.path().join("issuing");
    run_ok(&["certs", "generate", "--out", issuing.to_str().unwrap()]);
    let issued = appliance.path().join("issued");
    let out = run_ok(&[
        "certs",
        "generate",
        "--ca-dir",
        issuing.to_str().unwrap(),
        "--config",
        config,
        "--server-name",
        "127.0.0.1",
        "--out",
        issued.to_str().unwrap(),
    ]);
    assert!(out.contains("issued to the HSM's TLS key"), "{out}");
    assert!(issued.join("server.pem").is_file());
    assert!(
        !issued.join("server.key").exists(),
        "no server key file is ever written"
    );

    // A certificate for another key (the issuing PKI's own file-key server certificate) is
    // refused, and the configured certificate stays as it was.
    let before = std::fs::read(appliance.certs().join("server.pem")).unwrap();
    let (ok, _, stderr) = crate::common::run(&[
        "certs",
        "install",
        "--config",
        config,
        "--cert",
        issuing.join("server.pem").to_str().unwrap(),
    ]);
    assert!(!ok, "a certificate for another key must be refused");
    assert!(stderr.contains("its public key differs"), "{stderr}");
    assert_eq!(
        std::fs::read(appliance.certs().join("server.pem")).unwrap(),
        before
    );

    // The issued one is installed, and `serve` presents it with the token key: a client that
    // trusts only the issuing CA completes the handshake and probes.
    let out = run_ok(&[
        "certs",
        "install",
        "--config",
        config,
        "--cert",
        issued.join("server.pem").to_str().unwrap(),
    ]);
    assert!(out.contains("installed"), "{out}");
    assert_eq!(
        std::fs::read(appliance.certs().join("server.pem")).unwrap(),
        std::fs::read(issued.join("server.pem")).unwrap()
    );
    let server = Server::start(&appliance);
    let client = server.client(identity_config(
        &issuing.join("ca.pem"),
        &appliance.certs(),
        "client",
    ));
    let (status, _) = crate::common::get(&client, "/upcheck").await;
    assert_eq!(status, 200);

    // The CSR round: a request signed by the same token key, for the operator's CA.
    let csr = appliance.path().join("server.csr");
    run_ok(&[
        "certs",
        "csr",
        "--config",
        config,
        "--server-name",
        "127.0.0.1",
        "--out",
        csr.to_str().unwrap(),
    ]);
    let pem = std::fs::read_to_string(&csr).unwrap();
    assert!(
        pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{pem}"
    );
}

#[test]
fn issuing_the_server_certificate_needs_a_real_ca() {
    let appliance = Appliance::create();
    let config = appliance.config.to_str().unwrap();
    // The appliance's own certs dir has a CA; a directory without ca.key is refused.
    let no_ca = appliance.path().join("no-ca");
    std::fs::create_dir(&no_ca).unwrap();
    std::fs::copy(appliance.certs().join("ca.pem"), no_ca.join("ca.pem")).unwrap();
    let (ok, _, stderr) = crate::common::run(&[
        "certs",
        "generate",
        "--ca-dir",
        no_ca.to_str().unwrap(),
        "--config",
        config,
        "--out",
        appliance.path().join("out").to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("CA private key"), "{stderr}");
    assert!(!appliance.path().join("out/server.pem").exists());
}
