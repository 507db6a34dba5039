"""Sudo rules that grant a shell-starting or audit-erasing command with free arguments are warned about."""

import pytest

from runas_agent.core import sudorisk
from runas_agent.core.sudoers import Rule


@pytest.mark.parametrize("command, noexec, expected", [
    ("/usr/bin/journalctl", False, "sudo.rules[0]: /usr/bin/journalctl with any arguments starts a shell or any program "
                                   "and can erase audit data (e.g. journalctl --vacuum-time=1s deletes the session "
                                   "records); give it fixed arguments"),
    ("/usr/bin/journalctl", True, "sudo.rules[0]: /usr/bin/journalctl with any arguments can erase audit data"),
    ("/usr/bin/find", False, "sudo.rules[0]: /usr/bin/find with any arguments starts a shell or any program "
                             "(e.g. find / -exec /bin/sh \\;); give it fixed arguments or set noexec: true"),
    ("/usr/bin/python3.11", False, "sudo.rules[0]: /usr/bin/python3.11 with any arguments starts a shell"),
    ("/bin/rm", True, "sudo.rules[0]: /bin/rm with any arguments can erase audit data"),
])
def test_risky_commands_with_free_arguments(command, noexec, expected):
    found = sudorisk.risks(Rule(0, (command,), noexec=noexec))
    assert len(found) == 1 and found[0].startswith(expected), found


@pytest.mark.parametrize("command, noexec", [
    ("/usr/bin/journalctl --no-pager -u nginx", False),
    ("/usr/bin/less", True),
    ("/usr/bin/find", True),
    ("/usr/bin/id", False),
    ('/usr/bin/vim ""', False),
    ("ALL", False),
])
def test_fixed_arguments_noexec_and_harmless_commands_are_quiet(command, noexec):
    assert sudorisk.risks(Rule(0, (command,), noexec=noexec)) == []
