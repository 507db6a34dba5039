"""accounts.shell against what the host has: the plan is refused when it would give accounts a
shell that does not exist, cannot run or is not in /etc/shells."""

import pytest

from runas_agent.core import shells
from runas_agent.core.observed import ShellOnHost
from runas_agent.core.plan import CreateAccount, DisableAccount, Plan, UpdateAccount

LISTED = frozenset({"/bin/sh", "/bin/bash"})
GOOD = ShellOnHost("/bin/bash", exists=True, executable=True, listed=LISTED)


@pytest.mark.parametrize("shell, why", [
    (GOOD, None),
    (ShellOnHost("/bin/bash", True, True, None), None),
    (ShellOnHost("/bin/nosuchshell", False, False, LISTED), "does not exist on this host"),
    (ShellOnHost("/etc/passwd", True, False, LISTED), "is not executable"),
    (ShellOnHost("/usr/bin/python3", True, True, LISTED), "is not listed in /etc/shells"),
])
def test_the_problem_with_a_shell(shell, why):
    assert shells.problem(shell) == why


def create(shell):
    return CreateAccount("alice", 2000, 2000, "/home/alice", shell, "runas-agent person", "person", ("alice (u1)",))


def test_a_plan_that_gives_a_missing_shell_is_refused_naming_it():
    missing = ShellOnHost("/bin/nosuchshell", False, False, LISTED)
    judged = shells.judge(Plan(actions=(create("/bin/nosuchshell"),)), missing)
    assert judged.refusals == ("accounts.shell /bin/nosuchshell does not exist on this host: no account is given it; "
                               "fix accounts.shell (`runas-agent check-config` on this host checks it)",)
    update = UpdateAccount("bob", {"shell": ["/bin/bash", "/bin/nosuchshell"]})
    assert shells.judge(Plan(actions=(update,)), missing).refusals


def test_a_plan_that_gives_no_account_the_shell_goes_ahead():
    missing = ShellOnHost("/bin/nosuchshell", False, False, LISTED)
    disable = Plan(actions=(DisableAccount("alice", 2000, "runas-off-2000", "gone"),))
    assert shells.judge(disable, missing) == disable
    assert shells.judge(Plan(actions=(create("/bin/bash"),)), GOOD).refusals == ()
