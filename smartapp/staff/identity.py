"""Who a signed-in staff member is, from the identity provider's claims, and where sign-in may
send them back to (Flask-free: the sign-in views in `smartapp.staff.auth` call these)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from smartapp.audit import log as referral_log
from smartapp.db import Database

ROLES = ("coach", "auditor", "program-manager", "supervisor")

#: A same-origin path (and query): a single leading slash, then printable ASCII without
#: backslashes. Browsers drop tabs and newlines and read `\\` as `/` before they follow a
#: redirect, so `/\t/evil`, `/\\evil` or `/\n` must never reach a Location header.
SAME_ORIGIN_PATH = re.compile(r"/(?![/\\])[!-\[\]-~]*")


def staff_from_claims(claims: Mapping[str, Any], roles_claim: str) -> dict:
    """The staff member an id_token's claims name: sub, name, FHIR user reference and the
    Handoff roles among those the `roles_claim` lists (others are ignored)."""
    return {
        "sub": claims.get("sub"),
        "name": claims.get("name") or claims.get("sub"),
        "user_ref": claims.get("fhirUser") or f"urn:staff:{claims.get('sub')}",
        "roles": [r for r in claims.get(roles_claim, []) if r in ROLES],
    }


def safe_next(target: str | None) -> str | None:
    """`target` when it is a path on this origin, else None (sign-in then goes home), so
    sign-in cannot be used to redirect elsewhere, nor to break the response."""
    if target and SAME_ORIGIN_PATH.fullmatch(target):
        return target
    return None


def record_sign_in(db: Database, staff: dict) -> None:
    """The `staff-sign-in` event: who signed in, with which roles."""
    with db.session() as session:
        referral_log.append(
            session,
            "staff-sign-in",
            user_ref=staff["user_ref"],
            user_name=staff["name"],
            data={"roles": staff["roles"]},
        )
