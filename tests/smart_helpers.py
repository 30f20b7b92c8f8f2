"""A SMART client for tests, done by hand with requests: get a token from the sandbox the way
an app would (EHR launch from the chart page, PKCE S256), to read back what Handoff wrote."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html import unescape
from urllib.parse import parse_qs, urlencode, urlparse

import requests


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge.rstrip(b"=").decode()


def chart_launch(ehr_url: str, patient_id: str, session: requests.Session | None = None) -> str:
    """Open the patient's chart in the sandbox (as the demo physician); return a launch value."""
    session = session or requests.Session()
    session.get(f"{ehr_url}/", timeout=10).raise_for_status()
    html = session.get(f"{ehr_url}/chart/{patient_id}", timeout=10).text
    match = re.search(r'id="handoff-frame"[^>]*src="([^"]+)"', html) or re.search(
        r'src="([^"]+)"[^>]*id="handoff-frame"', html
    )
    assert match, "chart page has no Handoff frame"
    return parse_qs(urlparse(unescape(match.group(1))).query)["launch"][0]


def token_for(
    ehr_url: str,
    patient_id: str,
    client_id: str,
    redirect_uri: str,
    scope: str = "launch openid fhirUser patient/*.rs",
) -> dict:
    """Full authorization code flow with PKCE; returns the token response."""
    fhir_base = f"{ehr_url}/fhir"
    session = requests.Session()
    launch = chart_launch(ehr_url, patient_id, session)
    config = session.get(f"{fhir_base}/.well-known/smart-configuration", timeout=10).json()
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "aud": fhir_base,
            "launch": launch,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    answer = session.get(
        f"{config['authorization_endpoint']}?{query}", allow_redirects=False, timeout=10
    )
    assert answer.status_code in (302, 303), answer.text[:500]
    params = parse_qs(urlparse(answer.headers["Location"]).query)
    assert params["state"] == [state]
    token = session.post(
        config["token_endpoint"],
        data={
            "grant_type": "authorization_code",
            "code": params["code"][0],
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=10,
    )
    token.raise_for_status()
    return token.json()


class FhirReader:
    """Reads from a FHIR server with a bearer token, over HTTP."""

    def __init__(self, base: str, access_token: str) -> None:
        self.base = base
        self.headers = {
            "Authorization": f"Bearer {access_token}",
            "Accept": "application/fhir+json",
        }

    def get(self, path: str) -> dict:
        response = requests.get(f"{self.base}/{path}", headers=self.headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def search(self, path: str) -> list[dict]:
        return [e["resource"] for e in self.get(path).get("entry", [])]
