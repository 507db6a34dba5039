"""The stand-in SSM agent (the `ssm-agent-worker` side): the state-file lifecycle of Session Manager
sessions and TerminateSession, exactly as amazon-ssm-agent does it, and the session workers it starts
(tests/hosts/ssm_worker.py). Each step cites the source file it reproduces.

No isolation of its own: the stage (tests/hosts/ssm_stage.py) runs it inside an isolated host, the
benchmark in a temporary directory. Every process it starts is ended by `close()`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WORKER_NAME = "ssm-session-worker"
#: master.go defaultZombieProcessTimeout: after the worker exits without completing, the master's
#: messaging waits this long before it gives up on it and saves the state
ZOMBIE_TIMEOUT = 60.0
LAUNCHER = "from tests.hosts.ssm_worker import main\nmain()\n"


@dataclass
class Options:
    """One session as the service sends it, plus stand-in knobs (timings only)."""

    owner: str = ""                      # DocumentInformation.SessionOwner
    run_as: str = ""                     # DocumentInformation.RunAsUser: the principal's SSMSessionRunAs
    default_user: str = ""               # the preferences' runAsDefaultUser
    run_as_enabled: bool = True
    session_type: str = "Standard_Stream"
    document_name: str = "SSM-SessionManagerRunShell"
    elevated: bool = False               # properties.linux.runAsElevated of a commands document
    commands: str = ""
    shell_profile: str = ""
    bucket: str = ""
    prefix: str = ""
    state: bool = True                   # False: a worker with no state file (another root, say)
    worker: bool = True                  # False: a state file with no worker (Run Command's, say)
    document: object = None              # written instead of the real state (hostile/odd content)
    worker_dir: str = ""                 # where the worker binary is (the snap's /snap/...)
    open_delay: float = 0.0              # the client's data channel opens this late
    upload_delay: float = 0.0            # the log upload takes this long
    id_delay: float = 0.0                # each `id` look-up takes this long (a slow NSS source: sssd, LDAP)


@dataclass
class AgentSession:
    sid: str
    options: Options
    worker: subprocess.Popen | None = None
    shell_pid: int | None = None
    shell_at: float = 0.0                # monotonic: when the worker reported its shell
    status: str = ""
    shell_started: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class SsmAgent:
    def __init__(self, data_path: Path, instance: str, bin_dir: Path, env: dict | None = None,
                 zombie_timeout: float = ZOMBIE_TIMEOUT):
        self.data_path = Path(data_path)
        self.instance = instance
        self.bin_dir = Path(bin_dir)
        self.env = dict(env or os.environ)
        self.zombie_timeout = zombie_timeout
        self.sessions: dict[str, AgentSession] = {}
        self.launchers = self.bin_dir / "launchers"
        self._lock = threading.Lock()
        self.install()

    # --- layout -------------------------------------------------------------------------------------

    def state_dir(self, location: str) -> Path:
        """docmanager.go DocumentStateDir: <data path>/<instance id>/document/state/<location>."""
        return self.data_path / self.instance / "document" / "state" / location

    def install(self) -> None:
        for location in ("pending", "current", "completed", "corrupt"):
            self.state_dir(location).mkdir(parents=True, exist_ok=True)
        self.launchers.mkdir(parents=True, exist_ok=True)

    def worker_binary(self, worker_dir: str = "") -> Path:
        """The worker's binary: a link named ssm-session-worker to the Python interpreter."""
        directory = Path(worker_dir) if worker_dir else self.bin_dir
        directory.mkdir(parents=True, exist_ok=True)
        binary = directory / WORKER_NAME
        if not binary.exists():
            binary.symlink_to(os.path.realpath(sys.executable))
        return binary

    # --- the state file: docmanager.go, fileutil.go -------------------------------------------------

    @staticmethod
    def _persist(path: Path, content: bytes) -> None:
        """docmanager.go PersistDocumentState -> fileutil.WriteIntoFileWithPermissions ->
        ioutil.WriteFile: open O_WRONLY|O_CREATE|O_TRUNC with mode 0600, write, close. In place:
        a reader may find the file empty or half written."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, content)
        finally:
            os.close(fd)

    def _move(self, sid: str, src: str, dst: str) -> None:
        """docmanager.go MoveDocumentState -> fileutil.MoveFile: a rename, over any file of the name."""
        try:
            os.rename(self.state_dir(src) / sid, self.state_dir(dst) / sid)
        except FileNotFoundError:
            pass                                  # the agent logs "moving file ... failed"

    def _remove(self, sid: str) -> None:
        """docmanager.go RemoveDocumentState -> fileutil.DeleteFile."""
        try:
            os.unlink(self.state_dir("current") / sid)
        except FileNotFoundError:
            pass                                  # the agent logs "encountered error ... while deleting"

    def _content(self, session: AgentSession, worker_pid: int = 0, status: str = "InProgress") -> bytes:
        o = session.options
        if o.document is not None:
            return o.document if isinstance(o.document, bytes) else json.dumps(o.document).encode()
        return (json.dumps(self.document_state(session.sid, o, worker_pid, status), indent="  ")).encode()

    def document_state(self, sid: str, o: Options, worker_pid: int = 0, status: str = "InProgress") -> dict:
        """contracts/document.go DocumentState as the agent marshals it (no json tags: Go field names).
        agentmessage.go buildSessionDocumentInfo fills DocumentInformation (CreatedDate from the
        service's epoch milliseconds read as seconds); docparser.go parsePluginStateForStartSession
        the plugin's Configuration (RunAsUser: the service's value when set, else runAsDefaultUser)."""
        orchestration = str(self.data_path / self.instance / "session" / "orchestration" / sid)
        configuration = {
            "Settings": None, "Properties": ({"linux": {"commands": o.commands, "runAsElevated": o.elevated}}
                                             if o.session_type != "Standard_Stream" else None),
            "OutputS3KeyPrefix": o.prefix, "OutputS3BucketName": o.bucket, "S3EncryptionEnabled": False,
            "CloudWatchLogGroup": "", "CloudWatchEncryptionEnabled": False, "CloudWatchStreamingEnabled": False,
            "OrchestrationDirectory": f"{orchestration}/{o.session_type}", "MessageId": sid,
            "BookKeepingFileName": sid, "PluginName": o.session_type, "PluginID": o.session_type,
            "DefaultWorkingDirectory": "", "Preconditions": None, "IsPreconditionEnabled": False,
            "CurrentAssociations": None, "SessionId": sid, "ClientId": "", "KmsKeyId": "",
            "RunAsEnabled": o.run_as_enabled, "RunAsUser": o.run_as if o.run_as.strip() else o.default_user,
            "ShellProfile": {"windows": "", "linux": o.shell_profile}, "SessionOwner": o.owner,
            "UpstreamServiceName": "",
        }
        return {
            "DocumentInformation": {
                "DocumentID": sid, "CommandID": sid, "AssociationID": "", "InstanceID": self.instance,
                "MessageID": sid, "RunID": time.strftime("%Y-%m-%dT%H-%M-%S.000Z", time.gmtime()),
                "CreatedDate": "56362-08-16 10:13:20 +0000 UTC", "DocumentName": o.document_name,
                "DocumentVersion": "", "DocumentStatus": status, "RunCount": 0,
                "ProcInfo": {"Pid": worker_pid, "StartTime": "0001-01-01T00:00:00Z"},
                "ClientId": "", "RunAsUser": o.run_as, "SessionOwner": o.owner},
            "DocumentType": "StartSession", "SchemaVersion": "1.0",
            "InstancePluginsInformation": [{"Configuration": configuration, "Name": o.session_type,
                                            "Result": {"PluginID": "", "PluginName": "", "Status": ""},
                                            "Id": o.session_type}],
            "CancelInformation": {"CancelMessageID": "", "CancelCommandID": "", "Payload": "", "DebugInfo": ""},
            "IOConfig": {"OrchestrationDirectory": orchestration, "OutputS3BucketName": o.bucket,
                         "OutputS3KeyPrefix": o.prefix,
                         "CloudWatchConfig": {"LogGroupName": "", "LogStreamPrefix": "",
                                              "LogGroupEncryptionEnabled": False}},
            "UpstreamServiceName": "MessageGatewayService",
        }

    # --- a session: processor.go, outofproc/master.go ------------------------------------------------

    def start(self, sid: str, options: Options, wait_shell: float = 20.0) -> AgentSession:
        session = AgentSession(sid, options)
        with self._lock:
            self.sessions[sid] = session
        if options.state:
            # processor.go submit: PersistDocumentState(pending/<DocumentID>) before the job is queued.
            self._persist(self.state_dir("pending") / sid, self._content(session))
            # processor.go processCommand: MoveDocumentState pending -> current.
            self._move(sid, "pending", "current")
        if options.worker:
            self._launch(session)
            # master.go Run: "save doc store immediately in case agent restarts": in place, with the
            # worker's pid in ProcInfo.
            if options.state:
                self._persist(self.state_dir("current") / sid, self._content(session, session.worker.pid))
            session.thread = threading.Thread(target=self._messaging, args=(session,), daemon=True)
            session.thread.start()
            if options.session_type != "Port" and wait_shell:
                session.shell_started.wait(wait_shell)
        return session

    def _launch(self, session: AgentSession) -> None:
        """master.go initialize -> proc.StartProcess(ssm-session-worker, [DocumentID]), in a process
        group of its own (Setpgid), as root; its plugin config follows over the IPC channel."""
        o = session.options
        (self.launchers / session.sid).write_text(LAUNCHER)
        config = dict(self.document_state(session.sid, o)["InstancePluginsInformation"][0]["Configuration"],
                      SessionType=o.session_type, Elevated=o.elevated, Commands=o.commands,
                      ShellProfile=o.shell_profile, OpenDelay=o.open_delay, UploadDelay=o.upload_delay)
        session.worker = subprocess.Popen([str(self.worker_binary(o.worker_dir)), session.sid], cwd=self.launchers,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          env=self._worker_env(o.id_delay), process_group=0)
        self._send(session, {"type": "pluginconfig", "content": config})

    def _worker_env(self, id_delay: float = 0.0) -> dict:
        env = dict(self.env)
        paths = [str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        if id_delay:
            env["PATH"] = f"{self._slow_id(id_delay)}{os.pathsep}{env.get('PATH', os.defpath)}"
        return env

    def _slow_id(self, delay: float) -> Path:
        """A directory whose `id` answers like the real one, `delay` seconds late."""
        directory = self.bin_dir / f"slow-id-{delay:g}"
        directory.mkdir(parents=True, exist_ok=True)
        wrapper = directory / "id"
        if not wrapper.exists():
            wrapper.write_text(f'#!/bin/sh\nsleep {delay:g}\nexec {shutil.which("id")} "$@"\n')
            wrapper.chmod(0o755)
        return directory

    @staticmethod
    def _send(session: AgentSession, message: dict) -> None:
        try:
            session.worker.stdin.write(json.dumps(message) + "\n")
            session.worker.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            pass

    def _messaging(self, session: AgentSession) -> None:
        """master.go messaging until the worker's "complete" (backend.go: stopTypeTerminate), or until
        the worker is gone and defaultZombieProcessTimeout has passed; then, master.go's deferred
        store.Save rewrites the state in place (re-creating it if it was removed meanwhile), and
        processor.go processCommand removes it ("execution of ... is over")."""
        for line in session.worker.stdout:
            message = json.loads(line)
            if message["type"] == "shell":
                session.shell_pid, session.shell_at = message["pid"], time.monotonic()
                session.shell_started.set()
            elif message["type"] == "complete":
                session.status = message["status"]
                break
        else:
            session.shell_started.set()
            time.sleep(self.zombie_timeout)
            session.status = "Failed"
        if session.options.state:
            self._persist(self.state_dir("current") / session.sid,
                          self._content(session, session.worker.pid, session.status))
            self._remove(session.sid)
        session.done.set()

    # --- what people and the service do ---------------------------------------------------------------

    def type(self, sid: str, text: str) -> None:
        """Keystrokes over the data channel."""
        self._send(self.sessions[sid], {"type": "input", "data": text})

    def exit(self, sid: str, wait: float = 30.0) -> None:
        """The person ends the session: `exit` in the shell, or (no shell) closing the client, which the
        service turns into a ChannelClosed message: TerminateSession."""
        session = self.sessions[sid]
        if session.shell_pid is not None:
            self.type(sid, "exit\n")
        else:
            self.terminate(sid)
        if wait:
            self.wait_done(sid, wait)

    def terminate(self, sid: str) -> None:
        """TerminateSession (agentmessage.go parseTerminateSessionMessage: DocumentID = the session id,
        DocumentType TerminateSession). processor.go cancel: PersistDocumentState(pending/<id>);
        processCancelCommand: MoveDocumentState pending -> current, over the live session's state;
        sendCommandPool.Cancel (backend.go sends the worker "cancel"); RemoveDocumentState."""
        document = {
            "DocumentInformation": {"DocumentID": sid, "CommandID": sid, "AssociationID": "", "InstanceID": self.instance,
                                    "MessageID": sid, "RunID": time.strftime("%Y-%m-%dT%H-%M-%S.000Z", time.gmtime()),
                                    "CreatedDate": "", "DocumentName": "", "DocumentVersion": "",
                                    "DocumentStatus": "InProgress", "RunCount": 0,
                                    "ProcInfo": {"Pid": 0, "StartTime": "0001-01-01T00:00:00Z"},
                                    "ClientId": "", "RunAsUser": "", "SessionOwner": ""},
            "DocumentType": "TerminateSession", "SchemaVersion": "", "InstancePluginsInformation": None,
            "CancelInformation": {"CancelMessageID": sid, "CancelCommandID": sid, "Payload": "",
                                  "DebugInfo": f"Session {sid} is yet to be terminated"},
            "IOConfig": {"OrchestrationDirectory": "", "OutputS3BucketName": "", "OutputS3KeyPrefix": "",
                         "CloudWatchConfig": {"LogGroupName": "", "LogStreamPrefix": "", "LogGroupEncryptionEnabled": False}},
            "UpstreamServiceName": "MessageGatewayService",
        }
        self._persist(self.state_dir("pending") / sid, json.dumps(document, indent="  ").encode())
        self._move(sid, "pending", "current")
        session = self.sessions.get(sid)
        if session is not None and session.worker is not None:
            self._send(session, {"type": "cancel"})
        self._remove(sid)

    def remove_state(self, sid: str) -> None:
        """A state file with no worker (Run Command's, say) goes."""
        self._remove(sid)

    def crash_worker(self, sid: str) -> None:
        """The worker dies (SIGKILL to its process group: it and its root children; the shell, in a
        session of its own, gets the pty's hangup)."""
        try:
            os.killpg(self.sessions[sid].worker.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_done(self, sid: str, timeout: float = 30.0) -> bool:
        session = self.sessions[sid]
        return session.done.wait(timeout) if session.thread else True

    def close(self) -> None:
        """End every process this stand-in started (the workers and everything beneath them)."""
        import psutil

        for session in list(self.sessions.values()):
            if session.worker is None:
                continue
            try:
                tree = [psutil.Process(session.worker.pid)] + psutil.Process(session.worker.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                tree = []
            if session.shell_pid:
                try:
                    shell = psutil.Process(session.shell_pid)
                    tree += [shell] + shell.children(recursive=True)
                except psutil.NoSuchProcess:
                    pass
            for proc in tree:
                try:
                    proc.kill()
                except psutil.NoSuchProcess:
                    pass
            session.worker.wait(10)
        shutil.rmtree(self.launchers, ignore_errors=True)
