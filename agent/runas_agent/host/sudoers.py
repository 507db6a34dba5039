"""Sudoers drop-ins on the host (host side): read what the sudoers directory holds, and install or
remove drop-ins as render -> `visudo -cf` on a temp file -> atomic install -> `visudo -c` on the whole
tree, putting the previous state back on any failure.

A crash at any point leaves a tree sudo accepts: temp files start with '.', which `#includedir` skips,
and a drop-in only appears under its real name by rename after visudo accepted it.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable

from runas_agent.core import sudoers as core
from runas_agent.core.sudoers import (MODE, Observed, RemoveSsmUserBlanket, RemoveSudoers, SudoAction, SudoLedger,
                                      WriteSudoers)
from runas_agent.errors import AgentError, CommandError
from runas_agent.host import subp
from runas_agent.host.files import dump_json, load_state, read_bytes, write_atomic
from runas_agent.settings import Config, sudo_rules

#: visudo reports problems as `<file>:<line>:<column>: <message>` or `<file>: <message>` (permissions).
_VISUDO_PROBLEM = re.compile(r"^(?P<file>/[^:\n]*):(?:(?P<line>\d+):(?:\d+:)?)?\s*(?P<msg>.*)$", re.M)
#: Key of a visudo failure that names no file: nothing can be attributed, so nothing is written.
UNATTRIBUTED = ""


class SudoersError(AgentError):
    """A drop-in could not be installed or removed; the previous state was put back."""


@dataclass
class SudoOutcome:
    done: list
    failed: list  # (action, message)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SudoersHost:
    #: this many drop-ins or more to write go through install_batch first
    batch_min = 20

    def __init__(self, sudoers_dir: str, state_dir: str, visudo: str = "visudo", run: Callable = subp.run):
        self.dir = sudoers_dir
        self.state_dir = state_dir
        self.visudo = visudo
        self.run = run
        #: the whole tree's problems as the last check after a change found them
        self._last_tree: dict[str, str] | None = None

    # --- reading ---------------------------------------------------------------------------------

    @property
    def ledger_path(self) -> str:
        return os.path.join(self.state_dir, "sudoers.json")

    @property
    def backup_dir(self) -> str:
        return os.path.join(self.state_dir, "sudoers-backup")

    def load_ledger(self) -> SudoLedger:
        return load_state(self.ledger_path, SudoLedger.from_dict, SudoLedger, "which drop-ins the agent owns")

    def save_ledger(self, ledger: SudoLedger) -> bool:
        return write_atomic(self.ledger_path, dump_json(ledger.to_dict()))

    def observe_one(self, name: str) -> Observed | None:
        path = os.path.join(self.dir, name)
        try:
            # O_NONBLOCK: a FIFO under an agent file name must not hang the sync.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except PermissionError:
            raise AgentError(f"cannot read {path}: permission denied (sudoers drop-ins are readable by root only)") from None
        except OSError as exc:
            # A symlink or something else odd under an agent file name: never ours to follow.
            return Observed(f"<unreadable: {exc.strerror}>", 0)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return Observed("<not a regular file>", st.st_mode)
            with os.fdopen(fd, "rb", closefd=False) as handle:
                content = handle.read().decode("utf-8", "surrogateescape")
            return Observed(content, st.st_mode & 0o7777, st.st_uid, st.st_gid)
        finally:
            os.close(fd)

    def observe(self, names: Iterable[str]) -> dict[str, Observed | None]:
        return {name: self.observe_one(name) for name in set(names)}

    # --- checking --------------------------------------------------------------------------------

    def _check(self, *args: str) -> dict[str, str]:
        """Run visudo in check mode: file -> the first problem it reports there (UNATTRIBUTED for a
        failure naming no file). Empty when visudo accepts, warnings included."""
        try:
            result = self.run([self.visudo, "-c", *args])
            ok, text = True, result.stderr
        except CommandError as exc:
            if exc.returncode is None:
                return {UNATTRIBUTED: str(exc)}
            ok, text = False, exc.stderr or ""
        problems: dict[str, str] = {}
        for match in _VISUDO_PROBLEM.finditer(text):
            if not match.group(0).endswith("parsed OK"):
                problems.setdefault(match.group("file"), match.group(0))
        if not ok and not problems:
            problems[UNATTRIBUTED] = text.strip() or f"{self.visudo} -c failed"
        return problems

    def _visudo(self, *args: str) -> str | None:
        problems = self._check(*args)
        return "\n".join(problems.values()) if problems else None

    def _explain(self, action: WriteSudoers, problem: str, path: str) -> str:
        """Name the rule of the policy at the line visudo complains about."""
        for match in _VISUDO_PROBLEM.finditer(problem):
            if os.path.basename(match.group("file")) == os.path.basename(path):
                key = core.rule_at(action.content, int(match.group("line")))
                if key:
                    return f"{key}: {match.group('msg')}"
        return problem.strip().splitlines()[-1] if problem.strip() else problem

    def tree_problems(self) -> dict[str, str]:
        return self._check()

    def _worse(self, baseline: dict[str, str] | None, paths: Iterable[str] = ()) -> str | None:
        """The whole tree's problems that a change to `paths` caused: any problem in those files, or
        in a file that had none before. Problems that were there already (someone else's broken file)
        are not this change's doing and do not block it."""
        after = self._check()
        self._last_tree = after
        if baseline is None:
            baseline = {}
        paths = set(paths)
        new = {f: m for f, m in after.items() if f in paths or f == UNATTRIBUTED or f not in baseline}
        return "\n".join(new.values()) if new else None

    # --- changing --------------------------------------------------------------------------------

    def _temp(self, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> str:
        fd, tmp = tempfile.mkstemp(prefix=core.TEMP_PREFIX, suffix=core.TEMP_SUFFIX, dir=self.dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), mode)
                os.fchown(handle.fileno(), uid, gid)
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            _unlink(tmp)
            raise
        return tmp

    def _put(self, name: str, previous: Observed | None) -> None:
        """Put a file back as it was (absent, or its content, mode and owner)."""
        path = os.path.join(self.dir, name)
        if previous is None:
            _unlink(path)
        else:
            tmp = self._temp(previous.content.encode("utf-8", "surrogateescape"), previous.mode, previous.uid, previous.gid)
            os.replace(tmp, path)
        _fsync_dir(self.dir)

    def install(self, action: WriteSudoers, baseline: dict[str, str] | None = None) -> None:
        path = os.path.join(self.dir, action.file)
        previous = self.observe_one(action.file)
        if previous is not None and not previous.marked:
            raise SudoersError(f"sudo rights of {action.name}: {path} is no longer a runas-agent drop-in; left alone")
        tmp = self._temp(action.content.encode("utf-8"), MODE)
        try:
            problem = self._visudo("-f", tmp)
            if problem:
                raise SudoersError(f"sudo rights of {action.name}: visudo rejected the drop-in, "
                                   f"{self._explain(action, problem, tmp)}; previous state kept")
            os.rename(tmp, path)
        except BaseException:
            _unlink(tmp)
            raise
        _fsync_dir(self.dir)
        problem = self._worse(baseline, {path})
        if problem:
            self._put(action.file, previous)
            raise SudoersError(f"sudo rights of {action.name}: the sudoers tree failed visudo -c with the new "
                               f"drop-in ({self._explain(action, problem, path)}); previous state restored")

    def install_batch(self, actions: list[WriteSudoers], baseline: dict[str, str]) -> bool:
        """Install many drop-ins with two visudo runs instead of two per file: one `visudo -cf` of all
        of them together (drop-ins define no aliases or defaults, so together they are valid exactly
        when each one is), the renames, then one `visudo -c` of the tree. Any failure puts every file
        back as it was and returns False, and the caller installs them one by one, which isolates and
        names the bad one. A crash half-way leaves only drop-ins that passed visudo."""
        previous = {a.file: self.observe_one(a.file) for a in actions}
        if any(p is not None and not p.marked for p in previous.values()):
            return False
        combined = self._temp("".join(a.content for a in actions).encode("utf-8"), MODE)
        try:
            if self._visudo("-f", combined):
                return False
        finally:
            _unlink(combined)
        temps: list[tuple[str, WriteSudoers]] = []
        installed: list[WriteSudoers] = []
        try:
            for action in actions:
                temps.append((self._temp(action.content.encode("utf-8"), MODE), action))
            for tmp, action in temps:
                os.rename(tmp, os.path.join(self.dir, action.file))
                installed.append(action)
            _fsync_dir(self.dir)
            if not self._worse(baseline, {os.path.join(self.dir, a.file) for a in actions}):
                return True
        except OSError:
            pass
        finally:
            for tmp, _ in temps:
                _unlink(tmp)
        for action in installed:
            self._put(action.file, previous[action.file])
        self._last_tree = None
        return False

    def remove_batch(self, actions: list[RemoveSudoers], baseline: dict[str, str]) -> bool:
        """Remove many owned drop-ins with one tree check; on failure put them all back and return
        False (the caller then removes them one by one)."""
        previous = {a.file: self.observe_one(a.file) for a in actions}
        if any(p is not None and not p.marked for p in previous.values()):
            return False
        for action in actions:
            _unlink(os.path.join(self.dir, action.file))
        _fsync_dir(self.dir)
        if UNATTRIBUTED in baseline or not self._worse(baseline):
            return True
        for action in actions:
            if previous[action.file] is not None:
                self._put(action.file, previous[action.file])
        self._last_tree = None
        return False

    def remove(self, action: RemoveSudoers, baseline: dict[str, str] | None = None) -> None:
        previous = self.observe_one(action.file)
        if previous is None:
            return
        if not previous.marked:
            raise SudoersError(f"sudo rights of {action.name}: {os.path.join(self.dir, action.file)} is no longer a "
                               "runas-agent drop-in; left alone")
        self._remove_file(action.name, action.file, previous, baseline)

    def _remove_file(self, account: str, name: str, previous: Observed, baseline: dict[str, str] | None) -> None:
        _unlink(os.path.join(self.dir, name))
        _fsync_dir(self.dir)
        if baseline is not None and UNATTRIBUTED not in baseline:
            problem = self._worse(baseline)
            if problem:
                self._put(name, previous)
                raise SudoersError(f"sudo rights of {account}: the sudoers tree failed visudo -c without "
                                   f"{name} ({problem.strip().splitlines()[-1]}); previous state restored")

    def remove_ssm_blanket(self, action: RemoveSsmUserBlanket, baseline: dict[str, str] | None = None) -> None:
        previous = self.observe_one(action.file)
        if previous is None:
            return
        if not core.is_ssm_blanket(previous.content) or core.backup_name(previous.content) != action.backup:
            raise SudoersError(f"{action.file} changed since the plan was made; left alone")
        data = previous.content.encode("utf-8", "surrogateescape")
        os.makedirs(self.backup_dir, mode=0o700, exist_ok=True)
        backup = os.path.join(self.backup_dir, action.backup)
        if read_bytes(backup) != data:
            write_atomic(backup, data, mode=0o600)
        if read_bytes(backup) != data:
            raise SudoersError(f"{action.file}: backup {backup} could not be verified; not removing it")
        self._remove_file(core.SSM_USER, action.file, previous, baseline)

    def clean_temps(self) -> list[str]:
        """Remove temp files a crashed install left behind (sudo never read them)."""
        removed = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return removed
        for name in names:
            if name.startswith(core.TEMP_PREFIX) and name.endswith(core.TEMP_SUFFIX):
                _unlink(os.path.join(self.dir, name))
                removed.append(name)
        return removed

    # --- one batch -------------------------------------------------------------------------------

    def apply(self, actions: list[SudoAction], blocked_accounts: set[str] = frozenset()) -> SudoOutcome:
        """Apply sudo actions. Writes for `blocked_accounts` (whose account could not be created or
        re-enabled) are not attempted: a rule must never wait for someone else to take the name."""
        outcome = SudoOutcome([], [])
        if not actions:
            return outcome
        if not os.path.isdir(self.dir):
            for action in actions:
                outcome.failed.append((action, f"sudoers directory {self.dir} does not exist"))
            return outcome
        old = self.load_ledger()
        writes = [a for a in actions if isinstance(a, WriteSudoers)]
        intent = dict(old.files)
        intent.update({a.name: a.file for a in writes})
        self.save_ledger(SudoLedger(intent))
        self.clean_temps()
        baseline = self.tree_problems()
        batch = [a for a in actions if isinstance(a, WriteSudoers) and a.name not in blocked_accounts]
        if len(batch) >= self.batch_min and UNATTRIBUTED not in baseline:
            self._last_tree = None
            if self.install_batch(batch, baseline):
                outcome.done.extend(batch)
                batched = {id(a) for a in batch}
                actions = [a for a in actions if id(a) not in batched]
                baseline = self._last_tree if self._last_tree is not None else self.tree_problems()
        removals = [a for a in actions if isinstance(a, RemoveSudoers)]
        if len(removals) >= self.batch_min:
            self._last_tree = None
            if self.remove_batch(removals, baseline):
                outcome.done.extend(removals)
                batched = {id(a) for a in removals}
                actions = [a for a in actions if id(a) not in batched]
                baseline = self._last_tree if self._last_tree is not None else self.tree_problems()
        for action in actions:
            self._last_tree = None
            try:
                if isinstance(action, WriteSudoers):
                    if action.name in blocked_accounts:
                        raise SudoersError(f"sudo rights of {action.name}: not written, the account itself failed")
                    if UNATTRIBUTED in baseline:
                        raise SudoersError(f"sudo rights of {action.name}: not written, visudo -c fails and names no "
                                           f"file, so the new drop-in cannot be checked: {baseline[UNATTRIBUTED].splitlines()[-1]}")
                    self.install(action, baseline)
                elif isinstance(action, RemoveSudoers):
                    # Taking rights away never waits for someone else's broken file.
                    self.remove(action, baseline)
                elif isinstance(action, RemoveSsmUserBlanket):
                    self.remove_ssm_blanket(action, baseline)
            except (SudoersError, CommandError, OSError) as exc:
                outcome.failed.append((action, str(exc)))
                continue
            outcome.done.append(action)
            baseline = self._last_tree if self._last_tree is not None else self.tree_problems()
        # What the agent owns afterwards is what is on disk: failed writes were put back, failed
        # removals are still there, files removed by hand are forgotten.
        self.save_ledger(SudoLedger({a: f for a, f in intent.items() if self.observe_one(f) is not None}))
        return outcome


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- glue for sync -------------------------------------------------------------------------------

def host_for(cfg: Config) -> SudoersHost:
    return SudoersHost(cfg.sudo.sudoers_dir, cfg.state_dir, cfg.sudo.visudo)


def plan_sudo(cfg: Config, desired, directory, result) -> None:
    """Add the sudo actions, skips and warnings to an account plan `result` (core.plan.Plan).
    Only accounts that will be active and owned after the account actions get a drop-in."""
    from runas_agent.core.desired import Skip

    rules = sudo_rules(cfg)
    host = host_for(cfg)
    ledger = host.load_ledger()
    if not rules and not ledger.files and not cfg.sudo.remove_ssm_user_blanket:
        return
    skipped = {s.name for s in result.skips}
    wanted: dict[str, tuple[core.Grantee, list[core.Rule]]] = {}
    for name, account in desired.accounts.items():
        if name in skipped or name not in result.ledger.accounts:
            continue
        grantee = core.Grantee(name, account.kind, tuple(i.user_id for i in account.identities),
                               tuple(i.user_name for i in account.identities))
        wanted[name] = (grantee, core.rules_for(grantee, rules, directory))
    names = set(ledger.files.values())
    names |= {core.file_name(n) for n, (_, r) in wanted.items() if r and not core.name_problem(n)}
    if cfg.sudo.remove_ssm_user_blanket:
        names.add(core.SSM_USER_FILE)
    sudo_plan = core.plan(wanted, host.observe(names), ledger, cfg.sudo.remove_ssm_user_blanket)
    result.actions.extend(sudo_plan.actions)
    result.skips.extend(Skip(s.identity, s.name, s.reason) for s in sudo_plan.skips)
    result.warnings.extend(core.policy_warnings(rules, directory))
    result.warnings.extend(sudo_plan.warnings)


def apply_sudo(cfg: Config, actions: list, outcome) -> None:
    """Apply the sudo actions of a plan after its account actions; results go into `outcome`
    (host.apply.Outcome)."""
    from runas_agent.core.plan import CreateAccount, EnableAccount

    sudo_actions = [a for a in actions if isinstance(a, SudoAction)]
    if not sudo_actions:
        return
    blocked = {a.name for a, _ in outcome.failed if isinstance(a, (CreateAccount, EnableAccount))}
    result = host_for(cfg).apply(sudo_actions, blocked)
    outcome.done.extend(result.done)
    outcome.failed.extend(result.failed)
