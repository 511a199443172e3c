"""Start real `dalston gateway` / `dalston serve` processes on loopback and stop them cleanly.

Shared by the end-to-end test and bench/gateway.py. Every process gets its own log file (the test
reads `engine_registered ...` from it) and is killed by pid, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.fixtures.serving import free_port

INTERNAL_TOKEN = "e2e-internal-token"


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far, from /proc/PID/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    port: int
    cpus: tuple[int, ...] | None = None  # CPU affinity (bench: give each instance its own cores)
    popen: subprocess.Popen[bytes] | None = None
    sigtermed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proc:
        fh = self.log.open("ab")
        cpus = self.cpus
        pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.popen = subprocess.Popen([sys.executable, "-m", "dalston.cli", *self.args], env=self.env,
                                      stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                      preexec_fn=pin)
        fh.close()
        return self

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: the engine vanishes without deregistering, as in a crash."""
        if self.alive():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(10)

    def sigterm(self) -> None:
        """Send SIGTERM once (a test's own drain); `stop` then waits for the exit instead of signalling again."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGTERM)
        self.sigtermed = True

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (graceful: the engine deregisters), SIGKILL if it does not exit in time.

        WHY not a second SIGTERM to a process already draining: after uvicorn's shutdown it restores
        the default handler, and a late second SIGTERM then kills it with -15 instead of exit 0."""
        if self.alive():
            assert self.popen is not None
            if not self.sigtermed:
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)

    def wait_http(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.log_text()[-3000:]}")
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready on {path} after {timeout}s:\n{self.log_text()[-3000:]}")


def base_env(engines_dir: Path, model_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"DALSTON_ENGINES_DIR": str(engines_dir), "DALSTON_MODEL_DIR": str(model_dir),
                "DALSTON_INTERNAL_TOKEN": INTERNAL_TOKEN, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1")})
    env.pop("DALSTON_GATEWAY_URL", None)
    return env


def gateway(env: dict[str, str], keys_file: Path, log_dir: Path, *, interval: float = 0.5,
            timeout: float = 2.0, port: int | None = None, extra: list[str] | None = None) -> Proc:
    port = port or free_port()
    args = ["gateway", "--host", "127.0.0.1", "--port", str(port), "--keys-file", str(keys_file),
            "--heartbeat-interval", str(interval), "--heartbeat-timeout", str(timeout), *(extra or [])]
    return Proc("gateway", args, env, log_dir / "gateway.log", port)


def engine(engine_id: str, env: dict[str, str], keys_file: Path, log_dir: Path, gateway_url: str | None,
           *, port: int | None = None, label: str = "", cpus: tuple[int, ...] | None = None) -> Proc:
    port = port or free_port()
    args = ["serve", engine_id, "--host", "127.0.0.1", "--port", str(port), "--keys-file", str(keys_file)]
    if gateway_url:
        args += ["--gateway", gateway_url]
    name = f"engine-{engine_id}{label}"
    return Proc(name, args, env, log_dir / f"{name}-{port}.log", port, cpus)
