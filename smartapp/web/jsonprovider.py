"""Flask's JSON (request bodies, `jsonify`) through orjson (`smartapp.jsonio`): a CDS Hooks
call carries a whole chart as prefetch, and the standard library's parser was a visible part of
its time. Output as Flask's own provider makes it (sorted keys, compact, dates as HTTP dates,
dataclasses and the rest through its `default`), UTF-8 as itself instead of escaped; anything
orjson does not take the same way goes to Flask's provider."""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider

from smartapp.jsonio import read_json

_COMPACT = {"separators": (",", ":")}


class FastJSONProvider(DefaultJSONProvider):
    """DefaultJSONProvider with orjson underneath where the result is the same JSON."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return read_json(s) if not kwargs else super().loads(s, **kwargs)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs and kwargs != _COMPACT:  # e.g. indent for a debugging app: Flask's own
            return super().dumps(obj, **kwargs)
        # Keys other than strings go to Flask's provider (it orders them as numbers).
        option = orjson.OPT_PASSTHROUGH_DATETIME
        if self.sort_keys:
            option |= orjson.OPT_SORT_KEYS
        try:
            return orjson.dumps(obj, default=self.default, option=option).decode()
        except (orjson.JSONEncodeError, TypeError):
            return super().dumps(obj, **kwargs)
