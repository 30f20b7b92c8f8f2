"""Who signs: the display name of the launch's user, for the linkage note and the references
that name the physician (author, requester). No Flask here.

The name comes from the `fhirUser` resource (a Practitioner's `name`), read with the launch's
own token; where the EHR does not let Handoff read it (no scope, an error, a timeout), from the
`name` claim of the launch's id_token (verified at the launch, kept encrypted with the token).
Neither: no name, and the note says who by reference only, as before.
"""

from __future__ import annotations

import base64
import logging

import orjson

from smartapp import sessions
from smartapp.db import LaunchContext
from smartapp.fhir import FhirError

log = logging.getLogger("handoff.signer")

# fhirUser types that carry a HumanName (a PractitionerRole does not).
NAMED_TYPES = ("Practitioner", "Patient", "RelatedPerson", "Person")


def display_name(services, context: LaunchContext) -> str | None:
    """The signing user's display name: from the fhirUser resource, else the id_token."""
    name = None
    if context.user_ref and context.user_ref.split("/", 1)[0] in NAMED_TYPES:
        try:
            user = sessions.client_for(services, context.id).get(context.user_ref)
            name = human_name(user.get("name"))
        except (FhirError, sessions.SessionEnded) as exc:
            log.info("signer name not read from fhirUser (%s); using the id_token", exc)
    if name:
        return name
    token = services.cipher.decrypt(context.token_ciphertext, context.id)
    return id_token_name(token.get("id_token"))


def human_name(names) -> str | None:
    """A HumanName list in words: the official (else first) name's `text`, else its prefix,
    given, family and suffix ("Avery Demo, MD")."""
    if not isinstance(names, list):
        return None
    names = [n for n in names if isinstance(n, dict)]
    if not names:
        return None
    name = next((n for n in names if n.get("use") == "official"), names[0])
    if isinstance(name.get("text"), str) and name["text"].strip():
        return name["text"].strip()
    words = [
        *_strings(name.get("prefix")),
        *_strings(name.get("given")),
        *_strings([name.get("family")]),
    ]
    suffix = ", ".join(_strings(name.get("suffix")))
    full = " ".join(words)
    return (f"{full}, {suffix}" if full and suffix else full or suffix) or None


def id_token_name(id_token: str | None) -> str | None:
    """The `name` claim of an id_token already verified at the launch (not verified again:
    it is Handoff's own encrypted copy)."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return None
    name = claims.get("name") if isinstance(claims, dict) else None
    return name.strip() if isinstance(name, str) and name.strip() else None


def _strings(values) -> list[str]:
    if not isinstance(values, list):
        return []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]
