"""FHIR errors: FhirError, and an EHR's HTTP answer read as FHIR JSON or turned into a
FhirError with the server's own (bounded) message. Shared by the client and the chart read."""

from __future__ import annotations

from typing import Any

import orjson
import requests


class FhirError(Exception):
    """A FHIR request failed. `transient` says whether retrying later may succeed.

    `unknown_outcome`: the request reached the EHR and a write may have been committed (the
    answer was cut, unreadable, or did not come in time): read back before writing again.
    `in_flight`: no answer came in time, so the EHR may still be working on it and commit later.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
        unknown_outcome: bool = False,
        in_flight: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient
        self.retry_after = retry_after
        self.unknown_outcome = unknown_outcome
        self.in_flight = in_flight


def parse_response(response: requests.Response) -> dict:
    """The JSON object of a successful answer; anything else raises FhirError (transient or
    not, with the unknown outcome of a success that cannot be read)."""
    try:
        body = orjson.loads(response.content) if response.content else {}
    except orjson.JSONDecodeError:
        body = None
    if response.status_code < 300 and isinstance(body, dict):
        return body
    if response.status_code < 300:
        # A success whose body cannot be read: the EHR may well have done it. Not a refusal:
        # an unknown outcome, to confirm by reading back.
        raise FhirError(
            f"The EHR answered HTTP {response.status_code} with something that is not FHIR "
            "JSON; Handoff checks the chart for what landed.",
            status=response.status_code,
            transient=True,
            unknown_outcome=True,
        )
    message = _outcome_text(body) or response.reason or "error"
    transient = response.status_code in (408, 429) or response.status_code >= 500
    retry_after = None
    if response.headers.get("Retry-After", "").isdigit():
        retry_after = float(response.headers["Retry-After"])
    raise FhirError(
        f"The EHR answered HTTP {response.status_code}: {message}",
        status=response.status_code,
        transient=transient,
        retry_after=retry_after,
    )


OUTCOME_TEXT_MAX = 500  # characters of an OperationOutcome's text Handoff repeats


def _outcome_text(body: Any) -> str | None:
    """The text of an OperationOutcome, bounded; None for any other body."""
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    texts = []
    issues = body.get("issue")
    for issue in issues if isinstance(issues, list) else ():
        if not isinstance(issue, dict):  # a hostile outcome is read as far as it can be
            continue
        details = issue.get("details")
        text = (
            issue.get("diagnostics")
            or (details.get("text") if isinstance(details, dict) else None)
            or issue.get("code", "")
        )
        expression = issue.get("expression")
        where = (
            ", ".join(e for e in expression if isinstance(e, str))
            if isinstance(expression, list)
            else ""
        )
        text = text if isinstance(text, str) else ""
        texts.append(f"{text} ({where})" if where else text)
    joined = "; ".join(t for t in texts if t)
    # The EHR's words go on a page and into a log line: bounded (issue 9 item 28).
    return (joined[:OUTCOME_TEXT_MAX] + "…" if len(joined) > OUTCOME_TEXT_MAX else joined) or None
