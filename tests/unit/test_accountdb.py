"""The account database model (core/accountdb.py): lines kept byte for byte, each edit's result,
and every refusal naming the account and changing nothing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from runas_agent.core import naming
from runas_agent.core.accountdb import (AccountDB, IdTaken, InvalidValue, MalformedEntry, NameTaken, NoSuchAccount,
                                        ShadowPolicy, Table)

POLICY = ShadowPolicy(20000, 0, 99999, 7)
NOLOGIN = "/usr/sbin/nologin"

PASSWD = (b"root:x:0:0:root:/root:/bin/bash\n"
          b"# a comment the admin wrote\n"
          b"\n"
          b"bob:x:1000:1000:Bob,,,:/home/bob:/bin/bash\n"
          b"odd:x:notanumber\n"
          b"caf\xe9:x:1001:1001::/home/cafe:/bin/sh\n"
          b"+@netgroup\n"
          b"-excluded\n")
SHADOW = b"root:*:19000:0:99999:7:::\nbob:$6$salt$hash:19000:0:99999:7:::\ncaf\xe9:*:19000:0:99999:7:::\n"
GROUP = b"root:x:0:\nadm:x:4:bob,syslog\nbob:x:1000:\ncaf\xe9:x:1001:\nusers:x:100:\n+\n"
GSHADOW = b"root:*::\nadm:*:bob:bob,syslog\nbob:!::\ncaf\xe9:!::\nusers:*::\n"


def model(passwd=PASSWD, shadow=SHADOW, group=GROUP, gshadow=GSHADOW, rules=naming.DEBIAN) -> AccountDB:
    return AccountDB(passwd, shadow, group, gshadow, rules=rules, policy=POLICY)


def lines(db: AccountDB, kind: str) -> list[str]:
    data = db.rendered().get(kind, db.tables[kind].original)
    return data.decode("utf-8", "surrogateescape").splitlines()


def entry(db: AccountDB, kind: str, name: str) -> list[str] | None:
    for line in lines(db, kind):
        parts = line.split(":")
        if parts[0] == name:
            return parts
    return None


def add(db: AccountDB, name: str = "alice@example.com", uid: int = 1_500_000_000, **kw) -> None:
    kw.setdefault("comment", "runas-agent alice")
    kw.setdefault("home", f"/home/{name}")
    kw.setdefault("shell", "/bin/bash")
    db.add_account(name, uid, kw.pop("gid", uid), **kw)


# --- reading and rendering -------------------------------------------------------------------

def test_nothing_edited_renders_nothing():
    assert model().rendered() == {}


@pytest.mark.parametrize("data", [b"", b"a:x:1:1::/:/bin/sh", b"a:x:1:1::/:/bin/sh\n", b"\n\n#x\n", b"+\n-y\n",
                                  b"a:x:1:1::/:/bin/sh\r\nb:x:2:2::/:/bin/sh\n", b"\xff\xfe:x:1\n"])
def test_a_table_renders_back_exactly_what_was_read(data):
    table = Table("passwd", data)
    assert table.render() == data


def test_untouched_lines_are_kept_byte_for_byte_and_new_entries_go_before_nis_lines():
    db = model()
    add(db)
    out = db.rendered()["passwd"]
    assert out.startswith(PASSWD.split(b"+@netgroup")[0])
    assert out.endswith(b"alice@example.com:x:1500000000:1500000000:runas-agent alice:/home/alice@example.com:/bin/bash\n"
                        b"+@netgroup\n-excluded\n")
    group = db.rendered()["group"]
    assert group == GROUP.replace(b"+\n", b"alice@example.com:x:1500000000:\n+\n")


def test_an_entry_added_to_a_file_without_final_newline_gets_its_own_line():
    db = model(passwd=b"root:x:0:0:root:/root:/bin/bash", group=b"root:x:0:")
    add(db)
    assert db.rendered()["passwd"] == (b"root:x:0:0:root:/root:/bin/bash\n"
                                       b"alice@example.com:x:1500000000:1500000000:runas-agent alice:/home/alice@example.com:/bin/bash\n")


def test_an_edit_of_one_field_keeps_the_others_bytes():
    db = model(passwd=PASSWD.replace(b"Bob,,,", b"B\xf6b"))
    db.update_account(1000, shell="/bin/zsh")
    assert b"bob:x:1000:1000:B\xf6b:/home/bob:/bin/zsh\n" in db.rendered()["passwd"]


# --- adding ----------------------------------------------------------------------------------

def test_add_account_writes_user_group_shadow_and_gshadow_like_useradd():
    db = model()
    add(db)
    assert entry(db, "passwd", "alice@example.com") == ["alice@example.com", "x", "1500000000", "1500000000",
                                                        "runas-agent alice", "/home/alice@example.com", "/bin/bash"]
    assert entry(db, "group", "alice@example.com") == ["alice@example.com", "x", "1500000000", ""]
    assert entry(db, "shadow", "alice@example.com") == ["alice@example.com", "!", "20000", "0", "99999", "7", "", "", ""]
    assert entry(db, "gshadow", "alice@example.com") == ["alice@example.com", "!", "", ""]
    assert [a.name for a in db.added] == ["alice@example.com"]


def test_a_host_without_shadow_files_gets_none():
    db = model(shadow=None, gshadow=None)
    add(db)
    assert set(db.rendered()) == {"passwd", "group"}


@pytest.mark.parametrize("kwargs, error, words", [
    ({"name": "bob"}, NameTaken, "an account of that name exists"),
    ({"name": "users"}, NameTaken, "a group of that name exists"),
    ({"name": "odd"}, NameTaken, "an account"),                    # a malformed line still holds its name
    ({"uid": 1000}, IdTaken, "uid 1000 is held by bob"),
    ({"gid": 100}, IdTaken, "gid 100 is held by group users"),
    ({"uid": 0}, InvalidValue, "not a usable ID"),
    ({"uid": 65535}, InvalidValue, "not a usable ID"),
    ({"uid": 2 ** 32 - 1}, InvalidValue, "not a usable ID"),
    ({"name": "runas-off-5"}, InvalidValue, "prefix of disabled accounts"),
    ({"name": "root2:x"}, InvalidValue, "':'"),
    ({"name": "a b"}, InvalidValue, "not a usable account name"),
    ({"name": "-rf"}, InvalidValue, "not a usable account name"),
    ({"name": "sudo"}, InvalidValue, "reserved"),
    ({"comment": "x:y"}, InvalidValue, "comment 'x:y' contains ':'"),
    ({"comment": "x\ny"}, InvalidValue, "'\\n'"),
    ({"comment": "x\0y"}, InvalidValue, "'\\x00'"),
    ({"home": "relative/home"}, InvalidValue, "not an absolute path"),
    ({"home": "/home/a:b"}, InvalidValue, "contains ':'"),
    ({"shell": "/bin/bash\n"}, InvalidValue, "'\\n'"),
])
def test_add_account_refuses_with_a_reason_naming_the_account_and_changes_nothing(kwargs, error, words):
    db = model()
    name = kwargs.pop("name", "alice@example.com")
    with pytest.raises(error) as caught:
        add(db, name, **kwargs)
    assert caught.value.account == name and words in str(caught.value)
    assert str(caught.value).startswith(f"{name}: ")
    assert db.rendered() == {} and db.journal == [] and db.added == []


def test_rhel_rules_refuse_an_at_sign():
    db = model(rules=naming.RHEL)
    with pytest.raises(InvalidValue, match="no '@'"):
        add(db)


def test_two_adds_in_one_model_see_each_other():
    db = model()
    add(db, "alice@example.com", 1_500_000_000)
    with pytest.raises(IdTaken):
        add(db, "carol@example.com", 1_500_000_000)
    with pytest.raises(NameTaken):
        add(db, "alice@example.com", 1_500_000_001)


def test_an_orphan_group_is_adopted_only_when_the_caller_says_so_and_it_matches():
    group = GROUP + b"alice@example.com:x:1500000000:\n"
    with pytest.raises(NameTaken, match="a group of that name exists"):
        add(model(group=group))
    db = model(group=group)
    add(db, adopt_group=True)
    assert lines(db, "group").count("alice@example.com:x:1500000000:") == 1
    for other in (b"alice@example.com:x:1500000001:\n", b"alice@example.com:x:1500000000:mallory\n"):
        with pytest.raises(NameTaken):
            add(model(group=GROUP + other), adopt_group=True)


@pytest.mark.parametrize("orphan, ok", [
    (b"alice@example.com:!:20000:0:99999:7:::\n", True),
    (b"alice@example.com:!!:20000:0:99999:7:::\n", True),
    (b"alice@example.com:*:20000::::::\n", True),
    (b"alice@example.com:$6$salt$hash:20000:0:99999:7:::\n", False),  # carries a password: not ours to replace
    (b"alice@example.com::20000:0:99999:7:::\n", False),              # empty password: logs in without one
])
def test_an_orphan_shadow_entry_is_replaced_only_when_it_grants_nothing(orphan, ok):
    db = model(shadow=SHADOW + orphan)
    if ok:
        add(db)
        assert entry(db, "shadow", "alice@example.com")[1] == "!"
        assert lines(db, "shadow").count(f"alice@example.com:!:20000:0:99999:7:::") == 1
    else:
        with pytest.raises(NameTaken, match="shadow already has an entry"):
            add(db)


def test_an_orphan_gshadow_entry_with_members_is_a_conflict():
    with pytest.raises(NameTaken, match="gshadow"):
        add(model(gshadow=GSHADOW + b"alice@example.com:!::mallory\n"))


# --- renaming, parking -----------------------------------------------------------------------

def test_rename_moves_user_group_secrets_and_every_membership():
    db = model()
    db.rename_account(1000, "robert@example.com", home="/home/robert@example.com")
    assert entry(db, "passwd", "robert@example.com")[2:] == ["1000", "1000", "Bob,,,", "/home/robert@example.com", "/bin/bash"]
    assert entry(db, "passwd", "bob") is None
    assert entry(db, "group", "robert@example.com") == ["robert@example.com", "x", "1000", ""]
    assert entry(db, "shadow", "robert@example.com")[1] == "$6$salt$hash"
    assert entry(db, "gshadow", "robert@example.com") == ["robert@example.com", "!", "", ""]
    assert entry(db, "group", "adm") == ["adm", "x", "4", "robert@example.com,syslog"]
    assert entry(db, "gshadow", "adm") == ["adm", "*", "robert@example.com", "robert@example.com,syslog"]
    assert not any(l.split(":")[0] == "bob" for k in ("passwd", "group", "shadow", "gshadow") for l in lines(db, k))


def test_rename_refuses_a_name_held_by_someone_else():
    db = model()
    with pytest.raises(NameTaken, match="a group of that name exists"):
        db.rename_account(1000, "users")
    with pytest.raises(NameTaken, match="an account of that name exists"):
        db.rename_account(1000, "odd")
    assert db.rendered() == {}


def test_an_unknown_or_shared_uid_is_no_such_account():
    db = model(passwd=PASSWD + b"toor:x:0:0::/root:/bin/sh\n")
    with pytest.raises(NoSuchAccount, match="no account has it"):
        db.park(4242, shell=NOLOGIN)
    with pytest.raises(NoSuchAccount, match="several accounts have it: root, toor"):
        db.update_account(0, shell="/bin/sh")


def test_park_renames_locks_expires_and_changes_the_shell_in_one_edit():
    db = model()
    assert db.park(1000, shell=NOLOGIN) == "runas-off-1000"
    assert entry(db, "passwd", "runas-off-1000")[2:] == ["1000", "1000", "Bob,,,", "/home/bob", NOLOGIN]
    assert entry(db, "group", "runas-off-1000")[2] == "1000"
    assert entry(db, "shadow", "runas-off-1000")[1:] == ["!$6$salt$hash", "19000", "0", "99999", "7", "", "1", ""]
    assert entry(db, "group", "adm")[3] == "runas-off-1000,syslog"  # as usermod -l: memberships follow the account


def test_unpark_brings_everything_back():
    db = model()
    db.park(1000, shell=NOLOGIN)
    db.unpark(1000, "bob", shell="/bin/bash", comment="Bob,,,")
    assert db.rendered() == {}  # exactly what was read: nothing to write


@pytest.mark.parametrize("password, unlocked", [("!$6$h", "$6$h"), ("!", "!"), ("!!", "!"), ("$6$h", "$6$h")])
def test_unpark_unlocks_as_usermod_U_does(password, unlocked):
    db = model(shadow=SHADOW.replace(b"$6$salt$hash", password.encode()))
    db.unpark(1000, "bob", shell="/bin/bash", comment="")
    assert entry(db, "shadow", "bob")[1] == unlocked


def test_park_finishes_a_park_that_an_interrupted_write_left_half_done():
    """The group and shadow files were written under the parked name, passwd was not."""
    done = model()
    done.park(1000, shell=NOLOGIN)
    half = model(group=done.rendered()["group"], gshadow=done.rendered()["gshadow"], shadow=done.rendered()["shadow"])
    half.park(1000, shell=NOLOGIN)
    assert half.rendered()["passwd"] == done.rendered()["passwd"]
    assert set(half.rendered()) == {"passwd"}


def test_unpark_finishes_what_a_usermod_then_groupmod_pair_left_half_done():
    """shadow-utils renamed the user but was killed before `groupmod -n`."""
    db = model(group=GROUP.replace(b"bob:x:1000:", b"runas-off-1000:x:1000:"),
               gshadow=GSHADOW.replace(b"bob:!::", b"runas-off-1000:!::"))
    db.unpark(1000, "bob", shell="/bin/bash", comment="Bob,,,")
    assert entry(db, "group", "bob") == ["bob", "x", "1000", ""]
    assert entry(db, "gshadow", "bob") == ["bob", "!", "", ""]
    assert entry(db, "group", "runas-off-1000") is None


def test_park_twice_changes_nothing_the_second_time():
    db = model()
    db.park(1000, shell=NOLOGIN)
    first = db.rendered()
    db.park(1000, shell=NOLOGIN)
    assert db.rendered() == first


def test_a_primary_group_that_is_not_the_accounts_own_is_not_renamed():
    db = model(passwd=PASSWD.replace(b"bob:x:1000:1000", b"bob:x:1000:100"))
    db.rename_account(1000, "robert")
    assert entry(db, "group", "users") == ["users", "x", "100", ""]
    assert entry(db, "group", "bob") == ["bob", "x", "1000", ""]


def test_a_malformed_line_is_left_alone():
    db = model(shadow=SHADOW.replace(b"bob:$6$salt$hash:19000:0:99999:7:::", b"bob:$6$salt$hash"))
    with pytest.raises(MalformedEntry, match="shadow has 2 fields instead of 9"):
        db.park(1000, shell=NOLOGIN)
    assert db.rendered() == {}


def test_update_account_changes_comment_and_shell_only():
    db = model()
    db.update_account(1000, comment="runas-agent bob", shell="/bin/zsh")
    assert entry(db, "passwd", "bob") == ["bob", "x", "1000", "1000", "runas-agent bob", "/home/bob", "/bin/zsh"]
    assert set(db.rendered()) == {"passwd"}
    with pytest.raises(InvalidValue, match="bob: comment"):
        db.update_account(1000, comment="a:b")


# --- group members ---------------------------------------------------------------------------

def test_change_group_members_in_group_and_gshadow_keeping_the_rest():
    db = model()
    add(db)
    db.change_group_members("adm", add=["alice@example.com"], remove=["bob"])
    assert entry(db, "group", "adm")[3] == "syslog,alice@example.com"
    assert entry(db, "gshadow", "adm")[2:] == ["bob", "syslog,alice@example.com"]  # administrators are not members


def test_a_member_without_an_account_is_refused():
    db = model()
    with pytest.raises(NoSuchAccount, match="adm: cannot add 'ghost': no account of that name"):
        db.change_group_members("adm", add=["ghost"])
    with pytest.raises(InvalidValue, match="member 'a,b'"):
        db.change_group_members("adm", add=["a,b"])
    with pytest.raises(NoSuchAccount, match="no such group"):
        db.change_group_members("docker", add=["bob"])
    assert db.rendered() == {}


def test_set_group_members_keeps_existing_stale_members_it_is_given():
    db = model(group=GROUP.replace(b"adm:x:4:bob,syslog", b"adm:x:4:bob,phantom"))
    db.set_group_members("adm", ["phantom"])
    assert entry(db, "group", "adm")[3] == "phantom"


# --- replay ----------------------------------------------------------------------------------

def test_edits_replay_on_a_fresh_read_and_report_what_no_longer_fits():
    db = model()
    add(db, "alice@example.com", 1_500_000_000)
    add(db, "carol@example.com", 1_500_000_001)
    db.park(1000, shell=NOLOGIN)
    # meanwhile a package's useradd took carol's UID
    fresh = model(passwd=PASSWD + b"pkg:x:1500000001:1500000001::/nonexistent:/usr/sbin/nologin\n",
                  group=GROUP + b"pkg:x:1500000001:\n")
    refused = fresh.replay(db.journal)
    assert [(e[0], x.account) for e, x in refused] == [("add_account", "carol@example.com")]
    assert entry(fresh, "passwd", "alice@example.com") and entry(fresh, "passwd", "runas-off-1000")
    assert entry(fresh, "passwd", "pkg")


def test_with_edits_drops_an_account_and_its_dependent_edits():
    db = model()
    add(db)
    db.change_group_members("adm", add=["alice@example.com"])
    kept, refused = db.with_edits([e for e in db.journal if e[0] != "add_account"])
    assert [x.account for _, x in refused] == ["adm"]
    assert kept.rendered() == {}


# --- properties ------------------------------------------------------------------------------

NAMES = st.sampled_from(["alice", "bob", "carol@x.com", "dave.d", "adm", "root", "a:b", "runas-off-7", "e f", "users"])
IDS = st.sampled_from([0, 4, 100, 1000, 1001, 1_500_000_000, 1_500_000_001, 65535])
EDITS = st.one_of(
    st.tuples(st.just("add"), NAMES, IDS, IDS),
    st.tuples(st.just("rename"), IDS, NAMES),
    st.tuples(st.just("park"), IDS),
    st.tuples(st.just("unpark"), IDS, NAMES),
    st.tuples(st.just("members"), st.sampled_from(["adm", "users", "nope"]), st.lists(NAMES, max_size=3)),
)


def _apply(db: AccountDB, edit: tuple) -> None:
    kind = edit[0]
    if kind == "add":
        db.add_account(edit[1], edit[2], edit[3], comment="c", home=f"/home/{edit[1]}", shell="/bin/sh")
    elif kind == "rename":
        db.rename_account(edit[1], edit[2])
    elif kind == "park":
        db.park(edit[1], shell=NOLOGIN)
    elif kind == "unpark":
        db.unpark(edit[1], edit[2], shell="/bin/sh", comment="c")
    else:
        db.change_group_members(edit[1], add=edit[2])


def _parsed(data: bytes, width: int) -> list[list[str]]:
    rows = []
    for line in data.decode("utf-8", "surrogateescape").splitlines():
        if line and line[0] not in "#+-":
            rows.append(line.split(":"))
    return rows


@settings(max_examples=300, deadline=None)
@given(st.lists(EDITS, max_size=8))
def test_any_sequence_of_edits_keeps_the_databases_consistent(edits):
    """Refused edits change nothing; accepted ones never make duplicate names or IDs, a user without
    its group, a new line with the wrong number of fields, or a member who is not an account."""
    db = model(passwd=PASSWD.replace(b"odd:x:notanumber\n", b""))
    for edit in edits:
        before = db.rendered()
        try:
            _apply(db, edit)
        except (NameTaken, IdTaken, InvalidValue, NoSuchAccount, MalformedEntry):
            assert db.rendered() == before
    out = {k: db.rendered().get(k, db.tables[k].original) for k in ("passwd", "shadow", "group", "gshadow")}
    users = _parsed(out["passwd"], 7)
    groups = _parsed(out["group"], 4)
    assert all(len(u) == 7 for u in users) and all(len(g) == 4 for g in groups)
    names = [u[0] for u in users]
    assert len(names) == len(set(names))
    assert len({u[2] for u in users}) == len(users)
    assert len({g[0] for g in groups}) == len(groups) and len({g[2] for g in groups}) == len(groups)
    gids = {g[2] for g in groups}
    assert all(u[3] in gids for u in users)
    assert {s[0] for s in _parsed(out["shadow"], 9)} >= set(names)
    for g in groups:
        for member in filter(None, g[3].split(",")):
            assert member in names or member in ("syslog",), (g, member)
