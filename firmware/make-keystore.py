#!/usr/bin/env python3
"""Writes an EIP-2335 keystore (PBKDF2-SHA256, AES-128-CTR) for a BLS secret key, for the boot
test's demo keys: python's hashlib for the KDF and checksum, openssl for AES-CTR.

  make-keystore.py SECRET_HEX PUBKEY_HEX|'' PASSWORD OUT.json

The secret comes from the caller (a test vector, or `openssl rand` for a throw-away demo key:
any 32 bytes below the curve order). Refuses a secret that is not 32 bytes of hex."""
import hashlib, json, os, subprocess, sys, unicodedata, uuid

secret_hex, pubkey_hex, password, out = sys.argv[1:5]
secret = bytes.fromhex(secret_hex.removeprefix("0x"))
if len(secret) != 32:
    sys.exit("the secret must be 32 bytes of hex")
# EIP-2335 password normalisation: NFKD, without C0/C1 control characters.
pw = "".join(c for c in unicodedata.normalize("NFKD", password)
             if not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)).encode()
salt, iv, c = os.urandom(32), os.urandom(16), 2 ** 12
dk = hashlib.pbkdf2_hmac("sha256", pw, salt, c, 32)
cipher = subprocess.run(["openssl", "enc", "-aes-128-ctr", "-K", dk[:16].hex(), "-iv", iv.hex()],
                        input=secret, capture_output=True, check=True).stdout
keystore = {
    "crypto": {
        "kdf": {"function": "pbkdf2", "params": {"dklen": 32, "c": c, "prf": "hmac-sha256", "salt": salt.hex()}, "message": ""},
        "checksum": {"function": "sha256", "params": {}, "message": hashlib.sha256(dk[16:32] + cipher).hexdigest()},
        "cipher": {"function": "aes-128-ctr", "params": {"iv": iv.hex()}, "message": cipher.hex()},
    },
    "description": "keystake boot-test key",
    "path": "", "uuid": str(uuid.uuid4()), "version": 4,
}
if pubkey_hex:  # optional: the importer then checks the decrypted key against it
    keystore["pubkey"] = pubkey_hex.removeprefix("0x")
with open(out, "w") as f:
    json.dump(keystore, f)
