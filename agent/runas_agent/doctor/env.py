"""What `doctor` checks read the world through (shell): the host probe, the AWS session and clients,
`visudo -c`. The defaults are the real host and the default AWS chain; tests point them elsewhere.
"""

from __future__ import annotations

import os
import pwd
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import psutil

from runas_agent import aws
from runas_agent.host.sshd import effective_config
from runas_agent.host.sudoers import check_tree
from runas_agent.settings import Config


def _default_processes() -> Iterable[Any]:
    processes: Iterable[Any] = psutil.process_iter(["pid", "name", "exe", "cmdline", "uids"])
    return processes


def _uid_of(name: str) -> Optional[int]:
    """The UID NSS answers for `name` (every source nsswitch.conf lists), or None."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _user_exists(name: str) -> bool:
    """Through NSS, as the SSM agent's `id <name>` resolves it."""
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@dataclass
class Probe:
    """Where and how the host is read. The defaults are the real host; tests point them elsewhere."""

    etc: str = "/etc"
    #: deb and rpm installs
    agent_binaries: tuple[str, ...] = ("/usr/bin/amazon-ssm-agent",)
    #: snap installs
    snap_dir: str = "/snap/amazon-ssm-agent"
    unit_dirs: tuple[str, ...] = ("/etc/systemd/system", "/run/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
    unit_names: tuple[str, ...] = ("amazon-ssm-agent.service", "snap.amazon-ssm-agent.amazon-ssm-agent.service")
    processes: Callable[[], Iterable[Any]] = _default_processes
    #: the last sync's journal record (a dict of its fields, REALTIME as epoch seconds), or None
    last_sync: Optional[Callable[[], Optional[dict[str, Any]]]] = None
    now: Callable[[], float] = time.time
    user_exists: Callable[[str], bool] = _user_exists
    run: Optional[Callable[..., Any]] = None
    euid: Callable[[], int] = os.geteuid
    sshd: str = "/usr/sbin/sshd"
    uid_of: Callable[[str], Optional[int]] = _uid_of


class Env:
    """Everything a check may read besides the facts: the config file's path, the host probe, the
    boto3 session (injectable; by default one in source.region) and the --ssm-region option."""

    def __init__(self, config_path: str, *, probe: Optional[Probe] = None, session: Any = None,
                 ssm_region: Optional[str] = None):
        self.config_path = config_path
        self.probe = probe or Probe()
        self._session = session
        self.ssm_region = ssm_region

    def session(self, cfg: Config) -> Any:
        """The boto3 session: the injected one, else one in the Identity Center home region."""
        if self._session is None:
            import boto3  # loaded when a check first needs AWS: a sync never does

            self._session = boto3.session.Session(region_name=cfg.source.region)
        return self._session

    def client(self, cfg: Config, service: str, region: Optional[str], endpoint_url: Optional[str] = None) -> Any:
        """A client with the configured timeouts and two attempts (a doctor answers quickly)."""
        return aws.client(service, cfg.source, session=self.session(cfg), region=region, endpoint_url=endpoint_url,
                          attempts=2, agent="doctor")

    def sshd_settings(self) -> Optional[str]:
        """The output of `sshd -T` (the configuration sshd would run with), or None when sshd is not
        installed or cannot say (it needs root and its host keys)."""
        return effective_config(self.probe.sshd, run=self.probe.run)

    def visudo_check(self, visudo: str) -> Any:
        """`visudo -c` of the whole sudoers tree (host/sudoers.py); any exit status is an answer."""
        return check_tree(visudo, run=self.probe.run)
