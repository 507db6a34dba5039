"""A simulated host for the session tracker: the SSM agent's state files (with their real JSON shape)
and its session workers, driven step by step, and a look at them the way SessionWatcher._scan looks.
Used by the tracker's unit and property tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from runas_agent.directory import Directory, parse_document
from runas_agent.sessions.model import Session, StateInfo, attribute, parse_state
from runas_agent.sessions.tracker import Child, Event, Observation, Read, Tracker, Worker

ACCOUNT_ID = "123456789012"
ROLE = "AWSReservedSSO_VendorAccess_0123456789abcdef"
ACME_UID = 1_500_000_001

DIRECTORY = {
    "IdentityStoreId": "d-1234567890",
    "Users": [{"UserId": f"u-{n}", "UserName": f"{n}@example.com", "DisplayName": n.title(), "UserStatus": "ENABLED",
               "Extensions": {"aws:identitystore:enterprise": {"organization": "acme"}}}
              for n in ("alice", "bob", "carol")],
}


def owner_arn(user: str) -> str:
    return f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{ROLE}/{user}"


def start_document(sid: str, owner: str, run_as: str = "", default_user: str = "acme", session_type: str = "Standard_Stream",
                   elevated: bool = False, bucket: str = "", prefix: str = "", worker_pid: int = 0) -> dict:
    """A StartSession DocumentState as the SSM agent marshals it (Go field names, no json tags)."""
    properties = {"linux": {"commands": "top", "runAsElevated": True}} if elevated else None
    configuration = {"OutputS3KeyPrefix": prefix, "OutputS3BucketName": bucket, "SessionId": sid,
                     "PluginName": session_type, "PluginID": session_type, "RunAsEnabled": True,
                     "RunAsUser": run_as.strip() or default_user, "Properties": properties,
                     "SessionOwner": owner, "ShellProfile": {"windows": "", "linux": ""}}
    return {
        "DocumentInformation": {"DocumentID": sid, "CommandID": sid, "AssociationID": "", "InstanceID": "i-0abc",
                                "MessageID": sid, "RunID": "2024-06-01T10-00-00.000Z",
                                "CreatedDate": "56362-01-01 00:00:00 +0000 UTC", "DocumentName": "SSM-SessionManagerRunShell",
                                "DocumentVersion": "", "DocumentStatus": "InProgress", "RunCount": 0,
                                "ProcInfo": {"Pid": worker_pid, "StartTime": "0001-01-01T00:00:00Z"},
                                "ClientId": "", "RunAsUser": run_as, "SessionOwner": owner},
        "DocumentType": "StartSession", "SchemaVersion": "1.0",
        "InstancePluginsInformation": [{"Configuration": configuration, "Name": session_type, "Id": session_type,
                                        "Result": {}}],
        "CancelInformation": {"CancelMessageID": "", "CancelCommandID": "", "Payload": "", "DebugInfo": ""},
        "IOConfig": {"OrchestrationDirectory": f"/var/lib/amazon/ssm/i-0abc/session/orchestration/{sid}",
                     "OutputS3BucketName": bucket, "OutputS3KeyPrefix": prefix,
                     "CloudWatchConfig": {"LogGroupName": "", "LogStreamPrefix": "", "LogGroupEncryptionEnabled": False}},
        "UpstreamServiceName": "MessageGatewayService",
    }


def terminate_document(sid: str) -> dict:
    """The TerminateSession DocumentState of agentmessage.go parseTerminateSessionMessage."""
    return {"DocumentInformation": {"DocumentID": sid, "CommandID": sid, "MessageID": sid, "InstanceID": "i-0abc",
                                    "DocumentStatus": "InProgress", "RunAsUser": "", "SessionOwner": ""},
            "DocumentType": "TerminateSession",
            "CancelInformation": {"CancelMessageID": sid, "CancelCommandID": sid, "Payload": "",
                                  "DebugInfo": f"Session {sid} is yet to be terminated"},
            "UpstreamServiceName": "MessageGatewayService"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> float:
        return 1_700_000_000.0 + self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class SimWorker:
    pid: int
    started: float
    children: dict[int, Child] = field(default_factory=dict)


class DirectoryAttributor:
    def __init__(self, directory: Directory | None):
        self.directory = directory

    def attribute(self, session: Session, info: StateInfo) -> Session:
        return attribute(session, info, self.directory)

    def refresh(self, session: Session) -> Session:
        return session


class SimHost:
    """State files in `current/` (name -> bytes) and workers (session id -> SimWorker)."""

    def __init__(self, clock: Clock | None = None, directory: Directory | None = None, **tracker_args):
        self.clock = clock or Clock()
        self.files: dict[str, bytes] = {}
        self.workers: dict[str, SimWorker] = {}
        self.appeared: set[str] = set()
        self._next_pid = 1000
        args = {"shell_grace": 10.0, "linger": 300.0, **tracker_args}
        self.tracker = Tracker(DirectoryAttributor(directory), now=self.clock.mono, wall=self.clock.wall, **args)
        self.events: list[Event] = []

    def pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    # --- the state file -------------------------------------------------------------------------

    def write(self, sid: str, document: dict | bytes) -> None:
        """Open (O_CREAT|O_TRUNC), write, close: IN_CREATE/IN_CLOSE_WRITE."""
        self.files[sid] = document if isinstance(document, bytes) else json.dumps(document, indent=2).encode()
        self.appeared.add(sid)

    def truncate(self, sid: str) -> None:
        """ioutil.WriteFile's O_TRUNC before the write: readers see an empty file meanwhile."""
        self.files[sid] = b""

    def rename_in(self, sid: str, document: dict) -> None:
        """A file written under pending/ renamed into current/ (over any file of that name)."""
        self.files[sid] = json.dumps(document, indent=2).encode()
        self.appeared.add(sid)

    def delete(self, sid: str) -> None:
        self.files.pop(sid, None)

    # --- processes --------------------------------------------------------------------------------

    def start_worker(self, sid: str) -> int:
        pid = self.pid()
        self.workers[sid] = SimWorker(pid, self.clock.wall())
        return pid

    def add_child(self, sid: str, uid: int, account: str, leader: bool) -> int:
        pid = self.pid()
        self.workers[sid].children[pid] = Child(pid, uid, account, leader)
        return pid

    def remove_child(self, sid: str, pid: int) -> None:
        if sid in self.workers:
            self.workers[sid].children.pop(pid, None)

    def end_worker(self, sid: str) -> None:
        self.workers.pop(sid, None)

    # --- the watcher's look -----------------------------------------------------------------------

    def scan(self, full: bool = False) -> list[Event]:
        files = {sid: f"/current/{sid}" for sid in self.files}
        reads = {}
        for sid in self.tracker.to_read(files):
            try:
                reads[sid] = Read(parse_state(self.files[sid]))
            except ValueError as exc:
                reads[sid] = Read(problem=f"the state file is not a session state document ({exc})")
        appeared, self.appeared = self.appeared, set()
        events = self.tracker.files_seen(Observation(files, reads, appeared))
        if full or self.tracker.wants_processes():
            workers = {sid: Worker(sid, w.pid, w.started, tuple(w.children.values())) for sid, w in self.workers.items()}
            events += self.tracker.processes_seen(workers, full)
        self.events += events
        return events

    def of(self, sid: str, kind: str | None = None) -> list[Event]:
        return [e for e in self.events if e.session.session_id == sid and (kind is None or e.kind == kind)]


def directory() -> Directory:
    return parse_document(DIRECTORY)
