"""Rebuilding a lost ledger from proof of ownership (core/recover.py): the marker alone proves
nothing; the marker with a UID derived from a directory identity (a person's UserId, a shared
account's name) does."""

from runas_agent.core import uids
from runas_agent.core.desired import DesiredAccount, Identity
from runas_agent.core.observed import HostState, HostUser
from runas_agent.core.recover import rebuild

LO, HI = 1_000_000_000, 1_799_999_999


def uid(key, probe=0):
    return list(uids.probes(key, LO, HI))[probe]


def account(name, number, comment="runas-agent Ann (ann@x)", gid=None):
    return HostUser(name, number, number if gid is None else gid, comment, f"/home/{name}", "/bin/bash")


ANN = uid(uids.person_key("u-ann"))
BOB = uid(uids.person_key("u-bob"), 2)
ORG = uid(uids.shared_key("acme"))
WANT_BOB = DesiredAccount("bob", "person", uids.person_key("u-bob"), (Identity("u-bob", "bob@x"),), "runas-agent Bob")


def test_only_proven_accounts_are_rebuilt():
    host = HostState.build([
        account("ann", ANN),                                    # person in the directory: proven
        account(f"runas-off-{BOB}", BOB),                       # parked, person wanted again: proven, under its name
        account("acme", ORG, "runas-agent shared acme"),        # shared account: its UID derives from its name
        account("eve", uid(uids.person_key("u-eve"))),          # marker, but eve is in no directory read
        account("mal", ANN + 1),                                # marker, UID derived from nothing
        account("root2", ANN, "runas-agent", gid=0),            # UID is not its primary GID
        account("carl", uid(uids.person_key("u-carl")), "Carl"),  # no marker
    ], [])
    recovery = rebuild(host, ["u-ann", "u-bob", "u-carl"], {"bob": WANT_BOB}, LO, HI)
    ledger = recovery.ledger.accounts
    assert sorted(ledger) == ["acme", "ann", "bob"]
    assert (ledger["ann"].uid, ledger["ann"].kind, ledger["ann"].identities) == (ANN, "person", ("u-ann",))
    assert (ledger["bob"].uid, ledger["bob"].groups_added) == (BOB, ())
    assert ledger["acme"].kind == "shared"
    assert "the ledger was lost" in recovery.notes[0] and "acme, ann, bob" in recovery.notes[0]
    assert any("eve" in n and "left alone" in n for n in recovery.notes)
    assert any("mal" in n and "left alone" in n for n in recovery.notes)


def test_a_parked_account_whose_person_is_not_wanted_stays_parked_untracked():
    host = HostState.build([account(f"runas-off-{BOB}", BOB)], [])
    recovery = rebuild(host, ["u-bob"], {}, LO, HI)
    assert recovery.ledger.accounts == {} and "stays parked" in recovery.notes[0]


def test_nothing_to_recover_says_nothing():
    assert rebuild(HostState.build([account("carl", 5000, "Carl")], []), ["u-carl"], {}, LO, HI).notes == ()


def test_a_lost_sudoers_ledger_takes_only_root_owned_drop_ins_named_for_owned_accounts():
    from runas_agent.core.ledger import Ledger, Owned
    from runas_agent.core.recover import rebuild_sudo
    from runas_agent.core.sudoers import Observed, file_name

    ledger = Ledger({n: Owned(n, 5000 + i, 5000 + i, "person") for i, n in enumerate(["ann", "bob"])})
    drop_ins = {file_name("ann"): Observed("x", 0o440), file_name("bob"): Observed("x", 0o440, uid=1001),
                file_name("eve"): Observed("x", 0o440), "90-cloud-init-users": Observed("x", 0o440)}
    sudo, notes = rebuild_sudo(ledger, drop_ins)
    assert sudo.files == {"ann": file_name("ann")}
    assert "rebuilt for 1 drop-in(s)" in notes[0] and file_name("eve") in notes[1] and file_name("bob") in notes[1]


def test_strays_and_adoption_leave_what_the_ledger_names_as_it_is():
    from runas_agent.core.ledger import Ledger, Owned
    from runas_agent.core.recover import adopt, strays

    ledger = Ledger({"ann": Owned("ann", ANN, ANN, "person", ("u-ann",))})
    host = HostState.build([account("ann", ANN), account("acme", ORG, "runas-agent shared acme"),
                            account("carl", ORG + 1, "Carl")], [])
    assert [u.name for u in strays(host, ledger, LO, HI)] == ["acme"]
    recovery = adopt(ledger, rebuild(HostState.build(strays(host, ledger, LO, HI), []), [], {}, LO, HI))
    assert sorted(recovery.ledger.accounts) == ["acme", "ann"] and recovery.ledger.accounts["ann"] == ledger.accounts["ann"]
    assert "adopted from proof of ownership: acme" in recovery.notes[0]
    assert adopt(ledger, rebuild(HostState.build([], []), [], {}, LO, HI)).notes == ()
