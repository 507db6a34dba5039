"""The account databases as data (pure): passwd, shadow, group and gshadow parsed once, edited in
memory, rendered back.

Every line an edit does not touch is rendered byte for byte as it was read: comments, NIS `+`/`-`
lines, blank lines, malformed entries and entries with bytes that are not UTF-8. New entries go
before the first NIS line, where shadow-utils puts them. Each edit validates everything first and
then changes the model, so a refused edit (a typed error naming the account) changes nothing.

Existing accounts are addressed by UID, not by name: an edit says what the account with that UID
must look like afterwards, and finds the pieces wherever an interrupted earlier write left them (a
group already renamed, a shadow entry under the new name). Running the same edit again on a
half-written host therefore finishes it, and running it on a finished host changes nothing.

Reading and writing the files, the locks and the caches are in host/accountdb.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from runas_agent.core import naming
from runas_agent.errors import AgentError

FIELDS = {"passwd": 7, "shadow": 9, "group": 4, "gshadow": 4}
#: the order the files are written in (see host/accountdb.py for why)
WRITE_ORDER = ("gshadow", "group", "shadow", "passwd")
#: characters no field may hold: they would split the line or the file
FORBIDDEN = (":", "\n", "\r", "\0")
#: UIDs and GIDs nothing may be given: root, the 16-bit and 32-bit "-1"
INVALID_IDS = frozenset({0, 65535, 4294967295})
#: the shadow expiry day that parks an account (1970-01-02: long past)
EXPIRED = "1"


class AccountEditError(AgentError):
    """An edit was refused; nothing was changed. `account` names the account or group."""

    def __init__(self, account: str, reason: str):
        self.account = account
        self.reason = reason
        super().__init__(f"{account}: {reason}")


class NameTaken(AccountEditError):
    """The name is held by an account or group the edit does not own."""


class IdTaken(AccountEditError):
    """The UID or GID is held by another account or group."""


class InvalidValue(AccountEditError):
    """A value would break the file format or fails the name checks."""


class NoSuchAccount(AccountEditError):
    """The account or group the edit addresses does not exist (or is not unique)."""


class MalformedEntry(AccountEditError):
    """The entry the edit would change is not a well-formed line; it is left alone."""


@dataclass(frozen=True)
class ShadowPolicy:
    """What a new shadow entry holds besides the name: the day of the last change (days since the
    epoch; the caller's clock) and login.defs' PASS_MIN_DAYS, PASS_MAX_DAYS and PASS_WARN_AGE
    (None: the field stays empty), as useradd writes them."""

    today: int
    min_days: int | None = None
    max_days: int | None = None
    warn_days: int | None = None

    def entry(self, name: str) -> list[str]:
        def text(value: int | None) -> str:
            return "" if value is None else str(value)
        # An account without a password, as useradd leaves it: "!" can never match a hash.
        return [name, "!", str(self.today), text(self.min_days), text(self.max_days), text(self.warn_days), "", "", ""]


@dataclass(frozen=True)
class NewAccount:
    """An account an edit added: what its home needs."""

    name: str
    uid: int
    gid: int
    home: str


def _kind_of(line: bytes) -> str:
    if not line:
        return "blank"
    first = line[:1]
    if first == b"#":
        return "comment"
    if first in (b"+", b"-"):
        return "nis"
    return "entry"


#: One recorded edit: the method's name, its positional and its keyword arguments.
Edit = tuple[str, tuple[Any, ...], dict[str, Any]]


def _decode(line: bytes) -> list[str]:
    return line.decode("utf-8", "surrogateescape").split(":")


def _encode(fields: Sequence[str]) -> bytes:
    return ":".join(fields).encode("utf-8", "surrogateescape")


class Table:
    """One database file: its lines in order, entries looked up by name (the first line with a
    name wins, as for NSS). Lines stay bytes until an edit touches them."""

    def __init__(self, kind: str, data: bytes | None):
        self.kind = kind
        self.width = FIELDS[kind]
        self.present = data is not None
        self.original = data or b""
        lines = self.original.split(b"\n")
        self.final_newline = self.original.endswith(b"\n") or not self.original
        if self.final_newline:
            lines.pop()
        self.rows: list[Any] = lines  # bytes, or list[str] once touched
        self.new: list[list[str]] = []
        self.index: dict[str, tuple[bool, int]] = {}
        self.nis_at = len(lines)
        self.changed = False
        for position, line in enumerate(lines):
            kind = _kind_of(line)
            if kind == "nis" and self.nis_at == len(lines):
                self.nis_at = position
            if kind == "entry":
                name = line.split(b":", 1)[0].decode("utf-8", "surrogateescape")
                self.index.setdefault(name, (False, position))

    def __contains__(self, name: str) -> bool:
        return name in self.index

    def names(self) -> Iterable[str]:
        return self.index.keys()

    def get(self, name: str) -> list[str] | None:
        """The fields of `name`'s entry (a copy), or None. May have the wrong number of fields."""
        where = self.index.get(name)
        if where is None:
            return None
        row = self.new[where[1]] if where[0] else self.rows[where[1]]
        return _decode(row) if isinstance(row, bytes) else list(row)

    def well_formed(self, name: str) -> list[str] | None:
        fields = self.get(name)
        if fields is not None and len(fields) != self.width:
            raise MalformedEntry(name, f"its line in {self.kind} has {len(fields)} fields instead of {self.width}; left alone")
        return fields

    def required(self, name: str) -> list[str]:
        """The well-formed fields of an entry that must exist; NoSuchAccount when it does not."""
        fields = self.well_formed(name)
        if fields is None:
            raise NoSuchAccount(name, f"no entry in {self.kind}")
        return fields

    def put(self, name: str, fields: list[str]) -> None:
        """Replace `name`'s entry (which may rename it: fields[0]) or add a new one."""
        where = self.index.get(name)
        if where is None:
            self.index[fields[0]] = (True, len(self.new))
            self.new.append(list(fields))
        else:
            (self.new if where[0] else self.rows)[where[1]] = list(fields)
            if fields[0] != name:
                del self.index[name]
                self.index[fields[0]] = where
        self.changed = True

    def render(self) -> bytes:
        rows = [r if isinstance(r, bytes) else _encode(r) for r in self.rows]
        added = [_encode(r) for r in self.new]
        lines = rows[:self.nis_at] + added + rows[self.nis_at:]
        ends = self.final_newline or (bool(added) and self.nis_at == len(rows))
        return b"\n".join(lines) + (b"\n" if ends and lines else b"")


class IdIndex:
    """IDs -> names for passwd (UIDs) or group (GIDs), built on first use and kept up to date."""

    def __init__(self, table: Table, column: int):
        self.table = table
        self.column = column
        self._by_id: dict[int, list[str]] | None = None

    def _build(self) -> dict[int, list[str]]:
        if self._by_id is None:
            self._by_id = {}
            for name in self.table.names():
                fields = self.table.get(name)
                try:
                    number = int(fields[self.column]) if fields and len(fields) > self.column else None
                except ValueError:
                    number = None
                if number is not None:
                    self._by_id.setdefault(number, []).append(name)
        return self._by_id

    def holders(self, number: int) -> list[str]:
        return list(self._build().get(number, ()))

    def add(self, number: int, name: str) -> None:
        if self._by_id is not None:
            self._by_id.setdefault(number, []).append(name)

    def rename(self, number: int, old: str, new: str) -> None:
        if self._by_id is not None:
            names = self._by_id.get(number, [])
            self._by_id[number] = [new if n == old else n for n in names]


class MemberIndex:
    """Which groups list a name as member (group, gshadow) or administrator (gshadow), built on
    first use (renames need it) and kept up to date."""

    def __init__(self, group: Table, gshadow: Table):
        self.tables = {"group": group, "gshadow": gshadow}
        self._where: dict[str, set[tuple[str, str, int]]] | None = None

    def _build(self) -> dict[str, set[tuple[str, str, int]]]:
        if self._where is None:
            self._where = {}
            for kind, column in (("group", 3), ("gshadow", 2), ("gshadow", 3)):
                table = self.tables[kind]
                for name in table.names():
                    fields = table.get(name)
                    if fields and len(fields) == table.width:
                        for member in _members(fields[column]):
                            self._where.setdefault(member, set()).add((kind, name, column))
        return self._where

    def lists_of(self, member: str) -> set[tuple[str, str, int]]:
        return set(self._build().get(member, ()))

    def changed(self, kind: str, group: str, column: int, before: Sequence[str], after: Sequence[str]) -> None:
        if self._where is None:
            return
        for name in set(before) - set(after):
            self._where.get(name, set()).discard((kind, group, column))
        for name in set(after) - set(before):
            self._where.setdefault(name, set()).add((kind, group, column))

    def group_renamed(self, old: str, new: str) -> None:
        if self._where is None:
            return
        for places in self._where.values():
            for kind, group, column in [p for p in places if p[1] == old]:
                places.discard((kind, group, column))
                places.add((kind, new, column))


def _members(field: str) -> list[str]:
    return [m for m in field.split(",") if m]


def _is_locked(password: str) -> bool:
    """Whether a password field can never be matched: a lock prefix, or not a hash at all."""
    return password.startswith(("!", "*")) or password == "x"


def _lock(password: str) -> str:
    """usermod -L: prefix "!" unless it is there."""
    return password if password.startswith("!") else "!" + password


def _unlock(password: str) -> str:
    """usermod -U: drop one "!" unless that would leave an empty password (no password at all)."""
    return password[1:] if password.startswith("!") and len(password) > 1 else password


_FORBIDDEN_RE = re.compile("[" + re.escape("".join(FORBIDDEN)) + "]")


def _check_field(account: str, what: str, value: str) -> None:
    if _FORBIDDEN_RE.search(value):
        bad = sorted({ch for ch in value if ch in FORBIDDEN})
        raise InvalidValue(account, f"{what} {value!r} contains {', '.join(map(repr, bad))}, which would break the file")


def _check_path(account: str, what: str, value: str) -> None:
    _check_field(account, what, value)
    if not value.startswith("/"):
        raise InvalidValue(account, f"{what} {value!r} is not an absolute path")


def _check_id(account: str, what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 4294967295 or value in INVALID_IDS:
        raise InvalidValue(account, f"{what} {value!r} is not a usable ID")


def _check_member(group: str, member: str) -> None:
    bad = sorted({ch for ch in member if ch in FORBIDDEN or ch == "," or ch.isspace()})
    if not member or bad:
        raise InvalidValue(group, f"member {member!r} is not a user name that a member list can hold")


class AccountDB:
    """The four databases of one host, and the edits the agent makes to them.

    `rules` are the host's account name rules (core/naming.py); `shadow` the values of new shadow
    entries. Every successful edit is journalled (`journal`) so that it can be replayed on a fresh
    read of the files (host/accountdb.py does, when the files changed between read and write)."""

    def __init__(self, passwd: bytes, shadow: bytes | None, group: bytes, gshadow: bytes | None, *,
                 rules: naming.NameRules, policy: ShadowPolicy):
        self.tables = {"passwd": Table("passwd", passwd), "shadow": Table("shadow", shadow),
                       "group": Table("group", group), "gshadow": Table("gshadow", gshadow)}
        self.rules = rules
        self.policy = policy
        self.uids = IdIndex(self.passwd, 2)
        self.gids = IdIndex(self.group, 2)
        self.members = MemberIndex(self.group, self.gshadow)
        self.journal: list[Edit] = []
        self.added: list[NewAccount] = []

    @property
    def passwd(self) -> Table:
        return self.tables["passwd"]

    @property
    def shadow(self) -> Table:
        return self.tables["shadow"]

    @property
    def group(self) -> Table:
        return self.tables["group"]

    @property
    def gshadow(self) -> Table:
        return self.tables["gshadow"]

    # --- reading --------------------------------------------------------------------------------

    def user(self, name: str) -> list[str] | None:
        return self.passwd.get(name)

    def user_by_uid(self, uid: int) -> str:
        """The one account holding `uid`; NoSuchAccount when none or several do."""
        holders = self.uids.holders(uid)
        if len(holders) != 1:
            detail = "no account has it" if not holders else "several accounts have it: " + ", ".join(holders)
            raise NoSuchAccount(f"uid {uid}", detail)
        return holders[0]

    def group_members(self, group: str) -> list[str]:
        fields = self.group.well_formed(group)
        if fields is None:
            raise NoSuchAccount(group, "no such group")
        return _members(fields[3])

    def rendered(self) -> dict[str, bytes]:
        """The files an edit changed, with their new contents (a file rendered back to exactly what
        was read is not listed: writing it would change nothing)."""
        out = {}
        for kind in WRITE_ORDER:
            table = self.tables[kind]
            if table.changed:
                data = table.render()
                if data != table.original:
                    out[kind] = data
        return out

    def with_edits(self, journal: Iterable[Edit]) -> tuple["AccountDB", list[tuple[Edit, AccountEditError]]]:
        """A model of the same files as read, with only the edits in `journal` (for instance this
        one's journal without the accounts whose home could not be made); and the refused ones."""
        fresh = AccountDB(self.passwd.original, self.shadow.original if self.shadow.present else None,
                          self.group.original, self.gshadow.original if self.gshadow.present else None,
                          rules=self.rules, policy=self.policy)
        return fresh, fresh.replay(journal)

    def replay(self, journal: Iterable[Edit]) -> list[tuple[Edit, AccountEditError]]:
        """Apply recorded edits again (on a fresh read); returns the ones refused now, with why."""
        refused = []
        for entry in journal:
            method, args, kwargs = entry
            try:
                getattr(self, method)(*args, **kwargs)
            except AccountEditError as exc:
                refused.append((entry, exc))
        return refused

    # --- the edits ------------------------------------------------------------------------------

    def add_account(self, name: str, uid: int, gid: int, *, comment: str, home: str, shell: str,
                    adopt_group: bool = False) -> None:
        """A new account: its passwd entry, its primary group `name` with `gid`, a shadow entry with
        no password ("!", as useradd leaves it) and a gshadow entry "!".

        `adopt_group`: the caller knows (from its ledger) that an existing group `name` with `gid`
        and no members is this account's, left by an interrupted earlier write; it is reused. A
        shadow or gshadow entry under `name` without its passwd or group counterpart (left the same
        way) is replaced when it can hold no password; one that holds a password is a conflict."""
        self._check_new_account(name, uid, gid, comment, home, shell, adopt_group)
        if name not in self.group:
            self.group.put(name, [name, "x", str(gid), ""])
            self.gids.add(gid, name)
        if self.gshadow.present:
            self.gshadow.put(name, [name, "!", "", ""])
        if self.shadow.present:
            self.shadow.put(name, self.policy.entry(name))
        self.passwd.put(name, [name, "x", str(uid), str(gid), comment, home, shell])
        self.uids.add(uid, name)
        self.added.append(NewAccount(name, uid, gid, home))
        self._record("add_account", (name, uid, gid), dict(comment=comment, home=home, shell=shell, adopt_group=adopt_group))

    def rename_account(self, uid: int, name: str, *, home: str | None = None) -> None:
        """The account with `uid` is called `name` afterwards: user, primary group, shadow and
        gshadow entries, and its entries in other groups' member and administrator lists."""
        self._check_name(name)
        self._rename(uid, name, home)
        self._record("rename_account", (uid, name), dict(home=home))

    def park(self, uid: int, *, shell: str, home: str | None = None) -> str:
        """Disable the account with `uid` in one edit: renamed to its parked name (so `id <name>`
        fails), password locked, expired, login shell `shell`. Returns the parked name."""
        parked = naming.disabled_name(uid)
        _check_path(parked, "shell", shell)
        self._rename(uid, parked, home)
        self._set_shadow(parked, lock=True, expire=EXPIRED)
        self._set_user(parked, shell=shell)
        self._record("park", (uid,), dict(shell=shell, home=home))
        return parked

    def unpark(self, uid: int, name: str, *, shell: str, comment: str, home: str | None = None) -> None:
        """Re-enable a parked account under `name`: renamed back, unlocked as `usermod -U` does,
        expiry cleared, shell and comment set."""
        self._check_name(name)
        _check_path(name, "shell", shell)
        _check_field(name, "comment", comment)
        self._rename(uid, name, home)
        self._set_shadow(name, lock=False, expire="")
        self._set_user(name, shell=shell, comment=comment)
        self._record("unpark", (uid, name), dict(shell=shell, comment=comment, home=home))

    def update_account(self, uid: int, *, comment: str | None = None, shell: str | None = None,
                       home: str | None = None) -> None:
        name = self.user_by_uid(uid)
        self.passwd.well_formed(name)
        if comment is not None:
            _check_field(name, "comment", comment)
        for what, value in (("shell", shell), ("home", home)):
            if value is not None:
                _check_path(name, what, value)
        self._set_user(name, comment=comment, shell=shell, home=home)
        self._record("update_account", (uid,), dict(comment=comment, shell=shell, home=home))

    def change_group_members(self, group: str, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> None:
        """Add and remove members of `group` (in group and gshadow); other members stay as they are.
        Every name added must be an account: a member entry naming nobody would be inherited by
        whoever gets that name next."""
        current = self.group_members(group)
        kept = [m for m in current if m not in set(remove)]
        self._set_members(group, list(dict.fromkeys(kept + list(add))), current)
        self._record("change_group_members", (group,), dict(add=tuple(add), remove=tuple(remove)))

    def set_group_members(self, group: str, members: Sequence[str]) -> None:
        """`group`'s member list becomes exactly `members` (in group and gshadow)."""
        current = self.group_members(group)
        unique = list(dict.fromkeys(members))
        self._set_members(group, unique, current)
        self._record("set_group_members", (group, tuple(members)), {})

    # --- validation -----------------------------------------------------------------------------

    def _record(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.journal.append((method, args, kwargs))

    def _check_name(self, name: str) -> None:
        problem = naming.name_problem(name, self.rules) if isinstance(name, str) else "not a string"
        if problem:
            raise InvalidValue(name, f"not a usable account name: {problem}")
        _check_field(name, "name", name)

    def _check_new_account(self, name: str, uid: int, gid: int, comment: str, home: str, shell: str,
                           adopt_group: bool) -> None:
        self._check_name(name)
        _check_id(name, "uid", uid)
        _check_id(name, "gid", gid)
        _check_field(name, "comment", comment)
        _check_path(name, "home", home)
        _check_path(name, "shell", shell)
        if name in self.passwd:
            raise NameTaken(name, "an account of that name exists")
        holders = self.uids.holders(uid)
        if holders:
            raise IdTaken(name, f"uid {uid} is held by {', '.join(holders)}")
        self._check_new_group(name, gid, adopt_group)
        self._check_orphan("shadow", name)
        self._check_orphan("gshadow", name)

    def _check_new_group(self, name: str, gid: int, adopt_group: bool) -> None:
        fields = self.group.well_formed(name)
        if fields is not None:
            if not (adopt_group and fields[2] == str(gid) and not _members(fields[3])):
                raise NameTaken(name, f"a group of that name exists (gid {fields[2]})")
            return
        holders = self.gids.holders(gid)
        if holders:
            raise IdTaken(name, f"gid {gid} is held by group {', '.join(holders)}")

    def _check_orphan(self, kind: str, name: str) -> None:
        """A shadow/gshadow entry for a name that is new: replaced only when it can grant nothing."""
        fields = self.tables[kind].well_formed(name)
        if fields is None:
            return
        if not _is_locked(fields[1]) or (kind == "gshadow" and (fields[2] or fields[3])):
            raise NameTaken(name, f"{kind} already has an entry of that name that grants a password or membership")

    # --- the steps edits are made of ------------------------------------------------------------

    def _primary_group(self, user: list[str], new: str) -> str | None:
        """The account's own primary group: the group with its GID under one of its own names."""
        try:
            uid, gid = int(user[2]), int(user[3])
        except ValueError:
            return None
        own = {user[0], new, naming.disabled_name(uid)}
        for holder in self.gids.holders(gid):
            if holder in own:
                return holder
        return None

    def _rename(self, uid: int, new: str, home: str | None) -> None:
        old = self.user_by_uid(uid)
        user = self.passwd.required(old)
        group = self._check_rename(uid, old, user, new, home)
        if group is not None and group != new:
            self.group.put(group, [new] + self.group.required(group)[1:])
            self.gids.rename(int(user[3]), group, new)
            self.members.group_renamed(group, new)
        if group is not None:
            self._rename_secret("gshadow", group, new, ["!", "", ""])
        if new != old:
            self._rename_secret("shadow", old, new, self.policy.entry(new)[1:])
            self._rename_member(old, new)
            self.passwd.put(old, [new] + user[1:])
            self.uids.rename(uid, old, new)
        if home is not None:
            self._set_user(new, home=home)

    def _check_rename(self, uid: int, old: str, user: list[str], new: str, home: str | None) -> str | None:
        """Everything a rename could trip on, checked before anything changes; returns the
        account's own primary group (None when its primary group is not its own)."""
        if home is not None:
            _check_path(new, "home", home)
        group = self._primary_group(user, new)
        if new != old and new in self.passwd:
            raise NameTaken(new, f"an account of that name exists (renaming uid {uid} from {old})")
        if group != new and new in self.group:
            raise NameTaken(new, f"a group of that name exists (renaming uid {uid} from {old})")
        self._check_secret_rename("shadow", old, new)
        if group is not None:
            self.group.well_formed(group)
            self._check_secret_rename("gshadow", group, new)
        return group

    def _check_secret_rename(self, kind: str, old: str, new: str) -> None:
        table = self.tables[kind]
        if not table.present:
            return
        table.well_formed(old)
        table.well_formed(new)
        if old != new and old in table and new in table:
            raise NameTaken(new, f"{kind} has entries for both {old} and {new}; left for a person to look at")

    def _rename_secret(self, kind: str, old: str, new: str, default: list[str]) -> None:
        """shadow/gshadow: the entry moves to the new name; it may already be there (an interrupted
        write renamed it), or be missing (then a locked one is added)."""
        table = self.tables[kind]
        if not table.present or new in table:
            return
        fields = table.get(old)
        table.put(old if fields is not None else new, [new] + (fields[1:] if fields is not None else default))

    def _rename_member(self, old: str, new: str) -> None:
        for kind, group, column in sorted(self.members.lists_of(old)):
            fields = self.tables[kind].get(group)
            assert fields is not None  # lists_of names only entries the tables hold
            before = _members(fields[column])
            after: list[str] = []
            for member in before:
                replacement = new if member == old else member
                if replacement not in after:
                    after.append(replacement)
            self._put_list(kind, group, column, fields, before, after)

    def _put_list(self, kind: str, group: str, column: int, fields: list[str], before: list[str], after: list[str]) -> None:
        fields[column] = ",".join(after)
        self.tables[kind].put(group, fields)
        self.members.changed(kind, group, column, before, after)

    def _check_members(self, group: str, members: list[str], current: list[str]) -> None:
        for member in members:
            _check_member(group, member)
            if member not in current and member not in self.passwd:
                raise NoSuchAccount(group, f"cannot add {member!r}: no account of that name")

    def _set_members(self, group: str, members: list[str], current: list[str]) -> None:
        self._check_members(group, members, current)
        secret = self.gshadow.well_formed(group) if self.gshadow.present else None
        self._put_list("group", group, 3, self.group.required(group), current, members)
        if secret is not None:
            # gshadow's own list may differ from group's: the same removals and additions are made to it
            before = _members(secret[3])
            removed = set(current) - set(members)
            after = [m for m in before if m not in removed] + [m for m in members if m not in before]
            if after != before:
                self._put_list("gshadow", group, 3, secret, before, after)

    def _set_shadow(self, name: str, *, lock: bool, expire: str) -> None:
        fields = self.shadow.well_formed(name) if self.shadow.present else None
        if fields is None:
            return
        fields[1] = _lock(fields[1]) if lock else _unlock(fields[1])
        fields[7] = expire
        self.shadow.put(name, fields)

    def _set_user(self, name: str, *, comment: str | None = None, shell: str | None = None,
                  home: str | None = None) -> None:
        fields = self.passwd.required(name)
        updated = list(fields)
        for column, value in ((4, comment), (5, home), (6, shell)):
            if value is not None:
                updated[column] = value
        if updated != fields:
            self.passwd.put(name, updated)
