"""The intent-then-settle protocol (core/ledger.py), for both ledgers: what is recorded before the
first action and after the last, failure by failure."""

import pytest

from runas_agent.core import sudoers as s
from runas_agent.core.ledger import Bookkeeping, Entry, Ledger, Owned
from runas_agent.core.plan import ACCOUNTS, CreateAccount, DisableAccount, SetGroupMembers
from runas_agent.core.sudoers import SUDO, RemoveSudoers, SudoLedger, WriteSudoers

ANN = Owned("ann", 5000, 5000, "person", ("u1",), ("adm",))
BOB = Owned("bob", 5001, 5001, "person", ("u2",), ())


def create(name):
    return CreateAccount(name, 5002, 5002, f"/home/{name}", "/bin/bash", "c", "person", (name,))


# --- accounts ---------------------------------------------------------------------------------------

def test_account_intent_names_everything_either_ledger_names():
    before = Ledger({"ann": ANN, "bob": BOB})
    planned = Ledger({"ann": Owned("ann", 5000, 5000, "person", ("u9",), ("docker",)),
                      "cid": Owned("cid", 5002, 5002, "person", ("u3",))})
    intent = ACCOUNTS.intent(before, planned)
    assert set(intent.accounts) == {"ann", "bob", "cid"}        # bob may still be disabled, cid created
    assert intent.accounts["ann"].groups_added == ("adm", "docker")  # both, until the apply says which
    assert intent.accounts["ann"].identities == ("u9",)
    assert intent.accounts["cid"] == planned.accounts["cid"]


@pytest.mark.parametrize("failed,expected", [
    ([], {"ann": ("adm", "docker"), "cid": ()}),
    ([create("cid")], {"ann": ("adm", "docker")}),                          # never created: not owned
    ([SetGroupMembers("docker", ("ann",), ())], {"ann": ("adm",), "cid": ()}),  # not added: not ours there
    ([SetGroupMembers("adm", (), ("ann",))], {"ann": ("adm", "docker"), "cid": ()}),
    ([SetGroupMembers("wheel", (), ("ann",))], {"ann": ("adm", "docker", "wheel"), "cid": ()}),  # still there
    ([DisableAccount("ann", 5000, "runas-off-5000", "gone")], {"ann": ("adm", "docker"), "cid": ()}),
    ([WriteSudoers("cid", "f", "x", why="new")], {"ann": ("adm", "docker"), "cid": ()}),  # not this ledger's
])
def test_account_settle_corrects_the_planned_ledger_for_each_failure(failed, expected):
    planned = Ledger({"ann": Owned("ann", 5000, 5000, "person", ("u1",), ("adm", "docker")),
                      "cid": Owned("cid", 5002, 5002, "person", ("u3",))})
    settled = ACCOUNTS.settle(planned, failed)
    assert {n: o.groups_added for n, o in settled.accounts.items()} == expected


# --- sudoers ----------------------------------------------------------------------------------------

def test_sudo_intent_names_every_drop_in_either_ledger_names():
    before = SudoLedger({"ann": "runas-agent-ann-1", "bob": "runas-agent-bob-1"})
    planned = SudoLedger({"ann": "runas-agent-ann-2", "cid": "runas-agent-cid-1"})
    assert SUDO.intent(before, planned).files == {"ann": "runas-agent-ann-2", "bob": "runas-agent-bob-1",
                                                  "cid": "runas-agent-cid-1"}


PLANNED = SudoLedger({"ann": "f-ann", "cid": "f-cid"})


@pytest.mark.parametrize("failed,expected", [
    ([], {"ann": "f-ann", "cid": "f-cid"}),
    ([WriteSudoers("cid", "f-cid", "x", why="new")], {"ann": "f-ann"}),         # put back: absent, not owned
    ([WriteSudoers("ann", "f-ann", "x", why="mode 0644 -> 0440")], {"ann": "f-ann", "cid": "f-cid"}),  # old one back
    ([RemoveSudoers("bob", "f-bob", (), "gone")], {"ann": "f-ann", "bob": "f-bob", "cid": "f-cid"}),  # still there
    ([RemoveSudoers("ann", "f-ann-old", (), "renamed")], {"ann": "f-ann", "cid": "f-cid"}),  # ann owns its new one
    ([create("cid")], {"ann": "f-ann", "cid": "f-cid"}),                          # not this ledger's
])
def test_sudo_settle_corrects_the_planned_ledger_for_each_failure(failed, expected):
    assert SUDO.settle(PLANNED, failed).files == expected


def test_an_entry_carries_one_ledger_across_one_apply():
    entry = Entry(SudoLedger({"bob": "f-bob"}), PLANNED, SUDO)
    assert entry.intent().files == {"ann": "f-ann", "bob": "f-bob", "cid": "f-cid"}
    assert entry.settle([WriteSudoers("cid", "f-cid", "x", why="new")]).files == {"ann": "f-ann"}


def test_a_ledger_brings_its_own_merge_and_reverts():
    book = Bookkeeping(merge=lambda before, planned: before | planned, reverts={int: lambda ledger, n: ledger - {n}})
    assert book.intent({1}, {2}) == {1, 2}
    assert book.settle({1, 2, 3}, [2, "not an int", 3]) == {1}


def test_the_sudo_ledger_refuses_foreign_paths():
    with pytest.raises(ValueError):
        SudoLedger.from_dict({"version": 1, "files": {"ann": "../../etc/sudoers"}})
    assert SudoLedger.from_dict(SudoLedger({"ann": s.file_name("ann")}).to_dict()).files == {"ann": s.file_name("ann")}


def test_the_intent_of_a_name_given_to_another_account_is_the_new_account():
    before = Ledger({"jsmith": Owned("jsmith", 5000, 5000, "person", ("id-a",), ("adm",))})
    planned = Ledger({"jsmith": Owned("jsmith", 6000, 6000, "person", ("id-b",)),
                      "runas-off-5000": Owned("runas-off-5000", 5000, 5000, "person", ("id-a",))})
    assert before.merge(planned) == planned
