"""Snapshot signatures: what is signed, how it travels, and how it is verified with the pinned key.
The signatures are made with `cryptography` as KMS makes them (RSASSA_PKCS1_V1_5_SHA_256 of a
digest), and cross-checked against a signature of the raw canonical bytes."""

from __future__ import annotations

import base64
import copy
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from runas_agent.directory import canonical
from runas_agent.errors import UntrustedError
from runas_agent.sources import signature
from runas_agent.sources.signature import ALGORITHM, PublicKey, key_problem
from tests import signing

DOC = {"FormatVersion": 1, "IdentityStoreId": "d-1234567890", "GeneratedAt": "2025-01-31T08:00:00Z",
       "Users": [{"UserId": "u1", "UserName": "alice", "UserStatus": "ENABLED",
                  "Extensions": {"aws:identitystore:enterprise": {"organization": "Ü-org"}}}],
       "Groups": [], "GroupMemberships": []}
KEY = signing.public_key()


def signed(document=DOC, name="publisher"):
    return signature.sign(document, signing.signer(name))


def test_a_signature_is_over_the_canonical_bytes_of_everything_but_itself():
    """Signing the digest (KMS, MessageType=DIGEST) is signing the canonical bytes (RAW): checked
    with a signature cryptography makes over the bytes themselves."""
    document = signed()
    assert set(document["Signature"]) == {"Algorithm", "KeyId", "Value"}
    assert document["Signature"]["Algorithm"] == ALGORITHM == "RSASSA_PKCS1_V1_5_SHA_256"
    raw = signing.private_key().sign(canonical(DOC), padding.PKCS1v15(), hashes.SHA256())
    assert base64.b64decode(document["Signature"]["Value"]) == raw  # PKCS#1 v1.5 is deterministic
    KEY.verify(document, "doc")
    KEY.verify(json.loads(json.dumps(document, indent=3)), "doc")  # layout and key order do not matter


@pytest.mark.parametrize("change", [
    lambda d: d.update(GeneratedAt="2025-02-01T08:00:00Z"),
    lambda d: d.update(IdentityStoreId="d-0000000000"),
    lambda d: d.update(FormatVersion=2),
    lambda d: d["Users"][0].update(UserName="mallory"),
    lambda d: d["Users"][0]["Extensions"]["aws:identitystore:enterprise"].update(organization="root"),
    lambda d: d["Users"].append({"UserId": "u2", "UserName": "eve", "UserStatus": "ENABLED"}),
    lambda d: d["GroupMemberships"].append({"GroupId": "g", "MemberId": {"UserId": "u1"}}),
    lambda d: d.pop("GeneratedAt"),
])
def test_any_change_to_what_is_signed_is_caught(change):
    document = signed()
    change(document)
    with pytest.raises(UntrustedError, match="the signature does not verify with source.signing_public_key "
                                             r"\(SHA256:.*\): the document was changed after it was signed"):
        KEY.verify(document, "doc")


def test_the_key_id_is_not_trusted_only_named():
    document = signed()
    document["Signature"]["KeyId"] = "arn:aws:kms:eu-west-1:999999999999:key/elsewhere"
    KEY.verify(document, "doc")
    other = signed(name="attacker")
    with pytest.raises(UntrustedError, match=r"signed with another key \(it names the key arn:aws:kms:eu-west-1:111122223333:key/attacker\)"):
        KEY.verify(other, "doc")


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("Signature"), "the document is not signed, and source.signing_public_key requires a signature"),
    (lambda d: d.update(Signature="abc"), "Signature must be an object"),
    (lambda d: d["Signature"].update(Algorithm="RSASSA_PSS_SHA_256"), "signed with 'RSASSA_PSS_SHA_256'; only RSASSA_PKCS1_V1_5_SHA_256"),
    (lambda d: d["Signature"].update(Value="not base64!"), "Signature.Value is not base64"),
    (lambda d: d["Signature"].update(Value=base64.b64encode(b"x" * 256).decode()), "Signature.Value is 256 bytes; a signature of the pinned 3072-bit key is 384"),
    (lambda d: d["Signature"].update(Value=None), "Signature.Value is not base64"),
    (lambda d: d["Signature"].update(Note="trust me"), "Signature has unknown member(s) Note"),
])
def test_a_malformed_signature_is_refused_by_name(change, message):
    document = signed()
    change(document)
    with pytest.raises(UntrustedError) as info:
        KEY.verify(document, "doc")
    assert message in str(info.value)


def _pem(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def test_the_pinned_key_is_taken_as_kms_gives_it():
    pem = signing.public_pem()
    der = base64.b64encode(KEY.der).decode()
    assert PublicKey.load(pem).der == PublicKey.load(der).der == PublicKey.load("\n" + der[:40] + "\n" + der[40:] + "\n").der
    assert KEY.bits == 3072 and KEY.fingerprint.startswith("SHA256:") and "=" not in KEY.fingerprint
    assert PublicKey.load(KEY.pem()).der == KEY.der


@pytest.mark.parametrize("text, message", [
    ("hello", "must be the PEM public key that `aws kms get-public-key` gives"),
    ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----", "must be a PEM public key (-----BEGIN PUBLIC KEY-----), not '-----BEGIN RSA PRIVATE KEY-----'"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "is not a readable PEM public key"),
    (_pem(ec.generate_private_key(ec.SECP256R1())), "not an RSA key (the signing key's KeySpec must be RSA_3072)"),
    (_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024)), "is a 1024-bit RSA key; at least 2048 bits"),
])
def test_a_key_that_cannot_be_pinned_is_a_configuration_problem(text, message):
    assert message in key_problem(text)


def test_the_snapshot_a_publisher_writes_keeps_the_age_of_a_copied_one():
    from runas_agent.directory import parse_document, parse_timestamp

    fresh = parse_document({k: v for k, v in DOC.items() if k != "GeneratedAt"})
    data, key = signature.snapshot(fresh, signing.now(), lambda d: (signature.sign(d, signing.signer()), KEY))
    written = json.loads(data)
    assert abs((parse_timestamp(written["GeneratedAt"], "GeneratedAt") - signing.now()).total_seconds()) < 5
    assert key is KEY and data == canonical(written)
    KEY.verify(written, "written")
    copied = parse_document(signed(name="attacker"))
    data, key = signature.snapshot(copied, signing.now())
    assert key is None and json.loads(data) == {k: v for k, v in copy.deepcopy(DOC).items()}  # old signature dropped
