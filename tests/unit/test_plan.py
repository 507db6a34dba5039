"""The planner, table-driven: the expected actions for each situation, the do-nothing case included."""

from dataclasses import replace

from runas_agent.core import naming
from runas_agent.core.allowed import AllowedNames
from runas_agent.core.desired import GroupRule, Settings, compute
from runas_agent.core.expression import parse
from runas_agent.core.ledger import Ledger, Owned
from runas_agent.core.plan import (CreateAccount, DisableAccount, EnableAccount, ForgetAccount, PlanSettings,
                                   RenameAccount, SetGroupMembers, SetHomeAside, UpdateAccount, plan)
from runas_agent.directory import make_document, parse_document
from runas_agent.core.observed import HostGroup, HostState, HostUser

BASE_USERS = [HostUser("root", 0, 0, "root", "/root", "/bin/bash"), HostUser("ops", 1000, 1000, "", "/home/ops", "/bin/bash")]
BASE_GROUPS = [HostGroup("root", 0, ()), HostGroup("ops", 1000, ()), HostGroup("adm", 4, ()), HostGroup("docker", 999, ("admin",))]


def user(uid, name, org=None, enabled=True):
    record = {"UserId": uid, "UserName": name, "DisplayName": name.split("@")[0].title(),
              "UserStatus": "ENABLED" if enabled else "DISABLED"}
    if org is not None:
        record["Extensions"] = {"aws:identitystore:enterprise": {"organization": org}}
    return record


def directory(users, groups=(), memberships=()):
    return parse_document(make_document("d-1234567890", list(users), list(groups), list(memberships)))


def settings(expression="${path:enterprise.organization}", kind="shared", rules=naming.DEBIAN, **kw):
    return Settings(parse(expression), kind, rules, **kw)


def host(users=(), groups=()):
    return HostState.build(BASE_USERS + list(users), BASE_GROUPS + list(groups))


def managed(name, uid, parked=False, comment=None):
    return HostUser(naming.disabled_name(uid) if parked else name, uid, uid,
                    comment or f"runas-agent shared {name}", f"/home/{name}", "/usr/sbin/nologin" if parked else "/bin/bash")


PS = PlanSettings(uid_min=2000, uid_max=2_000_000)
IRET = [user("u1", "alice@x.com", "iret"), user("u2", "bob@x.com", "iret"), user("u3", "carol@x.com", "iret")]


def run(dir_users, h, ledger=Ledger(), s=None, force=False, groups=(), memberships=(), ps=PS):
    d = directory(dir_users, groups, memberships)
    desired = compute(d, s or settings())
    return plan(desired, h, ledger, ps, {u.user_id: u.enabled for u in d.users}, force)


def test_organization_shares_one_account():
    p = run(IRET, host())
    (create,) = p.actions
    assert isinstance(create, CreateAccount)
    assert create.name == "iret" and create.kind == "shared"
    assert create.identities == ("alice@x.com", "bob@x.com", "carol@x.com")
    assert create.uid == create.gid and PS.uid_min <= create.uid <= PS.uid_max
    assert p.ledger.accounts["iret"].uid == create.uid
    assert not p.refusals and not p.skips


def test_nothing_to_do_when_host_matches():
    first = run(IRET, host())
    uid = first.actions[0].uid
    p = run(IRET, host([managed("iret", uid)], [HostGroup("iret", uid, ())]), first.ledger)
    assert p.actions == () and not p.changes
    assert p.ledger == first.ledger


def test_per_person_uid_comes_from_user_id_and_is_stable_across_hosts():
    s = settings("${path:userName}", "person")
    a = run([user("u1", "alice")], host(), s=s).actions[0]
    b = run([user("u1", "alice"), user("u9", "zed")], host(), s=s).actions[0]
    renamed = run([user("u1", "alice2")], host(), s=s).actions[0]
    assert a.uid == b.uid == renamed.uid
    assert a.kind == "person" and "Alice (alice)" in a.comment


def test_shared_uid_comes_from_the_name():
    a = run([user("u1", "alice", "iret")], host()).actions[0]
    b = run([user("u7", "zoe", "iret")], host()).actions[0]
    assert a.uid == b.uid


def test_uid_collision_probes_and_says_so():
    first = run(IRET, host()).actions[0]
    squatter = HostUser("someone", first.uid, 5, "", "/", "/bin/sh")
    p = run(IRET, host([squatter]))
    create = p.actions[0]
    assert create.uid != first.uid and create.uid_probe == 1
    assert "probe" in create.line()


def test_disabled_and_removed_people_produce_nothing():
    p = run([user("u1", "alice", "iret", enabled=False), user("u2", "bob", "acme")], host())
    assert [a.name for a in p.actions] == ["acme"]


def test_last_person_gone_disables_shared_account():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",)), "acme": Owned("acme", 5001, 5001, "shared", ("u2",))})
    h = host([managed("iret", 5000), managed("acme", 5001)], [HostGroup("iret", 5000, ()), HostGroup("acme", 5001, ())])
    p = run([user("u1", "alice", "iret", enabled=False), user("u2", "bob", "acme")], h, ledger)
    (disable,) = p.actions
    assert isinstance(disable, DisableAccount)
    assert disable.name == "iret" and disable.parked == "runas-off-5000"
    assert "disabled" in disable.reason


def test_one_of_several_people_leaving_keeps_the_shared_account():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1", "u2", "u3"))})
    h = host([managed("iret", 5000)], [HostGroup("iret", 5000, ())])
    p = run(IRET[1:], h, ledger)
    assert p.actions == ()
    assert p.ledger.accounts["iret"].identities == ("u2", "u3")


def test_parked_account_comes_back_with_same_uid():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    h = host([managed("iret", 5000, parked=True)], [HostGroup("runas-off-5000", 5000, ())])
    (enable,) = run(IRET, h, ledger).actions
    assert isinstance(enable, EnableAccount) and enable.uid == 5000 and enable.parked == "runas-off-5000"


def test_parked_account_stays_parked_when_not_wanted():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    h = host([managed("iret", 5000, parked=True)], [HostGroup("runas-off-5000", 5000, ())])
    p = run([user("u2", "bob", "acme")], h, ledger)
    assert [type(a) for a in p.actions] == [CreateAccount]


def test_unmanaged_account_with_the_name_is_left_alone_and_reported():
    h = host([HostUser("iret", 1001, 1001, "Iret Admin", "/home/iret", "/bin/bash")])
    p = run(IRET, h)
    assert p.actions == ()
    assert any("not managed by runas-agent" in s.reason and s.name == "iret" for s in p.skips)


def test_system_account_and_group_names_are_conflicts():
    p = run([user("u1", "a", "docker"), user("u2", "b", "ops"), user("u3", "c", "daemon")], host())
    reasons = {s.name: s.reason for s in p.skips}
    assert "group named 'docker'" in reasons["docker"]
    assert "existing account" in reasons["ops"]
    assert "reserved" in reasons["daemon"]
    assert p.actions == ()


def test_account_changed_by_hand_is_not_touched():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    h = host([managed("iret", 5000, comment="taken over by ops")])
    p = run([user("u2", "bob", "acme")], h, ledger)
    assert not p.of(DisableAccount)
    assert any("changed by hand" in w for w in p.warnings)


def test_account_removed_by_hand_is_forgotten_when_unwanted_and_recreated_when_wanted():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    forgotten = run([user("u2", "bob", "acme")], host(), ledger)
    assert any(isinstance(a, ForgetAccount) for a in forgotten.actions)
    assert "iret" not in forgotten.ledger.accounts
    again = run(IRET, host(), ledger)
    (create,) = again.actions
    assert create.uid == 5000


def test_hostile_values_are_skipped_and_the_rest_sync():
    users = [user("u1", "a", "IRET, Inc."), user("u2", "b", "root"), user("u3", "c", ""), user("u4", "d", "x" * 40),
             user("u5", "e", "a/b"), user("u6", "f", "ok-org"), user("u7", "g", "$(reboot)")]
    p = run(users, host())
    assert [a.name for a in p.actions] == ["ok-org"]
    assert len(p.skips) == 6
    assert all(s.identity and s.reason for s in p.skips)


def test_person_mode_refuses_two_people_on_one_name():
    s = settings("${path:displayName}", "person")
    p = run([user("u1", "al@x", None), user("u2", "al@y", None)], host(), s=s)
    assert p.actions == ()
    assert len(p.skips) == 2 and all("shared by 2 people" in s.reason for s in p.skips)


def test_rhel_rules_refuse_email_names():
    s = settings("${path:userName}", "person", rules=naming.RHEL)
    p = run([user("u1", "alice@x.com"), user("u2", "bob")], host(), s=s)
    assert [a.name for a in p.actions] == ["bob"]
    assert "RHEL" in p.skips[0].reason


def test_scope_limits_accounts_to_group_members():
    groups = [{"GroupId": "g1", "DisplayName": "Operators"}]
    members = [{"GroupId": "g1", "MemberId": {"UserId": "u2"}}]
    s = settings("${path:userName}", "person", scope_groups=("Operators",))
    p = run([user("u1", "alice"), user("u2", "bob")], host(), s=s, groups=groups, memberships=members)
    assert [a.name for a in p.actions] == ["bob"]


def test_missing_scope_group_refuses_the_plan():
    s = settings("${path:userName}", "person", scope_groups=("Renamed",))
    p = run([user("u1", "alice")], host(), s=s)
    assert p.refusals and "Renamed" in p.refusals[0]


def test_empty_directory_is_refused():
    p = run([], host())
    assert p.refusals and "no users" in p.refusals[0]


def test_mass_disable_is_refused_unless_forced():
    ledger = Ledger({f"org{i}": Owned(f"org{i}", 5000 + i, 5000 + i, "shared", (f"u{i}",)) for i in range(10)})
    h = host([managed(f"org{i}", 5000 + i) for i in range(10)], [HostGroup(f"org{i}", 5000 + i, ()) for i in range(10)])
    keep = [user("u0", "a", "org0"), user("u1", "b", "org1"), user("u2", "c", "org2"), user("u3", "d", "org3"),
            user("u4", "e", "org4"), user("u5", "f", "org5")]
    ok = run(keep + [user("u6", "g", "org6")], h, ledger)
    assert not ok.refusals and len(ok.of(DisableAccount)) == 3
    four = run(keep, h, ledger)
    assert four.refusals and "disable 4 of 10" in four.refusals[0] and "3 allowed" in four.refusals[0]
    few = run(keep + [user("u6", "g", "org6"), user("u7", "h", "org7")], h, ledger)
    assert not few.refusals and len(few.of(DisableAccount)) == 2
    many = run(keep[:2], h, ledger)
    assert many.refusals and "disable 8 of 10" in many.refusals[0]
    forced = run(keep[:2], h, ledger, force=True)
    assert not forced.refusals and len(forced.of(DisableAccount)) == 8


def test_groups_added_by_agent_are_tracked_and_admin_memberships_are_not():
    s = settings(group_rules=(GroupRule(None, "iret", ("adm", "docker")),))
    p = run(IRET, host(), s=s)
    assert p.of(SetGroupMembers) == [SetGroupMembers("adm", ("iret",), ()), SetGroupMembers("docker", ("iret",), ())]
    uid = p.of(CreateAccount)[0].uid
    assert p.ledger.accounts["iret"].groups_added == ("adm", "docker")
    # An admin adds iret to 'users' by hand; the policy drops docker.
    h = host([managed("iret", uid)], [HostGroup("iret", uid, ()), HostGroup("users", 100, ("iret",)),
                                       HostGroup("adm", 4, ("iret",)), HostGroup("docker", 999, ("admin", "iret"))])
    h.groups["adm"] = HostGroup("adm", 4, ("iret",))
    h.groups["docker"] = HostGroup("docker", 999, ("admin", "iret"))
    s2 = settings(group_rules=(GroupRule(None, "iret", ("adm",)),))
    p2 = run(IRET, h, p.ledger, s=s2)
    assert p2.actions == (SetGroupMembers("docker", (), ("iret",)),)
    assert p2.ledger.accounts["iret"].groups_added == ("adm",)


def test_membership_an_admin_made_is_never_claimed():
    s = settings(group_rules=(GroupRule(None, "iret", ("docker",)),))
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    h = host([managed("iret", 5000)], [HostGroup("iret", 5000, ()), HostGroup("docker", 999, ("iret",))])
    h.groups["docker"] = HostGroup("docker", 999, ("iret",))
    p = run(IRET, h, ledger, s=s)
    assert p.actions == () and p.ledger.accounts["iret"].groups_added == ()
    # ...so dropping the rule later removes nothing.
    p2 = run(IRET, h, p.ledger)
    assert p2.actions == ()


def test_disable_removes_agent_added_groups():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",), ("adm",))})
    h = host([managed("iret", 5000)], [HostGroup("iret", 5000, ())])
    h.groups["adm"] = HostGroup("adm", 4, ("iret",))
    p = run([user("u9", "z", "acme")], h, ledger)
    assert SetGroupMembers("adm", (), ("iret",)) in p.actions
    assert p.actions.index(SetGroupMembers("adm", (), ("iret",))) < p.actions.index(p.of(DisableAccount)[0])


def test_person_groups_from_identity_store_groups_but_not_for_shared_accounts():
    groups = [{"GroupId": "g1", "DisplayName": "Operators"}]
    members = [{"GroupId": "g1", "MemberId": {"UserId": "u1"}}]
    rule = (GroupRule("Operators", None, ("adm",)),)
    person = run([user("u1", "alice"), user("u2", "bob")], host(), s=settings("${path:userName}", "person", group_rules=rule),
                 groups=groups, memberships=members)
    assert person.of(SetGroupMembers) == [SetGroupMembers("adm", ("alice",), ())]
    shared = run(IRET, host(), s=settings(group_rules=rule), groups=groups, memberships=members)
    assert shared.of(SetGroupMembers) == []


def test_shell_change_updates_owned_account():
    ledger = Ledger({"iret": Owned("iret", 5000, 5000, "shared", ("u1",))})
    h = host([managed("iret", 5000)], [HostGroup("iret", 5000, ())])
    p = run(IRET, h, ledger, ps=PlanSettings(uid_min=2000, uid_max=2_000_000, shell="/bin/zsh"))
    assert p.actions == (UpdateAccount("iret", {"shell": ["/bin/bash", "/bin/zsh"]}),)


# --- names that may never be accounts: reserved, declared by the host, outside allowed_names --------

def test_reserved_names_are_skipped_with_where_they_are_reserved():
    s = settings("${path:userName}", "person")
    h = replace(host(), sysusers={"vendord": "/etc/sysusers.d/vendord.conf"})
    p = run([user("u1", "postgres"), user("u2", "ec2-user"), user("u3", "systemd-x"), user("u4", "_chrony"),
             user("u5", "vendord"), user("u6", "alice")], h, s=s)
    reasons = {s.name: s.reason for s in p.skips}
    assert [a.name for a in p.actions] == ["alice"]
    assert "Debian packages" in reasons["postgres"] and "ec2-user" in reasons["ec2-user"]
    assert "'systemd-'" in reasons["systemd-x"] and "'_'" in reasons["_chrony"]
    assert "/etc/sysusers.d/vendord.conf" in reasons["vendord"]
    assert all("alice" not in s.identity for s in p.skips)


def test_allowed_names_keeps_every_other_name_out():
    s = settings("${path:userName}", "person")
    ps = replace(PS, allowed_names=AllowedNames.from_setting(r"^[a-z]+@corp\.example$"))
    p = run([user("u1", "alice@corp.example"), user("u2", "jenkins-ci")], host(), s=s, ps=ps)
    assert [a.name for a in p.actions] == ["alice@corp.example"]
    (skip,) = p.skips
    assert skip.name == "jenkins-ci" and "accounts.allowed_names" in skip.reason and "jenkins-ci (u2)" in skip.identity


def test_a_refused_name_is_neither_re_enabled_nor_re_created():
    ledger = Ledger({"redis": Owned("redis", 5000, 5000, "shared", ("u1",))})
    parked = run([user("u1", "a", "redis")], host([managed("redis", 5000, parked=True)]), ledger)
    missing = run([user("u1", "a", "redis")], host(), ledger)
    for p in (parked, missing):
        assert p.actions == () and "reserved" in p.skips[0].reason


def test_an_active_account_under_a_refused_name_is_parked_and_loses_its_sudo():
    ledger = Ledger({"redis": Owned("redis", 5000, 5000, "shared", ("u1",))})
    p = run([user("u1", "a", "redis")], host([managed("redis", 5000)], [HostGroup("redis", 5000, ())]), ledger)
    (disable,) = p.actions
    assert isinstance(disable, DisableAccount) and "reserved" in disable.reason
    assert "reserved" in p.skips[0].reason


def test_names_that_only_resemble_reserved_ones_are_made():
    names = ["docker-team", "postgresql-dba", "ubuntu.fans", "ec2-ops", "admins"]
    p = run([user(f"u{i}", f"p{i}", org) for i, org in enumerate(names)], host())
    assert sorted(a.name for a in p.actions) == sorted(names) and not p.skips


# --- grants that outlived their user ----------------------------------------------------------------

def test_a_name_a_sudoers_rule_or_member_list_mentions_is_not_made():
    s = settings("${path:userName}", "person")
    h = replace(host(groups=[HostGroup("disk", 6, ("phantom",))]), sudoers={"ghost": "/etc/sudoers.d/90-cloud-init-users"})
    p = run([user("u1", "ghost"), user("u2", "phantom"), user("u3", "alice")], h, s=s)
    reasons = {s.name: s.reason for s in p.skips}
    assert [a.name for a in p.actions] == ["alice"]
    assert "/etc/sudoers.d/90-cloud-init-users" in reasons["ghost"] and "'ghost'" in reasons["ghost"]
    assert "group 'disk'" in reasons["phantom"]


def test_an_owned_account_keeps_the_rules_and_groups_an_admin_gave_it():
    s = settings("${path:userName}", "person")
    first = run([user("u1", "alice")], host(), s=s)
    uid = first.actions[0].uid
    h = replace(host([HostUser("alice", uid, uid, first.actions[0].comment, "/home/alice", "/bin/bash")],
                     [HostGroup("alice", uid, ()), HostGroup("disk", 6, ("alice",))]),
                sudoers={"alice": "/etc/sudoers.d/alice-tools"})
    p = run([user("u1", "alice")], h, first.ledger, s=s)
    assert p.actions == () and p.skips == ()


# --- a per-person name changing hands ---------------------------------------------------------------

PERSON = settings("${path:userName}", "person")


def _leaver(parked=True, home="/home/jsmith"):
    ledger = Ledger({"jsmith": Owned("jsmith", 5000, 5000, "person", ("id-a",))})
    user = HostUser("runas-off-5000" if parked else "jsmith", 5000, 5000, "runas-agent Jsmith (jsmith)", home,
                    "/usr/sbin/nologin" if parked else "/bin/bash")
    group = HostGroup("runas-off-5000" if parked else "jsmith", 5000, ())
    return ledger, host([user], [group])


def test_a_parked_name_goes_to_a_new_person_as_a_new_account():
    ledger, h = _leaver()
    p = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    aside, create = p.actions
    assert isinstance(aside, SetHomeAside) and (aside.parked, aside.home, aside.to) == ("runas-off-5000", "/home/jsmith",
                                                                                          "/home/runas-off-5000")
    assert isinstance(create, CreateAccount) and create.uid != 5000 and create.home == "/home/jsmith"
    assert create.uid == run([user("id-b", "jsmith")], host(), s=PERSON).actions[0].uid  # B's own UID, as on any host
    assert p.ledger.accounts["jsmith"].identities == ("id-b",) and p.ledger.accounts["jsmith"].uid == create.uid
    assert p.ledger.accounts["runas-off-5000"] == Owned("runas-off-5000", 5000, 5000, "person", ("id-a",))
    assert any("jsmith changed hands" in w for w in p.warnings)


def test_a_home_already_aside_is_not_moved_again_and_the_retired_entry_stays_parked():
    ledger, h = _leaver(home="/home/runas-off-5000")
    p = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    assert [type(a).__name__ for a in p.actions] == ["CreateAccount"]
    uid = p.actions[0].uid
    after = host([HostUser("runas-off-5000", 5000, 5000, "runas-agent Jsmith (jsmith)", "/home/runas-off-5000",
                           "/usr/sbin/nologin"),
                  HostUser("jsmith", uid, uid, p.actions[0].comment, "/home/jsmith", "/bin/bash")],
                 [HostGroup("runas-off-5000", 5000, ()), HostGroup("jsmith", uid, ())])
    again = run([user("id-b", "jsmith")], after, p.ledger, s=PERSON)
    assert again.actions == () and again.ledger == p.ledger and not again.warnings


def test_an_active_name_that_changed_hands_is_parked_first():
    ledger, h = _leaver(parked=False)
    p = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    (disable,) = p.actions
    assert isinstance(disable, DisableAccount) and disable.name == "jsmith" and "changed hands" in disable.reason
    assert "changed hands" in p.skips[0].reason and "next sync" in p.skips[0].reason


def test_the_same_person_gets_their_parked_account_back_and_a_shared_account_never_changes_hands():
    ledger, h = _leaver()
    assert [type(a).__name__ for a in run([user("id-a", "jsmith")], h, ledger, s=PERSON).actions] == ["EnableAccount"]
    shared = Ledger({"acme": Owned("acme", 5000, 5000, "shared", ("id-a",))})
    p = run([user("id-b", "bob", "acme")], host([managed("acme", 5000, parked=True)], [HostGroup("runas-off-5000", 5000, ())]),
            shared)
    assert [type(a).__name__ for a in p.actions] == ["EnableAccount"]


def test_a_newcomer_named_in_a_rule_left_for_the_leaver_is_skipped():
    ledger, h = _leaver()
    p = run([user("id-b", "jsmith")], replace(h, sudoers={"jsmith": "/etc/sudoers.d/jsmith-tools"}), ledger, s=PERSON)
    assert p.actions == () and "/etc/sudoers.d/jsmith-tools" in p.skips[0].reason
    assert p.ledger == ledger


def test_a_home_passwd_gives_to_another_account_is_never_a_new_accounts():
    h = host([HostUser("runas-off-5000", 5000, 5000, "runas-agent x", "/home/erin", "/usr/sbin/nologin")])
    p = run([user("id-e", "erin")], h, s=PERSON)
    assert p.actions == () and "/home/erin is the home of runas-off-5000" in p.skips[0].reason


def test_a_failed_set_aside_gives_the_name_back_to_the_leavers_entry():
    from runas_agent.core.plan import ACCOUNTS

    ledger, h = _leaver()
    p = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    aside, create = p.actions
    assert ACCOUNTS.settle(p.ledger, [aside, create]) == ledger
    assert ACCOUNTS.settle(p.ledger, [create]).accounts.keys() == {"runas-off-5000"}


# --- a person renamed -------------------------------------------------------------------------------

def _bob(parked=False, groups_added=("adm",), name="bob"):
    ledger = Ledger({name: Owned(name, 5000, 5000, "person", ("id-bob",), groups_added)})
    shown = "runas-off-5000" if parked else "bob"
    user_ = HostUser(shown, 5000, 5000, "runas-agent Bob (bob)", "/home/bob", "/usr/sbin/nologin" if parked else "/bin/bash")
    return ledger, host([user_], [HostGroup(shown, 5000, ()), HostGroup("deploy", 3000, (shown,))])


def test_a_renamed_person_keeps_the_account():
    ledger, h = _bob(groups_added=("deploy",))
    p = run([user("id-bob", "robert")], h, ledger, s=PERSON)
    rename, leave = p.actions
    assert isinstance(rename, RenameAccount) and rename.line().startswith("~ rename bob -> robert")
    assert (leave.group, leave.add, leave.remove) == ("deploy", (), ("robert",))  # the agent's membership, renamed
    assert (rename.uid, rename.group, rename.home, rename.old_home, rename.enable) == (5000, "bob", "/home/robert", "/home/bob", False)
    assert p.ledger.accounts.keys() == {"robert"}
    assert p.ledger.accounts["robert"] == Owned("robert", 5000, 5000, "person", ("id-bob",), ())  # deploy: not wanted now
    groups = replace(PERSON, group_rules=(GroupRule(None, "robert", ("deploy",)),))
    kept = run([user("id-bob", "robert")], h, ledger, s=groups)
    assert [type(a).__name__ for a in kept.actions] == ["RenameAccount"]  # the membership follows the rename
    assert kept.ledger.accounts["robert"].groups_added == ("deploy",)


def test_a_renamed_parked_person_comes_back_under_the_new_name():
    ledger, h = _bob(parked=True)
    (rename,) = run([user("id-bob", "robert")], h, ledger, s=PERSON).actions
    assert (rename.old, rename.group, rename.enable, rename.owned_as) == ("runas-off-5000", "runas-off-5000", True, "bob")


def test_a_leaver_whose_name_changed_hands_returns_under_a_new_name_with_their_account():
    ledger, h = _leaver(home="/home/runas-off-5000")
    handed = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    p = run([user("id-b", "jsmith"), user("id-a", "asmith")], h, handed.ledger, s=PERSON)
    rename = p.of(RenameAccount)[0]
    assert (rename.old, rename.name, rename.uid, rename.old_home, rename.home) == (
        "runas-off-5000", "asmith", 5000, "/home/runas-off-5000", "/home/asmith")
    assert "runas-off-5000" not in p.ledger.accounts and p.ledger.accounts["asmith"].uid == 5000


def test_a_rename_onto_a_taken_name_parks_the_old_account_and_skips_the_new_name():
    ledger, h = _bob()
    p = run([user("id-bob", "ops")], h, ledger, s=PERSON)   # `ops` is a local account
    assert [type(a).__name__ for a in p.actions] == ["DisableAccount"]
    assert "not managed by runas-agent" in p.skips[0].reason


def test_a_failed_rename_keeps_the_entry_under_its_old_name():
    from runas_agent.core.plan import ACCOUNTS

    ledger, h = _bob(parked=True)
    p = run([user("id-bob", "robert")], h, ledger, s=PERSON)
    assert ACCOUNTS.settle(p.ledger, list(p.actions)).accounts.keys() == {"bob"}


# --- a home that someone else owns ------------------------------------------------------------------

def test_an_existing_home_that_is_not_the_new_accounts_is_a_conflict():
    from runas_agent.core.observed import NOT_A_DIRECTORY

    h = replace(host(), homes={"/home/erin": 1001, "/home/link": NOT_A_DIRECTORY, "/home/ann": 0})
    p = run([user("id-erin", "erin"), user("id-l", "link"), user("id-f", "frank")], h, s=PERSON)
    reasons = {s.name: s.reason for s in p.skips}
    assert [a.name for a in p.actions] == ["frank"]
    assert "/home/erin exists and belongs to uid 1001" in reasons["erin"]
    assert "not a directory" in reasons["link"]
    uid = p.actions[0].uid
    own = run([user("id-f", "frank")], replace(host(), homes={"/home/frank": uid}), s=PERSON)
    assert [a.name for a in own.actions] == ["frank"]   # its own directory (an interrupted create) is fine


def test_a_leavers_home_being_set_aside_is_no_conflict_but_a_rename_target_is():
    ledger, h = _leaver()
    p = run([user("id-b", "jsmith")], replace(h, homes={"/home/jsmith": 5000}), ledger, s=PERSON)
    assert [type(a).__name__ for a in p.actions] == ["SetHomeAside", "CreateAccount"]
    ledger, h = _bob()
    r = run([user("id-bob", "robert")], replace(h, homes={"/home/bob": 5000, "/home/robert": 1001}), ledger, s=PERSON)
    assert not r.of(RenameAccount) and any("/home/robert exists" in s.reason for s in r.skips)
    own = run([user("id-bob", "robert")], replace(h, homes={"/home/bob": 5000, "/home/robert": 5000}), ledger, s=PERSON)
    assert not own.of(RenameAccount) and any("/home/robert exists" in s.reason for s in own.skips)


def test_a_rename_whose_home_was_moved_by_a_sync_that_stopped_is_finished():
    ledger, h = _bob()
    p = run([user("id-bob", "robert")], replace(h, homes={"/home/robert": 5000}), ledger, s=PERSON)
    (rename,) = p.of(RenameAccount)
    assert (rename.old_home, rename.home) == ("/home/bob", "/home/robert")
    taken = run([user("id-bob", "robert")], replace(h, homes={"/home/robert": 1001}), ledger, s=PERSON)
    assert not taken.of(RenameAccount)


# --- a disable the person can block -----------------------------------------------------------------

def test_a_per_person_accounts_processes_end_before_it_is_parked_or_re_enabled():
    from runas_agent.core.plan import EndProcesses

    ledger, h = _bob()
    busy = replace(h, busy_uids=frozenset({5000}))
    gone = run([user("id-x", "x")], busy, ledger, s=PERSON)
    assert [type(a).__name__ for a in gone.of(EndProcesses) + gone.of(DisableAccount)] == ["EndProcesses", "DisableAccount"]
    assert gone.actions.index(gone.of(EndProcesses)[0]) < gone.actions.index(gone.of(DisableAccount)[0])
    assert not run([user("id-x", "x")], h, ledger, s=PERSON).of(EndProcesses)      # nothing runs: nothing to end
    ledger, h = _bob(parked=True)
    back = run([user("id-bob", "bob")], replace(h, busy_uids=frozenset({5000})), ledger, s=PERSON)
    assert [type(a).__name__ for a in back.actions][:2] == ["EndProcesses", "EnableAccount"]


def test_a_shared_accounts_processes_never_end_with_it():
    from runas_agent.core.plan import EndProcesses

    ledger = Ledger({"acme": Owned("acme", 5000, 5000, "shared", ("u1",))})
    h = replace(host([managed("acme", 5000)], [HostGroup("acme", 5000, ())]), busy_uids=frozenset({5000}))
    p = run([user("u2", "b", "other")], h, ledger)
    assert p.of(DisableAccount) and not p.of(EndProcesses)


def test_a_rename_the_ledger_recorded_half_is_settled_by_the_next_plan():
    """The sync stopped after the rename, with the intent ledger naming both bob and robert."""
    ledger, h = _bob()
    p = run([user("id-bob", "robert")], h, ledger, s=PERSON)
    intent = ledger.merge(p.ledger)
    assert intent.accounts.keys() == {"bob", "robert"}
    uid = 5000
    after = host([HostUser("robert", uid, uid, p.actions[0].comment, "/home/robert", "/bin/bash")],
                 [HostGroup("robert", uid, ()), HostGroup("deploy", 3000, ("robert",))])
    again = run([user("id-bob", "robert")], after, intent, s=PERSON)
    assert [a.line() for a in again.actions] == [". forget bob: renamed to robert"]
    assert again.ledger.accounts.keys() == {"robert"} and not again.warnings


def test_an_interrupted_hand_over_converges():
    """The sync stopped after recording its intent and before setting the leaver's home aside."""
    ledger, h = _leaver()
    p = run([user("id-b", "jsmith")], h, ledger, s=PERSON)
    intent = ledger.merge(p.ledger)
    again = run([user("id-b", "jsmith")], h, intent, s=PERSON)
    assert [type(a).__name__ for a in again.actions] == ["SetHomeAside", "CreateAccount"]
    assert again.of(CreateAccount)[0].uid == p.of(CreateAccount)[0].uid
    assert any("changed hands" in w for w in again.warnings)


def test_a_rename_the_sync_stopped_before_or_while_writing_is_planned_again():
    """The intent ledger names both bob and robert (one UID), and the host still has bob, or bob
    with its group and the member lists already under robert (a write stopped half-way)."""
    ledger, h = _bob(groups_added=("deploy",))
    p = run([user("id-bob", "robert")], h, ledger, s=PERSON)
    intent = ledger.merge(p.ledger)
    uid = 5000
    half = host([HostUser("bob", uid, uid, "runas-agent Bob (bob)", "/home/bob", "/bin/bash")],
                [HostGroup("robert", uid, ()), HostGroup("deploy", 3000, ("robert",))])
    for state in (h, half):
        again = run([user("id-bob", "robert")], state, intent, s=PERSON)
        (rename,) = again.of(RenameAccount)
        assert (rename.old, rename.name, rename.uid, rename.owned_as) == ("bob", "robert", uid, "bob")
        assert not again.of(DisableAccount) and again.ledger.accounts.keys() == {"robert"}
    stranger = replace(half, groups={**half.groups, "robert": HostGroup("robert", 7777, ())})
    assert not run([user("id-bob", "robert")], stranger, intent, s=PERSON).of(RenameAccount)
