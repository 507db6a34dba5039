"""The architecture's boundaries, read from the source's syntax trees (every import counts, at the top
of a module or inside a function):

* core/ is pure: it imports only the standard library's pure modules, core/ itself and the pure
  modules listed in PURE; no files, processes, clock, network, AWS or account databases.
* Only host/ runs processes: nothing else imports subprocess (or the host/subp.py seam) or calls the
  os functions that start one.
* Only host/ writes the account databases: the shadow-utils commands and the database paths are
  named nowhere else.
* The package's own modules are imported at the top of a module, not inside functions.

Each rule's checker is also run on a snippet that breaks it, so the rules themselves can fail.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "agent" / "runas_agent"

#: Standard library modules without I/O, clock or randomness.
PURE_STDLIB = frozenset({"__future__", "abc", "collections", "dataclasses", "datetime", "difflib", "enum", "functools",
                         "hashlib", "itertools", "json", "marshal", "math", "operator", "re", "shlex", "string", "types", "typing",
                         "unicodedata"})
#: Modules outside core/ that core/ may import: values and errors, no I/O (checked by the same rule).
PURE = frozenset({"runas_agent.directory", "runas_agent.errors"})
#: Modules that start processes.
PROCESS_MODULES = frozenset({"subprocess", "pty", "multiprocessing", "runas_agent.host.subp"})
PROCESS_CALLS = ("system", "popen", "exec", "spawn", "posix_spawn", "fork")
#: What writes the account databases: shadow-utils' commands and the files themselves.
ACCOUNT_COMMANDS = frozenset({"useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel", "gpasswd",
                              "newusers", "chpasswd", "chage", "vipw", "vigr"})
ACCOUNT_FILES = ("/passwd", "/shadow", "/group", "/gshadow", "/.pwd.lock")

#: Known exceptions, by rule; each goes once its module is brought in line.
IN_REWORK: dict[str, set[str]] = {
    "process": set(),
    # Loaded by the command that uses them only (every command imports these modules for its command
    # line): sessions/cli.py and daemon.py, the session watcher; doctor/cli.py, the checks.
    "local-imports": {"sessions/cli.py", "daemon.py", "doctor/cli.py"},
}


@lru_cache(maxsize=1)
def modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(PACKAGE)): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["runas_agent", *parts])


def imports(tree: ast.AST, name: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the tree; `from x import y` counts as x and x.y."""
    package = name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _top(module: str) -> str:
    return module.split(".")[0]


# --- the checkers ----------------------------------------------------------------------------------

def impure_imports(tree: ast.AST, name: str) -> list[str]:
    out = []
    for line, module in imports(tree, name):
        if _top(module) == "runas_agent":
            ok = module.startswith("runas_agent.core") or module in PURE or any(module.startswith(p + ".") for p in PURE)
            ok = ok or module == "runas_agent"
        else:
            ok = _top(module) in PURE_STDLIB
        if not ok:
            out.append(f"line {line}: imports {module}")
    return out


def process_starts(tree: ast.AST, name: str) -> list[str]:
    out = [f"line {line}: imports {module}" for line, module in imports(tree, name)
           if module in PROCESS_MODULES or _top(module) in PROCESS_MODULES]
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "os" and node.func.attr.startswith(PROCESS_CALLS)):
            out.append(f"line {node.lineno}: calls os.{node.func.attr}")
    return out


def account_database_names(tree: ast.AST, name: str) -> list[str]:
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.strip()
            if text in ACCOUNT_COMMANDS or text.endswith(ACCOUNT_FILES):
                out.append(f"line {node.lineno}: names {text!r}")
    return out


def local_imports(tree: ast.AST, name: str) -> list[str]:
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    own = [m for _, m in imports(node, name) if _top(m) == "runas_agent"]
                    if own or (isinstance(node, ast.ImportFrom) and node.level):
                        out.append(f"line {node.lineno}: {fn.name}() imports {own[0] if own else 'a sibling'}")
    return out


# --- the rules ---------------------------------------------------------------------------------------

def _broken(check, select, waived=frozenset()):
    found = {}
    for rel, tree in modules().items():
        if select(rel) and rel not in waived:
            problems = check(tree, module_name(rel))
            if problems:
                found[rel] = problems
    return found


def test_core_is_pure():
    pure_outside = {m.split(".", 1)[1].replace(".", "/") + ".py" for m in PURE}
    assert _broken(impure_imports, lambda rel: rel.startswith("core/") or rel in pure_outside) == {}


def test_only_host_runs_processes():
    assert _broken(process_starts, lambda rel: not rel.startswith("host/"), IN_REWORK["process"]) == {}


def test_only_host_writes_the_account_databases():
    assert _broken(account_database_names, lambda rel: not rel.startswith("host/")) == {}


def test_the_package_is_imported_at_the_top_of_each_module():
    assert _broken(local_imports, lambda rel: True, IN_REWORK["local-imports"]) == {}


def test_waivers_name_modules_that_exist():
    names = set(modules())
    assert all(rel in names for waived in IN_REWORK.values() for rel in waived)


# --- the checkers catch what they are there for -----------------------------------------------------

@pytest.mark.parametrize("source", [
    "import os", "from time import monotonic", "import boto3", "from runas_agent.host import subp",
    "from runas_agent import config", "def f():\n    import pwd", "import socket", "from ..host.files import write_atomic",
])
def test_impure_imports_are_caught(source):
    assert impure_imports(ast.parse(source), "runas_agent.core.x")


@pytest.mark.parametrize("source", [
    "import re\nfrom dataclasses import dataclass", "from runas_agent.directory import User",
    "from runas_agent.core import naming", "from .ledger import Ledger",
])
def test_pure_imports_pass(source):
    assert impure_imports(ast.parse(source), "runas_agent.core.x") == []


@pytest.mark.parametrize("source", [
    "import subprocess", "from runas_agent.host import subp", "from runas_agent.host.subp import run",
    "import os\nos.system('id')", "import os\nos.execvp('id', ['id'])", "def f():\n    import pty",
])
def test_process_starts_are_caught(source):
    assert process_starts(ast.parse(source), "runas_agent.x")


@pytest.mark.parametrize("source", ["argv = ['useradd', name]", "path = f'{etc}/passwd'", "p = '/etc/gshadow'"])
def test_account_database_names_are_caught(source):
    assert account_database_names(ast.parse(source), "runas_agent.x")


def test_a_docstring_may_name_them():
    assert account_database_names(ast.parse('"""Reads /etc/passwd."""\nx = 1'), "runas_agent.x") == []


@pytest.mark.parametrize("source,caught", [
    ("def f():\n    from runas_agent.sync import sync", True),
    ("def f():\n    from . import sibling", True),
    ("def f():\n    import json", False),
    ("from runas_agent.sync import sync\ndef f():\n    return sync", False),
])
def test_local_imports_are_caught(source, caught):
    assert bool(local_imports(ast.parse(source), "runas_agent.x")) == caught
