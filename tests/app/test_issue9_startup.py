"""Issue 9, start-up: one instance folder for every command (6, 7), quiet commands (11), the
start-up checks (17, 18, 19) and PHI at rest (35). Real apps, real files, real `handoff`
processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, insert, select

from smartapp import create_app
from smartapp.audit import log as referral_log
from smartapp.config import DEMO_PUBLIC_URL, REPO_ROOT, Defaults
from smartapp.db import LaunchContext, LogEvent, Referral
from smartapp.launch.tokens import TokenCipher
from smartapp.startup import StartupError

EHR = "https://ehr.hospital.example"


def registration_folder(folder: Path, *registrations: dict) -> Path:
    """Registrations for a production-like EHR (one by default)."""
    folder.mkdir(parents=True, exist_ok=True)
    for fields in registrations or ({},):
        data = {
            "id": "ehr",
            "name": "Hospital EHR",
            "iss": f"{EHR}/fhir",
            "client_id": "handoff",
            "frame_ancestors": [EHR],
        } | fields
        (folder / f"{data['id']}.yaml").write_text(yaml.safe_dump(data))
    return folder


def production(tmp_path: Path, **settings) -> dict:
    """Production settings: public URL, one registration, the SQLite data in its own folder
    (keys stay in the instance folder, apart)."""
    (tmp_path / "data").mkdir(exist_ok=True)
    if "LAUNCH_DIR" not in settings:
        settings["LAUNCH_DIR"] = str(registration_folder(tmp_path / "registrations"))
    return {
        "PUBLIC_URL": "https://handoff.hospital.example",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'data' / 'handoff.sqlite'}",
    } | settings


def demo_instance(folder: Path) -> Path:
    """An instance folder whose config.py says demo (as `handoff demo` writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.py").write_text("DEMO = True\n")
    return folder


def handoff(*args: str, cwd: Path, env: dict | None = None, module: str = "smartapp.cli"):
    """Run a `handoff` command as a process, with no HANDOFF_* setting from this shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    clean.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=90,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# 6: a command that finds no database says so, exits non-zero, creates nothing


@pytest.mark.parametrize("command", [["outbox", "list"], ["audit", "verify"], ["launch", "purge"]])
def test_a_command_without_a_database_says_so_and_creates_none(tmp_path, command):
    instance = demo_instance(tmp_path / "instance")
    done = handoff(*command, cwd=tmp_path, env={"HANDOFF_INSTANCE_PATH": str(instance)})
    assert done.returncode != 0
    assert "no Handoff database at" in done.stderr and str(instance) in done.stderr
    assert "Traceback" not in done.stderr
    assert not (instance / "handoff.sqlite").exists()


# 7: a relative --instance-path


def test_relative_instance_path_is_accepted(tmp_path, monkeypatch):
    demo_instance(tmp_path / "inst")
    upgraded = handoff("--instance-path", "inst", "db", "upgrade", cwd=tmp_path)
    assert upgraded.returncode == 0, upgraded.stderr
    assert (tmp_path / "inst" / "handoff.sqlite").is_file()
    verified = handoff(
        "--instance-path", "inst", "verify", cwd=tmp_path, module="smartapp.audit.cli"
    )
    assert verified.returncode == 0, verified.stderr
    assert verified.stdout.startswith("OK: 0 events") and "Traceback" not in verified.stderr
    mounted = handoff("--instance-path", "inst", "audit", "verify", cwd=tmp_path)
    assert mounted.returncode == 0 and mounted.stdout.startswith("OK: 0 events"), mounted.stderr
    monkeypatch.chdir(tmp_path)
    app = create_app(instance_path="inst")
    assert app.instance_path == str(tmp_path / "inst")
    app.extensions["handoff"].db.engine.dispose()


def test_db_upgrade_brings_the_dashboard_visits_up_to_date(tmp_path):
    """`handoff db upgrade` joins the log's events into the dashboard's kept visits, so the
    first dashboard view after an upgrade that rebuilds them (0009) is not the slow one."""
    from smartapp.audit.models import LogEvent, LogSummaryState
    from smartapp.db import Database, FollowupContact, Referral

    env = {"HANDOFF_INSTANCE_PATH": str(demo_instance(tmp_path / "instance"))}
    assert handoff("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    database = Database(f"sqlite:///{tmp_path / 'instance' / 'handoff.sqlite'}")
    with database.session() as session:
        for n in range(3):
            referral_log.append(
                session,
                "suggestions-shown",
                iss="https://ehr.example/fhir",
                patient_id=f"P-{n}",
                encounter_id=f"E-{n}",
                data={"pack": {"id": "p", "version": "1"}, "suggestions": []},
            )
    signed = datetime(2025, 1, 2, tzinfo=UTC)  # a handoff no staff page has planned
    decision = {"decisions": [{"kind": "prc-consult", "accepted": True}]}
    row = {"id": "r-1", "visit_key": "v-1", "context_id": "c-1", "iss": "https://ehr.example/fhir"}
    row |= {"patient_id": "P-1", "decision": decision, "plan": {}, "created_at": signed}
    with database.engine.begin() as connection:
        connection.execute(insert(Referral), [row])
    upgraded = handoff("db", "upgrade", cwd=tmp_path, env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "dashboard visits up to date" in upgraded.stdout
    assert "follow-up planned for 1 handoff(s) that had no plan" in upgraded.stdout
    with database.session() as session:
        days = select(FollowupContact.day).where(FollowupContact.referral_id == "r-1")
        assert list(session.scalars(days.order_by(FollowupContact.day))) == [1, 3, 7, 30]
    with database.session() as session:
        head = session.scalar(select(func.max(LogEvent.seq)))
        state = session.get(LogSummaryState, "dashboard")
        assert head == 3 and state is not None and state.seq == head
    database.engine.dispose()


# 11: quiet unless asked


def test_key_audit_and_outbox_commands_are_quiet_unless_asked(tmp_path):
    env = {"HANDOFF_INSTANCE_PATH": str(demo_instance(tmp_path / "instance"))}
    assert handoff("db", "upgrade", cwd=tmp_path, env=env).returncode == 0
    for command in (["keys", "list"], ["outbox", "list"], ["audit", "verify"]):
        done = handoff(*command, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        assert "INFO" not in done.stderr and "alembic" not in done.stderr, command
    fresh = {"HANDOFF_INSTANCE_PATH": str(demo_instance(tmp_path / "fresh"))}
    asked = handoff("--verbose", "db", "upgrade", cwd=tmp_path, env=fresh)
    assert asked.returncode == 0 and "Running upgrade" in asked.stderr, asked.stderr
    assert "(was empty)" in asked.stdout


# 17: no silent public URL


def test_a_missing_public_url_is_a_startup_error_naming_the_setting(tmp_path):
    with pytest.raises(StartupError, match="HANDOFF_PUBLIC_URL is not set"):
        create_app(production(tmp_path, PUBLIC_URL=None), instance_path=str(tmp_path / "i"))
    settings = production(tmp_path)
    served = handoff(
        "serve",
        "--port",
        "8102",
        cwd=tmp_path,
        env={
            "HANDOFF_INSTANCE_PATH": str(tmp_path / "i"),
            "HANDOFF_LAUNCH_DIR": settings["LAUNCH_DIR"],
            "DATABASE_URL": settings["DATABASE_URL"],
        },
    )
    assert served.returncode != 0
    assert "HANDOFF_PUBLIC_URL is not set" in served.stderr and "Traceback" not in served.stderr
    demo = create_app({"DEMO": True}, instance_path=str(tmp_path / "demo"))
    assert demo.config["PUBLIC_URL"] == DEMO_PUBLIC_URL  # only the demo has a default
    demo.extensions["handoff"].db.engine.dispose()


# 18: the sandbox is the demo's


def test_only_the_demo_registers_the_sandbox(tmp_path):
    from smartapp.cli import write_demo_settings

    assert not list(Path(Defaults.LAUNCH_DIR).glob("*.yaml"))  # launch/ ships no registration
    with pytest.raises(StartupError, match="no EHR registration"):
        create_app(
            production(tmp_path, LAUNCH_DIR=Defaults.LAUNCH_DIR), instance_path=str(tmp_path / "i")
        )
    app = create_app(production(tmp_path), instance_path=str(tmp_path / "i"))
    start = app.test_client().get("/")
    assert "127.0.0.1:8800" not in start.text
    assert "127.0.0.1:8800" not in start.headers.get("Content-Security-Policy", "")
    assert app.extensions["handoff"].registry.for_issuer("http://127.0.0.1:8800/fhir") is None
    app.extensions["handoff"].db.engine.dispose()

    write_demo_settings(tmp_path / "demo", "http://127.0.0.1:8800", "http://127.0.0.1:8700")
    demo = create_app(instance_path=str(tmp_path / "demo"))
    assert demo.config["DEMO"] is True
    assert demo.extensions["handoff"].registry.for_issuer("http://127.0.0.1:8800/fhir")
    demo.extensions["handoff"].db.engine.dispose()


def test_gunicorn_refuses_the_demos_instance(tmp_path):
    """The demo's folder (DEMO, the sandbox registered) is never served in production."""
    from smartapp.cli import write_demo_settings

    instance = tmp_path / "demo"
    write_demo_settings(instance, "http://127.0.0.1:8800", "http://127.0.0.1:8700")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    clean.pop("DATABASE_URL", None)
    served = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--workers", "1", "--bind", "127.0.0.1:0",
         "smartapp.wsgi:app"],
        env=clean | {"HANDOFF_INSTANCE_PATH": str(instance)},
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert served.returncode != 0
    assert "handoff: cannot start: DEMO is set" in served.stderr
    assert "Traceback" not in served.stderr


# 19: registrations checked at start


@pytest.mark.parametrize(
    ("registrations", "message"),
    [
        (
            [{"auth_method": "client_secret_basic", "client_secret_env": "HANDOFF_T19_UNSET"}],
            "environment variable HANDOFF_T19_UNSET",
        ),
        ([{"frame_ancestors": ["https://*.hospital.example"]}], "no wildcards"),
        ([{"frame_ancestors": ["*"]}], "no wildcards"),
        ([{"id": "ehr-a"}, {"id": "ehr-b"}], "register the same iss"),
        ([], "no EHR registration"),
    ],
)
def test_registrations_are_checked_at_start(tmp_path, monkeypatch, registrations, message):
    monkeypatch.delenv("HANDOFF_T19_UNSET", raising=False)
    folder = tmp_path / "launch"
    folder.mkdir()
    for fields in registrations:
        registration_folder(folder, fields)
    with pytest.raises(StartupError, match=message):
        create_app(production(tmp_path, LAUNCH_DIR=str(folder)), instance_path=str(tmp_path / "i"))


def test_a_set_secret_passes_and_the_demo_may_have_no_registration(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDOFF_T19_SET", "s3cret")
    folder = registration_folder(
        tmp_path / "launch",
        {"auth_method": "client_secret_basic", "client_secret_env": "HANDOFF_T19_SET"},
    )
    app = create_app(
        production(tmp_path, LAUNCH_DIR=str(folder)), instance_path=str(tmp_path / "i")
    )
    assert [r.id for r in app.extensions["handoff"].registry] == ["ehr"]
    app.extensions["handoff"].db.engine.dispose()
    (tmp_path / "empty").mkdir()
    demo = create_app(
        production(tmp_path, LAUNCH_DIR=str(tmp_path / "empty"), DEMO=True),
        instance_path=str(tmp_path / "d"),
    )
    assert list(demo.extensions["handoff"].registry) == []
    demo.extensions["handoff"].db.engine.dispose()


# 35: PHI at rest


def test_data_and_key_files_are_private(tmp_path):
    previous = os.umask(0o022)  # a usual umask: files would be 0644 unless made private
    try:
        data = tmp_path / "data"
        data.mkdir()
        (data / "handoff.sqlite").touch(mode=0o644)  # made by an older version: tightened
        instance = tmp_path / "instance"
        app = create_app(production(tmp_path), instance_path=str(instance))
        services = app.extensions["handoff"]
        kid = services.keys.generate("ES384")
        with app.app_context(), services.db.session() as session:
            referral_log.append(session, "launch", patient_id="P01-pt")
        with services.db.engine.connect():  # an open connection keeps -wal and -shm
            files = [data / f"handoff.sqlite{end}" for end in ("", "-wal", "-shm")]
            assert all(f.exists() for f in files)
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        assert mode(instance) == 0o700
        keys = instance / "keys"
        assert mode(keys) == 0o700
        assert mode(keys / "secrets.json") == 0o600
        assert mode(keys / f"{kid}.jwk.json") == 0o600
        assert not (instance / "secrets.json").exists()
        fresh = tmp_path / "fresh-data" / "handoff.sqlite"
        other = create_app(
            production(tmp_path, DATABASE_URL=f"sqlite:///{fresh}"), instance_path=str(instance)
        )
        assert mode(fresh.parent) == 0o700 and mode(fresh) == 0o600  # a folder Handoff made
        services.db.engine.dispose()
        other.extensions["handoff"].db.engine.dispose()
    finally:
        os.umask(previous)


def test_keys_are_kept_apart_from_the_data_in_production(tmp_path):
    instance = str(tmp_path / "instance")
    with pytest.raises(StartupError, match="keys beside the data: KEYS_DIR .* AUDIT_SIGNING_KEY"):
        create_app(
            production(tmp_path, DATABASE_URL=None), instance_path=instance
        )  # all in instance/
    assert not (tmp_path / "instance" / "handoff.sqlite").exists()
    apart = production(
        tmp_path,
        DATABASE_URL=None,
        KEYS_DIR=str(tmp_path / "keys"),
        AUDIT_SIGNING_KEY=str(tmp_path / "keys" / "audit-signing-key.pem"),
    )
    app = create_app(apart, instance_path=instance)
    assert (tmp_path / "keys" / "secrets.json").exists()
    app.extensions["handoff"].db.engine.dispose()
    demo = create_app({"DEMO": True}, instance_path=str(tmp_path / "demo"))  # the demo: one folder
    demo.extensions["handoff"].db.engine.dispose()


def test_a_launch_context_keeps_only_what_the_screen_needs():
    cipher = TokenCipher(TokenCipher.new_key())
    response = {
        "access_token": "at",
        "refresh_token": "rt",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "launch openid fhirUser patient/*.rs",
        "id_token": "h.p.s",
        "patient": "P01-pt",
        "encounter": "P01-enc",
        "need_patient_banner": False,
        "location": "ED bay 4",
        "username": "avery.demo",
    }
    kept = cipher.decrypt(cipher.encrypt(response, "ctx-1"), "ctx-1")
    assert kept == {
        k: response[k]
        for k in ("access_token", "refresh_token", "token_type", "expires_in", "scope", "id_token")
    }


def _context(session, context_id: str, age: timedelta, encounter: str | None = "E1") -> None:
    session.add(
        LaunchContext(
            id=context_id,
            browser_id="b",
            registration_id="sandbox",
            iss=f"{EHR}/fhir",
            patient_id=f"pt-{context_id}",
            encounter_id=encounter,
            scope="launch",
            token_ciphertext=b"x",
            token_endpoint=f"{EHR}/token",
            created_at=datetime.now(UTC) - age,
        )
    )


def _referral(session, context_id: str, status: str) -> None:
    session.add(
        Referral(
            id=f"r-{context_id}",
            visit_key=f"v-{context_id}",
            context_id=context_id,
            iss=f"{EHR}/fhir",
            patient_id=f"pt-{context_id}",
            encounter_id="E1",
            decision={},
            plan={},
            status=status,
        )
    )


def test_launch_purge_deletes_old_contexts_but_never_the_log(tmp_path):
    instance = demo_instance(tmp_path / "instance")
    app = create_app(instance_path=str(instance))
    db = app.extensions["handoff"].db
    with app.app_context(), db.session() as session:
        _context(session, "old", timedelta(days=10))
        _context(session, "recent", timedelta(days=1))
        _context(session, "old-queued", timedelta(days=10))
        _referral(session, "old-queued", "queued")
        _context(session, "old-written", timedelta(days=10), encounter=None)
        _referral(session, "old-written", "written")
        for _ in range(3):
            referral_log.append(session, "launch", patient_id="pt-old")
    env = {"HANDOFF_INSTANCE_PATH": str(instance)}
    done = handoff("launch", "purge", cwd=tmp_path, env=env)  # default: the retention setting
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("purged 2 launch contexts older than 7 days (1 kept")
    with db.session() as session:
        assert set(session.scalars(select(LaunchContext.id))) == {"recent", "old-queued"}
        assert session.scalar(select(func.count()).select_from(LogEvent)) == 3
    done = handoff("launch", "purge", "--older-than", "0", cwd=tmp_path, env=env)
    assert done.returncode == 0 and done.stdout.startswith("purged 1 launch contexts")
    with db.session() as session:
        assert set(session.scalars(select(LaunchContext.id))) == {"old-queued"}
        assert session.scalar(select(func.count()).select_from(LogEvent)) == 3
    db.engine.dispose()


def test_readme_says_what_phi_is_kept_where_and_for_how_long():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## What PHI is kept where, for how long", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "LAUNCH_CONTEXT_RETENTION_DAYS",
        "handoff launch purge",
        "referral log",
        "KEYS_DIR",
        "AUDIT_SIGNING_KEY",
        "0600",
    ):
        assert needed in section, needed
    assert hasattr(Defaults, "LAUNCH_CONTEXT_RETENTION_DAYS")
