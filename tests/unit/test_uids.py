from hypothesis import given, strategies as st

from runas_agent.core import uids


def test_same_key_same_uid_everywhere():
    a = uids.derive(uids.person_key("906700-abc"), 1000, 10**9, lambda _: False)
    b = uids.derive(uids.person_key("906700-abc"), 1000, 10**9, lambda _: False)
    assert a == b and a[1] == 0


def test_different_keys_spread():
    values = {uids.derive(uids.person_key(f"id-{i}"), 10**9, 1_799_999_999, lambda _: False)[0] for i in range(1000)}
    assert len(values) == 1000


def test_collision_moves_to_the_next_probe_deterministically():
    key = uids.shared_key("iret")
    first = next(uids.probes(key, 1000, 2000))
    uid, attempt = uids.derive(key, 1000, 2000, lambda u: u == first)
    assert attempt == 1 and uid != first
    assert uids.derive(key, 1000, 2000, lambda u: u == first) == (uid, 1)


def test_exhausted_range_gives_none():
    assert uids.derive("k", 1000, 1001, lambda _: True) is None


def test_person_and_shared_keys_differ():
    assert uids.person_key("x") != uids.shared_key("x")


@given(st.text(), st.integers(1000, 2**31 - 10), st.integers(1, 10**9))
def test_always_inside_the_range(key, low, span):
    high = min(low + span, 2**31 - 2)
    for uid in uids.probes(key, low, high):
        assert low <= uid <= high
