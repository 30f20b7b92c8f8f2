"""Tamper evidence for the referral log: hash chain, signed checkpoints, verification, export.

Modules: `log` (append events, audit reads, user names), `models` and `rows` (the tables, and
rows read raw so a damaged one is named, not fatal), `canonical` (the hashed bytes), `chain`
(appending under a lock, checkpoint signing), `signing` (Ed25519 keys), `kept` (checkpoints
kept off the box), `verify` (the chain walk; `findings`, `diagnose`, `checkpoint_check`,
`kept_check` beside it), `coverage` (the log against the referral tables), `export` (FHIR
AuditEvent NDJSON / CSV), `cli` (`handoff audit ...`).

`smartapp.db` is imported first on purpose: it re-exports `LogEvent` from `audit.models`, so
whichever of the two is imported first, both tables end up in `Base.metadata` (and so in
`Database.create_all()`), and the import cycle resolves the same way every time.
"""

from __future__ import annotations

import smartapp.db  # noqa: F401  (see the docstring: fixes the import order)
