"""The auditor console (search the referral log, read one event, export) and, on the same
blueprint, the program dashboard page.

`bp` is the "console" blueprint with every page registered: the auditor pages
(`console.views`) and the dashboard (`smartapp.staff.dashboard.views`).
"""

from smartapp.staff.console import views as _auditor_pages  # noqa: F401 (registers routes)
from smartapp.staff.console.blueprint import AUDITOR, MANAGER, bp
from smartapp.staff.dashboard import views as _dashboard_page  # noqa: F401 (registers routes)

__all__ = ["AUDITOR", "MANAGER", "bp"]
