"""The coach program's supervisor view (role `supervisor`): caseload per coach now and over
time, handoffs waiting with no coach, overdue follow-ups, after-hours coverage, and
reassignment. Pure figures in `figures`, the store and the action in `service`, the page in
`views` (blueprint `supervisor`, /supervisor). Supervisors see coach names; program managers
(the dashboard) never do.

The package itself imports no Flask: `from smartapp.staff.supervisor import figures` works
without the web app.
"""
