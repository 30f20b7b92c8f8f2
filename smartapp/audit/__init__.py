"""Tamper evidence for the referral log: hash chain, signed checkpoints, verification, export.

`smartapp.db` is imported first on purpose: it re-exports `LogEvent` from `audit.models`, so
whichever of the two is imported first, both tables end up in `Base.metadata` (and so in
`Database.create_all()`), and the import cycle resolves the same way every time.
"""

from __future__ import annotations

import smartapp.db  # noqa: F401  (see the docstring: fixes the import order)
