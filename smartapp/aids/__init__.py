"""Decision aids on the physician's screen (issue 13 item 4): the COWS calculator when no COWS
was recorded this visit, and the DSM-5 OUD checklist when OUD rests on an overdose alone.

`data` (the items as data, `rules/aids/*.yaml`, and their scoring: pure), `offer` (which aids
the engine's result calls for: pure), `service` (Flask-free: record a COWS, written to the EHR
or kept in Handoff, record a checklist, what the screen and the note need), `views` (the
blueprint: parse, call the service, redirect back to the screen).
"""
