"""Signing keys for tests: RSA 3072-bit key pairs made with `cryptography`, and signatures made the way
KMS makes them for runas-agent (RSASSA_PKCS1_V1_5_SHA_256 of a SHA-256 digest, `MessageType=DIGEST`).
One key per name and test session."""

from __future__ import annotations

import datetime
import functools
from typing import Any, Mapping, Optional

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from runas_agent.directory import canonical, format_timestamp
from runas_agent.sources import signature

ACCOUNT = "111122223333"


def private_key(name: str = "publisher", bits: int = 3072) -> rsa.RSAPrivateKey:
    return _generated(name, bits)


@functools.lru_cache(maxsize=None)
def _generated(name: str, bits: int) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def public_pem(name: str = "publisher", bits: int = 3072) -> str:
    return private_key(name, bits).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def key_arn(name: str = "publisher") -> str:
    return f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{name}"


def sign_digest(digest: bytes, name: str = "publisher", bits: int = 3072) -> bytes:
    """What KMS Sign returns for a DIGEST message with RSASSA_PKCS1_V1_5_SHA_256."""
    return private_key(name, bits).sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def signer(name: str = "publisher", bits: int = 3072) -> signature.Signer:
    return lambda digest: (key_arn(name), sign_digest(digest, name, bits))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def signed(document: Mapping[str, Any], name: str = "publisher", *, generated_at: Optional[datetime.datetime] = None,
           ago: float = 0.0) -> dict[str, Any]:
    """`document` with GeneratedAt (`generated_at`, else `ago` seconds before now, unless it has
    one) and a signature of the key `name`."""
    body = dict(document)
    if generated_at is not None or "GeneratedAt" not in body:
        when = generated_at or now() - datetime.timedelta(seconds=ago)
        body["GeneratedAt"] = format_timestamp(when)
    body.setdefault("IdentityStoreId", "d-1234567890")
    return signature.sign(body, signer(name))


def signed_bytes(document: Mapping[str, Any], name: str = "publisher", **kwargs: Any) -> bytes:
    return canonical(signed(document, name, **kwargs))


def format_now() -> str:
    return format_timestamp(now())


def public_key(name: str = "publisher", bits: int = 3072) -> signature.PublicKey:
    return signature.PublicKey.load(public_pem(name, bits))
