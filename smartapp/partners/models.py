"""Partner-side tables (consents to share, issued partner tokens, used client assertions)."""

from __future__ import annotations
