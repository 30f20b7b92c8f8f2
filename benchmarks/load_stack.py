"""The stack `benchmarks/load.py` drives: the sandbox EHR and Handoff, each under gunicorn
with several worker processes, on their own ports; charts for many distinct ED visits (each
flow signs a new visit: a second Sign of one visit finds its referral and writes nothing); and
the CPU time of each server's processes, read from /proc."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = Path(os.environ.get("HANDOFF_SHARED_DIR") or REPO.parent / "shared") / "scenarios"
#: The scenario charts copied (ids renamed) into distinct visits: OUD in withdrawal, an
#: overdose, an overdose without naloxone, fentanyl on the screen: every kind of suggestion.
TEMPLATES = ("P01", "P05", "P13", "P15")
CLIENT_ID = "handoff-load"
TICKS = os.sysconf("SC_CLK_TCK")


def visit_charts(folder: Path, count: int) -> list[str]:
    """`count` scenario charts with new ids (L0000-pt, ...) in `folder`/scenarios; their
    patient ids."""
    out = folder / "scenarios"
    out.mkdir(parents=True, exist_ok=True)
    texts = {t: next(SCENARIOS.glob(f"{t}-*.json")).read_text(encoding="utf-8") for t in TEMPLATES}
    patients = []
    for n in range(count):
        template = TEMPLATES[n % len(TEMPLATES)]
        tag = f"L{n:04d}"
        text = re.sub(rf"\b{template}(?=[-\"])", tag, texts[template])
        (out / f"P{9000 + n}-{tag}.json").write_text(text, encoding="utf-8")
        patients.append(f"{tag}-pt")
    return patients


def cpu_seconds(root: int) -> float:
    """User + system CPU of process `root` and its live children (gunicorn's master and
    workers), from /proc/<pid>/stat."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        pid, ppid = int(entry), int(fields[1])
        if pid == root or ppid == root:
            total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def workers_of(root: int) -> set[int]:
    """The pids of `root`'s children (a worker restarted mid-run loses its CPU time)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == root:
                found.add(int(entry))
    return found


def reserve_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(process: subprocess.Popen, url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server for {url} exited ({process.returncode})")
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.3)
    process.kill()
    raise SystemExit(f"the server for {url} did not start")


#: Handoff's production gunicorn settings.
HANDOFF_CONF = "smartapp.web.gunicorn_conf"


def gunicorn(app: str, port: int, workers: int, threads: int, conf: str | None) -> list:
    """The gunicorn command line (`conf`: the settings module, for Handoff)."""
    command = [sys.executable, "-m", "gunicorn"]
    if conf:
        command += ["-c", f"python:{conf}"]
    return command + [
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--bind",
        f"127.0.0.1:{port}",
        "--timeout",
        "120",
        "--no-control-socket",
        app,
    ]


@dataclass
class LoadStack:
    """The two servers and what the flows need to reach them."""

    ehr_url: str
    app_url: str
    database_url: str
    ehr: subprocess.Popen
    app: subprocess.Popen
    patients: list[str]
    workers: dict[str, set[int]] = field(default_factory=dict)

    def cpu(self) -> dict[str, float]:
        return {"handoff": cpu_seconds(self.app.pid), "ehr": cpu_seconds(self.ehr.pid)}

    def stop(self) -> None:
        for process in (self.app, self.ehr):
            process.terminate()
        for process in (self.app, self.ehr):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def start_stack(
    folder: Path,
    database_url: str,
    visits: int,
    workers: int,
    threads: int,
    conf: str = HANDOFF_CONF,
    extra_env: dict[str, str] | None = None,
):
    """Seed the sandbox once here, then serve it and Handoff under gunicorn (`conf`: Handoff's
    settings module; `extra_env`: more of Handoff's environment)."""
    from smartapp.audit.signing import load_signer
    from smartapp.cli import demo_registration
    from smartapp.db import Database
    from smartapp.launch.tokens import TokenCipher
    from smartapp.sandbox.__main__ import ARGS_ENV, build_app, parse_args

    patients = visit_charts(folder / "shared", visits)
    ehr_port, app_port = reserve_port(), reserve_port()
    ehr_url, app_url = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{app_port}"
    ehr_args = [
        "--port",
        str(ehr_port),
        "--app-url",
        app_url,
        "--client-id",
        CLIENT_ID,
        "--database-url",
        f"sqlite:///{folder / 'sandbox.sqlite'}",
        "--shared-dir",
        str(folder / "shared"),
        "--seed",
        "scenarios",
        "--pool-size",
        "5",
    ]
    seeded = build_app(parse_args(ehr_args))  # seeds; the workers find it seeded
    seeded.extensions["sandbox"].db.engine.dispose()
    launch_dir = folder / "launch"
    launch_dir.mkdir()
    registration = demo_registration(ehr_url, client_id=CLIENT_ID)
    (launch_dir / "sandbox.yaml").write_text(yaml.safe_dump(registration))
    (folder / "keys").mkdir(mode=0o700)
    key_path = folder / "keys" / "audit-key.pem"
    signer = load_signer(key_path)
    (folder / "keys" / "audit-key.pub.pem").write_text(signer.public_pem())
    Database(database_url).migrate()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    base_env["PYTHONPATH"] = str(REPO)  # this tree's code, whatever the venv installed
    ehr_env = base_env | {ARGS_ENV: shlex.join(ehr_args)}
    app_env = (
        base_env
        | {
            "DATABASE_URL": database_url,
            "HANDOFF_PUBLIC_URL": app_url,
            "HANDOFF_LAUNCH_DIR": str(launch_dir),
            "HANDOFF_SECRET_KEY": secrets.token_urlsafe(32),
            "HANDOFF_TOKEN_KEY": TokenCipher.new_key(),
            "HANDOFF_AUDIT_SIGNING_KEY": str(key_path),
            "HANDOFF_KEYS_DIR": str(folder / "keys"),
            "HANDOFF_INSTANCE_PATH": str(folder / "instance"),
            "PROMETHEUS_MULTIPROC_DIR": str(_fresh(folder / "metrics")),
        }
        | (extra_env or {})
    )
    errors = (folder / "servers.log").open("ab")  # noqa: SIM115 (the servers' stderr)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": errors}
    ehr = subprocess.Popen(
        gunicorn("smartapp.sandbox.wsgi:app", ehr_port, workers, threads, None),
        env=ehr_env,
        **quiet,
    )
    app = subprocess.Popen(
        gunicorn("smartapp.wsgi:app", app_port, workers, threads, conf),
        env=app_env,
        **quiet,
    )
    stack = LoadStack(ehr_url, app_url, database_url, ehr, app, patients)
    try:
        wait_until_up(ehr, f"{ehr_url}/fhir/metadata")
        wait_until_up(app, f"{app_url}/")
    except BaseException:
        stack.stop()
        print((folder / "servers.log").read_text()[-3000:], file=sys.stderr)
        raise
    return stack


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for item in path.iterdir():
        item.unlink()
    return path
