"""The one place the tests find the shared folder (labelled scenarios, Synthea, the peer FHIR
server): $HANDOFF_SHARED_DIR, else `shared/` beside the checkout (as CI lays it out)."""

from __future__ import annotations

import os
from pathlib import Path

SHARED_ENV = "HANDOFF_SHARED_DIR"
REPO = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get(SHARED_ENV) or REPO.parent / "shared")
SCENARIOS_DIR = SHARED_DIR / "scenarios"
