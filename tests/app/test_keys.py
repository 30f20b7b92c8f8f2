"""`handoff keys`: generate, publish, rotate and retire signing keys by key id."""

from __future__ import annotations

import json

import requests
from click.testing import CliRunner

from smartapp.cli import cli
from smartapp.launch.keys import KeyStore


def run(*args: str, env: dict) -> str:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_generate_list_rotate_retire(tmp_path):
    env = {
        "HANDOFF_KEYS_DIR": str(tmp_path / "keys"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite'}",
    }
    first = run("keys", "generate", "--alg", "RS384", env=env)
    second = run("keys", "generate", "--alg", "ES384", "--kid", "ec-2026-11", env=env)
    assert second == "ec-2026-11"
    listed = run("keys", "list", env=env).splitlines()
    assert sorted(listed) == sorted([f"{first}\tRS384", "ec-2026-11\tES384"])
    store = KeyStore(tmp_path / "keys")
    published = {key["kid"]: key for key in store.public_jwks()["keys"]}
    assert set(published) == {first, "ec-2026-11"}  # both published during a rotation
    assert all("d" not in key for key in published.values())
    assert (tmp_path / "keys" / f"{first}.jwk.json").stat().st_mode & 0o777 == 0o600
    run("keys", "retire", first, env=env)
    assert [k["kid"] for k in store.public_jwks()["keys"]] == ["ec-2026-11"]


def test_duplicate_kid_is_refused(tmp_path):
    env = {
        "HANDOFF_KEYS_DIR": str(tmp_path / "keys"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite'}",
    }
    run("keys", "generate", "--kid", "k-0001", env=env)
    result = CliRunner().invoke(cli, ["keys", "generate", "--kid", "k-0001"], env=env)
    assert result.exit_code == 1 and "exists already" in result.output


def test_app_serves_its_jwks(handoff_jwt):
    served = requests.get(f"{handoff_jwt.url}/.well-known/jwks.json", timeout=5).json()
    keys_dir = handoff_jwt.app.extensions["handoff"].keys
    assert served == json.loads(json.dumps(keys_dir.public_jwks()))
    assert {k["alg"] for k in served["keys"]} <= {"RS384", "ES384"}
