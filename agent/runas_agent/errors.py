"""The error tree. Every error the agent reports is one of these; cli maps them to exit codes."""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error runas-agent reports to a person."""


class ConfigError(AgentError):
    """The configuration is invalid. `problems` lists every problem found, each naming its key."""

    def __init__(self, problems: list[str], path: str | None = None):
        self.problems = list(problems)
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(where + "; ".join(self.problems))


class SourceError(AgentError):
    """The directory could not be read completely. Never treated as an empty or shorter directory."""


class SnapshotError(SourceError):
    """A directory document (file source or snapshot) is malformed."""


class UntrustedError(SourceError):
    """A directory document was read but cannot be believed: not signed by the pinned key, from a
    bucket of another owner, encrypted with another key, of another Identity Store, too old or too
    large. Never overridden by --force."""


class RefusedError(AgentError):
    """The safety checks refused a plan; nothing was changed."""


class LockBusyError(AgentError):
    """Another runas-agent sync holds the lock."""


class CommandError(AgentError):
    """A host command failed. Carries argv, exit status and stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr: str, reason: str = ""):
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        detail = reason or f"exit status {returncode}"
        msg = f"{' '.join(self.argv)}: {detail}"
        if stderr.strip():
            msg += f": {stderr.strip().splitlines()[-1]}"
        super().__init__(msg)
