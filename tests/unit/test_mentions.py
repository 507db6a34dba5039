"""Which user names a sudoers file mentions, and what it includes: a table of the sudoers forms,
each with the names a rule in it would apply to (or let someone act as)."""

import pytest

from runas_agent.core.mentions import Include, parse


@pytest.mark.parametrize("text,names", [
    ("ghost ALL=(ALL) NOPASSWD:ALL\n", {"ghost", "ALL"}),
    ("# Created by cloud-init\n# User rules for nobody_here\n", set()),
    ("alice , bob,carol  ALL = /bin/true\n", {"alice", "bob", "carol"}),
    ("User_Alias OPERATORS = spectre, somebody\nOPERATORS ALL=(root) NOPASSWD: /usr/bin/systemctl\n",
     {"spectre", "somebody", "OPERATORS", "root"}),
    ("User_Alias A = one : B = two, three\n", {"one", "two", "three"}),
    ("Runas_Alias DB = pgadmin, #0\n", {"pgadmin"}),
    ("Defaults:phantom !authenticate\n", {"phantom"}),
    ("Defaults:wraith,  specter env_keep += HOME\n", {"wraith", "specter"}),
    ("Defaults>shade !requiretty\n", {"shade"}),
    ("Defaults@host1 !requiretty\nDefaults!/bin/ls noexec\nDefaults env_reset\n", set()),
    ("%sudo ALL=(ALL:ALL) ALL\n%:admins ALL=ALL\n+netgrp ALL=ALL\n#1234 ALL=ALL\n", {"ALL"}),
    ("ALL, !banned ALL=/bin/true\n", {"ALL", "banned"}),
    ('"alice@corp.example" ALL=(ALL) /bin/true\n', {"alice@corp.example", "ALL"}),
    ("john\\.doe ALL=/bin/true\n", {"john.doe"}),
    ("ops ALL=(jsmith : staff) /bin/true, (deploy) /bin/false\n", {"ops", "jsmith", "deploy"}),
    ("cont1, \\\n  cont2 ALL=/bin/true\n", {"cont1", "cont2"}),
    ("alice ALL=/bin/true # bob ALL=ALL\n", {"alice"}),
    ("Cmnd_Alias SHUT = /sbin/halt, /sbin/reboot\nHost_Alias H = web1, web2\n", set()),
])
def test_names(text, names):
    assert parse(text).names == names


def test_includes_in_order():
    text = ("@includedir /etc/sudoers.d\n#includedir /etc/extra.d\n@include local\n"
            '#include "/etc/with space"\n# include not-a-directive\n')
    assert parse(text).includes == (Include("/etc/sudoers.d", True), Include("/etc/extra.d", True),
                                    Include("local", False), Include("/etc/with space", False))
    assert parse(text).names == frozenset()


def test_host_files_are_read_as_sudo_includes_them(tmp_path):
    from runas_agent.host.mentions import read_mentions

    (tmp_path / "sudoers.d").mkdir()
    (tmp_path / "sudoers").write_text("root ALL=(ALL) ALL\n@includedir sudoers.d\n@include extra\n")
    (tmp_path / "extra").write_text("@include sudoers\nextra_user ALL=ALL\n")       # a loop is read once
    (tmp_path / "sudoers.d" / "90-cloud-init-users").write_text("ghost ALL=(ALL) NOPASSWD:ALL\n")
    (tmp_path / "sudoers.d" / "README.txt").write_text("dotted ALL=ALL\n")         # skipped by sudo
    (tmp_path / "sudoers.d" / "old~").write_text("tilde ALL=ALL\n")                # skipped by sudo
    (tmp_path / "sudoers.d" / "runas-agent-x").write_text("ours ALL=ALL\n")
    found = read_mentions(str(tmp_path / "sudoers"), frozenset({str(tmp_path / "sudoers.d" / "runas-agent-x")}))
    assert found.names == {"root": str(tmp_path / "sudoers"), "ALL": str(tmp_path / "sudoers"),
                           "ghost": str(tmp_path / "sudoers.d" / "90-cloud-init-users"),
                           "extra_user": str(tmp_path / "extra")}
    assert found.problems == ()
