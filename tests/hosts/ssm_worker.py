"""The stand-in `ssm-session-worker <sessionId>`: what the SSM agent's session worker does on Linux,
step by step, each step citing the amazon-ssm-agent source it reproduces.

It runs as root under the name `ssm-session-worker` (a link to the Python interpreter, started as
`ssm-session-worker <sessionId>` from a directory holding a file named by the session id that runs
`main()`), so that /proc shows what the real worker shows: comm `ssm-session-wor`, cmdline
`[<path>/ssm-session-worker, <sessionId>]`.

The master (tests/hosts/ssm_agent.py) talks to it over stdin/stdout, one JSON object per line, in
place of the agent's file-watcher IPC channel:
  master -> worker  {"type": "pluginconfig", "content": {...}}   messaging/backend.go
                    {"type": "input", "data": "..."}             the data channel: keystrokes
                    {"type": "cancel"}                           backend.go: the job was cancelled
  worker -> master  {"type": "shell", "pid": N}                  (stand-in only: for the test harness)
                    {"type": "complete", "status": ...}          backend.go pluginListener

Names handed to `sh -c "id <name>"` are interpolated unquoted, as the real agent does
(utility_unix.go DoesUserExist, shell_unix.go getUserCredentials); they come from the tests only.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import termios
import threading
import time

SESSION_SIGNALS = (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGQUIT)
PORT = "Port"


class Failure(Exception):
    """The plugin failed before the shell started (the session ends with status Failed)."""


class Worker:
    def __init__(self, session_id: str):
        self.session_id = session_id
        self.config: dict = {}
        self.cancelled = threading.Event()
        self.pty_master = -1
        self.shell: subprocess.Popen | None = None
        self._out = threading.Lock()

    # --- the IPC channel --------------------------------------------------------------------------

    def send(self, message: dict) -> None:
        with self._out:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def receive_config(self) -> None:
        """messaging/backend.go WorkerBackend.Process: the first datagram is the plugin config."""
        line = sys.stdin.readline()
        self.config = json.loads(line)["content"] if line else {}

    def listen(self) -> None:
        """The rest of the channel: keystrokes for the shell, and cancel (backend.go: a cancelled job
        sets the worker's cancel flag; shell.go then ends the session)."""
        for line in sys.stdin:
            message = json.loads(line)
            if message["type"] == "cancel":
                self.cancelled.set()
            elif message["type"] == "input" and self.pty_master >= 0:
                try:
                    os.write(self.pty_master, message["data"].encode())
                except OSError:
                    pass

    # --- the Run As user ----------------------------------------------------------------------------

    @staticmethod
    def _sh(command: str) -> subprocess.CompletedProcess:
        """utility_unix.go: ShellPluginCommandName "sh", ShellPluginCommandArgs ["-c"]; a root child of
        the worker, in the worker's session."""
        return subprocess.run(["sh", "-c", command], capture_output=True, text=True)

    def _credentials(self, user: str) -> tuple[int, int, list[int]]:
        """shell_unix.go getUserCredentials: `id -u`, `id -g`, then `id` for the groups; uid and gid
        must both be above 0."""
        uid = self._sh(f"id -u {user}")
        gid = self._sh(f"id -g {user}")
        groups = self._sh(f"id {user}")
        if uid.returncode or gid.returncode or groups.returncode:
            raise Failure(f"Failed to retrieve uid/gid for {user}")
        ids = []
        if "groups=" in groups.stdout:
            for value in groups.stdout.split("groups=", 1)[1].strip().split(","):
                ids.append(int(value.split("(", 1)[0]))
        u, g = int(uid.stdout.strip()), int(gid.stdout.strip())
        if u <= 0 or g <= 0:
            raise Failure("invalid uid and gid")
        return u, g, ids

    def _session_user(self) -> str:
        """shell_unix.go StartCommandExecutor: with Run As, Configuration.RunAsUser must exist
        (DoesUserExist: `sh -c "id <name>"`); without it, ssm-user."""
        c = self.config
        user = c["RunAsUser"].strip() if c.get("RunAsEnabled") else "ssm-user"
        if c.get("RunAsEnabled") and not user:
            raise Failure("please set the RunAs default user")
        if self._sh(f"id {user}").returncode != 0:
            raise Failure(f"failed to start pty since RunAs user {user} does not exist")
        return user

    # --- the shell ----------------------------------------------------------------------------------

    def start_shell(self) -> None:
        """shell_unix.go StartCommandExecutor: `sh` (or `sh -c <commands>` for commands sessions) on a
        pty (creack/pty: setsid, controlling terminal), with the Run As user's uid, gid and groups,
        HOME=/home/<user>; as root with HOME=/root when the document asks for runAsElevated."""
        c = self.config
        argv = ["sh", "-c", c["Commands"]] if c.get("Commands") else ["sh"]
        env = dict(os.environ, TERM="xterm-256color")
        env.setdefault("LANG", "C.UTF-8")
        credentials: dict = {}
        if c.get("Elevated"):
            env["HOME"] = "/root"
        else:
            user = self._session_user()
            uid, gid, groups = self._credentials(user)
            credentials = {"user": uid, "group": gid, "extra_groups": groups}
            env["HOME"] = "/home/" + user
        self.pty_master, slave = os.openpty()
        self.shell = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                      preexec_fn=_controlling_terminal, **credentials)
        os.close(slave)
        self.send({"type": "shell", "pid": self.shell.pid})

    def pump(self, ipc_path: str) -> None:
        """shell.go writePump: the shell's output into the session's ipcTempFile.log."""
        with open(ipc_path, "ab") as ipc:
            while True:
                try:
                    data = os.read(self.pty_master, 4096)
                except OSError:
                    return
                if not data:
                    return
                ipc.write(data)
                ipc.flush()

    def run_shell_session(self) -> str:
        """shell.go execute / executeCommandsWithPty."""
        # shell.go: signals are caught before the shell starts; any of them cancels the session.
        for sig in SESSION_SIGNALS:
            signal.signal(sig, lambda *_: self.cancelled.set())
        self.start_shell()
        orchestration = self.config["OrchestrationDirectory"]
        os.makedirs(orchestration, exist_ok=True)
        ipc_path = os.path.join(orchestration, "ipcTempFile.log")
        threading.Thread(target=self.pump, args=(ipc_path,), daemon=True).start()
        threading.Thread(target=self.listen, daemon=True).start()
        if self.config.get("ShellProfile"):                # shell_unix.go runShellProfile
            os.write(self.pty_master, (self.config["ShellProfile"] + "\n").encode())
        while not self.cancelled.wait(0.02):
            if self.shell.poll() is not None:
                break
        else:
            # shell.go: "Session cancelled. Attempting to stop pty." execcmd.Kill: SIGKILL to the shell
            # process only; what the shell started keeps running.
            self.shell.kill()
        self.shell.wait()
        self.finish_logging(ipc_path)
        return "Success"

    def run_port_session(self) -> str:
        """The port plugin starts no shell and catches no signal: SIGTERM ends the worker at once."""
        self.listen_until_cancelled()
        return "Success"

    def listen_until_cancelled(self) -> None:
        threading.Thread(target=self.listen, daemon=True).start()
        self.cancelled.wait()

    # --- the session log ----------------------------------------------------------------------------

    def finish_logging(self, ipc_path: str) -> None:
        """shell.go finishLogging: with an S3 bucket, shell_unix.go generateLogData runs
        `script <logfile> -c "cat <ipcfile>"` (a root child of the worker) to turn the raw pty output
        into the transcript, then s3util uploads it to BuildS3Path(OutputS3KeyPrefix, <id>.log)."""
        bucket = self.config.get("OutputS3BucketName")
        if not bucket:
            return
        log_path = os.path.join(self.config["OrchestrationDirectory"], self.session_id + ".log")
        subprocess.run(["script", log_path, "-c", f"cat {ipc_path}"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(float(self.config.get("UploadDelay") or 0))    # a large log over a slow link
        import boto3

        key = _build_s3_path(self.config.get("OutputS3KeyPrefix", ""), self.session_id + ".log")
        with open(log_path, "rb") as body:
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/plain",
                                          ACL="bucket-owner-full-control")


def _controlling_terminal() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _build_s3_path(root: str, element: str) -> str:
    """fileutil.BuildS3Path: Go's path.Join."""
    import posixpath

    joined = posixpath.normpath(posixpath.join(root, element)) if root else element
    return "/" + joined.lstrip("/") if joined.startswith("//") else joined


def main() -> None:
    session_id = os.path.basename(sys.argv[0])
    worker = Worker(session_id)
    status = "Failed"
    try:
        worker.receive_config()
        if worker.config.get("OpenDelay"):                # the client's data channel opens
            time.sleep(float(worker.config["OpenDelay"]))
        if worker.config.get("SessionType") == PORT:
            status = worker.run_port_session()
        else:
            status = worker.run_shell_session()
        worker.send({"type": "complete", "status": status})
    except Failure as exc:
        time.sleep(2)                                      # shell.go: sleeps 2 s after a start failure
        worker.send({"type": "complete", "status": "Failed", "output": str(exc)})
    finally:
        # sessionworker/main.go: "Wait few seconds for cw logs to upload" before the worker exits.
        time.sleep(3)
