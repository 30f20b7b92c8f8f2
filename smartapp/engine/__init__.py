"""Handoff's clinical rule engine: charts in, suggestions out, rules as data.

Pure functions only (no web, HTTP or database); the pack loader is the only file I/O.
"""

from .chart import Chart, ChartError
from .evaluate import DeclineReason, Evaluation, Suggestion, evaluate
from .pack import Pack, PackError, default_pack_path, load_pack

__all__ = [
    "Chart",
    "ChartError",
    "DeclineReason",
    "Evaluation",
    "Pack",
    "PackError",
    "Suggestion",
    "default_pack_path",
    "evaluate",
    "load_pack",
]
