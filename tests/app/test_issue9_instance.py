"""Issue 9 item 6: `handoff audit verify` and `handoff outbox list`, run beside a running demo,
read the demo's data (one place decides the instance folder), not a new empty database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from smartapp.web.serving import reserve_port
from tests import launch_flow
from tests.stacks import started


def test_commands_beside_a_running_demo_read_its_data(tmp_path, shared_dir):
    data = tmp_path / "handoff-data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDOFF_")}
    env.pop("DATABASE_URL", None)
    env |= {"HANDOFF_INSTANCE_PATH": str(data), "HANDOFF_SHARED_DIR": str(shared_dir)}
    ehr_port, app_port = reserve_port(), reserve_port()
    ehr_url, app_url = f"http://127.0.0.1:{ehr_port}", f"http://127.0.0.1:{app_port}"
    demo = subprocess.Popen(
        [sys.executable, "-m", "smartapp.cli", "demo", "--seed", "scenarios",
         "--ehr-port", str(ehr_port), "--app-port", str(app_port)],
        env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def handoff(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "smartapp.cli", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    try:
        started(demo, f"{app_url}/", seconds=120)
        launch = launch_flow.full(app_url, ehr_url, "P01-pt")
        assert launch.final.status_code == 200, launch.final.text[:300]
        signed = launch_flow.sign_all(launch, app_url)
        assert signed.status_code == 200, signed.text[:300]

        verified = handoff("audit", "verify")  # as the README writes it, beside the demo
        assert verified.returncode == 0, verified.stdout + verified.stderr
        events = int(verified.stdout.split()[1])
        assert verified.stdout.startswith("OK: ") and events >= 3, verified.stdout  # launch,
        # suggestions shown, decision at least
        listed = handoff("outbox", "list", "--all")
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 1  # the referral just signed
        assert listed.stdout.split("\t")[1] in ("queued", "written", "held")
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(20)
        except subprocess.TimeoutExpired:
            demo.kill()
    assert (data / "handoff.sqlite").is_file() and (data / "config.py").is_file()
    assert not (data / "app").exists()  # one instance folder, the one every command reads
