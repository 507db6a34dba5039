"""What a document from a file or S3 must prove, in which order (sources/document.py), and how old it
may be."""

from __future__ import annotations

import datetime

import pytest

from runas_agent.directory import canonical, parse_document
from runas_agent.errors import UntrustedError
from runas_agent.sources.document import CLOCK_SKEW, Trust, fresh
from tests import signing

STORE = "d-1234567890"


def user(n, name, status="ENABLED", org=None):
    record = {"IdentityStoreId": STORE, "UserId": f"u{n}", "UserName": name, "UserStatus": status}
    if org:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def doc(*users, **top):
    return {"IdentityStoreId": STORE, "Users": list(users), "Groups": [], "GroupMemberships": [], **top}


ALICE, BOB, DAVE = user(1, "alice", org="iret"), user(2, "bob", org="iret"), user(3, "dave", org="acme")


def trust(key=True, store=None, max_bytes=1 << 20):
    return Trust(signing.public_key() if key else None, store, max_bytes)


# --- the order of the checks ------------------------------------------------------------------------

def test_size_is_checked_before_anything_is_parsed():
    with pytest.raises(UntrustedError, match="2000001 bytes, more than source.max_document_bytes \\(2000000\\); not read"):
        trust(max_bytes=2_000_000).read(b"[" * 2_000_001, "doc")


def test_the_signature_is_checked_before_the_records_are_read():
    """A document with a damaged record but no valid signature says so, not what is wrong inside."""
    forged = canonical(doc(ALICE, {"UserId": None}))
    with pytest.raises(UntrustedError, match="the document is not signed"):
        trust().read(forged, "doc")
    with pytest.raises(UntrustedError, match="not a signed directory document"):
        trust().read(b"[]", "doc")


def test_a_signed_document_names_its_store_and_its_time():
    body = doc(ALICE)
    body.pop("IdentityStoreId")
    for record in body["Users"]:
        record.pop("IdentityStoreId")
    from runas_agent.sources import signature

    data = canonical(signature.sign(dict(body, GeneratedAt=signing.format_now()), signing.signer()))
    with pytest.raises(UntrustedError, match="the signed document has no IdentityStoreId: a snapshot must say"):
        trust().read(data, "doc")
    data = canonical(signature.sign(doc(ALICE), signing.signer()))
    with pytest.raises(UntrustedError, match="the signed document has no GeneratedAt"):
        trust().read(data, "doc")


def test_the_pinned_store_is_checked_after_the_signature():
    data = signing.signed_bytes(doc(ALICE))
    assert trust(store=STORE).read(data, "doc").identity_store_id == STORE
    with pytest.raises(UntrustedError, match="the directory of Identity Store d-1234567890, not of source.identity_store_id d-0000000000"):
        trust(store="d-0000000000").read(data, "doc")
    unsigned = canonical(doc(ALICE))
    with pytest.raises(UntrustedError, match="not of source.identity_store_id"):
        trust(key=False, store="d-0000000000").read(unsigned, "doc")
    assert trust(key=False).read(unsigned, "doc").users  # a file without a pinned key: not signed


NOW = datetime.datetime(2025, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize("generated, max_age, message", [
    (NOW - datetime.timedelta(seconds=3600), 3600, None),
    (NOW - datetime.timedelta(seconds=3601), 3600, "generated at 2025-06-01T10:59:59Z, 1.0h ago, more than source.max_age (3600s)"),
    (NOW - datetime.timedelta(days=31), 86400, "31.0d ago"),
    (NOW + datetime.timedelta(seconds=CLOCK_SKEW), 3600, None),
    (NOW + datetime.timedelta(seconds=CLOCK_SKEW + 1), 3600, "GeneratedAt 2025-06-01T12:05:01Z is 5.0min in the future"),
    (None, 3600, "no GeneratedAt, so its age cannot be checked against source.max_age"),
])
def test_freshness(generated, max_age, message):
    body = doc(ALICE)
    if generated is not None:
        body["GeneratedAt"] = generated.strftime("%Y-%m-%dT%H:%M:%SZ")
    directory = parse_document(body)
    if message is None:
        fresh(directory, "doc", max_age, NOW)
    else:
        with pytest.raises(UntrustedError) as info:
            fresh(directory, "doc", max_age, NOW)
        assert message in str(info.value)
