"""FHIR errors and OperationOutcome bodies: every error the server returns carries one."""

from __future__ import annotations

from http import HTTPStatus

#: HTTP status -> the OperationOutcome issue code used when none is given.
_DEFAULT_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    415: "not-supported",
    422: "processing",
    500: "exception",
}


class FhirError(Exception):
    """An error answered with `status` and an OperationOutcome."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        expression: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or _DEFAULT_CODES.get(status, "processing")
        self.expression = expression
        self.headers = headers or {}

    def outcome(self) -> dict:
        """The OperationOutcome for this error."""
        return operation_outcome(self.message, self.code, expression=self.expression)


def operation_outcome(
    message: str,
    code: str = "processing",
    severity: str = "error",
    *,
    expression: str | None = None,
) -> dict:
    """A one-issue OperationOutcome."""
    issue: dict = {"severity": severity, "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def status_line(status: int) -> str:
    """Bundle entry response status text, e.g. '201 Created'."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
