#!/usr/bin/env python3
"""Verifies a staking-deposit-cli `deposit-data.json` with code that is not KeyStake's (issue 12).

Only `py_ecc` (pinned, from PyPI: scripts/install-deps.sh puts it in target/py-ecc/venv) and
`hashlib`. The SSZ hash_tree_root of the four containers involved is written out here from the
consensus specs (phase0 beacon-chain.md, ssz/simple-serialize.md), so nothing of ours or of a
larger SSZ library is trusted. For each entry it checks:

- `deposit_message_root` = hash_tree_root(DepositMessage{pubkey, withdrawal_credentials, amount});
- `deposit_data_root` = hash_tree_root(DepositData{..., signature});
- withdrawal credentials `0x01` or `0x02`, then 11 zero bytes, then a 20-byte address;
- amount in gwei: 1..=32 ETH for 0x01 credentials, 1..=2048 ETH for 0x02 (Electra's maximum);
- `fork_version` is the genesis fork version of `network_name` (mainnet, hoodi, sepolia);
- the BLS signature over compute_signing_root(DepositMessage, compute_domain(DOMAIN_DEPOSIT,
  fork_version, zero genesis_validators_root)) under `pubkey`, with
  `py_ecc.bls.G2ProofOfPossession.Verify` (which also refuses a pubkey not in the G1 subgroup).

Refuses (exit 1, naming the entry): any failed check, a missing or extra field, hex of the wrong
length, a file that is not a non-empty JSON list or is larger than 16 MiB.

Usage: verify-deposits.py DEPOSIT_DATA_JSON. Prints one summary line on success.
"""

import hashlib
import json
import sys

from py_ecc.bls import G2ProofOfPossession

DOMAIN_DEPOSIT = bytes.fromhex("03000000")
GWEI_PER_ETH = 10**9
GENESIS_FORK_VERSIONS = {"mainnet": "00000000", "hoodi": "10000910", "sepolia": "90000069"}
FIELDS = {
    "pubkey": 48,
    "withdrawal_credentials": 32,
    "amount": None,
    "signature": 96,
    "deposit_message_root": 32,
    "deposit_data_root": 32,
    "fork_version": 4,
    "network_name": None,
    "deposit_cli_version": None,
}
MAX_FILE_BYTES = 16 << 20


class Refused(Exception):
    pass


# --- SSZ (consensus-specs ssz/simple-serialize.md): merkleization of fixed-size values ---


def sha256(data):
    return hashlib.sha256(data).digest()


def merkleize(chunks):
    """Root of the chunks padded with zero chunks to the next power of two."""
    width = 1
    while width < len(chunks):
        width *= 2
    layer = list(chunks) + [b"\x00" * 32] * (width - len(chunks))
    while len(layer) > 1:
        layer = [sha256(layer[i] + layer[i + 1]) for i in range(0, len(layer), 2)]
    return layer[0]


def bytes_root(value):
    """hash_tree_root of ByteVector[N]: pack into 32-byte chunks (last one zero-padded)."""
    padded = value + b"\x00" * (-len(value) % 32)
    return merkleize([padded[i : i + 32] for i in range(0, len(padded), 32)])


def uint64_root(value):
    return value.to_bytes(8, "little") + b"\x00" * 24


def container_root(field_roots):
    return merkleize(field_roots)


def deposit_message_root(pubkey, withdrawal_credentials, amount):
    return container_root(
        [bytes_root(pubkey), bytes_root(withdrawal_credentials), uint64_root(amount)]
    )


def deposit_data_root(pubkey, withdrawal_credentials, amount, signature):
    return container_root(
        [
            bytes_root(pubkey),
            bytes_root(withdrawal_credentials),
            uint64_root(amount),
            bytes_root(signature),
        ]
    )


def compute_domain(domain_type, fork_version, genesis_validators_root=b"\x00" * 32):
    # ForkData{current_version: Version, genesis_validators_root: Root}
    fork_data_root = container_root(
        [bytes_root(fork_version), bytes_root(genesis_validators_root)]
    )
    return domain_type + fork_data_root[:28]


def compute_signing_root(object_root, domain):
    # SigningData{object_root: Root, domain: Domain}
    return container_root([bytes_root(object_root), bytes_root(domain)])


# --- the checks ---


def field_bytes(entry, name):
    value = entry[name]
    if not isinstance(value, str):
        raise Refused(f"{name} is not a string")
    text = value[2:] if value.startswith("0x") else value
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise Refused(f"{name} is not hex") from None
    if len(raw) != FIELDS[name]:
        raise Refused(f"{name} has {len(raw)} bytes, expected {FIELDS[name]}")
    return raw


def check_entry(entry):
    if not isinstance(entry, dict):
        raise Refused("not a JSON object")
    missing = sorted(set(FIELDS) - set(entry))
    extra = sorted(set(entry) - set(FIELDS))
    if missing or extra:
        raise Refused(f"missing fields {missing}, unknown fields {extra}")
    pubkey = field_bytes(entry, "pubkey")
    credentials = field_bytes(entry, "withdrawal_credentials")
    signature = field_bytes(entry, "signature")
    fork_version = field_bytes(entry, "fork_version")
    amount = entry["amount"]
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise Refused("amount is not an integer (gwei)")

    if credentials[0] not in (0x01, 0x02) or credentials[1:12] != b"\x00" * 11:
        raise Refused(
            f"withdrawal_credentials {credentials.hex()} are not 0x01/0x02 + 11 zero bytes + address"
        )
    maximum = (32 if credentials[0] == 0x01 else 2048) * GWEI_PER_ETH
    if not GWEI_PER_ETH <= amount <= maximum:
        raise Refused(
            f"amount {amount} gwei is outside 1..={maximum // GWEI_PER_ETH} ETH "
            f"for 0x{credentials[0]:02x} credentials"
        )

    network = entry["network_name"]
    if network not in GENESIS_FORK_VERSIONS:
        raise Refused(f"unknown network_name {network!r}")
    if fork_version.hex() != GENESIS_FORK_VERSIONS[network]:
        raise Refused(
            f"fork_version {fork_version.hex()} is not {network}'s {GENESIS_FORK_VERSIONS[network]}"
        )

    message_root = deposit_message_root(pubkey, credentials, amount)
    if message_root != field_bytes(entry, "deposit_message_root"):
        raise Refused(
            f"deposit_message_root {entry['deposit_message_root']} != recomputed {message_root.hex()}"
        )
    signing_root = compute_signing_root(message_root, compute_domain(DOMAIN_DEPOSIT, fork_version))
    if not G2ProofOfPossession.Verify(pubkey, signing_root, signature):
        raise Refused("the BLS signature does not verify under pubkey")
    # After the signature: a tampered signature is reported as such (the data root covers it too).
    data_root = deposit_data_root(pubkey, credentials, amount, signature)
    if data_root != field_bytes(entry, "deposit_data_root"):
        raise Refused(
            f"deposit_data_root {entry['deposit_data_root']} != recomputed {data_root.hex()}"
        )


def main(argv):
    if len(argv) != 2:
        print("usage: verify-deposits.py DEPOSIT_DATA_JSON", file=sys.stderr)
        return 2
    path = argv[1]
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise Refused(f"larger than {MAX_FILE_BYTES} bytes")
        entries = json.loads(raw)
    except (OSError, ValueError, Refused) as error:
        print(f"verify-deposits: {path}: {error}", file=sys.stderr)
        return 1
    if not isinstance(entries, list) or not entries:
        print(f"verify-deposits: {path}: not a non-empty JSON list", file=sys.stderr)
        return 1
    for position, entry in enumerate(entries):
        try:
            check_entry(entry)
        except Refused as error:
            pubkey = entry.get("pubkey", "?") if isinstance(entry, dict) else "?"
            print(
                f"verify-deposits: {path}: entry {position} (pubkey {pubkey}): {error}",
                file=sys.stderr,
            )
            return 1
    print(
        f"verify-deposits: {len(entries)} deposits OK (SSZ roots, credentials, amounts, "
        f"fork versions, BLS signatures verified with py_ecc)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
