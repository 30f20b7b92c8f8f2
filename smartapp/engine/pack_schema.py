"""JSON Schema of the rule pack file format (``rules/schema/pack.schema.json``)."""

from __future__ import annotations

from typing import Any

from .pack_model import PackDocument
from .pack_selectors import PARAM_REF


def pack_json_schema() -> dict[str, Any]:
    """JSON Schema of the pack file format (``rules/schema/pack.schema.json``).

    Generated from the models; every value outside ``parameters`` may also be a
    ``$parameter`` reference, which the schema allows.
    """
    schema = PackDocument.model_json_schema(by_alias=True)
    defs = schema.setdefault("$defs", {})
    defs["ParameterReference"] = {
        "type": "string",
        "pattern": PARAM_REF.pattern,
        "description": "A reference to a value in the pack's parameters.",
    }
    _allow_references(schema, skip=("parameters",))
    for definition in defs.values():
        _allow_references(definition)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "urn:handoff:rules:pack.schema.json"
    return schema


def _allow_references(schema: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Let each property (and list item, map value) also be a parameter reference."""
    ref = {"$ref": "#/$defs/ParameterReference"}
    for name, prop in (schema.get("properties") or {}).items():
        if name not in skip:
            schema["properties"][name] = {"anyOf": [_with_items(prop), ref]}


def _with_items(prop: dict[str, Any]) -> dict[str, Any]:
    """Allow parameter references inside array items and map values too."""
    ref = {"$ref": "#/$defs/ParameterReference"}
    for key in ("items", "additionalProperties"):
        if isinstance(prop.get(key), dict) and prop[key]:
            prop[key] = {"anyOf": [prop[key], ref]}
    for option in prop.get("anyOf", []):
        _with_items(option)
    return prop
