"""The batched create path's error handling, with the subprocess seam replaced (no process runs)."""

import os

from runas_agent.core.plan import CreateAccount
from runas_agent.errors import CommandError
from runas_agent.host.apply import Applier


def creates(n):
    return [CreateAccount(f"user{i}", 5000 + i, 5000 + i, f"/nonexistent/user{i}", "/bin/bash", "runas-agent x",
                          "person", (f"user{i}",)) for i in range(n)]


def test_a_failing_chpasswd_is_reported_per_account_and_never_aborts_the_sync(tmp_path):
    actions = creates(25)
    (tmp_path / "passwd").write_text("".join(f"{a.name}:x:{a.uid}:{a.gid}:{a.comment}:{a.home}:{a.shell}\n" for a in actions))
    (tmp_path / "group").write_text("")
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[0])
        if argv[0] == "chpasswd":
            raise CommandError(list(argv), 1, "chpasswd: cannot lock /etc/shadow")
        return None

    outcome = Applier(skel=str(tmp_path), etc=str(tmp_path), run=run).apply(actions)
    assert calls == ["newusers", "chpasswd"]          # no per-account useradd for accounts that exist
    assert len(outcome.failed) == 25 and not outcome.done
    assert all("setting no password failed" in message and "cannot lock" in message for _, message in outcome.failed)


def test_accounts_newusers_did_not_create_fall_back_to_useradd(tmp_path):
    actions = creates(20)
    (tmp_path / "passwd").write_text("")
    (tmp_path / "group").write_text("")
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[0])
        if argv[0] == "newusers":
            raise CommandError(list(argv), 2, "newusers: line 3: invalid user name")
        return None

    outcome = Applier(skel=str(tmp_path), etc=str(tmp_path), run=run).apply(actions)
    assert calls[0] == "newusers"
    assert calls[1:] == ["groupadd", "useradd"] * 20
    assert len(outcome.done) == 20


def test_a_home_that_could_not_be_set_aside_blocks_the_create_of_its_name(tmp_path):
    """The parked home is moved before every create, batched ones too; when it cannot be, the account
    taking the name is not made (it would start in the leaver's home), and the rest goes on."""
    from dataclasses import replace

    from runas_agent.core.plan import SetHomeAside

    (tmp_path / "skel").mkdir()
    news = [replace(a, home=str(tmp_path / a.name)) for a in creates(21)]
    for a in news:
        os.mkdir(a.home)  # as newusers makes them
    aside = SetHomeAside("user3", "runas-off-4000", 4000, news[3].home, str(tmp_path / "runas-off-4000"))
    (tmp_path / "passwd").write_text("".join(f"{a.name}:x:{a.uid}:{a.gid}:{a.comment}:{a.home}:{a.shell}\n"
                                             for a in news if a.name != "user3"))
    (tmp_path / "group").write_text("")
    calls = []

    def run(argv, **kwargs):
        calls.append(argv[0])
        if argv[0] == "usermod":
            raise CommandError(list(argv), 12, f"usermod: directory {aside.to} exists")
        if argv[0] == "newusers":
            assert "user3:" not in kwargs["input"]
        return None

    outcome = Applier(skel=str(tmp_path / "skel"), etc=str(tmp_path), run=run).apply([aside] + news)
    assert calls[:2] == ["usermod", "newusers"]
    assert [(a.name, type(a).__name__) for a, _ in outcome.failed] == [("user3", "SetHomeAside"), ("user3", "CreateAccount")]
    assert f"still at {news[3].home}" in outcome.failed[1][1]
    assert len(outcome.done) == 20
