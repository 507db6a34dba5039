"""The shipped artefacts end to end: packaging/build, the .deb in a booted Debian container
configured by the Ansible role over SSH against a local Identity Store endpoint, testinfra checks,
image-clean, an upgrade that keeps the operator's configuration, removal and purge that keep the
accounts; the .rpm built and inspected; the role linted on the production profile.

The container tests run in file order on one container (install, configure, check, clean, upgrade,
remove): each step starts from the state the previous one left, as on a real host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.hosts.container import BootedContainer
from tests.hosts.fixtures import require_container_support

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "agent/runas_agent/samples/directory.json"
OLD, NEW = "0.1.0", "0.1.1"
REGION = "eu-west-1"
#: Debian packages the .deb depends on beyond the harness's base tree, python3-apt for Ansible's apt
#: module (cloud images have it; the container has no network to fetch it), and rpm, to run the .rpm's
#: scriptlets with rpm's own calling conventions (no RPM-based system can be booted here).
EXTRA_PACKAGES = ("python3-yaml", "python3-psutil", "python3-apt", "rpm")
MESSAGE_SYNC = "0e6032291cf94883be9c2a9b28aa4889"
MESSAGE_RELOAD = "5a92e7e8eb604a3199c154af424f3c59"
#: Stands in for a proxy URL with credentials: what only root may read, quoted and escaped as the
#: service must see it.
PROXY_VALUE = 'http://agent:p@ss"w$rd`%\\x@10.0.0.1:3128'


def _tool(name: str) -> str:
    for candidate in (Path(sys.executable).parent / name, shutil.which(name)):
        if candidate and os.access(str(candidate), os.X_OK):
            return str(candidate)
    pytest.fail(f"{name} is not installed (pip install -e '.[test]')", pytrace=False)


def _run(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
                          **kwargs)


# -- packages ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> dict[str, Path]:
    """dist of two builds: OLD (deb and rpm) and NEW (deb), the version set through the environment."""
    out = tmp_path_factory.mktemp("dist")
    built = {}
    for version, formats in ((OLD, "deb,rpm"), (NEW, "deb,rpm")):
        env = {**os.environ, "RUNAS_AGENT_VERSION": version}
        proc = _run([sys.executable, REPO / "packaging/build", "--formats", formats, "--out", out], env=env,
                    timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        built[f"deb-{version}"] = out / f"runas-agent_{version}-1_all.deb"
        assert built[f"deb-{version}"].is_file(), proc.stdout
        built[f"rpm-{version}"] = out / f"runas-agent-{version}-1.noarch.rpm"
        assert built[f"rpm-{version}"].is_file(), proc.stdout
    built["rpm"] = built[f"rpm-{OLD}"]
    return built


def test_deb_metadata(packages):
    deb = packages[f"deb-{OLD}"]
    info = _run(["dpkg-deb", "--field", deb, "Version", "Architecture", "Depends"]).stdout
    assert f"Version: {OLD}-1" in info and "Architecture: all" in info
    for dep in ("python3 (>= 3.10)", "python3-systemd", "python3-yaml", "python3-psutil", "python3-cryptography",
                "sudo", "passwd"):
        assert dep in info
    conffiles = _run(["dpkg-deb", "--info", deb, "conffiles"]).stdout.split()
    assert conffiles == ["/etc/runas-agent/config.yaml"]
    assert _run(["dpkg-deb", "--info", deb, "triggers"]).stdout.split() == ["interest-noawait", "/usr/bin/python3"]
    listing = _run(["dpkg-deb", "--contents", deb]).stdout
    assert "./lib/systemd/system/runas-agent.service" in listing
    assert re.search(r"^-rwxr-xr-x root/root .* \./usr/bin/runas-agent$", listing, re.M), listing
    assert re.search(r"^-rw-r----- root/root .* \./etc/runas-agent/config.yaml$", listing, re.M), listing
    for path in ("./usr/share/man/man8/runas-agent.8.gz", "./usr/share/doc/runas-agent/copyright",
                 "./usr/share/doc/runas-agent/changelog.Debian.gz", "./usr/share/lintian/overrides/runas-agent"):
        assert path in listing, path
    wheels = re.findall(r"usr/lib/runas-agent/wheels/(\S+\.whl)", listing)
    assert f"runas_agent-{OLD}-py3-none-any.whl" in wheels
    assert all(w.endswith("-none-any.whl") for w in wheels), wheels
    # Debian and Ubuntu run Python >= 3.10: only the newest boto3/botocore are carried.
    assert any(w.startswith("botocore-1.43.") for w in wheels) and not any(w.startswith("botocore-1.42.") for w in wheels)


def test_rpm_inspected(packages):
    rpm = packages["rpm"]
    if not shutil.which("rpm"):
        pytest.fail("rpm is not installed (apt-get install rpm; dev/setup does)", pytrace=False)
    query = lambda *args: _run(["rpm", "-qp", *args, rpm])
    assert query("--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}").stdout == f"runas-agent {OLD} 1 noarch"

    files = query("-l").stdout.split()
    for path in ("/usr/bin/runas-agent", "/usr/lib/systemd/system/runas-agent.service",
                 "/etc/runas-agent/config.yaml", "/usr/share/runas-agent/directory.json",
                 f"/usr/lib/runas-agent/wheels/runas_agent-{OLD}-py3-none-any.whl",
                 "/usr/lib/runas-agent/wheels/requirements.txt"):
        assert path in files, path
    assert not any(p.startswith("/lib/") for p in files)
    wheels = [p.rsplit("/", 1)[1] for p in files if p.endswith(".whl")]
    # RHEL 9 and Amazon Linux 2023 run Python 3.9: botocore 1.42 for them, 1.43 for newer Pythons.
    assert any(w.startswith("botocore-1.42.") for w in wheels) and any(w.startswith("botocore-1.43.") for w in wheels)
    assert any(w.startswith("urllib3-1.26.") for w in wheels)

    flags = dict(line.split(" ", 1)[::-1] for line in
                 query("--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\n]").stdout.splitlines() if " " in line)
    assert set(flags["/etc/runas-agent/config.yaml"]) >= {"c", "n"}, "config.yaml must be %config(noreplace)"
    assert query("--configfiles").stdout.split() == ["/etc/runas-agent/config.yaml"]

    requires = query("-R").stdout
    for dep in ("python3 >= 3.9", "python3-systemd", "python3-pyyaml", "python3-psutil", "python3-cryptography",
                "shadow-utils", "sudo"):
        assert dep in requires, dep

    scripts = query("--scripts").stdout
    post = scripts.split("postinstall scriptlet", 1)[1].split("scriptlet (using", 1)[0]
    assert "/usr/lib/runas-agent/build-venv" in post
    code = "\n".join(line for line in post.splitlines() if not line.lstrip().startswith("#"))
    assert "try-restart" in code and "enable" not in code, "the package must never enable the service"
    preun = scripts.split("preuninstall scriptlet", 1)[1].split("scriptlet (using", 1)[0]
    assert "-eq 0" in preun and "disable --now" in preun
    postun = scripts.split("postuninstall scriptlet", 1)[1]
    assert "userdel" not in postun and "ledger" in postun

    assert query("--qf", "[%{FILEMODES:perms} %{FILENAMES}\n]").stdout.count("-rw-r----- /etc/runas-agent/config.yaml") == 1
    assert query("-L").stdout.split() == ["/usr/share/licenses/runas-agent/LICENSE"]
    assert "/usr/share/man/man8/runas-agent.8.gz" in query("-d").stdout.split()
    changelog = query("--changelog").stdout
    assert f"- {OLD}-1" in changelog.splitlines()[0], changelog


def _lint_findings(output: str) -> list[str]:
    """Errors and warnings (not infos, experimental tags or overridden ones), and overrides that no
    longer match anything: every suppressed tag must still be needed."""
    return [line for line in output.splitlines()
            if re.match(r"^(\S+: )?(E|W): ", line)
            or any(tag in line for tag in ("unused-override", "mismatched-override", "unused-rpmlintrc-filter"))]


def test_lintian_is_clean(packages):
    """lintian --pedantic: no error or warning left but those the package's own overrides give a
    reason for (/usr/share/lintian/overrides/runas-agent)."""
    if not shutil.which("lintian"):
        pytest.fail("lintian is not installed (apt-get install lintian; dev/setup does)", pytrace=False)
    for deb in (packages[f"deb-{OLD}"], packages[f"deb-{NEW}"]):
        proc = _run(["lintian", "--pedantic", "-I", "-E", "--show-overrides", deb], timeout=300)
        assert "O: runas-agent:" in proc.stdout, proc.stdout + proc.stderr   # the overrides were read
        findings = _lint_findings(proc.stdout)
        if deb == packages[f"deb-{NEW}"]:
            # A development build's changelog has two entries: the override for the first upload's
            # (released OLD is checked for it) does not apply to it.
            findings = [f for f in findings if "unused-override initial-upload-closes-no-bugs" not in f]
        assert findings == [], proc.stdout + proc.stderr


def test_rpmlint_is_clean(packages):
    """rpmlint: no error or warning left but those packaging/runas-agent.rpmlintrc gives a reason for."""
    if not shutil.which("rpmlint"):
        pytest.fail("rpmlint is not installed (apt-get install rpmlint; dev/setup does)", pytrace=False)
    rc = REPO / "packaging/runas-agent.rpmlintrc"
    for rpm in (packages[f"rpm-{OLD}"], packages[f"rpm-{NEW}"]):
        proc = _run(["rpmlint", "-r", rc, rpm], timeout=300, env={**os.environ, "LC_ALL": "C.UTF-8"})
        assert re.search(r"0 errors, 0 warnings", proc.stdout), proc.stdout + proc.stderr
        assert _lint_findings(proc.stdout) == [], proc.stdout + proc.stderr
    for line in rc.read_text().splitlines():
        if line.startswith("addFilter"):
            previous = rc.read_text().splitlines()[rc.read_text().splitlines().index(line) - 1]
            assert previous.startswith("# ") and len(previous) > 10, f"no reason above {line}"


def test_copyright_covers_every_shipped_wheel(packages):
    """Every wheel the .deb carries falls under a Files: paragraph of its own (not the catch-all),
    and every licence named has its text."""
    import fnmatch

    deb = packages[f"deb-{OLD}"]
    text = _run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{deb}' | tar -xOf - ./usr/share/doc/runas-agent/copyright"]).stdout
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    paragraphs = [dict(re.findall(r"^(\S[^:\n]*):[ \t]*(.*(?:\n[ \t].*)*)", para, re.M)) for para in text.split("\n\n")]
    globs = [g for para in paragraphs if "Files" in para for g in para["Files"].split() if g != "*"]
    listing = _run(["dpkg-deb", "--contents", deb]).stdout
    wheels = re.findall(r"\./(usr/lib/runas-agent/wheels/\S+\.whl)", listing)
    assert wheels
    for wheel in wheels:
        if f"runas_agent-{OLD}-" in wheel:
            continue
        assert any(fnmatch.fnmatch(wheel, g) for g in globs), f"{wheel} has no Files: paragraph"
    named = {name for para in paragraphs if "Files" in para
             for name in re.split(r"\s+and\s+|\s+or\s+", para["License"].split("\n")[0].strip())}
    texts = {para["License"].split("\n")[0].strip() for para in paragraphs if "Files" not in para and "License" in para}
    assert named <= texts, named - texts


def test_man_page_in_the_packages_is_the_generated_one(packages, tmp_path):
    deb = packages[f"deb-{OLD}"]
    page = _run(["sh", "-c", f"dpkg-deb --fsys-tarfile '{deb}' | tar -xOf - ./usr/share/man/man8/runas-agent.8.gz | gzip -d"]).stdout
    assert page.startswith('.TH "RUNAS-AGENT" "8"') and f"runas-agent {OLD}" in page.splitlines()[0]
    for command in ("plan", "check\\-config", "doctor", "image\\-clean", "sessions watch"):
        assert f'.SS "{command}"' in page, command
    (tmp_path / "runas-agent.8").write_text(page)
    proc = _run(["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", tmp_path / "runas-agent.8"],
                env={**os.environ, "MANROFFSEQ": "", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


# -- the host ----------------------------------------------------------------------------------


class Host:
    """The booted container with the package, the endpoint it reads and the role's inventory."""

    def __init__(self, ct: BootedContainer, workdir: Path, endpoint_url: str, store_id: str):
        self.ct = ct
        self.workdir = workdir
        self.endpoint_url = endpoint_url
        self.store_id = store_id
        self.inventory = workdir / "inventory.ini"
        self.inventory.write_text(
            "[ssm_instances]\n"
            f"target ansible_host={ct.ip} ansible_user=root ansible_ssh_private_key_file={ct.ssh_key} "
            "ansible_python_interpreter=/usr/bin/python3\n")
        self.playbook = workdir / "site.yml"
        self.playbook.write_text(
            "- name: runas-agent\n  hosts: ssm_instances\n  gather_facts: false\n"
            "  roles:\n    - role: runas_agent\n")

    def role_vars(self, package: Path, **extra) -> dict:
        return {
            "runas_agent_package_file": str(package),
            "runas_agent_source": {"type": "identitystore", "region": REGION, "identity_store_id": self.store_id,
                                   "endpoint_url": self.endpoint_url, "max_attempts": 3},
            "runas_agent_run_as_expression": "${path:enterprise.organization}",
            "runas_agent_sudo_rules": [{"run_as": "iret", "commands": ["/usr/bin/journalctl"], "nopasswd": True}],
            "runas_agent_environment": {"AWS_EC2_METADATA_DISABLED": "true", "RUNAS_TEST_PROXY": PROXY_VALUE},
            "runas_agent_run_once": True,
            **extra,
        }

    def play(self, role_vars: dict, *args: str) -> tuple[dict[str, int], str]:
        """ansible-playbook over SSH; returns the recap counts of the host and the output."""
        vars_file = self.workdir / "vars.json"
        vars_file.write_text(json.dumps(role_vars))
        env = {
            **os.environ,
            "ANSIBLE_ROLES_PATH": str(REPO / "ansible/roles"),
            "ANSIBLE_HOME": str(self.workdir / "ansible-home"),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile=/dev/null "
                                "-o StrictHostKeyChecking=no -o LogLevel=ERROR",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }
        env.pop("ANSIBLE_CONFIG", None)
        proc = _run([_tool("ansible-playbook"), "-i", self.inventory, "-e", f"@{vars_file}", *args, self.playbook],
                    env=env, cwd=self.workdir, timeout=600)
        match = re.search(r"^target\s+:\s+(.*)$", proc.stdout, re.MULTILINE)
        assert match, f"no recap (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        recap = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}
        return recap, proc.stdout + proc.stderr

    def sh(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.ct.exec(list(argv), check=check, timeout=300)

    def journal(self, *matches: str, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            out = self.sh("journalctl", "--no-pager", "-o", "json", *matches).stdout
            records = [json.loads(line) for line in out.splitlines() if line.strip()]
            if records or time.monotonic() > deadline:
                return records
            time.sleep(0.2)

    def main_pid(self) -> int:
        return int(self.sh("systemctl", "show", "-p", "MainPID", "--value", "runas-agent").stdout.strip())


@pytest.fixture(scope="module")
def host(packages, tmp_path_factory):
    require_container_support()
    workdir = tmp_path_factory.mktemp("role")
    with BootedContainer(extra_packages=EXTRA_PACKAGES) as ct:
        # The local Identity Store, on this machine's end of the container's veth.
        endpoint = subprocess.Popen(
            [sys.executable, "-m", "tests.endpoint", "--host", ct.host_ip, "--port", "0", "--region", REGION,
             "--seed", str(SAMPLE)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        try:
            url = endpoint.stdout.readline().strip()
            assert url.startswith("http://"), endpoint.stderr.read() if endpoint.poll() is not None else url
            store_id = json.loads(SAMPLE.read_text())["IdentityStoreId"]
            # What an instance role provides on EC2: credentials the SDK finds by itself.
            ct.write_file("/root/.aws/credentials",
                          "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"
                          "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", mode=0o600)
            yield Host(ct, workdir, url, store_id)
        finally:
            endpoint.terminate()
            try:
                endpoint.wait(timeout=10)
            except subprocess.TimeoutExpired:
                endpoint.kill()
                endpoint.wait()


# -- install and configure ---------------------------------------------------------------------


@pytest.mark.container
def test_preflight_refuses_bad_options_before_touching_the_host(host, packages):
    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"], runas_agent_run_as_expression="userName"))
    assert recap["failed"] == 1 and recap["changed"] == 0, out
    assert "runas_agent_run_as_expression must be exactly the SSMSessionRunAs value" in out, out
    recap, out = host.play(host.role_vars(packages["rpm"]))
    assert recap["failed"] == 1 and "is not a .deb package" in out, out
    assert host.sh("test", "-e", "/var/cache/runas-agent", check=False).returncode == 1


@pytest.mark.container
def test_check_mode_on_a_fresh_host_reports_and_changes_nothing(host, packages):
    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"]), "--check")
    assert recap["failed"] == 0 and recap["unreachable"] == 0, out
    assert recap["changed"] > 0, out
    assert host.sh("dpkg-query", "-W", "runas-agent", check=False).returncode != 0
    for absent in ("/var/cache/runas-agent", "/usr/bin/runas-agent", "/etc/runas-agent"):
        assert host.sh("test", "-e", absent, check=False).returncode == 1, absent


@pytest.mark.container
def test_role_installs_configures_and_starts(host, packages):
    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"]))
    assert recap["failed"] == 0 and recap["unreachable"] == 0, out
    assert recap["changed"] > 0, out

    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    assert host.sh("systemctl", "is-enabled", "runas-agent").stdout.strip() == "enabled"
    assert host.sh("runas-agent", "--version").stdout.strip() == f"runas-agent {OLD}"
    assert host.sh("test", "-e", "/root/.cache/pip", check=False).returncode == 1, "the install left a pip cache"
    iret = host.sh("id", "iret").stdout
    assert re.match(r"uid=1\d{9}\(iret\) gid=1\d{9}\(iret\)", iret), iret
    host.sh("id", "acme")
    # Identities that can have no account are skipped, never created under another name.
    for absent in ("IRET, Inc.", "frank"):
        assert host.sh("id", absent, check=False).returncode != 0
    # The --once run by the role found the daemon's first sync done: its report says so.
    assert 'runas-agent --once: {\\"actions\\": 0,' in out, out


@pytest.mark.container
def test_second_run_changes_nothing(host, packages):
    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"]))
    assert recap["failed"] == 0, out
    assert recap["changed"] == 0, out


@pytest.mark.container
def test_check_mode_on_a_configured_host_changes_nothing(host, packages):
    pid = host.main_pid()
    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"]), "--check", "--diff")
    assert recap["failed"] == 0 and recap["changed"] == 0, out
    # ...and check mode with a different expression reports the configuration change, without making it.
    changed_vars = host.role_vars(packages[f"deb-{OLD}"], runas_agent_run_as_expression="${path:userName}")
    recap, out = host.play(changed_vars, "--check", "--diff")
    assert recap["failed"] == 0 and recap["changed"] >= 1, out
    assert "+  expression: ${path:userName}" in out, out
    assert "enterprise.organization" in host.sh("cat", "/etc/runas-agent/config.yaml").stdout
    assert host.main_pid() == pid


@pytest.mark.container
def test_invalid_configuration_never_lands(host, packages):
    before = host.sh("cat", "/etc/runas-agent/config.yaml").stdout
    bad = host.role_vars(packages[f"deb-{OLD}"], runas_agent_daemon={"interval_seconds": 1})
    recap, out = host.play(bad)
    assert recap["failed"] == 1, out
    assert "daemon.interval_seconds: must be at least 10" in out, out
    assert host.sh("cat", "/etc/runas-agent/config.yaml").stdout == before
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"


@pytest.mark.container
def test_a_changed_configuration_is_applied_by_a_reload(host, packages):
    """A fleet snapshot as the source (runas_agent_directory_file), then back to the Identity Store:
    each change lands through the handler's reload, the service keeps running in the same process."""
    pid = host.main_pid()
    since = host.sh("date", "+%Y-%m-%d %H:%M:%S").stdout.strip()
    file_vars = host.role_vars(packages[f"deb-{OLD}"],
                               runas_agent_source={"type": "file", "path": "/etc/runas-agent/directory.json"},
                               runas_agent_directory_file=str(SAMPLE))
    recap, out = host.play(file_vars)
    assert recap["failed"] == 0 and recap["changed"] >= 3, out   # document, config, reload
    assert "RUNNING HANDLER [runas_agent : Apply runas-agent changes]" in out
    assert host.sh("stat", "-c", "%a %U", "/etc/runas-agent/directory.json").stdout.split() == ["640", "root"]
    assert "type: file" in host.sh("cat", "/etc/runas-agent/config.yaml").stdout
    assert host.main_pid() == pid
    reloads = host.journal(f"MESSAGE_ID={MESSAGE_RELOAD}", "--since", since)
    assert [r["RELOAD_RESULT"] for r in reloads] == ["ok"], reloads
    syncs = host.journal(f"MESSAGE_ID={MESSAGE_SYNC}", "SYNC_SOURCE=file /etc/runas-agent/directory.json",
                         "--since", since)
    assert syncs and syncs[-1]["SYNC_RESULT"] in ("ok", "partial"), syncs
    # heidi's organization gets its account from the sample directory.
    host.sh("id", "globex")

    recap, out = host.play(host.role_vars(packages[f"deb-{OLD}"]))
    assert recap["failed"] == 0 and recap["changed"] >= 1, out
    assert f"endpoint_url: {host.endpoint_url}" in host.sh("cat", "/etc/runas-agent/config.yaml").stdout
    assert host.main_pid() == pid


@pytest.mark.container
def test_a_new_python3_rebuilds_the_venv(host):
    """dpkg's file trigger on /usr/bin/python3, as when a release upgrade replaces python3."""
    before = host.sh("readlink", "/usr/lib/runas-agent/venv").stdout.strip()
    pid = host.main_pid()
    host.sh("dpkg-trigger", "--by-package=python3", "/usr/bin/python3")
    out = host.sh("dpkg", "--triggers-only", "--pending").stdout
    assert "Processing triggers for runas-agent" in out, out
    after = host.sh("readlink", "/usr/lib/runas-agent/venv").stdout.strip()
    assert after != before and host.sh("test", "-e", f"/usr/lib/runas-agent/{before}", check=False).returncode == 1
    assert host.sh("runas-agent", "--version").returncode == 0
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    assert host.main_pid() != pid


@pytest.mark.container
@pytest.mark.filterwarnings("ignore:Unknown ssh-ed25519 host key")
def test_testinfra_users_sudoers_unit_and_journal(host):
    testinfra = pytest.importorskip("testinfra")
    th = testinfra.get_host(f"paramiko://root@{host.ct.ip}", ssh_identity_file=str(host.ct.ssh_key))

    iret = th.user("iret")
    assert iret.exists and 1_000_000_000 <= iret.uid <= 1_799_999_999 and iret.gid == iret.uid
    assert iret.home == "/home/iret" and th.file("/home/iret").is_directory
    assert th.file("/home/iret").user == "iret"
    assert iret.shell == "/bin/bash"
    assert not th.user("ssm-user").exists

    drop_ins = th.run("ls /etc/sudoers.d").stdout.split()
    mine = [d for d in drop_ins if d.startswith("runas-agent-iret-")]
    assert len(mine) == 1 and "." not in mine[0], drop_ins
    f = th.file(f"/etc/sudoers.d/{mine[0]}")
    assert f.user == "root" and f.group == "root" and f.mode == 0o440
    assert "NOPASSWD: /usr/bin/journalctl" in th.run("sudo -l -U iret").stdout
    assert th.run("visudo -c").rc == 0
    assert not any(d.startswith("runas-agent-acme-") for d in drop_ins), "acme has no sudo rule"

    service = th.service("runas-agent")
    assert service.is_running and service.is_enabled
    props = dict(line.split("=", 1) for line in th.check_output(
        "systemctl show runas-agent -p Type -p Result -p ProtectSystem -p NoNewPrivileges -p Environment "
        "-p WatchdogUSec -p FragmentPath -p DropInPaths -p ExecMainStatus -p EnvironmentFiles -p MainPID")
        .splitlines())
    assert props["Type"] == "notify" and props["Result"] == "success"
    assert props["ProtectSystem"] == "strict" and props["NoNewPrivileges"] == "yes"
    assert props["WatchdogUSec"] != "0" and props["WatchdogUSec"] != "infinity"
    assert props["FragmentPath"] == "/lib/systemd/system/runas-agent.service"
    # The environment's values are in a file only root reads, and not in the unit's properties
    # that any user can query; the service sees them exactly.
    assert "RUNAS_TEST_PROXY" not in props["Environment"] and "p@ss" not in props["Environment"]
    assert props["EnvironmentFiles"].startswith("/etc/runas-agent/environment ")
    assert props["DropInPaths"].endswith("runas-agent.service.d/environment.conf")
    envfile = th.file("/etc/runas-agent/environment")
    assert envfile.mode == 0o600 and envfile.user == "root"
    assert "p@ss" not in th.file(props["DropInPaths"]).content_string
    environ = th.check_output(f"tr '\\0' '\\n' < /proc/{props['MainPID']}/environ").splitlines()
    assert f"RUNAS_TEST_PROXY={PROXY_VALUE}" in environ and "AWS_EC2_METADATA_DISABLED=true" in environ

    records = [json.loads(line) for line in th.check_output(
        f"journalctl -o json --no-pager _SYSTEMD_UNIT=runas-agent.service MESSAGE_ID={MESSAGE_SYNC}").splitlines()]
    assert records, "no sync record in the journal"
    first = records[0]
    assert first["SYNC_RESULT"] == "partial", first      # the sample has identities that must be skipped
    assert int(first["SYNC_CREATED"]) >= 2 and int(first["SYNC_FAILED"]) == 0
    assert first["SYNC_SOURCE"] == f"identitystore {host.store_id} in {REGION}"
    assert th.file("/etc/runas-agent/config.yaml").mode == 0o640


# -- image-clean -------------------------------------------------------------------------------


#: Stands in for the SSM agent: at its start it records whether an account created by the first
#: sync of the instance already resolves (as `id` is what the SSM agent runs for Run As).
FAKE_SSM_AGENT = """[Unit]
Description=stand-in for the SSM agent
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'if id newco >/dev/null 2>&1; then echo present; else echo missing; fi > /run/fake-ssm-agent'
[Install]
WantedBy=multi-user.target
"""


@pytest.mark.container
def test_image_clean_then_first_boot_syncs_before_the_ssm_agent_starts(host):
    host.ct.write_file("/etc/systemd/system/amazon-ssm-agent.service", FAKE_SSM_AGENT)
    host.sh("systemctl", "daemon-reload")
    host.sh("systemctl", "enable", "amazon-ssm-agent.service")
    assert host.sh("test", "-f", "/var/lib/runas-agent/directory.json", check=False).returncode == 0

    report = json.loads(host.sh("runas-agent", "image-clean", "--json").stdout)
    assert report["stopped"] is True and report["warnings"] == []
    assert {i["path"] for i in report["removed"]} >= {"/var/lib/runas-agent/directory.json"}
    assert {i["path"] for i in report["kept"]} >= {"/var/lib/runas-agent/ledger.json"}
    assert host.sh("systemctl", "is-active", "runas-agent", check=False).stdout.strip() == "inactive"
    assert host.sh("systemctl", "is-enabled", "runas-agent").stdout.strip() == "enabled"
    assert host.sh("test", "-e", "/var/lib/runas-agent/directory.json", check=False).returncode == 1
    assert host.sh("test", "-f", "/var/lib/runas-agent/ledger.json", check=False).returncode == 0
    host.sh("id", "iret")   # baked accounts stay in the image

    # The directory moves on after the image was built: a new organization joins.
    document = json.loads(SAMPLE.read_text())
    newcomer = json.loads(json.dumps(document["Users"][0]))
    newcomer.update(UserId="9067000099-00000000-0000-0000-0000-00000000beef", UserName="nina@example.com",
                    DisplayName="Nina Newco", Emails=[{"Value": "nina@example.com", "Type": "work", "Primary": True}],
                    Extensions={"aws:identitystore:enterprise": {"organization": "newco"}})
    document["Users"].append(newcomer)
    request = urllib.request.Request(f"{host.endpoint_url}/_endpoint/seed", data=json.dumps(document).encode(),
                                     method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["IdentityStoreId"] == host.store_id
    assert host.sh("id", "newco", check=False).returncode != 0

    # Boot: multi-user.target starts both enabled units in one transaction, as at boot.
    host.sh("systemctl", "start", "multi-user.target")
    assert host.sh("cat", "/run/fake-ssm-agent").stdout.strip() == "present", \
        "the SSM agent started before the first sync had created the accounts"
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    assert host.sh("test", "-f", "/var/lib/runas-agent/directory.json", check=False).returncode == 0
    status = host.sh("systemctl", "show", "-p", "StatusText", "--value", "runas-agent").stdout
    assert status.startswith("last sync:") and "1 created" in status, status


# -- upgrade and removal -----------------------------------------------------------------------


@pytest.mark.container
def test_upgrade_keeps_the_operators_config(host, packages):
    config = "/etc/runas-agent/config.yaml"
    edited = host.sh("cat", config).stdout + "# operator: raised the interval for this host\n"
    edited = re.sub(r"(?m)^daemon: \{\}$", "daemon:\n  interval_seconds: 1800", edited)
    assert "interval_seconds: 1800" in edited
    host.ct.write_file(config, edited, mode=0o640)
    host.sh("runas-agent", "check-config")
    old_venv = host.sh("readlink", "/usr/lib/runas-agent/venv").stdout.strip()
    old_pid = host.main_pid()

    host.ct.copy_in(packages[f"deb-{NEW}"], f"/root/runas-agent_{NEW}-1_all.deb")
    upgrade = host.sh("dpkg", "-i", f"/root/runas-agent_{NEW}-1_all.deb")
    assert "Setting up runas-agent" in upgrade.stdout

    assert host.sh("cat", config).stdout == edited
    assert host.sh("test", "-e", config + ".dpkg-dist", check=False).returncode == 1
    assert host.sh("runas-agent", "--version").stdout.strip() == f"runas-agent {NEW}"
    assert host.sh("dpkg-query", "-W", "-f", "${Version}", "runas-agent").stdout == f"{NEW}-1"
    new_venv = host.sh("readlink", "/usr/lib/runas-agent/venv").stdout.strip()
    assert new_venv != old_venv
    assert host.sh("test", "-e", f"/usr/lib/runas-agent/{old_venv}", check=False).returncode == 1
    # The running service was restarted onto the new code, and is still enabled.
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    assert host.main_pid() != old_pid
    cmdline = host.sh("cat", f"/proc/{host.main_pid()}/cmdline").stdout
    assert new_venv in cmdline
    host.sh("id", "iret")


def _repack_with_new_default_config(deb: Path, version: str, out: Path) -> Path:
    """`deb` as package `version` whose default /etc/runas-agent/config.yaml changed (as a future release's
    may): the case where dpkg would ask the operator which file to keep."""
    tree = out / f"tree-{version}"
    proc = _run(["dpkg-deb", "-R", deb, tree])
    assert proc.returncode == 0, proc.stderr
    conffile = tree / "etc/runas-agent/config.yaml"
    conffile.write_text(conffile.read_text() + "# a line added to the default by a later release\n")
    control = tree / "DEBIAN/control"
    control.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}-1", control.read_text()))
    sums = tree / "DEBIAN/md5sums"
    if sums.exists():
        sums.write_text("".join(
            f"{hashlib.md5((tree / rel).read_bytes()).hexdigest()}  {rel}\n"
            for rel in (line.split(None, 1)[1].strip() for line in sums.read_text().splitlines() if line.strip())))
    target = out / f"runas-agent_{version}-1_all.deb"
    proc = _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "-b", tree, target])
    assert proc.returncode == 0, proc.stderr
    return target


@pytest.mark.container
def test_role_upgrade_never_prompts_and_keeps_the_managed_config(host, packages, tmp_path):
    deb = _repack_with_new_default_config(packages[f"deb-{NEW}"], "0.1.2", tmp_path)
    recap, out = host.play(host.role_vars(deb))
    assert recap["failed"] == 0 and recap["changed"] > 0, out
    assert host.sh("dpkg-query", "-W", "-f", "${Version}", "runas-agent").stdout == "0.1.2-1"
    config = host.sh("cat", "/etc/runas-agent/config.yaml").stdout
    assert "written by the Ansible role runas_agent" in config and "operator:" not in config
    assert "a line added to the default" in host.sh("cat", "/etc/runas-agent/config.yaml.dpkg-dist").stdout
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    recap, out = host.play(host.role_vars(deb))
    assert recap["failed"] == 0 and recap["changed"] == 0, out


@pytest.mark.container
def test_removal_and_purge_keep_accounts_homes_sudoers_and_ledger(host):
    sudoers_before = host.sh("ls", "/etc/sudoers.d").stdout.split()
    passwd_before = host.sh("getent", "passwd", "iret", "acme").stdout

    host.sh("dpkg", "-r", "runas-agent")
    assert host.sh("systemctl", "is-active", "runas-agent", check=False).stdout.strip() == "inactive"
    for gone in ("/usr/lib/runas-agent", "/usr/bin/runas-agent", "/lib/systemd/system/runas-agent.service"):
        assert host.sh("test", "-e", gone, check=False).returncode == 1, gone
    assert host.sh("test", "-f", "/etc/runas-agent/config.yaml", check=False).returncode == 0  # conffile kept

    # Removal keeps the enablement (a reinstall resumes it, as Debian packages do); purge drops it.
    wants = "/etc/systemd/system/multi-user.target.wants/runas-agent.service"
    assert host.sh("test", "-L", wants, check=False).returncode == 0
    host.sh("dpkg", "--purge", "runas-agent")
    assert host.sh("test", "-L", wants, check=False).returncode == 1
    assert host.sh("test", "-e", "/etc/runas-agent/config.yaml", check=False).returncode == 1
    assert host.sh("test", "-e", "/var/lib/runas-agent/directory.json", check=False).returncode == 1

    assert host.sh("getent", "passwd", "iret", "acme").stdout == passwd_before
    assert host.sh("test", "-d", "/home/iret", check=False).returncode == 0
    assert host.sh("ls", "/etc/sudoers.d").stdout.split() == sudoers_before
    assert host.sh("test", "-f", "/var/lib/runas-agent/ledger.json", check=False).returncode == 0
    host.sh("visudo", "-c")


@pytest.mark.container
def test_rpm_scriptlets_install_upgrade_and_erase(host, packages):
    """The .rpm's scriptlets run by rpm itself (install: $1=1, upgrade: new %post $1=2 then the old
    %preun/%postun with $1=1, erase: $1=0), in the container the .deb has just left."""
    rpm = ["rpm", "--nodeps", "--force-debian"]   # Debian's rpm: no RPM database of the system's packages
    for version in (OLD, NEW):
        host.ct.copy_in(packages[f"rpm-{version}"], f"/root/runas-agent-{version}-1.noarch.rpm")
    host.sh(*rpm, "-i", f"/root/runas-agent-{OLD}-1.noarch.rpm")
    assert host.sh("runas-agent", "--version").stdout.strip() == f"runas-agent {OLD}"
    assert host.sh("systemctl", "is-enabled", "runas-agent", check=False).stdout.strip() == "disabled"
    assert "/usr/lib/systemd/system/runas-agent.service" in host.sh("rpm", "-ql", "runas-agent").stdout.split()
    assert host.sh("systemctl", "show", "-p", "LoadState", "--value", "runas-agent").stdout.strip() == "loaded"

    config = ("source: {type: file, path: /usr/share/runas-agent/directory.json}\n"
              "run_as: {expression: '${path:enterprise.organization}'}\n"
              "sudo: {rules: [{run_as: iret, commands: [/usr/bin/journalctl], nopasswd: true}]}\n"
              "# operator's configuration\n")
    host.ct.write_file("/etc/runas-agent/config.yaml", config, mode=0o640)
    host.sh("systemctl", "enable", "--now", "runas-agent")
    pid = host.main_pid()

    host.sh(*rpm, "-U", f"/root/runas-agent-{NEW}-1.noarch.rpm")
    # The old package's %preun/%postun ran after the new %post: they must not have undone it.
    assert host.sh("runas-agent", "--version").stdout.strip() == f"runas-agent {NEW}"
    assert host.sh("cat", "/etc/runas-agent/config.yaml").stdout == config
    assert host.sh("systemctl", "is-active", "runas-agent").stdout.strip() == "active"
    assert host.sh("systemctl", "is-enabled", "runas-agent").stdout.strip() == "enabled"
    assert host.main_pid() != pid

    passwd = host.sh("getent", "passwd", "iret", "acme").stdout
    host.sh(*rpm, "-e", "runas-agent")
    assert host.sh("systemctl", "is-active", "runas-agent", check=False).stdout.strip() == "inactive"
    for gone in ("/usr/lib/runas-agent", "/usr/bin/runas-agent", "/usr/lib/systemd/system/runas-agent.service"):
        assert host.sh("test", "-e", gone, check=False).returncode == 1, gone
    assert host.sh("cat", "/etc/runas-agent/config.yaml.rpmsave").stdout == config
    assert host.sh("getent", "passwd", "iret", "acme").stdout == passwd
    assert host.sh("test", "-d", "/home/iret", check=False).returncode == 0
    assert any(d.startswith("runas-agent-iret-") for d in host.sh("ls", "/etc/sudoers.d").stdout.split())
    host.sh("visudo", "-c")


# -- the role's lint ---------------------------------------------------------------------------


def test_role_is_ansible_lint_clean_on_the_production_profile():
    proc = _run([_tool("ansible-lint"), "--profile", "production", "--offline", "ansible/"], cwd=REPO,
                env={**os.environ, "NO_COLOR": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr
