"""Partner files (launch/partners/*.yaml) are data the hospital's IT team writes: a mistake
names its file, line and field; the sample in the repo is valid; an edited file is read again."""

from __future__ import annotations

import pytest

from smartapp.config import REPO_ROOT
from smartapp.partners.registry import PartnerDirectory, PartnerError, load_partner, load_partners

GOOD = """\
id: bridge-health
name: Example Bridge Health
organization:
  reference: Organization/example-bridge-health
programs: [bridge-clinic]
client:
  client_id: bridge-system
  jwks_uri: https://bridge.example.org/jwks.json
"""


def test_the_sample_is_valid():
    partner = load_partner(REPO_ROOT / "launch" / "partners" / "samples" / "bridge-health.yaml")
    assert partner.reference == "Organization/example-bridge-health"
    assert partner.client is not None and partner.client.algorithms == ["ES384", "RS384"]


@pytest.mark.parametrize(
    ("change", "line", "field", "words"),
    [
        (
            ("  client_id: bridge-system\n", "  client_id: bridge-system\n  algorithms: [HS256]\n"),
            8,
            "client.algorithms.0",
            "ES384",
        ),
        (
            ("  jwks_uri: https://bridge.example.org/jwks.json\n", ""),
            6,
            "client",
            "jwks_uri or jwks",
        ),
        (("programs: [bridge-clinic]\n", "programs: []\n"), 5, "programs", "at least 1"),
        (
            ("  reference: Organization/example-bridge-health\n", "  reference: Practitioner/x\n"),
            4,
            "organization.reference",
            "pattern",
        ),
        (("client:\n", "colour: blue\nclient:\n"), 6, "colour", "Extra inputs"),
        (
            (
                "  client_id: bridge-system\n",
                "  client_id: bridge-system\n  scopes: [system/*.cruds]\n",
            ),
            8,
            "client.scopes",
            "unknown scope",
        ),
    ],
)
def test_a_mistake_names_file_line_and_field(tmp_path, change, line, field, words):
    path = tmp_path / "bridge.yaml"
    path.write_text(GOOD.replace(*change))
    with pytest.raises(PartnerError) as error:
        load_partner(path)
    message = str(error.value)
    assert message.startswith(f"{path}:{line}: {field}: "), message
    assert words in message


def test_a_private_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "bridge.yaml"
    text = GOOD.replace(
        "  jwks_uri: https://bridge.example.org/jwks.json\n",
        "  jwks: {keys: [{kty: EC, crv: P-384, x: a, y: b, d: secret}]}\n",
    )
    path.write_text(text)
    with pytest.raises(PartnerError, match="private key"):
        load_partner(path)


def test_two_partners_may_not_share_an_organisation(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(
        GOOD.replace("id: bridge-health", "id: other").replace("bridge-system", "other-system")
    )
    with pytest.raises(PartnerError, match="the same partner reference twice"):
        load_partners(tmp_path)


def test_the_directory_reads_an_edit_and_fails_closed_on_a_broken_one(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    directory = PartnerDirectory(tmp_path)
    assert directory.current().by_client("bridge-system") is not None
    (tmp_path / "a.yaml").write_text(GOOD.replace("jwks.json\n", "jwks.json\n  revoked: true\n"))
    assert directory.current().by_client("bridge-system").client.revoked
    (tmp_path / "a.yaml").write_text(GOOD + "  revoked: maybe-later\n")
    assert directory.current().by_client("bridge-system") is None
    assert "revoked" in (directory.error or "")


def test_handoff_partners_check_names_unknown_programs_and_unfit_keys(tmp_path):
    from click.testing import CliRunner
    from joserfc.jwk import ECKey

    from smartapp.partners.cli import partners

    p256 = ECKey.generate_key("P-256", parameters={"kid": "k1"}).as_dict(private=False)
    text = GOOD.replace("programs: [bridge-clinic]", "programs: [bridge-clinic, no-such-program]")
    text = text.replace(
        "  jwks_uri: https://bridge.example.org/jwks.json\n",
        f"  jwks: {{keys: [{{kty: EC, crv: P-256, kid: k1, x: {p256['x']}, y: {p256['y']}}}]}}\n"
        "  algorithms: [ES384]\n",
    )
    (tmp_path / "bridge.yaml").write_text(text)
    catalog = REPO_ROOT / "catalog" / "sample"
    result = CliRunner().invoke(
        partners, ["check", "--folder", str(tmp_path), "--catalog", str(catalog)]
    )
    assert result.exit_code == 1
    assert "programs not in the catalog" in result.output and "no-such-program" in result.output
    assert "no key fits ['ES384']" in result.output

    sample = REPO_ROOT / "launch" / "partners" / "samples"
    result = CliRunner().invoke(
        partners, ["check", "--folder", str(sample), "--catalog", str(catalog)]
    )
    assert result.exit_code == 0 and "1 partner(s)" in result.output
