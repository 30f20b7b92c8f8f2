"""Templates' attribute lookups on plain dicts, key first.

Jinja reads `shown.patient.name` as `getattr(shown, "patient")`, and when that raises
AttributeError, as `shown["patient"]`. The screen's pages are built from plain dicts (what was
shown, as kept on the launch), so nearly every lookup raised and caught an AttributeError
first: some 370 of them per screen page. A plain dict has no attribute but those of its type,
so for any other name the key is read at once: the same value, or the same Undefined, as
Jinja's own lookup gives.
"""

from __future__ import annotations

from typing import Any

from flask.templating import Environment

#: The only attributes a plain dict has (its methods and dunders): those keep Jinja's order.
_DICT_ATTRIBUTES = frozenset(dir(dict))


class DictKeyFirstEnvironment(Environment):
    """Flask's template environment, with `getattr` reading a plain dict's key at once."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if obj.__class__ is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)
