"""A staged SSM agent footprint inside an isolated host, driven line by line over stdin/stdout.

Run inside the mount namespace of an IsolatedHost (see `SsmStage`), it starts a standalone journald
(tmpfs on /run/systemd and /run/log), creates accounts with the real useradd, and stages sessions the
way the SSM agent leaves them: a JSON state file written under `pending/` and renamed into
`current/<sessionId>`, a root process whose argv is `ssm-session-worker <sessionId>`, and beneath it a
shell running under the run-as UID. When a worker exits, the stage removes its state file, as the agent
does at session end. Tests read records back from that journald with journalctl.

Protocol: one JSON request per line, {"op": ..., ...}; one JSON reply per line, {"ok": ..., ...}.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JOURNALD = "/lib/systemd/systemd-journald"
WORKER_SCRIPT = """set -u
uid=$1; gid=$2
setpriv --reuid="$uid" --regid="$gid" --clear-groups sh -c 'sleep 100000; :' &
wait
"""
#: a shell (and its child) that ignore SIGTERM: only SIGKILL ends them
STUBBORN_SCRIPT = WORKER_SCRIPT.replace("sh -c '", "sh -c 'trap \"\" TERM; ")


class Stage:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.scripts = root / "worker-scripts"
        self.bin.mkdir(exist_ok=True)
        self.scripts.mkdir(exist_ok=True)
        link = self.bin / "ssm-session-worker"
        if not link.exists():
            link.symlink_to(shutil.which("bash"))
        self.workers: dict[str, subprocess.Popen] = {}
        self.state_paths: dict[str, Path] = {}
        self.journald: subprocess.Popen | None = None
        self.watcher = None
        self.children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        threading.Thread(target=self._reap, daemon=True).start()

    # --- the host -----------------------------------------------------------------------------

    def op_journald(self) -> dict:
        for path in ("/run/systemd", "/run/log"):
            os.makedirs(path, exist_ok=True)
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", path], check=True)
        self.journald = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists("/run/systemd/journal/socket"):
            if time.monotonic() > deadline:
                raise RuntimeError("journald did not start")
            time.sleep(0.02)
        return {"pid": self.journald.pid}

    def op_journald_stop(self) -> dict:
        if self.journald:
            self.journald.terminate()
            self.journald.wait(10)
            self.journald = None
        return {}

    def op_useradd(self, name: str, uid: int) -> dict:
        subprocess.run(["useradd", "-M", "-u", str(int(uid)), "--", name], check=True)
        return {"uid": pwd.getpwnam(name).pw_uid}

    def op_journal(self, match: dict) -> dict:
        argv = ["journalctl", "--no-pager", "-o", "json"] + [f"{k}={v}" for k, v in sorted(match.items())]
        out = subprocess.run(argv, capture_output=True, text=True)
        records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return {"records": records}

    # --- sessions, the way the SSM agent leaves them --------------------------------------------

    def op_install(self, state_root: str, instance: str = "i-0123456789abcdef0") -> dict:
        """The directories an installed, registered SSM agent has."""
        base = Path(state_root) / instance / "document" / "state"
        for sub in ("pending", "current", "completed"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        return {}

    def op_start(self, sid: str, owner: str, run_as: str, state_root: str, instance: str = "i-0123456789abcdef0",
                 uid: int | None = None, worker: bool = True, shell: bool = True, state: bool = True,
                 document: dict | None = None, worker_dir: str | None = None, stubborn: bool = False) -> dict:
        base = Path(state_root) / instance / "document" / "state"
        for sub in ("pending", "current", "completed"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        if state:
            doc = document if document is not None else {
                "DocumentInformation": {"DocumentID": sid, "CommandID": "", "InstanceID": instance,
                                        "DocumentName": "SSM-SessionManagerRunShell", "DocumentStatus": "InProgress",
                                        "RunAsUser": run_as, "SessionOwner": owner},
                "DocumentType": "StartSession", "SchemaVersion": "1.0"}
            pending = base / "pending" / sid
            pending.write_text(json.dumps(doc))
            os.chmod(pending, 0o600)
            os.rename(pending, base / "current" / sid)
            self.state_paths[sid] = base / "current" / sid
        out = {}
        if worker:
            entry = pwd.getpwnam(run_as) if uid is None else None
            u = uid if uid is not None else entry.pw_uid
            g = uid if uid is not None else entry.pw_gid
            script = self.scripts / sid
            script.write_text((STUBBORN_SCRIPT if stubborn else WORKER_SCRIPT) if shell else "sleep 100000\n")
            binary = self.bin / "ssm-session-worker"
            if worker_dir:  # e.g. the snap's /snap/amazon-ssm-agent/<rev>/
                Path(worker_dir).mkdir(parents=True, exist_ok=True)
                binary = Path(worker_dir) / "ssm-session-worker"
                if not binary.exists():
                    binary.symlink_to(shutil.which("bash"))
            proc = subprocess.Popen([str(binary), sid, str(u), str(g)],
                                    cwd=self.scripts, stdin=subprocess.DEVNULL, start_new_session=True)
            with self._lock:
                self.workers[sid] = proc
            out["worker_pid"] = proc.pid
            if shell:
                out["shell_pid"] = self._wait_shell(proc.pid)
        return out

    @staticmethod
    def _wait_shell(pid: int) -> int:
        import psutil

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for child in psutil.Process(pid).children():
                try:
                    if child.uids().real != 0 and child.name() == "sh":
                        return child.pid
                except psutil.NoSuchProcess:
                    pass
            time.sleep(0.005)
        raise RuntimeError(f"no run-as shell under worker {pid}")

    def op_impostor(self, sid: str, uid: int) -> dict:
        """A process anyone could start: `ssm-session-worker <sid>` running as an ordinary user."""
        base = Path("/mnt/impostor")
        if not base.exists():
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", "/mnt"], check=True)
            (base / "bin").mkdir(parents=True)
            (base / "scripts").mkdir()
            (base / "bin" / "ssm-session-worker").symlink_to(shutil.which("bash"))
        (base / "scripts" / sid).write_text("sleep 100000\n")
        proc = subprocess.Popen([str(base / "bin" / "ssm-session-worker"), sid], cwd=base / "scripts",
                                stdin=subprocess.DEVNULL, user=int(uid), group=int(uid), extra_groups=[],
                                start_new_session=True)
        self.children[proc.pid] = proc
        return {"pid": proc.pid}

    def op_pid_alive(self, pid: int) -> dict:
        proc = self.children.get(int(pid))
        return {"alive": proc is not None and proc.poll() is None}

    def op_end(self, sid: str, how: str = "delete") -> dict:
        """End a session as the agent does: the state file goes (deleted, or moved to completed/),
        then the worker and its shell end."""
        self._remove_state(sid, how)
        with self._lock:
            proc = self.workers.pop(sid, None)
        if proc is not None:
            self._kill_tree(proc)
        return {}

    def op_remove_state(self, sid: str, how: str = "delete") -> dict:
        self._remove_state(sid, how)
        return {}

    def _remove_state(self, sid: str, how: str) -> None:
        path = self.state_paths.pop(sid, None)
        if path is None or not path.exists():
            return
        if how == "move":
            os.rename(path, path.parent.parent / "completed" / sid)
        else:
            path.unlink()

    @staticmethod
    def _kill_tree(proc: subprocess.Popen) -> None:
        import psutil

        try:
            tree = [psutil.Process(proc.pid)] + psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            tree = []
        for p in tree:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(10)

    def _reap(self) -> None:
        """Emulates the agent: when a worker exits, its session's state file goes."""
        while True:
            time.sleep(0.05)
            with self._lock:
                done = [sid for sid, p in self.workers.items() if p.poll() is not None]
                for sid in done:
                    del self.workers[sid]
            for sid in done:
                self._remove_state(sid, "delete")

    def op_alive(self, sids: list) -> dict:
        with self._lock:
            return {"alive": {sid: sid in self.workers and self.workers[sid].poll() is None for sid in sids}}

    # --- the agent under test -------------------------------------------------------------------

    def _config(self, path: str):
        from runas_agent import config

        return config.load(path)

    def op_watcher(self, config: str, use_inotify: bool = True, shell_grace: float = 10.0) -> dict:
        from runas_agent.sessions.watcher import SessionWatcher

        if self.watcher is not None:
            self.watcher.close()
        self.watcher = SessionWatcher(self._config(config), use_inotify=use_inotify, shell_grace=shell_grace)
        return {}

    def op_poll(self, wait: float = 0.0, times: int = 1) -> dict:
        for _ in range(times):
            self.watcher.poll_once(wait)
        return {"stats": self.watcher.stats}

    def op_watcher_start(self) -> dict:
        self.watcher.start()
        return {}

    def op_watcher_close(self) -> dict:
        if self.watcher is not None:
            self.watcher.close()
            self.watcher = None
        return {}

    def op_sessions(self) -> dict:
        return {"sessions": [s.to_dict() for s in self.watcher.sessions()]}

    def op_end_sessions_of(self, names: list, grace: float = 2.0) -> dict:
        started = time.monotonic()
        ended = self.watcher.end_sessions_of(names, grace=grace)
        return {"ended": ended, "seconds": time.monotonic() - started}

    def op_pids_alive(self, pids: list) -> dict:
        """Which pids still run (a zombie waiting for its parent counts as ended)."""
        import psutil

        out = {}
        for pid in pids:
            try:
                out[str(pid)] = psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                out[str(pid)] = False
        return {"alive": out}

    def op_after_sync(self, directory: str) -> dict:
        from runas_agent.directory import parse_document

        return {"ended": self.watcher.after_sync(parse_document(json.loads(Path(directory).read_text())))}

    def op_tagger(self) -> dict:
        tagger = self.watcher.tagger
        return {"results": dict(tagger.results) if tagger else {}, "pending": tagger.pending() if tagger else 0}

    def op_agent(self, args: list) -> dict:
        proc = subprocess.run([sys.executable, "-m", "runas_agent", *args], capture_output=True, text=True,
                              timeout=120)
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}

    def op_spawn_agent(self, args: list) -> dict:
        proc = subprocess.Popen([sys.executable, "-m", "runas_agent", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(self.root / "agent.err", "ab"))
        self.children[proc.pid] = proc
        return {"pid": proc.pid}

    def op_signal(self, pid: int, sig: int) -> dict:
        proc = self.children.pop(int(pid))
        proc.send_signal(int(sig))
        return {"rc": proc.wait(30)}

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
        for proc in self.children.values():
            proc.kill()
            proc.wait()
        with self._lock:
            workers = list(self.workers.values())
            self.workers.clear()
        for proc in workers:
            self._kill_tree(proc)
        self.op_journald_stop()


def main() -> int:
    stage = Stage(Path(sys.argv[1]))
    try:
        for line in sys.stdin:
            request = json.loads(line)
            op = request.pop("op")
            if op == "exit":
                break
            try:
                reply = {"ok": True, **getattr(stage, f"op_{op}")(**request)}
            except Exception as exc:  # reported to the test, which fails with it
                import traceback

                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()}
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()
    finally:
        stage.close()
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sys.exit(main())
