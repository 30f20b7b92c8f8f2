"""Handoff's clinical rule engine: charts in, suggestions out, rules as data.

Pure functions only (no web, HTTP or database); the pack loader is the only file I/O.
"""

from .chart import Chart, ChartError
from .evaluate import (
    Blocked,
    DeclineReason,
    Evaluation,
    Notice,
    Suggestion,
    Withheld,
    evaluate,
)
from .pack import Pack, PackError, default_pack_path, load_pack

__all__ = [
    "Blocked",
    "Chart",
    "ChartError",
    "DeclineReason",
    "Evaluation",
    "Notice",
    "Pack",
    "PackError",
    "Suggestion",
    "Withheld",
    "default_pack_path",
    "evaluate",
    "load_pack",
]
