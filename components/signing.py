"""Signed registry versions: a DSSE envelope (the in-toto / Sigstore envelope format) over
a version's manifest.json, made with securesystemslib.

The manifest holds the model's sha256, so one signature covers the model bytes, the metrics,
the gate's verdict and the lineage: a changed byte of the model fails the hash, a changed
byte of the manifest fails the signature, and a signature from another key fails too.

Keys are PEM files the operator makes once (not made automatically):
    openssl genpkey -algorithm ed25519 -out signing-key.pem
    openssl pkey -in signing-key.pem -pubout -out signing-key.pub.pem
The private key signs (PushSettings.signing_key); the public key verifies
(PushSettings.public_key, `tfx-quantization-registry ... verify --public-key`).
"""
from __future__ import annotations

import json
from typing import List, Optional

from tfx_quantization import fsutil

PAYLOAD_TYPE = "application/vnd.tfx-quantization.manifest+json"
SIGNATURE_FILE = "manifest.json.sig"  # beside the manifest: the DSSE envelope, as JSON


class SigningError(ValueError):
    """A key that cannot be read, or a signature that does not hold."""


def _read_pem(path: str, what: str) -> bytes:
    if not path:
        raise SigningError(f"no {what} given")
    if not fsutil.exists(path):
        raise SigningError(f"{what} {path} does not exist: create it (components/pusher/README.md, 'Signing')")
    return fsutil.read_bytes(path)


def load_signer(private_key_path: str):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    try:
        key = load_pem_private_key(_read_pem(private_key_path, "signing key"), password=None)
        return CryptoSigner(key)
    except (ValueError, TypeError) as e:
        raise SigningError(f"signing key {private_key_path} is not an unencrypted PEM private key: {e}") from None


def load_public_key(public_key_path: str):
    from cryptography.hazmat.primitives.serialization import load_pem_public_key
    from securesystemslib.signer import SSlibKey

    try:
        return SSlibKey.from_crypto(load_pem_public_key(_read_pem(public_key_path, "public key")))
    except (ValueError, TypeError) as e:
        raise SigningError(f"public key {public_key_path} is not a PEM public key: {e}") from None


def sign(manifest_bytes: bytes, private_key_path: str) -> bytes:
    """The DSSE envelope over the manifest's exact bytes, as JSON bytes."""
    from securesystemslib.dsse import Envelope

    envelope = Envelope(payload=manifest_bytes, payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(load_signer(private_key_path))
    return json.dumps(envelope.to_dict(), indent=2, sort_keys=True).encode()


def verify(manifest_bytes: bytes, envelope_bytes: Optional[bytes], public_key_path: str) -> List[str]:
    """Problems with a manifest's signature (empty when it holds). No envelope: unsigned."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError

    if envelope_bytes is None:
        return ["unsigned: no signature, while a public key was given"]
    try:
        envelope = Envelope.from_dict(json.loads(envelope_bytes))
    except (ValueError, KeyError, TypeError) as e:
        return [f"signature file unreadable ({type(e).__name__}: {e})"]
    if envelope.payload_type != PAYLOAD_TYPE:
        return [f"signature is over a {envelope.payload_type!r}, not a manifest"]
    try:
        envelope.verify([load_public_key(public_key_path)], threshold=1)
    except VerificationError:
        return [f"signature does not verify with {public_key_path} (signed with another key, or replaced)"]
    if envelope.payload != manifest_bytes:
        return ["manifest was edited after signing (it differs from the signed payload)"]
    return []
