"""The batched create path's error handling, with the subprocess seam replaced (no process runs)."""

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
