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
from typing import Any, Callable, Collection, Iterable, Mapping, Sequence

from runas_agent.core import sudoers as core
from runas_agent.core.action import Action, Outcome
from runas_agent.core.sudoers import MODE, Observed, RemoveSsmUserBlanket, RemoveSudoers, SudoLedger, WriteSudoers
from runas_agent.errors import AgentError, CommandError
from runas_agent.host import subp
from runas_agent.host.files import read_bytes, write_atomic

#: visudo reports problems as `<file>:<line>:<column>: <message>` or `<file>: <message>` (permissions).
_VISUDO_PROBLEM = re.compile(r"^(?P<file>/[^:\n]*):(?:(?P<line>\d+):(?:\d+:)?)?\s*(?P<msg>.*)$", re.M)
#: Key of a visudo failure that names no file: nothing can be attributed, so nothing is written.
UNATTRIBUTED = ""
#: What `visudo -c` says about the whole tree: file -> its first problem (UNATTRIBUTED: names no file).
Tree = dict[str, str]


class SudoersError(AgentError):
    """A drop-in could not be installed or removed; the previous state was put back."""


def check_tree(visudo: str = "visudo", run: Callable[..., Any] | None = None) -> Any:
    """`visudo -c` over the whole tree, as it stands (read only): the finished process, whatever its
    exit status (`returncode`, `stdout`, `stderr`). Raises CommandError when visudo cannot be run."""
    return (run or subp.run)([visudo, "-c"], ok=tuple(range(256)), timeout=30)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_drop_in(directory: str, name: str) -> Observed | None:
    """One file of the sudoers directory, never following a link (None: there is none)."""
    path = os.path.join(directory, name)
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


def read_drop_ins(directory: str, ledger: SudoLedger) -> dict[str, Observed]:
    """Every file a sudo plan can look at: those under the agent's file prefix, those the ledger
    names, and the SSM agent's ssm-user drop-in. Absent files are left out."""
    try:
        names = {n for n in os.listdir(directory) if n.startswith(core.FILE_PREFIX)}
    except FileNotFoundError:
        names = set()
    except PermissionError:
        raise AgentError(f"cannot read {directory}: permission denied (sudoers drop-ins are readable by root "
                         "only)") from None
    names |= set(ledger.files.values()) | {core.SSM_USER_FILE}
    found = {name: read_drop_in(directory, name) for name in sorted(names)}
    return {name: observed for name, observed in found.items() if observed is not None}


class SudoersHost:
    """Applies sudoers actions to one sudoers directory."""

    #: this many drop-ins or more to write (or remove) go through one batch first
    batch_min = 20

    def __init__(self, sudoers_dir: str, state_dir: str, visudo: str = "visudo", run: Callable[..., Any] = subp.run):
        self.dir = sudoers_dir
        self.state_dir = state_dir
        self.visudo = visudo
        self.run = run

    @property
    def backup_dir(self) -> str:
        return os.path.join(self.state_dir, "sudoers-backup")

    def observe_one(self, name: str) -> Observed | None:
        return read_drop_in(self.dir, name)

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

    def tree_problems(self) -> Tree:
        return self._check()

    def _worse(self, baseline: Tree, paths: Iterable[str] = ()) -> tuple[str | None, Tree]:
        """The whole tree's problems that a change to `paths` caused: any problem in those files, or
        in a file that had none before; and the tree as it is now. Problems that were there already
        (someone else's broken file) are not this change's doing and do not block it."""
        after = self._check()
        changed = set(paths)
        new = {f: m for f, m in after.items() if f in changed or f == UNATTRIBUTED or f not in baseline}
        return ("\n".join(new.values()) if new else None), after

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

    def install(self, action: WriteSudoers, baseline: Tree) -> Tree:
        """Install one drop-in; returns the tree as `visudo -c` found it afterwards."""
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
        problem, after = self._worse(baseline, {path})
        if problem:
            self._put(action.file, previous)
            raise SudoersError(f"sudo rights of {action.name}: the sudoers tree failed visudo -c with the new "
                               f"drop-in ({self._explain(action, problem, path)}); previous state restored")
        return after

    def install_batch(self, actions: Sequence[WriteSudoers], baseline: Tree) -> Tree | None:
        """Install many drop-ins with two visudo runs instead of two per file: one `visudo -cf` of all
        of them together (drop-ins define no aliases or defaults, so together they are valid exactly
        when each one is), the renames, then one `visudo -c` of the tree. Returns the tree afterwards;
        any failure puts every file back as it was and returns None, and the caller installs them one
        by one, which isolates and names the bad one. A crash half-way leaves only drop-ins that
        passed visudo. Nothing is tried while visudo fails naming no file."""
        if UNATTRIBUTED in baseline:
            return None
        previous = self._previous(actions)
        if previous is None or not self._accepted_together(actions):
            return None
        installed: list[WriteSudoers] = []
        try:
            self._rename_into_place(actions, installed)
            problem, after = self._worse(baseline, {os.path.join(self.dir, a.file) for a in actions})
            if not problem:
                return after
        except OSError:
            pass
        for action in installed:
            self._put(action.file, previous[action.file])
        return None

    def _previous(self, actions: Sequence[WriteSudoers | RemoveSudoers]) -> dict[str, Observed | None] | None:
        """The files as they are before a batch, or None when one of them is not the agent's."""
        previous = {a.file: self.observe_one(a.file) for a in actions}
        return None if any(p is not None and not p.marked for p in previous.values()) else previous

    def _rename_into_place(self, actions: Sequence[WriteSudoers], installed: list[WriteSudoers]) -> None:
        """Every drop-in to a temp file, then each renamed to its name (listed in `installed`)."""
        temps: list[tuple[str, WriteSudoers]] = []
        try:
            for action in actions:
                temps.append((self._temp(action.content.encode("utf-8"), MODE), action))
            for tmp, action in temps:
                os.rename(tmp, os.path.join(self.dir, action.file))
                installed.append(action)
            _fsync_dir(self.dir)
        finally:
            for tmp, _ in temps:
                _unlink(tmp)

    def _accepted_together(self, actions: Sequence[WriteSudoers]) -> bool:
        combined = self._temp("".join(a.content for a in actions).encode("utf-8"), MODE)
        try:
            return not self._visudo("-f", combined)
        finally:
            _unlink(combined)

    def remove_batch(self, actions: Sequence[RemoveSudoers], baseline: Tree) -> Tree | None:
        """Remove many owned drop-ins with one tree check. Returns the tree afterwards; on failure puts
        them all back and returns None (the caller then removes them one by one)."""
        previous = self._previous(actions)
        if previous is None:
            return None
        for action in actions:
            _unlink(os.path.join(self.dir, action.file))
        _fsync_dir(self.dir)
        if UNATTRIBUTED in baseline:
            return self.tree_problems()
        problem, after = self._worse(baseline)
        if not problem:
            return after
        for action in actions:
            old = previous[action.file]
            if old is not None:
                self._put(action.file, old)
        return None

    def remove(self, action: RemoveSudoers, baseline: Tree) -> Tree:
        """Remove one owned drop-in; returns the tree afterwards."""
        previous = self.observe_one(action.file)
        if previous is None:
            return self.tree_problems()
        if not previous.marked:
            raise SudoersError(f"sudo rights of {action.name}: {os.path.join(self.dir, action.file)} is no longer a "
                               "runas-agent drop-in; left alone")
        return self._remove_file(action.name, action.file, previous, baseline)

    def _remove_file(self, account: str, name: str, previous: Observed, baseline: Tree) -> Tree:
        """Taking rights away never waits for someone else's broken file: while visudo fails naming
        no file, the removal is not checked."""
        _unlink(os.path.join(self.dir, name))
        _fsync_dir(self.dir)
        if UNATTRIBUTED in baseline:
            return self.tree_problems()
        problem, after = self._worse(baseline)
        if problem:
            self._put(name, previous)
            raise SudoersError(f"sudo rights of {account}: the sudoers tree failed visudo -c without "
                               f"{name} ({problem.strip().splitlines()[-1]}); previous state restored")
        return after

    def remove_ssm_blanket(self, action: RemoveSsmUserBlanket, baseline: Tree) -> Tree:
        """Back up ssm-user's blanket drop-in, then remove it; returns the tree afterwards."""
        previous = self.observe_one(action.file)
        if previous is None:
            return self.tree_problems()
        if not core.is_ssm_blanket(previous.content) or core.backup_name(previous.content) != action.backup:
            raise SudoersError(f"{action.file} changed since the plan was made; left alone")
        data = previous.content.encode("utf-8", "surrogateescape")
        os.makedirs(self.backup_dir, mode=0o700, exist_ok=True)
        backup = os.path.join(self.backup_dir, action.backup)
        if read_bytes(backup) != data:
            write_atomic(backup, data, mode=0o600)
        if read_bytes(backup) != data:
            raise SudoersError(f"{action.file}: backup {backup} could not be verified; not removing it")
        return self._remove_file(core.SSM_USER, action.file, previous, baseline)

    def clean_temps(self) -> list[str]:
        """Remove temp files a crashed install left behind (sudo never read them)."""
        removed: list[str] = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return removed
        for name in names:
            if name.startswith(core.TEMP_PREFIX) and name.endswith(core.TEMP_SUFFIX):
                _unlink(os.path.join(self.dir, name))
                removed.append(name)
        return removed

    # --- one apply -------------------------------------------------------------------------------

    def apply(self, actions: Sequence[Action], blocked: Collection[str] = frozenset()) -> Outcome:
        """Apply sudo actions: first in batches where there are many of a kind, then one by one
        (what a batch did not do, or isolating the one that made it fail). Writes for `blocked`
        accounts (whose account could not be created or re-enabled) are not attempted: a rule must
        never wait for someone else to take the name."""
        outcome = Outcome()
        if not actions:
            return outcome
        if not os.path.isdir(self.dir):
            outcome.failed.extend((a, f"sudoers directory {self.dir} does not exist") for a in actions)
            return outcome
        self.clean_temps()
        pending, tree = self._in_batches(list(actions), self.tree_problems(), blocked, outcome)
        handlers = self._handlers(blocked)
        for action in pending:
            try:
                tree = handlers[type(action)](action, tree)
            except (SudoersError, CommandError, OSError) as exc:
                outcome.failed.append((action, str(exc)))
                continue
            outcome.done.append(action)
        return outcome

    def _in_batches(self, pending: list[Action], tree: Tree, blocked: Collection[str],
                    outcome: Outcome) -> tuple[list[Action], Tree]:
        """Apply each kind of action of which there are many as one batch. Returns what is left to
        do one by one, and the tree afterwards."""
        batches: list[tuple[Callable[[Any, Tree], Tree | None], Callable[[Action], bool]]] = [
            (self.install_batch, lambda a: isinstance(a, WriteSudoers) and a.name not in blocked),
            (self.remove_batch, lambda a: isinstance(a, RemoveSudoers))]
        for batch, belongs in batches:
            group = [a for a in pending if belongs(a)]
            after = batch(group, tree) if len(group) >= self.batch_min else None
            if after is not None:
                outcome.done.extend(group)
                batched = {id(a) for a in group}
                pending = [a for a in pending if id(a) not in batched]
                tree = after
        return pending, tree

    def _handlers(self, blocked: Collection[str]) -> Mapping[type, Callable[[Any, Tree], Tree]]:
        """Each action type's one-by-one operation: (action, tree before) -> tree after."""

        def write(action: WriteSudoers, tree: Tree) -> Tree:
            if action.name in blocked:
                raise SudoersError(f"sudo rights of {action.name}: not written, the account itself failed")
            if UNATTRIBUTED in tree:
                raise SudoersError(f"sudo rights of {action.name}: not written, visudo -c fails and names no "
                                   f"file, so the new drop-in cannot be checked: {tree[UNATTRIBUTED].splitlines()[-1]}")
            return self.install(action, tree)

        return {WriteSudoers: write, RemoveSudoers: self.remove, RemoveSsmUserBlanket: self.remove_ssm_blanket}


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
