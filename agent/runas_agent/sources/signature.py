"""Snapshot signatures: what a publisher signs, where the signature travels, and how an instance checks
it offline with the public key pinned in its configuration (no KMS call per read).

What is signed: the SHA-256 digest of the canonical bytes (`directory.canonical`) of the whole document
without its `Signature` member, so FormatVersion, IdentityStoreId, GeneratedAt and every record are
covered. The publisher has KMS sign that digest (`Sign` with `MessageType=DIGEST` and
`RSASSA_PKCS1_V1_5_SHA_256`, an `RSA_3072` key whose private half never leaves KMS). The signature
travels inside the document:

    "Signature": {"Algorithm": "RSASSA_PKCS1_V1_5_SHA_256", "KeyId": "arn:aws:kms:...", "Value": "<base64>"}

so a snapshot copied anywhere (to disk for `type: file`, another bucket, an archive) still carries its
proof, and a reader needs nothing but the bytes of the document. The instance verifies the canonical
bytes of what it parsed, without the Signature: what is verified is exactly what is then used, however
the bytes looked on the wire (key order, whitespace). `KeyId` is not covered and serves messages only.

Verification is `cryptography`'s (OpenSSL's RSA), not our own code: the distributions ship it
(python3-cryptography) for the interpreter the packages use. It is imported only when a key is
configured or a document is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from runas_agent import aws
from runas_agent.directory import canonical, format_timestamp
from runas_agent.errors import AgentError, UntrustedError

ALGORITHM = "RSASSA_PKCS1_V1_5_SHA_256"
FIELD = "Signature"
MEMBERS = ("Algorithm", "KeyId", "Value")
#: KMS's RSA key specs are 2048, 3072 and 4096 bits; the templates create RSA_3072.
MIN_BITS = 2048

#: signs a SHA-256 digest: returns (the signing key's id, the signature)
Signer = Callable[[bytes], "tuple[str, bytes]"]


def unsigned(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without its Signature: what is signed."""
    return {k: v for k, v in document.items() if k != FIELD}


def digest(document: Mapping[str, Any]) -> bytes:
    """SHA-256 of the canonical bytes of the document without its Signature."""
    return hashlib.sha256(canonical(unsigned(document))).digest()


@dataclass(frozen=True)
class PublicKey:
    """An RSA public key (SubjectPublicKeyInfo), as `source.signing_public_key` pins it."""

    der: bytes
    key: Any

    @classmethod
    def load(cls, text: str) -> "PublicKey":
        """From PEM (`-----BEGIN PUBLIC KEY-----`), or the bare base64 of the DER that
        `aws kms get-public-key --query PublicKey --output text` prints. ValueError says why not."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        text = text.strip()
        if text.startswith("-----BEGIN"):
            if not text.startswith("-----BEGIN PUBLIC KEY-----"):
                raise ValueError("must be a PEM public key (-----BEGIN PUBLIC KEY-----), "
                                 f"not {text.splitlines()[0]!r}")
            try:
                key = serialization.load_pem_public_key(text.encode())
            except ValueError as exc:
                raise ValueError(f"is not a readable PEM public key ({exc})") from None
        else:
            try:
                der = base64.b64decode("".join(text.split()), validate=True)
                key = serialization.load_der_public_key(der)
            except (binascii.Error, ValueError):
                raise ValueError("must be the PEM public key that `aws kms get-public-key` gives "
                                 "(-----BEGIN PUBLIC KEY----- ...), or its base64 DER") from None
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"is a {type(key).__name__.lstrip('_')}, not an RSA key (the signing key's KeySpec must be RSA_3072)")
        if key.key_size < MIN_BITS:
            raise ValueError(f"is a {key.key_size}-bit RSA key; at least {MIN_BITS} bits")
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return cls(der, key)

    @property
    def bits(self) -> int:
        return int(self.key.key_size)

    @property
    def fingerprint(self) -> str:
        """`SHA256:` and the unpadded base64 of the DER's SHA-256, as OpenSSH shows keys."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.der).digest()).decode().rstrip("=")

    def pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return self.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def verifies(self, document: Mapping[str, Any], value: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, utils

        try:
            self.key.verify(value, digest(document), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        except InvalidSignature:
            return False
        return True

    def verify(self, document: Mapping[str, Any], origin: str) -> None:
        """Raise UntrustedError unless `document` carries a valid signature of this key."""
        value, key_id = _signature(document, origin, self.bits // 8)
        if not self.verifies(document, value):
            named = f" (it names the key {key_id})" if key_id else ""
            raise UntrustedError(
                f"{origin}: the signature does not verify with source.signing_public_key ({self.fingerprint}): "
                f"the document was changed after it was signed, or signed with another key{named}")


def key_problem(text: Any) -> Optional[str]:
    """The configuration check of source.signing_public_key."""
    try:
        PublicKey.load(text)
    except ImportError:
        return "needs the Python package cryptography (python3-cryptography) to verify signatures"
    except ValueError as exc:
        return str(exc)
    return None


def _signature(document: Mapping[str, Any], origin: str, size: int) -> tuple[bytes, str]:
    """The signature bytes and the key id a document names, or UntrustedError."""
    signature = document.get(FIELD)
    if signature is None:
        raise UntrustedError(f"{origin}: the document is not signed, and source.signing_public_key requires "
                             "a signature of the publisher's key")
    if not isinstance(signature, Mapping):
        raise UntrustedError(f"{origin}: {FIELD} must be an object")
    unknown = sorted(set(signature) - set(MEMBERS), key=str)
    if unknown:
        raise UntrustedError(f"{origin}: {FIELD} has unknown member(s) {', '.join(map(str, unknown))}")
    if signature.get("Algorithm") != ALGORITHM:
        raise UntrustedError(f"{origin}: signed with {signature.get('Algorithm')!r}; only {ALGORITHM} is accepted")
    key_id = signature.get("KeyId")
    try:
        if not isinstance(signature.get("Value"), str):
            raise binascii.Error
        value = base64.b64decode(signature["Value"], validate=True)
    except binascii.Error:
        raise UntrustedError(f"{origin}: {FIELD}.Value is not base64") from None
    if len(value) != size:
        raise UntrustedError(f"{origin}: {FIELD}.Value is {len(value)} bytes; a signature of the pinned "
                             f"{size * 8}-bit key is {size}")
    return value, key_id if isinstance(key_id, str) else ""


def sign(document: Mapping[str, Any], signer: Signer) -> dict[str, Any]:
    """The document with a Signature over everything else in it (any Signature it had is replaced)."""
    body = unsigned(document)
    key_id, value = signer(digest(body))
    return {**body, FIELD: {"Algorithm": ALGORITHM, "KeyId": key_id, "Value": base64.b64encode(value).decode()}}


class KmsSigner:
    """Signs digests with a KMS asymmetric key (the publisher's side): `kms:Sign` and, to check what
    it signed and show the key to pin, `kms:GetPublicKey`."""

    def __init__(self, client: Any, key_id: str):
        self.client = client
        self.key_id = key_id

    def __call__(self, sha256: bytes) -> tuple[str, bytes]:
        response = self._call("sign", "Sign", KeyId=self.key_id, Message=sha256, MessageType="DIGEST",
                              SigningAlgorithm=ALGORITHM)
        return str(response["KeyId"]), bytes(response["Signature"])

    def public_key(self) -> PublicKey:
        response = self._call("get_public_key", "GetPublicKey", KeyId=self.key_id)
        algorithms = response.get("SigningAlgorithms") or []
        if response.get("KeyUsage") != "SIGN_VERIFY" or ALGORITHM not in algorithms:
            raise AgentError(f"--signing-key {self.key_id}: not a key that signs with {ALGORITHM} (KeySpec "
                             f"{response.get('KeySpec') or 'unknown'}, KeyUsage {response.get('KeyUsage') or 'unknown'}); "
                             "create it with KeySpec RSA_3072, KeyUsage SIGN_VERIFY")
        return PublicKey.load(base64.b64encode(bytes(response["PublicKey"])).decode())

    def _call(self, method: str, operation: str, **params: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(**params)
        except (ClientError, BotoCoreError) as exc:
            failure = aws.classify(exc)
            advice = f"; the publisher's role needs kms:{operation} on it" if failure.kind is aws.Kind.ACCESS_DENIED else ""
            raise AgentError(f"--signing-key {self.key_id}: KMS {operation}: {failure}{advice}") from None


def sign_with_kms(document: Mapping[str, Any], client: Any, key_id: str) -> tuple[dict[str, Any], PublicKey]:
    """The document signed by the KMS key `key_id`, checked with the key's public half before it is
    returned (a key that cannot make signatures the fleet accepts fails here, not on every instance),
    and that public key (for `source.signing_public_key`)."""
    signer = KmsSigner(client, key_id)
    public_key = signer.public_key()
    signed = sign(document, signer)
    public_key.verify(signed, f"the document signed by {key_id}")
    return signed, public_key


def snapshot(directory: Any, now: Any, signer: Optional[Callable[[Mapping[str, Any]], "tuple[dict[str, Any], PublicKey]"]] = None
             ) -> tuple[bytes, Optional[PublicKey]]:
    """What a publisher writes for `directory` (a directory.Directory): its document with GeneratedAt
    (`now`, the time of the read, unless the document has one already: a snapshot copied on keeps
    its age), without any earlier Signature, signed by `signer` when given (e.g.
    `lambda d: sign_with_kms(d, kms, key_id)`), as canonical bytes; and the signing key's public half."""
    document = unsigned(directory.document)
    document.setdefault("GeneratedAt", format_timestamp(now))
    public_key = None
    if signer is not None:
        document, public_key = signer(document)
    return canonical(document), public_key
