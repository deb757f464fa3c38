"""Builders of OpenAPI v3 schema fragments, as a Kubernetes structural schema spells them.

Shared by the spec's generated schema (`dj_operator.api.fields`) and the hand-written status
schema (`dj_operator.api.crd`), so that a string, an integer or a free-form object is spelled
one way in the whole CRD.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

PRESERVE = "x-kubernetes-preserve-unknown-fields"
VALIDATIONS = "x-kubernetes-validations"


def string(description: str, **extra: Any) -> Schema:
    return {"type": "string", "description": description, **extra}


def integer(description: str, **extra: Any) -> Schema:
    return {"type": "integer", "format": "int32", "description": description, **extra}


def integer64(description: str) -> Schema:
    return {"type": "integer", "format": "int64", "description": description}


def boolean(description: str, **extra: Any) -> Schema:
    return {"type": "boolean", "description": description, **extra}


def timestamp(description: str) -> Schema:
    return string(description, format="date-time")


def obj(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def free(description: str) -> Schema:
    """An object passed through unchecked (a Kubernetes type the CRD does not repeat)."""
    return {"type": "object", "description": description, PRESERVE: True}


def free_list(description: str, max_items: int) -> Schema:
    return {
        "type": "array",
        "description": description,
        "maxItems": max_items,
        "items": {"type": "object", PRESERVE: True},
    }


def string_map(description: str, max_properties: int = 64) -> Schema:
    return {
        "type": "object",
        "description": description,
        "maxProperties": max_properties,
        "additionalProperties": {"type": "string", "maxLength": 1024},
    }
