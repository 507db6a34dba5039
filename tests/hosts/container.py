"""A booted Debian bookworm container with systemd as PID 1, for integration tests.

The container is a real systemd 252 (journald, dbus, sshd, ``Type=notify``
services with watchdogs) run by ``systemd-nspawn --boot`` in a network
namespace that the harness creates itself, so tests never touch this
machine's own ``/etc``, accounts or services.

Typical use::

    from tests.hosts.container import BootedContainer

    with BootedContainer(bind_ro=[(wheelhouse, "/opt/wheels")]) as ct:
        ct.exec(["systemctl", "is-active", "ssh"])
        ct.write_file("/etc/systemd/system/x.service", "...")
        client = ct.paramiko_client()

Layout and guarantees:

* :func:`build_rootfs` builds (``mmdebstrap``) and caches one root tree per
  package list below ``$RUNAS_AGENT_TEST_CACHE`` (default
  ``/var/cache/runas-agent-tests``).  The tree is only ever booted with
  ``--volatile=overlay``: every change made in a container is lost at
  poweroff, so one extracted tree serves every boot and every process.
* Each :class:`BootedContainer` gets its own network namespace and a veth
  pair carrying a /30 from 172.31.192.0/18 (checked not to overlap anything
  on this machine).  The container has no default route: it can only talk
  to the host end of its own /30, and tests should only talk to
  :attr:`BootedContainer.ip`.
* Teardown (``poweroff()``, ``close()``, ``__exit__``, and an ``atexit``
  hook) stops the container cleanly, falls back to SIGKILL, and deletes the
  namespace and veth.  ``systemd-nspawn`` is started with a parent-death
  signal, and :func:`cleanup_stale` (run before each boot) removes what a
  killed test run left behind.

All commands are run from argv lists; nothing goes through a shell.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import io
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Mapping, Sequence, Union

__all__ = [
    "BASE_PACKAGES",
    "CONTAINER_HOSTNAME",
    "BootedContainer",
    "ContainerError",
    "ContainerExecError",
    "build_rootfs",
    "cache_dir",
    "cleanup_stale",
    "missing_tools",
    "required_tools",
    "session_ssh_key",
]

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES: tuple[str, ...] = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "sudo",
    "python3",
    "python3-venv",
    "python3-systemd",
    "python3-cryptography",
    "python3-pip",
    "openssh-server",
    "iproute2",
    "procps",
    "passwd",
    "login",
)
#: Bump when the post-extraction customisation below changes: it is part of
#: the cache key, so old trees are simply not used any more.
ROOTFS_LAYOUT_VERSION = "1"
CONTAINER_HOSTNAME = "runas-test"
#: Directory in the container bind-mounted (read-only) from a per-boot host
#: directory holding ``authorized_keys``; sshd reads it for every user.
AUTHORIZED_KEYS_DIR = "/etc/ssh/runas-test-keys"

#: Machine names and netns names: ``ratest-<owner pid>-<n>``.
NAME_PREFIX = "ratest"
_NAME_RE = re.compile(rf"^{NAME_PREFIX}-(\d+)-(\d+)$")
#: /30s are taken from this block only.
ADDRESS_POOL = ipaddress.ip_network("172.31.192.0/18")
RUN_DIR = Path("/run/runas-agent-tests")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Absolute paths so that nothing depends on the caller's PATH (pyenv shims...).
_TOOL_CANDIDATES = {
    "mmdebstrap": ("/usr/bin/mmdebstrap",),
    "systemd-nspawn": ("/usr/bin/systemd-nspawn",),
    "ip": ("/usr/sbin/ip", "/usr/bin/ip", "/sbin/ip", "/bin/ip"),
    "nsenter": ("/usr/bin/nsenter",),
    "tar": ("/usr/bin/tar", "/bin/tar"),
    "ssh-keygen": ("/usr/bin/ssh-keygen",),
}


class ContainerError(RuntimeError):
    """The container could not be built, booted or torn down."""


class ContainerExecError(subprocess.CalledProcessError):
    """A command run in the container exited non-zero (``check=True``)."""

    def __str__(self) -> str:  # include the output: it is what one needs to debug
        base = super().__str__()
        parts = [base]
        for label, data in (("stdout", self.stdout), ("stderr", self.stderr)):
            if data:
                if isinstance(data, bytes):
                    data = data.decode(errors="replace")
                parts.append(f"--- {label} ---\n{data.rstrip()[-4000:]}")
        return "\n".join(parts)


# --------------------------------------------------------------------------
# tools


def _tool(name: str) -> str:
    for cand in _TOOL_CANDIDATES.get(name, ()):
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which(name, path=CONTAINER_PATH)
    if found:
        return found
    raise ContainerError(f"required tool {name!r} not found")


def required_tools() -> tuple[str, ...]:
    """Host commands the harness needs (see :func:`missing_tools`)."""
    return tuple(_TOOL_CANDIDATES)


def missing_tools() -> list[str]:
    """Names of required host tools that are not installed."""
    missing = []
    for name in _TOOL_CANDIDATES:
        try:
            _tool(name)
        except ContainerError:
            missing.append(name)
    return missing


def _run(argv: Sequence[str], *, check: bool = True, timeout: float = 60,
         input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run a host command (argv only), capturing output."""
    proc = subprocess.run(
        list(argv), input=input, stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, timeout=timeout, check=False,
    )
    if check and proc.returncode != 0:
        raise ContainerExecError(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


@contextlib.contextmanager
def _flock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# --------------------------------------------------------------------------
# root filesystem


def cache_dir() -> Path:
    """``$RUNAS_AGENT_TEST_CACHE`` or ``/var/cache/runas-agent-tests``."""
    return Path(os.environ.get("RUNAS_AGENT_TEST_CACHE") or "/var/cache/runas-agent-tests")


def _package_list(extra_packages: Iterable[str]) -> list[str]:
    pkgs: list[str] = []
    for p in (*BASE_PACKAGES, *extra_packages):
        p = p.strip()
        if not p:
            continue
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*(:[a-z0-9]+)?(=[A-Za-z0-9.+:~\-]+)?", p):
            raise ValueError(f"not a Debian package name: {p!r}")
        if p not in pkgs:
            pkgs.append(p)
    return pkgs


def _rootfs_key(pkgs: Sequence[str], mirror: str) -> str:
    material = json.dumps(
        {"suite": SUITE, "mirror": mirror, "packages": sorted(pkgs),
         "layout": ROOTFS_LAYOUT_VERSION, "hostname": CONTAINER_HOSTNAME},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def build_rootfs(extra_packages: Iterable[str] = ()) -> Path:
    """Return a cached, customised bookworm root tree, building it if missing.

    ``mmdebstrap --variant=minbase --include=BASE_PACKAGES+extra bookworm
    CACHE/rootfs-KEY.tar`` (~20 s, needs the Debian archive), extracted once
    to ``CACHE/rootfs-KEY/``; KEY hashes the package list.  Safe to call from
    concurrent processes (a lock file serialises builders of one key).
    The returned tree must only be booted with ``--volatile=overlay``
    (as :class:`BootedContainer` does): never write to it.
    """
    pkgs = _package_list(extra_packages)
    mirror = os.environ.get("RUNAS_AGENT_TEST_MIRROR") or DEFAULT_MIRROR
    key = _rootfs_key(pkgs, mirror)
    cache = cache_dir()
    root = cache / f"rootfs-{key}"
    ready = cache / f"rootfs-{key}.ready"
    if ready.exists() and root.is_dir():
        return root

    cache.mkdir(parents=True, exist_ok=True)
    with _flock(cache / f"rootfs-{key}.lock"):
        if ready.exists() and root.is_dir():  # another process built it meanwhile
            return root
        # Leftovers of a builder that died: we hold the lock, nobody else uses them.
        for stale in cache.glob(f"rootfs-{key}.tmp-*"):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        if root.exists():
            shutil.rmtree(root)

        tar = cache / f"rootfs-{key}.tar"
        if not tar.is_file():
            tmp_tar = cache / f"rootfs-{key}.tmp-{os.getpid()}.tar"  # must end in .tar
            log = cache / f"rootfs-{key}.mmdebstrap.log"
            argv = [
                _tool("mmdebstrap"), "--variant=minbase",
                "--include=" + ",".join(pkgs),
                SUITE, str(tmp_tar), mirror,
            ]
            with open(log, "wb") as logf:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, timeout=1800)
            if proc.returncode != 0 or not tmp_tar.is_file():
                tmp_tar.unlink(missing_ok=True)
                tail = log.read_text(errors="replace")[-3000:]
                raise ContainerError(
                    f"mmdebstrap failed with exit code {proc.returncode} (log: {log}):\n{tail}")
            os.replace(tmp_tar, tar)

        tmp_root = cache / f"rootfs-{key}.tmp-{os.getpid()}"
        tmp_root.mkdir(mode=0o755)
        _run([_tool("tar"), "--numeric-owner", "--xattrs", "--xattrs-include=*",
              "-xpf", str(tar), "-C", str(tmp_root)], timeout=600)
        _customise_rootfs(tmp_root)
        os.replace(tmp_root, root)
        ready.write_text("\n".join(pkgs) + "\n")
    return root


def _write(root: Path, rel: str, content: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    if path.is_symlink():  # never follow a symlink out of the tree
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    os.chmod(path, mode)


def _symlink(root: Path, rel: str, target: str) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.symlink_to(target)


def _customise_rootfs(root: Path) -> None:
    """Make the minbase tree a quick, SSH-able, offline test host."""
    _write(root, "etc/hostname", CONTAINER_HOSTNAME + "\n")
    # minbase has no /etc/hosts: without one every resolution of the host
    # name (sudo, Ansible facts...) waits on DNS.
    _write(root, "etc/hosts",
           "127.0.0.1\tlocalhost\n"
           f"127.0.1.1\t{CONTAINER_HOSTNAME}\n"
           "::1\tlocalhost ip6-localhost ip6-loopback\n")
    _write(root, "etc/resolv.conf", "")  # no DNS: there is no network beyond the host
    # systemd creates a fresh machine-id on each (volatile) boot.
    _write(root, "etc/machine-id", "", 0o444)

    # SSH: root's own slot plus a harness-managed one bind-mounted per boot.
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chmod(ssh_dir, 0o700)
    _write(root, "root/.ssh/authorized_keys", "", 0o600)
    keys_dir = root / AUTHORIZED_KEYS_DIR.lstrip("/")
    keys_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    _write(root, AUTHORIZED_KEYS_DIR + "/authorized_keys", "", 0o644)
    _write(root, "etc/ssh/sshd_config.d/50-runas-test.conf",
           "# written by tests/hosts/container.py\n"
           f"AuthorizedKeysFile .ssh/authorized_keys {AUTHORIZED_KEYS_DIR}/authorized_keys\n"
           "PermitRootLogin prohibit-password\n"
           "PasswordAuthentication no\n"
           "KbdInteractiveAuthentication no\n"
           "UseDNS no\n")
    host_keys = list((root / "etc/ssh").glob("ssh_host_*_key"))
    if not host_keys:
        raise ContainerError("openssh-server left no host keys in the root tree")
    _symlink(root, "etc/systemd/system/multi-user.target.wants/ssh.service",
             "/lib/systemd/system/ssh.service")
    _symlink(root, "etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service")

    # Units that only slow the boot down or fail without a network/hardware.
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "apt-daily.service",
                 "apt-daily-upgrade.service", "e2scrub_all.timer", "e2scrub_reap.service",
                 "fstrim.timer", "dpkg-db-backup.timer", "systemd-timesyncd.service",
                 "console-getty.service", "getty@.service", "getty-static.service",
                 "systemd-networkd-wait-online.service"):
        _symlink(root, f"etc/systemd/system/{unit}", "/dev/null")


# --------------------------------------------------------------------------
# SSH key of this test session

_session_lock = threading.Lock()
_session_key: Path | None = None


def session_ssh_key() -> Path:
    """Path of an ed25519 private key made once per process (``.pub`` beside it).

    It lives in a private temporary directory removed at exit.
    """
    global _session_key
    with _session_lock:
        if _session_key is None or not _session_key.exists():
            d = Path(tempfile.mkdtemp(prefix="runas-test-ssh-"))
            atexit.register(shutil.rmtree, d, True)
            key = d / "id_ed25519"
            _run([_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C",
                  f"runas-agent-tests-{os.getpid()}", "-f", str(key)])
            _session_key = key
        return _session_key


# --------------------------------------------------------------------------
# processes and namespaces


def _pid_alive(pid: int) -> bool:
    """Is ``pid`` a live process (zombies count as dead)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _proc_status(pid).get("State", "R").startswith(("Z", "X"))


def _proc_status(pid: int) -> dict[str, str]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k] = v.strip()
    except OSError:
        pass
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces/parens: fields after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            kids.append(int(entry.name))
    return kids


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _find_container_init(nspawn_pid: int) -> int | None:
    """PID (on this machine) of the container's PID 1: a child of nspawn
    whose pid in its own namespace is 1."""
    frontier = [nspawn_pid]
    for _depth in range(3):
        nxt = []
        for p in frontier:
            for kid in _children(p):
                nspid = _proc_status(kid).get("NSpid", "").split()
                if len(nspid) >= 2 and nspid[-1] == "1":
                    return kid
                nxt.append(kid)
        frontier = nxt
    return None


def _set_pdeathsig() -> None:
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# -- cgroups ---------------------------------------------------------------
# Without a host systemd, ``nspawn --keep-unit`` creates ``payload`` and
# ``supervisor`` cgroups below its *own* cgroup and leaves them there.  Two
# containers started from the same cgroup would then share ``payload``: one
# container's systemd could kill the other's services.  So each nspawn is
# moved, before exec, into a cgroup of its own, removed after poweroff.

CGROUP_GROUP = "runas-agent-tests"


def _cgroup_hierarchies() -> list[tuple[Path, str]]:
    """(mount point, this process's path) of the hierarchies nspawn uses:
    the ``name=systemd`` v1 one and the v2 (unified) one."""
    own: dict[str, str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _hid, ctrls, path = line.rstrip("\n").split(":", 2)
            own[ctrls] = path
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, _src, opts = (right.split() + ["", "", ""])[:3]
            mnt = Path(left.split()[4])
            if fstype == "cgroup" and "name=systemd" in opts.split(","):
                out.append((mnt, own.get("name=systemd", "/")))
            elif fstype == "cgroup2":
                out.append((mnt, own.get("", "/")))
    return out


def _cgroup_dirs(name: str) -> list[Path]:
    return [mnt / own.lstrip("/") / CGROUP_GROUP / name for mnt, own in _cgroup_hierarchies()]


def _remove_cgroup_tree(path: Path, timeout: float = 5.0) -> bool:
    """rmdir a cgroup and its children, bottom-up; True if it is gone."""
    deadline = time.monotonic() + timeout
    while path.exists():
        for dirpath, _dirs, _files in os.walk(path, topdown=False):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)
        if not path.exists() or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # processes still exiting
    with contextlib.suppress(OSError):
        os.rmdir(path.parent)  # the shared group dir, if nobody else uses it
    return not path.exists()


def _nspawn_preexec(cgroup_procs: Sequence[str]):
    def preexec() -> None:  # runs in the child between fork and exec
        for procs in cgroup_procs:
            with open(procs, "w") as f:
                f.write("0")
        _set_pdeathsig()
    return preexec


def _netns_exists(name: str) -> bool:
    return (Path("/run/netns") / name).exists()


def _link_exists(ifname: str) -> bool:
    return Path("/sys/class/net", ifname).exists()


def _delete_netns(name: str) -> None:
    if _netns_exists(name):
        _run([_tool("ip"), "netns", "delete", name], check=False, timeout=30)


NSPAWN_PROPAGATE = Path("/run/systemd/nspawn/propagate")


def _remove_propagate_dir(name: str) -> None:
    """nspawn's per-machine mount-propagation dir: it removes it itself only
    when it exits normally and /run is a tmpfs (here /run may be on disk)."""
    d = NSPAWN_PROPAGATE / name
    if not d.is_dir() or d.is_symlink() or os.path.ismount(d):
        return
    with contextlib.suppress(OSError):
        for child in d.iterdir():
            if child.is_dir() and not child.is_symlink() and not os.path.ismount(child):
                child.rmdir()   # only empty leftovers; never recurse into anything
        d.rmdir()


def cleanup_stale() -> list[str]:
    """Tear down containers and namespaces left by harness processes that died.

    Only touches objects named ``ratest-<pid>-<n>`` whose owner ``<pid>`` is
    gone.  Returns the names cleaned.
    """
    cleaned = []
    names = set()
    try:
        names.update(os.listdir("/run/netns"))
    except OSError:
        pass
    nspawns: dict[str, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        argv = _cmdline(int(entry.name))
        if not argv or not argv[0].endswith("systemd-nspawn"):
            continue
        for i, a in enumerate(argv):
            if a == "-M" and i + 1 < len(argv):
                nspawns[argv[i + 1]] = int(entry.name)
            elif a.startswith("--machine="):
                nspawns[a.split("=", 1)[1]] = int(entry.name)
    names.update(nspawns)
    for name in sorted(names):
        m = _NAME_RE.match(name)
        if not m or _pid_alive(int(m.group(1))):
            continue
        npid = nspawns.get(name)
        if npid is not None:
            init = _find_container_init(npid)
            for p in (init, npid):
                if p:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(p, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(npid) and time.monotonic() < deadline:
                time.sleep(0.05)
        _delete_netns(name)
        cleaned.append(name)
    with contextlib.suppress(OSError):
        for d in NSPAWN_PROPAGATE.iterdir():
            m = _NAME_RE.match(d.name)
            if m and not _pid_alive(int(m.group(1))):
                _remove_propagate_dir(d.name)
    with contextlib.suppress(OSError):
        for mnt, own in _cgroup_hierarchies():
            group = mnt / own.lstrip("/") / CGROUP_GROUP
            if not group.is_dir():
                continue
            for d in group.iterdir():
                m = _NAME_RE.match(d.name)
                if d.is_dir() and m and not _pid_alive(int(m.group(1))):
                    _remove_cgroup_tree(d, timeout=1)
                    if d.name not in cleaned:
                        cleaned.append(d.name)
    return cleaned


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    ip = _tool("ip")
    for argv in ([ip, "-j", "-4", "addr", "show"], [ip, "-j", "-4", "route", "show", "table", "all"]):
        proc = _run(argv, check=False)
        try:
            data = json.loads(proc.stdout or b"[]")
        except ValueError:
            continue
        for item in data:
            for ai in item.get("addr_info", ()):
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.ip_network(f"{ai['local']}/{ai['prefixlen']}", strict=False))
            dst = item.get("dst")
            if dst and dst != "default":
                with contextlib.suppress(ValueError):
                    nets.append(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    return nets


# --------------------------------------------------------------------------
# the container

_live: "set[BootedContainer]" = set()
_live_lock = threading.Lock()
_counter = 0
_atexit_registered = False
_stale_cleaned = False

BindSpec = Union[str, "tuple[Union[str, os.PathLike], str]"]


def _atexit_close_all() -> None:
    with _live_lock:
        live = list(_live)
    for ct in live:
        with contextlib.suppress(Exception):
            ct.close()


def _bind_arg(spec: BindSpec) -> str:
    if isinstance(spec, tuple):
        src, dest = str(spec[0]), spec[1]
        if ":" in src or ":" in dest:
            raise ValueError(f"bind paths may not contain ':': {spec!r}")
        if not os.path.isabs(src) or not dest.startswith("/"):
            raise ValueError(f"bind paths must be absolute: {spec!r}")
        return f"{src}:{dest}"
    return str(spec)


class BootedContainer:
    """A booted bookworm container, systemd as PID 1, in its own netns.

    ``BootedContainer(...)`` only prepares; :meth:`start` (or ``with``) builds
    the root tree if needed, creates the network namespace, boots, waits for
    ``systemctl is-system-running`` to be ``running``/``degraded`` and, if
    ``wait_ssh``, for sshd to answer.  :meth:`close` (or leaving ``with``)
    powers off and removes everything.

    :param root: a root tree from :func:`build_rootfs` (built from
        ``extra_packages`` when omitted).
    :param bind_ro, bind: ``(host_path, container_path)`` tuples or raw
        ``SRC[:DEST[:OPTS]]`` strings for ``--bind-ro=`` / ``--bind=``.
        ``bind`` is read-write on the *host* path: prefer ``bind_ro``.
    :param nspawn_args: extra ``systemd-nspawn`` options (before ``-b``).
    :param ip_firewall: let the container's systemd enforce ``IPAddressDeny=``
        and ``IPAddressAllow=``: its BPF firewall needs a pure cgroup v2
        hierarchy (``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``; on a host with hybrid
        cgroups the v1 controllers, memory among them, are then not available
        in the container) and the ``bpf`` system call with ``CAP_BPF``, which
        nspawn withholds by default.
    """

    def __init__(
        self,
        root: Path | str | None = None,
        *,
        extra_packages: Iterable[str] = (),
        bind_ro: Iterable[BindSpec] = (),
        bind: Iterable[BindSpec] = (),
        nspawn_args: Sequence[str] = (),
        ip_firewall: bool = False,
        boot_timeout: float = 90.0,
        wait_ssh: bool = True,
        ssh_key: Path | str | None = None,
    ) -> None:
        global _counter
        self._root_arg = Path(root) if root is not None else None
        self._extra_packages = tuple(extra_packages)
        self._bind_ro = [_bind_arg(b) for b in bind_ro]
        self._bind = [_bind_arg(b) for b in bind]
        self._nspawn_args = list(nspawn_args)
        self._ip_firewall = ip_firewall
        self.boot_timeout = boot_timeout
        self._wait_ssh = wait_ssh
        self._ssh_key = Path(ssh_key) if ssh_key else None
        with _live_lock:
            _counter += 1
            n = _counter
        self.name = f"{NAME_PREFIX}-{os.getpid()}-{n}"
        tag = hashlib.sha1(self.name.encode()).hexdigest()[:8]
        self.netns = self.name
        self.host_ifname = f"rt{tag}h"      # <= 15 chars
        self.container_ifname = f"rt{tag}c"
        self.root: Path | None = None
        self.network: ipaddress.IPv4Network | None = None
        self.host_ip: str | None = None
        self.ip: str | None = None           # the container's address
        self.pid: int | None = None          # container's PID 1, as seen here
        self.nspawn: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.console_log_path: Path | None = None
        self.clean_shutdown: bool | None = None
        self._cgroups: list[Path] = []
        self.timings: dict[str, float] = {}
        self._closed = False

    # -- context manager -------------------------------------------------

    def __enter__(self) -> "BootedContainer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BootedContainer {self.name} ip={self.ip} pid={self.pid}>"

    @property
    def ssh_key(self) -> Path:
        """Private key authorised for root in this container."""
        if self._ssh_key is None:
            self._ssh_key = session_ssh_key()
        return self._ssh_key

    @property
    def running(self) -> bool:
        return self.nspawn is not None and self.nspawn.poll() is None

    # -- lifecycle -------------------------------------------------------

    def start(self) -> "BootedContainer":
        global _atexit_registered, _stale_cleaned
        if self.nspawn is not None:
            raise ContainerError("container already started")
        if os.geteuid() != 0:
            raise ContainerError("booting a container needs root")
        t0 = time.monotonic()
        with _live_lock:
            if not _atexit_registered:
                atexit.register(_atexit_close_all)
                _atexit_registered = True
            _live.add(self)
            do_stale = not _stale_cleaned
            _stale_cleaned = True
        try:
            if do_stale:
                cleanup_stale()
            self.root = self._root_arg or build_rootfs(self._extra_packages)
            self.timings["rootfs"] = time.monotonic() - t0
            self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
            keys = self.workdir / "keys"
            keys.mkdir(mode=0o755)
            pub = Path(str(self.ssh_key) + ".pub").read_text()
            (keys / "authorized_keys").write_text(pub)
            os.chmod(keys / "authorized_keys", 0o644)
            self._setup_network()
            t1 = time.monotonic()
            self._boot(keys)
            self.wait_for_system_running(timeout=max(1.0, self.boot_timeout - (time.monotonic() - t1)))
            self.timings["boot"] = time.monotonic() - t1
            if self._wait_ssh:
                t2 = time.monotonic()
                self.wait_for_ssh(timeout=30)
                self.timings["ssh"] = time.monotonic() - t2
        except BaseException:
            log = self.console_log()
            with contextlib.suppress(Exception):
                self.close()
            if log:
                # keep the console in the error: it is all one has once torn down
                import sys
                print(f"--- console of {self.name} ---\n{log[-6000:]}", file=sys.stderr)
            raise
        return self

    def _setup_network(self) -> None:
        ip = _tool("ip")
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with _flock(RUN_DIR / "net.lock"):
            used = _used_networks()
            candidates = list(ADDRESS_POOL.subnets(new_prefix=30))
            random.shuffle(candidates)
            for net in candidates:
                if not any(net.overlaps(u) for u in used):
                    break
            else:
                raise ContainerError(f"no free /30 left in {ADDRESS_POOL}")
            hosts = list(net.hosts())
            self.network = net
            self.host_ip, self.ip = str(hosts[0]), str(hosts[1])
            prefix = net.prefixlen
            _run([ip, "netns", "add", self.netns])
            _run([ip, "link", "add", self.host_ifname, "type", "veth",
                  "peer", "name", self.container_ifname, "netns", self.netns])
            # The address is assigned under the lock: the next picker sees it.
            _run([ip, "addr", "add", f"{self.host_ip}/{prefix}", "dev", self.host_ifname])
        _run([ip, "link", "set", self.host_ifname, "up"])
        _run([ip, "-n", self.netns, "link", "set", "lo", "up"])
        _run([ip, "-n", self.netns, "addr", "add", f"{self.ip}/{prefix}",
              "dev", self.container_ifname])
        _run([ip, "-n", self.netns, "link", "set", self.container_ifname, "up"])
        # Deliberately no default route: the container reaches the host end only.

    def _nspawn_argv(self, keys: Path) -> list[str]:
        argv = [
            _tool("systemd-nspawn"), "-q", "-D", str(self.root), "-M", self.name,
            "--register=no", "--keep-unit", "--console=pipe",
            "--link-journal=no", "--resolv-conf=off", "--timezone=off",
            "--volatile=overlay",
            f"--network-namespace-path=/run/netns/{self.netns}",
            f"--bind-ro={keys}:{AUTHORIZED_KEYS_DIR}",
        ]
        argv += [f"--bind-ro={b}" for b in self._bind_ro]
        argv += [f"--bind={b}" for b in self._bind]
        if self._ip_firewall:
            argv += ["--system-call-filter=bpf", "--capability=CAP_BPF"]
        argv += self._nspawn_args
        argv += ["-b"]
        return argv

    def _boot(self, keys: Path) -> None:
        assert self.workdir is not None
        self.console_log_path = self.workdir / "console.log"
        argv = self._nspawn_argv(keys)
        env = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "SYSTEMD_LOG_LEVEL": "notice"}
        if self._ip_firewall:
            env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        self._cgroups = _cgroup_dirs(self.name)
        for d in self._cgroups:
            d.mkdir(parents=True, exist_ok=True)
        with open(self.console_log_path, "wb") as log:
            self.nspawn = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
                preexec_fn=_nspawn_preexec([str(d / "cgroup.procs") for d in self._cgroups]),
            )
        deadline = time.monotonic() + 30
        while True:
            if self.nspawn.poll() is not None:
                raise ContainerError(
                    f"systemd-nspawn exited with {self.nspawn.returncode} before booting:\n"
                    f"{self.console_log()[-4000:]}")
            pid = _find_container_init(self.nspawn.pid)
            if pid is not None:
                # wait until the payload has exec'd systemd
                if _proc_status(pid).get("Name") == "systemd":
                    self.pid = pid
                    return
            if time.monotonic() > deadline:
                raise ContainerError("container PID 1 did not appear within 30 s")
            time.sleep(0.01)

    def console_log(self) -> str:
        """What the container wrote to its console so far."""
        if self.console_log_path and self.console_log_path.exists():
            return self.console_log_path.read_text(errors="replace")
        return ""

    def wait_for_system_running(self, timeout: float = 60.0) -> str:
        """Wait for boot to finish; return ``running`` or ``degraded``.

        Raises :class:`ContainerError` on any other final state or timeout
        (the message lists failed units).
        """
        deadline = time.monotonic() + timeout
        state = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.running:
                raise ContainerError(f"container exited during boot:\n{self.console_log()[-4000:]}")
            try:
                proc = self.exec(["systemctl", "is-system-running", "--wait"],
                                 check=False, timeout=max(0.5, left))
            except subprocess.TimeoutExpired:
                break
            state = proc.stdout.strip()
            if state in ("running", "degraded"):
                return state
            if state in ("maintenance", "stopping"):
                break
            # Still starting: "offline" (PID 1 has not created /run/systemd/system
            # yet), no bus yet ("Failed to connect...", empty) or "initializing".
            time.sleep(0.02)
        failed = journal = ""
        if self.running:
            with contextlib.suppress(Exception):
                failed = self.exec(["systemctl", "--failed", "--no-legend"], check=False,
                                   timeout=10).stdout
                journal = self.exec(["journalctl", "-b", "--no-pager", "-n", "60"], check=False,
                                    timeout=10).stdout
        raise ContainerError(f"system did not reach running/degraded (state {state!r}) in "
                             f"{timeout:.0f} s; failed units:\n{failed}\n"
                             f"--- journal ---\n{journal}")

    def wait_for_ssh(self, timeout: float = 30.0) -> None:
        """Wait until sshd on :attr:`ip` port 22 sends its banner."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.ip, 22), timeout=2) as s:
                    s.settimeout(2)
                    if s.recv(4).startswith(b"SSH-"):
                        return
            except OSError as e:
                last = e
            time.sleep(0.02)
        raise ContainerError(f"sshd on {self.ip}:22 did not answer within {timeout} s: {last}")

    # -- running things inside ---------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        timeout: float | None = 60.0,
        input: str | bytes | None = None,
        env: Mapping[str, str] | None = None,
        text: bool = True,
    ) -> subprocess.CompletedProcess:
        """Run ``argv`` in all the container's namespaces (``nsenter -a``).

        It runs as root with a clean environment (``PATH``, ``LANG``,
        ``HOME``, plus ``env``), outside any unit.  Output is captured;
        ``text=False`` gives bytes.  On timeout the whole process group is
        killed and :class:`subprocess.TimeoutExpired` raised.
        """
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list of arguments, not a string")
        if not self.running or self.pid is None:
            raise ContainerError(f"{self.name} is not running")
        full = [_tool("nsenter"), "-t", str(self.pid), "-a", "-r", "-w", "--", *map(str, argv)]
        cenv = {"PATH": CONTAINER_PATH, "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb"}
        if env:
            cenv.update(env)
        if isinstance(input, str):
            input = input.encode()
        proc = subprocess.Popen(
            full, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cenv, start_new_session=True,
        )
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise subprocess.TimeoutExpired(list(argv), timeout, out, err) from None
        if text:
            out, err = out.decode(errors="replace"), err.decode(errors="replace")
        result = subprocess.CompletedProcess(list(argv), proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise ContainerExecError(proc.returncode, list(argv), out, err)
        return result

    def copy_in(self, src: Path | str, dest: str, *, mode: int | None = None,
                owner: str = "root:root") -> None:
        """Copy a host file or directory tree to ``dest`` in the container.

        ``dest`` is the full target path (like ``cp -a src dest`` into a new
        name); parent directories are created.  Files end up owned by
        ``owner`` (``user:group`` as known in the container).  It goes
        through ``tar`` in the container, so container symlinks can never
        redirect the write onto this machine.
        """
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(src)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            tf.add(str(src), arcname=Path(dest).name, recursive=True)
        self._untar(buf.getvalue(), dest, mode=mode, owner=owner)

    def write_file(self, dest: str, content: str | bytes, *, mode: int = 0o644,
                   owner: str = "root:root") -> None:
        """Create or replace the file ``dest`` in the container."""
        data = content.encode() if isinstance(content, str) else content
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            info = tarfile.TarInfo(Path(dest).name)
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tf.addfile(info, io.BytesIO(data))
        self._untar(buf.getvalue(), dest, mode=mode, owner=owner)

    def read_file(self, path: str) -> bytes:
        """Contents of a file in the container."""
        return self.exec(["cat", "--", path], text=False).stdout

    def _untar(self, data: bytes, dest: str, *, mode: int | None, owner: str) -> None:
        if not dest.startswith("/") or dest.rstrip("/") in ("", "/"):
            raise ValueError(f"dest must be an absolute path below /: {dest!r}")
        dest = dest.rstrip("/")
        parent = os.path.dirname(dest)
        self.exec(["mkdir", "-p", "--", parent])
        self.exec(["tar", "-C", parent, "--no-same-owner", "--overwrite", "-xf", "-"], input=data)
        if owner and owner != "root:root":
            self.exec(["chown", "-R", "--", owner, dest])
        if mode is not None:
            self.exec(["chmod", f"{mode:o}", "--", dest])

    # -- SSH -------------------------------------------------------------

    def ssh_argv(self, *remote: str, user: str = "root") -> list[str]:
        """``ssh`` client argv (OpenSSH) to run ``remote`` in the container."""
        return [
            "ssh", "-i", str(self.ssh_key), "-F", "/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            f"{user}@{self.ip}", *remote,
        ]

    def ssh_connect_kwargs(self, user: str = "root") -> dict:
        """Keyword arguments for ``paramiko.SSHClient.connect``."""
        return {"hostname": self.ip, "port": 22, "username": user,
                "key_filename": str(self.ssh_key), "look_for_keys": False,
                "allow_agent": False, "timeout": 10, "banner_timeout": 10,
                "auth_timeout": 10}

    def paramiko_client(self, user: str = "root"):
        """A connected ``paramiko.SSHClient`` (caller closes it)."""
        import paramiko  # test dependency, imported only when used

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(**self.ssh_connect_kwargs(user))
        return client

    # -- teardown ----------------------------------------------------------

    def poweroff(self, timeout: float = 30.0) -> bool:
        """Power the container off; return True if it shut down cleanly.

        ``systemctl poweroff`` inside, then SIGTERM to nspawn (which sends
        SIGRTMIN+3 to PID 1), then SIGKILL to PID 1 and nspawn.  The network
        namespace is removed too.  Idempotent.
        """
        try:
            if self.nspawn is not None and self.nspawn.poll() is None:
                clean = False
                queued = False
                with contextlib.suppress(Exception):
                    queued = self.exec(["systemctl", "poweroff", "--no-block"], check=False,
                                       timeout=10).returncode == 0
                if queued:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.nspawn.wait(timeout=timeout)
                if self.nspawn.poll() is None:
                    # nspawn turns SIGTERM into SIGRTMIN+3 for PID 1: an orderly
                    # shutdown too (e.g. when systemctl could not reach PID 1 yet)
                    with contextlib.suppress(ProcessLookupError):
                        self.nspawn.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.nspawn.wait(timeout=timeout)
                clean = self.nspawn.poll() == 0
                if self.nspawn.poll() is None:
                    self._kill()
                if self.clean_shutdown is None:
                    self.clean_shutdown = clean
            if self._init_alive():
                # nspawn died (e.g. killed from outside) and left PID 1 orphaned
                self._kill()
        finally:
            self._teardown_network()
            for d in self._cgroups:
                _remove_cgroup_tree(d)
            if not self.running:
                _remove_propagate_dir(self.name)
        return bool(self.clean_shutdown)

    def _init_alive(self) -> bool:
        """Is our container's PID 1 still there (and not a reused pid)?"""
        if not self.pid:
            return False
        st = _proc_status(self.pid)
        if not st or st.get("NSpid", "").split()[-1:] != ["1"]:
            return False
        if st.get("State", "").startswith(("Z", "X")):  # dead, not reaped yet
            return False
        try:
            with open(f"/proc/{self.pid}/cgroup") as f:
                return f"/{self.name}/" in f.read()
        except OSError:
            return False

    def _kill(self) -> None:
        """SIGKILL the container's PID 1 (which ends its PID namespace) and nspawn."""
        assert self.nspawn is not None
        if self._init_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.nspawn.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.nspawn.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.nspawn.wait(timeout=10)
        deadline = time.monotonic() + 10
        while self._init_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.clean_shutdown = False

    def _teardown_network(self) -> None:
        _delete_netns(self.netns)
        deadline = time.monotonic() + 5
        while _link_exists(self.host_ifname) and time.monotonic() < deadline:
            time.sleep(0.02)   # the veth goes with the namespace, asynchronously
        if _link_exists(self.host_ifname):
            _run([_tool("ip"), "link", "delete", self.host_ifname], check=False)

    def close(self) -> None:
        """Power off (if running), remove namespace, veth and temporary files."""
        if self._closed:
            return
        try:
            if self.nspawn is not None:
                self.poweroff()
            else:
                self._teardown_network()
        finally:
            self._closed = True
            with _live_lock:
                _live.discard(self)
            if self.workdir is not None and not os.environ.get("RUNAS_AGENT_TEST_KEEP"):
                shutil.rmtree(self.workdir, ignore_errors=True)
