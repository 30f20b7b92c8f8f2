"""The program dashboard: pure figures (`figures`, with `visits`, `suppression`, `groups`),
the same figures added up in the database over the kept visits (`store`, `columns`,
`aggregate`, through `service`), their SVG chart geometry (`charts`), and the page (`views`,
on the console blueprint).

The package exposes the pure figures, so `from smartapp.staff import dashboard` and
`dashboard.summarize(events)` need neither Flask nor a database.
"""

from smartapp.staff.dashboard.figures import *  # noqa: F403 (the figures' public names)
from smartapp.staff.dashboard.figures import __all__  # noqa: F401
