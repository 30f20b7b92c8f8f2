"""The coach team's worklist: open warm handoffs, what a coach needs to work them, and what
coaches do with them (Flask-free; the page is `smartapp.staff.worklist_views`).

- `items`: the handoffs as the coach sees them (patient, phone, location in the ED, signing
  physician, MOUD and naloxone decisions, linkage note, waiting time to acceptance, status,
  follow-up plan) and `snapshot`, what the page polls to follow changes without reloading.
- `actions`: accept, reassign, contact attempts, link, close, through the lifecycle.
"""

from smartapp.handoffs.lifecycle import CLOSE_REASONS, OPEN
from smartapp.staff.worklist.actions import (
    ACTIONS,
    WorklistError,
    act,
    coach_actor,
    coach_change,
    loads,
    program_label,
    reassign,
)
from smartapp.staff.worklist.items import ConsultLink, Item, items, snapshot

__all__ = [
    "ACTIONS",
    "CLOSE_REASONS",
    "OPEN",
    "ConsultLink",
    "Item",
    "WorklistError",
    "act",
    "coach_actor",
    "coach_change",
    "items",
    "loads",
    "program_label",
    "reassign",
    "snapshot",
]
