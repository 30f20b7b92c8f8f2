"""Handoff's gunicorn access-log atoms (smartapp.web.gunicorn_conf.RedactedAtoms): each atom
a format names is cut and escaped as it is read, and nothing else that reads the mapping sees
a query either. The whole server is tested in tests/app/test_issue9_launch_security.py."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from types import SimpleNamespace

import pytest

from smartapp.web.logs import JsonFormatter, RedactQueryStrings

SECRET = "code=CODE-d41d8cd98f00"


@pytest.fixture(autouse=True)
def _metrics_folder_kept_out(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """gunicorn_conf, imported, sets PROMETHEUS_MULTIPROC_DIR where it is not set (for
    gunicorn's workers): here it finds one set for the test and undone after, so the test
    process's own metrics (tests/ops) stay in this process, not in files."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))


def _atoms() -> dict:
    from smartapp.web.gunicorn_conf import RedactedAtoms

    environ = {
        "REQUEST_METHOD": "GET",
        "RAW_URI": f"/callback?{SECRET}",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "PATH_INFO": "/callback",
        "QUERY_STRING": SECRET,
        "HTTP_REFERER": f'https://ehr.example/chart?{SECRET}"x',
        "REMOTE_ADDR": "127.0.0.1",
    }
    request = SimpleNamespace(headers=[("Referer", environ["HTTP_REFERER"]), ("X-Empty", "")])
    response = SimpleNamespace(
        status="302 FOUND", sent=0, headers=[("Location", f"/screen?{SECRET}")]
    )
    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    logger = Logger(Config())
    return RedactedAtoms(logger.atoms(response, request, environ, timedelta(seconds=1)))


def test_each_atom_read_is_cut_and_escaped() -> None:
    atoms = _atoms()
    assert atoms["r"] == "GET /callback?… HTTP/1.1"
    assert atoms["q"] == "…" and atoms["{query_string}e"] == "…"
    assert atoms["{QUERY_STRING}e"] == "…"  # an atom in another case is the same atom
    assert atoms["{Referer}i"] == "https://ehr.example/chart?…"
    assert atoms["f"] == "https://ehr.example/chart?…"
    assert atoms["{location}o"] == "/screen?…"
    assert atoms["{raw_uri}e"] == "/callback?…"
    assert atoms["s"] == "302" and atoms["T"] == 1
    assert atoms["{absent}i"] == "-" and atoms["nothing"] == "-"


def test_whatever_reads_the_mapping_sees_no_query() -> None:
    atoms = _atoms()
    everything = [*atoms.values(), *(v for _, v in atoms.items()), repr(atoms), str(atoms)]
    assert not any(SECRET in str(value) for value in everything)
    assert atoms.get("{raw_uri}e") == "/callback?…" and atoms.get("zz", 5) == 5
    assert SECRET in dict.__getitem__(atoms, "{raw_uri}e")  # kept as given, cut when read


@pytest.mark.parametrize("fmt", ['"%(r)s" %(s)s "%(f)s" %({location}o)s', "%(r)d"])
def test_a_line_as_logged_carries_no_query(fmt: str, capsys: pytest.CaptureFixture) -> None:
    """Through the access logger's filter and the JSON formatter; a format that fails (an
    atom formatted as a number) is reported by logging with its arguments: cut too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, fmt, (_atoms(),), None)
    assert RedactQueryStrings().filter(record)
    handler.handle(record)  # (not through a logger: pytest's own handlers raise instead)
    written = stream.getvalue() + capsys.readouterr().err
    assert written and SECRET not in written and "CODE-" not in written
    if fmt.startswith('"'):
        assert "GET /callback?… HTTP/1.1" in written
    else:  # logging's report names the arguments: as read
        assert "Arguments: {" in written and "/callback?…" in written


def test_a_worker_freezes_what_the_loaded_app_holds(tmp_path) -> None:
    """gunicorn calls `post_worker_init` once the worker has loaded the app: the objects it
    holds then leave the collector's view (gc.freeze), so full collections stop walking
    them. Run in a child process: freezing this test process would change every test."""
    import os
    import subprocess
    import sys

    probe = (
        "import gc\n"
        "from gunicorn.config import Config\n"
        "from smartapp.web import gunicorn_conf\n"
        "config = Config()\n"
        "config.set('post_worker_init', gunicorn_conf.post_worker_init)\n"  # gunicorn's check
        "assert gc.get_freeze_count() == 0\n"
        "config.post_worker_init(None)\n"
        "print(gc.get_freeze_count())\n"
    )
    env = os.environ | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    run = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert int(run.stdout) > 10_000  # what the imports made (the app adds some 100k more)
