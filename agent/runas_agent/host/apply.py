"""Applying a plan (host side): the account actions through an account applier, then the sudoers
actions through host/sudoers.py. The sync's account applier is the account engine
(host/engine.py); `Applier` here applies the same actions with shadow-utils' commands, the way
the agent did before the engine, and is kept as the reference the benchmarks compare against.

Each action is independent: a failed command is recorded against its account and the rest of the
plan goes on. Nothing here deletes an account, a home directory or a file.
"""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Any, Callable, Collection, Mapping, Protocol, Sequence

from runas_agent.core.action import Action, Outcome
from runas_agent.core.plan import (NOLOGIN, CreateAccount, DisableAccount, EnableAccount, ForgetAccount,
                                   EndProcesses, RenameAccount, SetGroupMembers, SetHomeAside,
                                   UpdateAccount, blocked_accounts)
from runas_agent.core.sudoers import SudoAction
from runas_agent.errors import CommandError
from runas_agent.host import processes, subp
from runas_agent.host.accounts import read_groups, read_users

#: usermod's exit status when the account has running processes (it then refuses to rename).
USERMOD_BUSY = 8

Progress = Callable[[], None]


class AccountApplier(Protocol):
    """Applies account actions; `progress` is called where nothing is half-done and may raise."""

    def apply(self, actions: Sequence[Action], progress: Progress | None = None) -> Outcome: ...


class SudoApplier(Protocol):
    """Applies sudoers actions; none is written for a `blocked` account."""

    def apply(self, actions: Sequence[Action], blocked: Collection[str] = ...) -> Outcome: ...


def apply_plan(actions: Sequence[Action], accounts: AccountApplier, sudo: SudoApplier,
               progress: Progress | None = None) -> Outcome:
    """The account actions, then the sudoers actions (none for an account that could not be made)."""
    outcome = accounts.apply([a for a in actions if not isinstance(a, SudoAction)], progress)
    outcome.extend(sudo.apply([a for a in actions if isinstance(a, SudoAction)], blocked_accounts(outcome)))
    return outcome


def _links_pam(binary: str) -> bool:
    """Whether a binary is linked against libpam (its dynamic section names the soname)."""
    try:
        with open(binary, "rb") as handle:
            return b"libpam.so" in handle.read()
    except OSError:
        return False


def _nologin() -> str:
    return NOLOGIN if os.path.exists(NOLOGIN) else "/sbin/nologin"


class Applier:
    """Account actions through shadow-utils: one handler per action type (`handlers`)."""

    #: this many creates or more go through one `newusers` run
    batch_min = 20

    def __init__(self, skel: str = "/etc/skel", etc: str = "/etc", run: Callable[..., Any] = subp.run):
        self.skel = skel
        self.etc = etc
        self.run = run
        self.handlers: Mapping[type, Callable[[Any, Outcome], None]] = {
            CreateAccount: self._create, EnableAccount: self._enable, UpdateAccount: self._update,
            SetGroupMembers: self._set_members, DisableAccount: self._disable, ForgetAccount: self._forget,
            SetHomeAside: self._set_home_aside, RenameAccount: self._rename, EndProcesses: self._end_processes}

    def apply(self, actions: Sequence[Action], progress: Progress | None = None) -> Outcome:
        """Apply every action. `progress`, when given, is called before each action: a point where
        nothing is half-done, so it may raise to abandon the rest (the daemon's watchdog and stop)."""
        outcome = Outcome()
        actions = self._homes_set_aside_first(actions, outcome)
        creates = [a for a in actions if isinstance(a, CreateAccount)]
        batched: set[int] = set()
        if len(creates) >= self.batch_min:
            if progress is not None:
                progress()
            batched = {id(a) for a in self._create_batch(creates, outcome)}
        for action in actions:
            if id(action) in batched:
                continue
            if progress is not None:
                progress()
            try:
                self.handlers[type(action)](action, outcome)
            except CommandError as exc:
                outcome.failed.append((action, str(exc)))
                continue
            outcome.done.append(action)
        return outcome

    def _create_batch(self, creates: list[CreateAccount], outcome: Outcome) -> list[CreateAccount]:
        """Create many accounts with one `newusers` run: /etc/passwd, shadow, group and gshadow are
        rewritten once for the whole batch instead of twice per account, so a first sync of thousands
        of identities costs a few milliseconds per account instead of a useradd loop's tens to hundreds
        (bench/bench_sync.py). Accounts the run did not create (it
        commits all or nothing) are left to the one-by-one path, which isolates a bad one.

        The accounts get no password, as with useradd. A PAM build of newusers (Debian, Ubuntu) writes
        "!" itself and only afterwards asks PAM to set each password: given an empty one, PAM refuses
        at once instead of hashing and rewriting /etc/shadow once per account, and newusers exits 1
        with the accounts already committed. A build without PAM would hash an empty field into an
        empty password, so it gets a random one that is never stored or shown. Either way `chpasswd -e`
        then sets every hash to "!", and /etc/passwd is read back to see what was really created.
        Returns the actions it handled."""
        pam = _links_pam(shutil.which("newusers") or "/usr/sbin/newusers")
        lines = []
        for a in creates:
            password = "" if pam else secrets.token_urlsafe(32)
            lines.append(":".join([a.name, password, str(a.uid), str(a.gid), a.comment, a.home, a.shell]))
        try:
            # -r only stops newusers allocating subordinate UID/GID ranges (useradd: SUB_UID_COUNT=0);
            # the UIDs and GIDs are given explicitly, so the system-account ID ranges play no part.
            self.run(["newusers", "-r"], input="\n".join(lines) + "\n", ok=(0, 1),
                     timeout=max(600.0, 0.2 * len(creates)))
        except CommandError:
            return []
        present = read_users(self.etc)
        created = [a for a in creates if (u := present.get(a.name)) is not None
                   and (u.uid, u.gid, u.home, u.shell) == (a.uid, a.gid, a.home, a.shell)]
        if not created:
            return []
        try:
            self.run(["chpasswd", "-e"], input="".join(f"{a.name}:!\n" for a in created))
        except CommandError as exc:
            # The accounts exist (they are in the ledger already and stay owned) but their shadow
            # entries are in doubt: report each, and let the operator look before anyone relies on them.
            for a in created:
                outcome.failed.append((a, f"created by newusers, but setting no password failed: {exc}"))
            return created
        entries = self._skel_entries()
        for a in created:
            try:
                self._copy_skel(a, entries)
            except OSError as exc:
                outcome.failed.append((a, f"home {a.home}: copying {self.skel} failed: {exc.strerror}"))
            else:
                outcome.done.append(a)
        return created

    def _skel_entries(self) -> list[tuple[str, str, int, bytes]]:
        """The skeleton read once: (relative path, "dir" | "file" | "link", mode, content or target)."""
        entries: list[tuple[str, str, int, bytes]] = []
        for root, dirs, files in os.walk(self.skel):
            rel = os.path.relpath(root, self.skel)
            for name in sorted(dirs) + sorted(files):
                src = os.path.join(root, name)
                path = name if rel == "." else os.path.join(rel, name)
                st = os.lstat(src)
                if os.path.islink(src):
                    entries.append((path, "link", 0, os.fsencode(os.readlink(src))))
                elif name in dirs:
                    entries.append((path, "dir", st.st_mode & 0o7777, b""))
                else:
                    with open(src, "rb") as handle:
                        entries.append((path, "file", st.st_mode & 0o7777, handle.read()))
        return entries

    def _copy_skel(self, a: CreateAccount, entries: list[tuple[str, str, int, bytes]]) -> None:
        """Copy the skeleton into a home newusers just made, relative to the home's own descriptor and
        never following a link. Never overwrites: an existing file wins."""
        home_fd = os.open(a.home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            if os.fstat(home_fd).st_uid != a.uid:
                return  # a pre-existing home of someone else's: leave it exactly as it is
            for path, kind, mode, content in entries:
                parent, name = os.path.split(path)
                dir_fd = home_fd if not parent else os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=home_fd)
                try:
                    if kind == "dir":
                        try:
                            os.mkdir(name, mode, dir_fd=dir_fd)
                        except FileExistsError:
                            continue
                        os.chown(name, a.uid, a.gid, dir_fd=dir_fd, follow_symlinks=False)
                    elif kind == "link":
                        try:
                            os.symlink(os.fsdecode(content), name, dir_fd=dir_fd)
                        except FileExistsError:
                            continue
                        os.chown(name, a.uid, a.gid, dir_fd=dir_fd, follow_symlinks=False)
                    else:
                        try:
                            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
                        except FileExistsError:
                            continue
                        with os.fdopen(fd, "wb") as out:
                            out.write(content)
                            os.fchown(out.fileno(), a.uid, a.gid)
                            os.fchmod(out.fileno(), mode)
                finally:
                    if dir_fd != home_fd:
                        os.close(dir_fd)
        finally:
            os.close(home_fd)

    def _create(self, a: CreateAccount, outcome: Outcome) -> None:
        self.run(["groupadd", "-g", str(a.gid), "--", a.name])
        try:
            self.run(["useradd", "--no-log-init", "-u", str(a.uid), "-g", str(a.gid),
                      "-d", a.home, "-m", "-k", self.skel, "-s", a.shell, "-c", a.comment,
                      "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", "--", a.name])
        except CommandError:
            # The group was created a moment ago for this account alone and is empty.
            self.run(["groupdel", "--", a.name], ok=(0, 6))
            raise

    def _enable(self, a: EnableAccount, outcome: Outcome) -> None:
        self.run(["groupmod", "-n", a.name, "--", a.parked])
        self.run(["usermod", "-l", a.name, "-U", "-e", "", "-s", a.shell, "-c", a.comment, "--", a.parked])

    def _update(self, a: UpdateAccount, outcome: Outcome) -> None:
        if "group_name" in a.changes:
            self.run(["groupmod", "-n", a.name, "--", a.changes["group_name"][0]])
        argv = ["usermod"]
        if "comment" in a.changes:
            argv += ["-c", a.changes["comment"][1]]
        if "shell" in a.changes:
            argv += ["-s", a.changes["shell"][1]]
        if len(argv) > 1:
            self.run(argv + ["--", a.name])

    def _set_members(self, a: SetGroupMembers, outcome: Outcome) -> None:
        # Read the member list afresh and set it whole in one call: one rewrite of /etc/group per
        # group instead of one per member, and memberships an admin added are carried over as they are.
        current = read_groups(self.etc)
        if a.group not in current:
            raise CommandError(["gpasswd", "-M", "...", a.group], None, "", f"group {a.group} no longer exists")
        failed = outcome.failed_accounts()
        members = [m for m in current[a.group].members if m not in a.remove]
        members += [n for n in a.add if n not in members and n not in failed]
        if members == list(current[a.group].members):
            return
        self.run(["gpasswd", "-M", ",".join(members), a.group])

    def _disable(self, a: DisableAccount, outcome: Outcome) -> None:
        # Renaming is what stops Run As: the SSM agent only asks `id <name>`. The account keeps its
        # UID, GID and home under the parked name; lock and expiry cover any password-based path.
        try:
            self.run(["usermod", "-l", a.parked, "-L", "-e", "1", "-s", _nologin(), "--", a.name])
        except CommandError as exc:
            if exc.returncode != USERMOD_BUSY:
                raise
            # In use: lock what can be locked now; the rename is retried on the next sync.
            self.run(["usermod", "-L", "-e", "1", "-s", _nologin(), "--", a.name])
            raise CommandError(exc.argv, exc.returncode, exc.stderr,
                               "account has running processes, so it was locked and expired but still resolves; "
                               "the rename is retried every sync") from None
        self.run(["groupmod", "-n", a.parked, "--", a.name])

    def _forget(self, a: ForgetAccount, outcome: Outcome) -> None:
        return None

    # -- a per-person account's processes, before it is renamed -------------------------------------

    def _end_processes(self, a: EndProcesses, outcome: Outcome) -> None:
        left = processes.end_processes(a.uid)
        if left:
            raise CommandError(["end-processes", f"uid={a.uid}"], None, "",
                               f"processes {', '.join(map(str, left))} of uid {a.uid} did not end")

    # -- a person renamed ------------------------------------------------------------------------------

    def _rename(self, a: RenameAccount, outcome: Outcome) -> None:
        # One usermod: the name (and with it every member list naming the user), the home moved with
        # its files (-m renames the directory; it refuses when the target exists), the comment, the
        # shell, and for a parked account the lock and expiry lifted. Then the primary group.
        argv = ["usermod", "-l", a.name, "-c", a.comment, "-s", a.shell]
        if a.home != a.old_home:
            argv += ["-d", a.home, "-m"]
        if a.enable:
            argv += ["-U", "-e", ""]
        self.run(argv + ["--", a.old])
        if a.group != a.name:
            self.run(["groupmod", "-n", a.name, "--", a.group])

    # -- a name that changed hands --------------------------------------------------------------------

    def _homes_set_aside_first(self, actions: Sequence[Action], outcome: Outcome) -> list[Action]:
        """Set parked homes aside before anything else (creates in a batch included): the account
        taking the name is made at /home/<name>. Returns the other actions, without the create of a
        name whose home could not be set aside (it would land in the leaver's home)."""
        blocked: set[str] = set()
        for action in actions:
            if isinstance(action, SetHomeAside):
                try:
                    self._set_home_aside(action, outcome)
                    outcome.done.append(action)
                except CommandError as exc:
                    outcome.failed.append((action, str(exc)))
                    blocked.add(action.name)
        rest: list[Action] = []
        for action in actions:
            if isinstance(action, CreateAccount) and action.name in blocked:
                outcome.failed.append((action, f"not created: the home of the account that had the name is still at "
                                               f"{action.home}"))
            elif not isinstance(action, SetHomeAside):
                rest.append(action)
        return rest

    def _set_home_aside(self, a: SetHomeAside, outcome: Outcome) -> None:
        # usermod -m renames the directory (copies, then removes the original, across filesystems)
        # and refuses when the target exists: nothing is overwritten. Then the directory is closed to
        # everyone else (a Debian home is 0755): the leaver's files are nobody's to read, the
        # newcomer's included. Opened without following a link, and only when it is the account's.
        self.run(["usermod", "-d", a.to, "-m", "--", a.parked])
        try:
            fd = os.open(a.to, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if os.fstat(fd).st_uid == a.uid:
                    os.fchmod(fd, 0o700)
            finally:
                os.close(fd)
        except OSError as exc:
            raise CommandError(["chmod", "0700", a.to], None, "", f"moved, but not closed: {exc.strerror}") from None
