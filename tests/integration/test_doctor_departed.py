"""doctor fails when a person who is gone still has an account that resolves, because processes
run as it, naming the account, the person and the processes."""

from __future__ import annotations

import subprocess

import pytest

from tests.endpoint import ssoadmin_abac
from tests.integration.test_doctor_host import FAILED, OK, staged  # noqa: F401 - a fixture
from tests.integration.test_doctor_links import USERS, directory

pytestmark = pytest.mark.host
pytest_plugins = ["tests.endpoint.fixtures"]


def test_a_departed_persons_account_held_by_a_process_is_a_failure(staged):  # noqa: F811
    staged.sync()
    bob = staged.host.passwd()["bob"]
    staged.endpoint.seed(directory(USERS[:1]))
    ssoadmin_abac.set_attributes(staged.region, {"SSMSessionRunAs": "${path:userName}"})
    assert staged.doctor()["accounts"]["status"] == OK  # leaving, nothing holds it: the next sync parks it
    job = subprocess.Popen(["setpriv", f"--reuid={bob[2]}", f"--regid={bob[3]}", "--clear-groups", "sleep", "300"])
    try:
        checks = staged.doctor(processes_of_uids=[int(bob[2])])
    finally:
        job.kill()
        job.wait()
    accounts = checks["accounts"]
    assert accounts["status"] == FAILED, accounts
    assert "1 account of people who are gone still resolve" in accounts["summary"]
    held = accounts["details"][0]
    assert held.startswith(f"bob (uid {bob[2]}; ") and f"pid {job.pid} (sleep) run as it" in held, held
    assert staged.exit == 5
