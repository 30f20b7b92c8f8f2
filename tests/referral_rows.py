"""A stored referral as a row to insert (Core), for tests and benchmarks that build a store of
many referrals without signing each one."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def referral_row(
    referral_id: str, index: int, signed: datetime, decision: dict, plan: dict[str, Any]
) -> dict[str, Any]:
    """Referral `referral_id` (visit, context, patient and encounter numbered `index`), signed
    at `signed` and written."""
    return {
        "id": referral_id,
        "visit_key": f"visit-{index}",
        "context_id": f"context-{index}",
        "iss": "https://ehr.example/fhir",
        "patient_id": f"p{index}",
        "encounter_id": f"e{index}",
        "decision": decision,
        "plan": plan,
        "status": "written",
        "attempts": 1,
        "next_attempt_at": signed,
        "created_at": signed,
        "updated_at": signed,
    }
