"""A staged SSM agent inside an isolated host, driven line by line over stdin/stdout.

Run inside the mount namespace of an IsolatedHost (see `SsmStage`), it starts a standalone journald
(tmpfs on /run/systemd and /run/log), creates accounts with the real useradd, and runs sessions the way
the SSM agent does (tests/hosts/ssm_agent.py: the state-file lifecycle and TerminateSession;
tests/hosts/ssm_worker.py: the root `ssm-session-worker <sessionId>`, its `sh -c "id <name>"` look-ups,
the Run As shell on a pty, the log conversion and upload, the 3 s before it exits). Tests read records
back from that journald with journalctl.

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
import time
from dataclasses import fields
from pathlib import Path

from tests.hosts.ssm_agent import Options, SsmAgent

REPO = Path(__file__).resolve().parents[2]
JOURNALD = "/lib/systemd/systemd-journald"
#: a shell profile (shell_unix.go runShellProfile types it into the new shell) leaving a background
#: job that ignores SIGTERM and SIGHUP: it outlives the shell unless its tree is ended
STUBBORN_PROFILE = "sh -c 'trap \"\" TERM HUP; sleep 100000; :' &"


class Stage:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(exist_ok=True)
        self.agents: dict[tuple[str, str], SsmAgent] = {}
        self.session_agent: dict[str, SsmAgent] = {}
        self.journald: subprocess.Popen | None = None
        self.watcher = None
        self.children: dict[int, subprocess.Popen] = {}
        self.zombie_timeout = 60.0

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

    # --- sessions, the way the SSM agent runs them -----------------------------------------------

    def _agent(self, state_root: str, instance: str) -> SsmAgent:
        key = (state_root, instance)
        if key not in self.agents:
            self.agents[key] = SsmAgent(Path(state_root), instance, self.bin, zombie_timeout=self.zombie_timeout)
        return self.agents[key]

    def op_install(self, state_root: str, instance: str = "i-0123456789abcdef0") -> dict:
        """The directories an installed, registered SSM agent has."""
        self._agent(state_root, instance)
        return {}

    def op_zombie_timeout(self, seconds: float) -> dict:
        self.zombie_timeout = float(seconds)
        for agent in self.agents.values():
            agent.zombie_timeout = float(seconds)
        return {}

    def op_start(self, sid: str, owner: str, run_as: str, state_root: str, instance: str = "i-0123456789abcdef0",
                 stubborn: bool = False, wait_shell: bool = True, **options) -> dict:
        """A session as the SSM agent runs it (tests/hosts/ssm_agent.py). `options` are
        ssm_agent.Options fields."""
        known = {f.name for f in fields(Options)}
        unknown = set(options) - known
        if unknown:
            raise TypeError(f"unknown session options {sorted(unknown)}")
        opts = Options(owner=owner, run_as=run_as, **options)
        if stubborn:
            opts.shell_profile = STUBBORN_PROFILE
        agent = self._agent(state_root, instance)
        self.session_agent[sid] = agent
        session = agent.start(sid, opts, wait_shell=20.0 if wait_shell else 0)
        out: dict = {}
        if session.worker is not None:
            out["worker_pid"] = session.worker.pid
        if session.shell_pid is not None:
            out["shell_pid"] = session.shell_pid
        if stubborn and session.shell_pid:
            out["job_pids"] = self._jobs(session.shell_pid)
        return out

    @staticmethod
    def _jobs(shell_pid: int) -> list[int]:
        """The shell's profile jobs, once they run."""
        import psutil

        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            jobs = [p.pid for p in psutil.Process(shell_pid).children(recursive=True) if p.name() == "sleep"]
            if jobs:
                return jobs
            time.sleep(0.01)
        raise RuntimeError(f"the profile of shell {shell_pid} started no job")

    def op_type(self, sid: str, text: str) -> dict:
        self.session_agent[sid].type(sid, text)
        return {}

    def op_end(self, sid: str, wait: bool = True) -> dict:
        """The person ends the session (`exit`; closing the client when there is no shell)."""
        agent = self.session_agent[sid]
        if agent.sessions[sid].worker is None:
            agent.remove_state(sid)
        else:
            agent.exit(sid, wait=30.0 if wait else 0)
        return {}

    def op_terminate(self, sid: str, wait: bool = True) -> dict:
        """TerminateSession from the service."""
        agent = self.session_agent[sid]
        agent.terminate(sid)
        if wait:
            agent.wait_done(sid)
        return {}

    def op_crash_worker(self, sid: str) -> dict:
        self.session_agent[sid].crash_worker(sid)
        return {}

    def op_wait_done(self, sid: str, timeout: float = 30.0) -> dict:
        return {"done": self.session_agent[sid].wait_done(sid, timeout)}

    def op_remove_state(self, sid: str) -> dict:
        self.session_agent[sid].remove_state(sid)
        return {}

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

    def op_alive(self, sids: list) -> dict:
        """Which sessions' workers still run."""
        out = {}
        for sid in sids:
            worker = self.session_agent[sid].sessions[sid].worker
            out[sid] = worker is not None and worker.poll() is None
        return {"alive": out}

    # --- the agent under test -------------------------------------------------------------------

    def _config(self, path: str):
        from runas_agent import config

        return config.load(path)

    def op_watcher(self, config: str, use_inotify: bool = True, shell_grace: float = 10.0,
                   worker_grace: float = 120.0) -> dict:
        from runas_agent.sessions.watcher import SessionWatcher

        if self.watcher is not None:
            self.watcher.close()
        self.watcher = SessionWatcher(self._config(config), use_inotify=use_inotify, shell_grace=shell_grace,
                                      worker_grace=worker_grace)
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
        for agent in self.agents.values():
            agent.close()
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
