"""Reading visudo's check output (host/sudoers.py) with a stand-in for the subprocess seam: which file
each problem is in decides whether a change made the sudoers tree worse."""

from __future__ import annotations

import pytest

from runas_agent.errors import CommandError
from runas_agent.host.subp import Result
from runas_agent.host.sudoers import UNATTRIBUTED, SudoersHost


def host_answering(returncode, stdout="", stderr="", missing=False):
    def run(argv, **kwargs):
        if missing:
            raise CommandError(argv, None, "", "command not found")
        if returncode != 0:
            raise CommandError(argv, returncode, stderr)
        return Result(tuple(argv), 0, stdout, stderr)
    return SudoersHost("/etc/sudoers.d", "/var/lib/runas-agent", run=run)


@pytest.mark.parametrize("rc,stdout,stderr,missing,expected", [
    (0, "/etc/sudoers: parsed OK\n/etc/sudoers.d/README: parsed OK\n", "", False, {}),
    (0, "/tmp/x: parsed OK\n", '/tmp/x:1:37: User_Alias "OPS" referenced but not defined\n', False,
     {"/tmp/x": '/tmp/x:1:37: User_Alias "OPS" referenced but not defined'}),
    (1, "", "/etc/sudoers.d/bb:1:9: syntax error\ngarbage (((\n        ^\n/etc/sudoers.d/cc:1:26: syntax error\n", False,
     {"/etc/sudoers.d/bb": "/etc/sudoers.d/bb:1:9: syntax error", "/etc/sudoers.d/cc": "/etc/sudoers.d/cc:1:26: syntax error"}),
    (1, "", "/etc/sudoers.d/x: bad permissions, should be mode 0440\n", False,
     {"/etc/sudoers.d/x": "/etc/sudoers.d/x: bad permissions, should be mode 0440"}),
    (1, "", "visudo: out of memory\n", False, {UNATTRIBUTED: "visudo: out of memory"}),
    (1, "", "", False, {UNATTRIBUTED: "visudo -c failed"}),
    (0, "", "", True, {UNATTRIBUTED: "visudo -c: command not found"}),
])
def test_check_attributes_problems_to_files(rc, stdout, stderr, missing, expected):
    assert host_answering(rc, stdout, stderr, missing)._check() == expected


@pytest.mark.parametrize("baseline,after,paths,worse", [
    ({}, {}, {"/etc/sudoers.d/a"}, False),
    ({"/etc/sudoers.d/zz": "old"}, {"/etc/sudoers.d/zz": "old"}, {"/etc/sudoers.d/a"}, False),  # someone else's, already there
    ({"/etc/sudoers.d/a": "bad perms"}, {}, {"/etc/sudoers.d/a"}, False),  # our own file repaired
    ({}, {"/etc/sudoers.d/a": "x"}, {"/etc/sudoers.d/a"}, True),  # our file is bad
    ({"/etc/sudoers.d/a": "x"}, {"/etc/sudoers.d/a": "x"}, {"/etc/sudoers.d/a"}, True),  # still bad after the change
    ({}, {"/etc/sudoers.d/zz": "x"}, {"/etc/sudoers.d/a"}, True),  # a new problem elsewhere
    ({}, {UNATTRIBUTED: "x"}, {"/etc/sudoers.d/a"}, True),
])
def test_worse_blames_only_new_problems_or_our_own_files(baseline, after, paths, worse):
    host = SudoersHost("/etc/sudoers.d", "/var/lib/runas-agent")
    host._check = lambda *args: dict(after)
    problem, tree = host._worse(baseline, paths)
    assert (problem is not None) == worse
    assert tree == after  # the tree as it is now: the next change's baseline
