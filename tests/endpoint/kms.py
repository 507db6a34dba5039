"""Signing keys for the local endpoint: a KMS stand-in for `Sign` and `GetPublicKey`.

moto 5.2.1's KMS signs whatever `Message` it is given as a raw message, also with
`MessageType=DIGEST`: it hashes the digest again, so none of its signatures verifies the way one of
KMS's does (tests/integration/test_endpoint_trust.py shows it). Keys created here are real RSA key pairs
(`cryptography`); `Sign` and `GetPublicKey` naming one of them (by id, ARN, alias or alias ARN) are
answered here with KMS's semantics, and the answers are checked against botocore's model like every
other response of the endpoint. Every other KMS call, and every other key, is moto's.
"""

from __future__ import annotations

import base64
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from moto.core import DEFAULT_ACCOUNT_ID

RSA_ALGORITHMS = ["RSASSA_PKCS1_V1_5_SHA_256", "RSASSA_PKCS1_V1_5_SHA_384", "RSASSA_PKCS1_V1_5_SHA_512",
                  "RSASSA_PSS_SHA_256", "RSASSA_PSS_SHA_384", "RSASSA_PSS_SHA_512"]
_HASHES = {"SHA_256": hashes.SHA256(), "SHA_384": hashes.SHA384(), "SHA_512": hashes.SHA512()}
OPERATIONS = ("Sign", "GetPublicKey")


@dataclass
class SigningKey:
    key_id: str
    arn: str
    spec: str
    private: rsa.RSAPrivateKey
    aliases: tuple[str, ...] = ()

    def public_der(self) -> bytes:
        return self.private.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

    def sign(self, message: bytes, message_type: str, algorithm: str) -> bytes:
        scheme, _, digest_name = algorithm.partition("_SHA_")
        hash_algorithm = _HASHES["SHA_" + digest_name]
        if message_type == "DIGEST":
            chosen: Any = utils.Prehashed(hash_algorithm)
        else:
            chosen = hash_algorithm
        pad = (padding.PKCS1v15() if scheme == "RSASSA_PKCS1_V1_5"
               else padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=hash_algorithm.digest_size))
        return self.private.sign(message, pad, chosen)


class SigningKeys:
    """The stand-in's keys, in one account and region."""

    def __init__(self, region: str, account_id: str = DEFAULT_ACCOUNT_ID):
        self.region = region
        self.account_id = account_id
        self._keys: list[SigningKey] = []
        self._lock = threading.Lock()

    def create(self, alias: Optional[str] = None, bits: int = 3072, private: Optional[rsa.RSAPrivateKey] = None) -> str:
        """A new RSA signing key (RSA_<bits>, SIGN_VERIFY); returns its ARN."""
        key_id = str(uuid.uuid4())
        arn = f"arn:aws:kms:{self.region}:{self.account_id}:key/{key_id}"
        private = private or rsa.generate_private_key(public_exponent=65537, key_size=bits)
        key = SigningKey(key_id, arn, f"RSA_{private.key_size}", private, (alias,) if alias else ())
        with self._lock:
            self._keys.append(key)
        return arn

    def reset(self) -> None:
        with self._lock:
            self._keys.clear()

    def find(self, name: Any) -> Optional[SigningKey]:
        if not isinstance(name, str):
            return None
        alias_prefix = f"arn:aws:kms:{self.region}:{self.account_id}:"
        with self._lock:
            for key in self._keys:
                if name in (key.key_id, key.arn) or name in key.aliases or name[len(alias_prefix):] in key.aliases:
                    return key
        return None

    def answer(self, operation: str, params: dict[str, Any]) -> Optional[tuple[int, dict[str, Any]]]:
        """(status, body) for a call on one of these keys; None to let moto answer it."""
        key = self.find(params.get("KeyId"))
        if key is None or operation not in OPERATIONS:
            return None
        if operation == "GetPublicKey":
            return 200, {"KeyId": key.arn, "PublicKey": base64.b64encode(key.public_der()).decode(),
                         "CustomerMasterKeySpec": key.spec, "KeySpec": key.spec, "KeyUsage": "SIGN_VERIFY",
                         "SigningAlgorithms": list(RSA_ALGORITHMS)}
        algorithm = params.get("SigningAlgorithm")
        message_type = params.get("MessageType") or "RAW"
        if algorithm not in RSA_ALGORITHMS:
            return 400, {"__type": "InvalidKeyUsageException",
                         "message": f"{algorithm} is not a signing algorithm of the key {key.arn}"}
        message = base64.b64decode(params.get("Message") or "")
        size = _HASHES["SHA_" + algorithm.partition("_SHA_")[2]].digest_size
        if message_type == "DIGEST" and len(message) != size:
            # KMS refuses this with a ValidationException, which is not among Sign's modelled
            # errors: the endpoint's model check reports it, so a test that sends it fails.
            return 400, {"__type": "ValidationException",
                         "message": f"Digest is invalid length for algorithm {algorithm}."}
        signature = key.sign(message, message_type, algorithm)
        return 200, {"KeyId": key.arn, "Signature": base64.b64encode(signature).decode(), "SigningAlgorithm": algorithm}
