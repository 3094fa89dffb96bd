//! Independent vectors through the pure path: request JSON → signing root → BLS signature,
//! byte-identical to `../shared/vectors/web3signer/`.

use keystake_core::consensus::Network;
use keystake_core::request;

use crate::common::*;

#[test]
fn web3signer_vectors_give_identical_roots_and_signatures() {
    let cases = vector_files("web3signer");
    assert_eq!(cases.len(), 84, "vector set changed");
    for (name, case) in cases {
        let body = serde_json::to_vec(&case["request"]).unwrap();
        let intent = request::parse_sign_request(&body, &Network::mainnet())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            intent.signing_root.to_hex(),
            case["signing_root"].as_str().unwrap(),
            "{name}: signing root"
        );
        let secret = secret_key_from_hex(case["secret_key"].as_str().unwrap());
        assert_eq!(
            secret.public_key().to_hex(),
            case["pubkey"].as_str().unwrap(),
            "{name}: public key"
        );
        assert_eq!(
            secret.sign(&intent.signing_root.0).to_hex(),
            case["signature"].as_str().unwrap(),
            "{name}: signature"
        );
    }
}
