"""A third-party FHIR R4 server for interoperability tests: Medplum's engine behind a small
Node front (shared/peers/fhir-server, see its README), started from Python.

    from tests.peers import medplum          # the session fixture (import it in a conftest)

    def test_something(medplum):             # a PeerFhirServer
        requests.get(f"{medplum.base_url}/Patient/P01-pt")   # base_url = http://127.0.0.1:N/fhir

The fixture serves the 16 labelled scenarios (dates shifted to the session's start, exactly as
the sandbox shifts them, `medplum.now`) plus the sandbox's directory data (the demo physician,
the hospital and the coach team Organization). Seeded resources keep their ids (Medplum
keeps client ids on PUT): `Patient/P01-pt` is `Patient/P01-pt` there too, and
`medplum.seeded` lists them. No authentication; in memory (a restart is empty).

Start one of your own with `start_fhir_server(seed_files, ...)`; `scenario_bundles()` and
`write_seed_files()` make seed files (FHIR_SEED loads only `transaction`/`batch` Bundles,
while the scenarios are `collection` Bundles: they become transactions of PUTs, at most 50
entries each, the server's limit).

`npm ci` runs once per package-lock.json: node_modules is kept in
`~/.cache/handoff-peers/<sha256 of package-lock.json, 16 hex>/` (HANDOFF_PEERS_CACHE moves
it), under a file lock so parallel runs wait for one install; each server runs from its own
temp copy of the folder with a `node_modules` symlink to the cache. The folder is found at
$HANDOFF_PEERS_DIR, else <shared>/peers/fhir-server ($HANDOFF_SHARED_DIR, else the repo's
sibling `shared/`). Without node or npm on PATH the fixture skips, saying so.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from smartapp.sandbox.seed import base_resources, scenario_resources
from smartapp.web.serving import reserve_port
from tests.shared import SHARED_DIR

PEERS_DIR = Path(os.environ.get("HANDOFF_PEERS_DIR", SHARED_DIR / "peers" / "fhir-server"))
CACHE_ROOT = Path(os.environ.get("HANDOFF_PEERS_CACHE", Path.home() / ".cache" / "handoff-peers"))
MAX_TRANSACTION = 50  # the server refuses transactions with more updates
NPM_TIMEOUT = 600
START_TIMEOUT = 90


class PeerUnavailable(RuntimeError):
    """The peer server cannot run here (no node/npm, npm ci failed, it did not start)."""


@dataclass
class PeerFhirServer:
    """A running peer FHIR server: `base_url` is its FHIR base (ending in /fhir)."""

    base_url: str
    port: int
    process: subprocess.Popen
    workdir: Path
    log_path: Path
    seeded: dict[str, str] = field(default_factory=dict)
    now: datetime | None = None
    install_seconds: float = 0.0
    start_seconds: float = 0.0

    @property
    def origin(self) -> str:
        """http://127.0.0.1:<port> (the server also answers without the /fhir prefix)."""
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        """Absolute URL of a FHIR path, e.g. url("Patient/P01-pt")."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def log_text(self) -> str:
        """What the server printed so far (one line per request when started with log=True)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


# -- seed data ------------------------------------------------------------------------------


def transaction_bundles(resources: Iterable[dict], size: int = MAX_TRANSACTION) -> list[dict]:
    """Transactions of PUT Type/id entries (ids kept), at most `size` entries each."""
    entries = [
        {
            "resource": r,
            "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
        }
        for r in resources
    ]
    return [
        {"resourceType": "Bundle", "type": "transaction", "entry": entries[i : i + size]}
        for i in range(0, len(entries), size)
    ]


def scenario_bundles(
    shared_dir: Path = SHARED_DIR,
    now: datetime | None = None,
    *,
    names: Iterable[str] | None = None,
    directory: bool = True,
) -> list[dict]:
    """The labelled scenarios (all, or those whose file name starts with one of `names`,
    e.g. "P01") as transaction Bundles of PUTs, dates shifted to `now` like the sandbox does
    (None: the current time); `directory` adds the sandbox's base directory data."""
    now = now or datetime.now(UTC)
    resources = scenario_resources(Path(shared_dir) / "scenarios", now)
    if names is not None:
        wanted = tuple(f"{n}-" for n in names)
        resources = [r for r in resources if _scenario_of(r).startswith(wanted)]
    if directory:
        resources = base_resources() + resources
    return transaction_bundles(resources)


def _scenario_of(resource: dict) -> str:
    # scenario resource ids are "<P01>-<what>", e.g. P01-pt, P01-enc, P01-cond1
    return str(resource.get("id", "")).split("-", 1)[0] + "-"


def write_seed_files(bundles: Iterable[dict], folder: Path) -> list[Path]:
    """Write Bundles as seed-NNN.json files in `folder`; their paths, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, bundle in enumerate(bundles):
        path = folder / f"seed-{index:03d}.json"
        path.write_text(json.dumps(bundle))
        paths.append(path)
    return paths


def seeded_ids(paths: Iterable[Path]) -> dict[str, str]:
    """ "Type/id" as sent -> "Type/id" as stored, for PUT entries of seed files (the same:
    PUT keeps the client's id)."""
    out: dict[str, str] = {}
    for path in paths:
        bundle = json.loads(Path(path).read_text())
        for entry in bundle.get("entry") or []:
            request = entry.get("request") or {}
            if request.get("method") == "PUT":
                out[request["url"]] = request["url"]
    return out


# -- node_modules -----------------------------------------------------------------------------


def _tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise PeerUnavailable(
            "node and npm are needed for the peer FHIR server and are not on PATH "
            "(install Node 20.19+ or 22.12+ with npm)"
        )
    return node, npm


def lock_hash(source: Path = PEERS_DIR) -> str:
    """16 hex digits of the sha256 of package-lock.json: the cache key."""
    return hashlib.sha256((source / "package-lock.json").read_bytes()).hexdigest()[:16]


def ensure_node_modules(
    source: Path = PEERS_DIR, cache_root: Path = CACHE_ROOT
) -> tuple[Path, float]:
    """The cached node_modules for this package-lock.json, installed by `npm ci` if missing;
    (path, seconds spent installing: 0 when cached)."""
    _, npm = _tools()
    if not (source / "package-lock.json").is_file():
        raise PeerUnavailable(f"no package-lock.json in {source}")
    key = lock_hash(source)
    cache_root.mkdir(parents=True, exist_ok=True)
    final = cache_root / key
    modules = final / "node_modules"
    marker = final / ".complete"
    if marker.is_file():
        return modules, 0.0
    with open(cache_root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be installing: wait for it
        if marker.is_file():
            return modules, 0.0
        started = time.monotonic()
        staging = cache_root / f"{key}.staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(source / name, staging / name)
        env = os.environ | {"npm_config_update_notifier": "false", "npm_config_fund": "false"}
        try:
            done = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=staging,
                env=env,
                capture_output=True,
                text=True,
                timeout=NPM_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise PeerUnavailable(f"npm ci took more than {NPM_TIMEOUT} s") from None
        if done.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise PeerUnavailable(
                f"npm ci failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
            )
        (staging / ".complete").write_text(datetime.now(UTC).isoformat())
        shutil.rmtree(final, ignore_errors=True)
        staging.rename(final)
        return modules, time.monotonic() - started


# -- the server -------------------------------------------------------------------------------


def _prepare_workdir(source: Path, workdir: Path, modules: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.name == "node_modules" or not item.is_file():
            continue
        shutil.copyfile(item, workdir / item.name)  # no mode copy: the source is read-only
    link = workdir / "node_modules"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(modules, target_is_directory=True)


def start_fhir_server(
    seed_files: Iterable[Path] = (),
    *,
    workdir: Path,
    source: Path = PEERS_DIR,
    validate: bool = True,
    log: bool = False,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
) -> PeerFhirServer:
    """Start `node server.mjs` from a copy of `source` in `workdir` on a free port, loading
    `seed_files` (transaction/batch Bundles) first; returns once GET /metadata answers.
    `validate`: FHIR_VALIDATE (Medplum validates POST/PUT bodies); `log`: a line per request
    in the log file. Stop it with .stop()."""
    node, _ = _tools()
    modules, installed = ensure_node_modules(source)
    _prepare_workdir(source, workdir, modules)
    seeds = [str(Path(p).resolve()) for p in seed_files]
    last_error = ""
    for attempt in range(3):  # the reserved port may be taken before node binds it
        port = reserve_port()
        base = f"http://127.0.0.1:{port}/fhir"
        log_path = workdir / f"server-{port}.log"
        server_env = os.environ | {
            "FHIR_HOST": "127.0.0.1",
            "FHIR_PORT": str(port),
            "FHIR_BASE_URL": base,
            "FHIR_VALIDATE": "1" if validate else "0",
            "FHIR_LOG": "1" if log else "0",
        }
        server_env.pop("FHIR_SEED", None)
        if seeds:
            server_env["FHIR_SEED"] = ",".join(seeds)
        server_env.update(env or {})
        started = time.monotonic()
        with open(log_path, "wb") as out:
            process = subprocess.Popen(
                [node, "server.mjs"],
                cwd=workdir,
                env=server_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        server = PeerFhirServer(
            base_url=base,
            port=port,
            process=process,
            workdir=workdir,
            log_path=log_path,
            seeded=seeded_ids(seeds),
            install_seconds=installed,
        )
        if _wait_ready(server, timeout):
            server.start_seconds = time.monotonic() - started
            return server
        server.stop()
        last_error = server.log_text()[-4000:]
        if "EADDRINUSE" not in last_error or attempt == 2:
            break
    raise PeerUnavailable(f"the peer FHIR server did not start:\n{last_error}")


def _wait_ready(server: PeerFhirServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.running:
            return False
        with contextlib.suppress(requests.RequestException):
            if requests.get(server.url("metadata"), timeout=2).status_code == 200:
                return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="session")
def medplum(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PeerFhirServer]:
    """Medplum's FHIR engine on a free port, seeded with the scenarios (shifted to now) and
    the sandbox's directory data, validating writes; stopped at the end of the session."""
    try:
        _tools()
    except PeerUnavailable as missing:
        pytest.skip(str(missing))
    folder = tmp_path_factory.mktemp("medplum")
    now = datetime.now(UTC).replace(microsecond=0)
    seeds = write_seed_files(scenario_bundles(SHARED_DIR, now), folder / "seed")
    server = start_fhir_server(seeds, workdir=folder / "server")
    server.now = now
    try:
        yield server
    finally:
        server.stop()
