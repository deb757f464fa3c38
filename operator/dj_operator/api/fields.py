"""How the DataJuicerJob spec is described, and the two things made from that description.

A part of the spec (a *block*) is a frozen dataclass whose class attribute ``BLOCK`` holds its
description and cross-field rules, and whose fields are declared with ``spec_field``: the
field's spec key is its name in camelCase, its type is its annotation, and its ``Meta`` holds
everything else (description, default, bounds, choices, pattern, ...). From that one
description:

- ``schema(cls)`` renders the block's OpenAPI v3 schema, as the CRD embeds it;
- ``parse(cls, raw, path, defaults)`` reads a spec mapping into the typed block, with the
  defaults applied (the CRD's own, and the installation's ``OperatorDefaults``), and raises
  ``SpecError`` naming the first bad field, the value and what would be valid.

The apiserver applies the schema; parsing applies the same defaults and bounds, so that the
operator never depends on which defaults an older CRD had. A rule across fields exists in two
languages by necessity: CEL (``Rule``) for the apiserver, and the block's ``check`` for parsing.

Types understood: ``str``, ``int``, ``bool``, ``Obj`` (a Kubernetes object passed through),
``dict[str, str]``, ``tuple[Obj, ...]``, ``tuple[str, ...]``, a block, ``tuple[Block, ...]``,
and any of them ``| None``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dj_operator.api import openapi as oa

Obj = dict[str, Any]
Schema = oa.Schema


class SpecError(ValueError):
    """A spec field is invalid: names the field, the value and what would be valid."""

    def __init__(
        self, field_path: str, value: object, expected: str, message: str | None = None
    ) -> None:
        self.field_path = field_path
        self.value = value
        self.expected = expected
        super().__init__(message or f"{field_path}: got {value!r}; expected {expected}")


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Rule:
    """A CEL rule (``x-kubernetes-validations``) the apiserver checks."""

    rule: str
    message: str

    def render(self) -> Schema:
        return {"rule": self.rule, "message": self.message}


#: A block's cross-field check at parse time: it reads and may complete ``values`` (the parsed
#: fields, by attribute name) and raises SpecError. ``raw`` is the mapping as written.
Check = Callable[[dict[str, Any], Obj, str], None]


@dataclass(frozen=True)
class Block:
    """What a block says about itself: its description and its rules across fields."""

    description: str
    rules: tuple[Rule, ...] = ()
    check: Check | None = None


@dataclass(frozen=True)
class Meta:
    """One spec field: what it may hold, what it means and what it is when absent."""

    description: str = ""
    #: The value when the field is absent; also the CRD's default (unless ``crd_default`` is
    #: false). A block's default is ``{}``: the block with its own defaults.
    default: Any = NO_DEFAULT
    crd_default: bool = True
    #: The ``OperatorDefaults`` attribute that supplies the value when the field is absent.
    operator_default: str | None = None
    #: How a value the job sets combines with that default (``combine(default, value)``);
    #: without it the job's value replaces the default.
    combine: Callable[[Any, Any], Any] | None = None
    #: Required by the CRD. Parsing an absent required block reads it as ``{}`` (so that its
    #: own checks name what is missing); an absent required value fails with ``expected``.
    required: bool = False
    #: How to name the valid values in an error (else derived from the bounds).
    expected: str | None = None
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = None
    min_items: int | None = None
    max_items: int | None = None
    #: ``tuple[str, ...]``: the longest item.
    item_max_length: int | None = None
    #: A list of blocks: the item keys that make it a map (``x-kubernetes-list-map-keys``).
    map_keys: tuple[str, ...] = ()
    #: CEL rules on the value itself, and the same rule at parse time.
    rules: tuple[Rule, ...] = ()
    check: Callable[[Any, str], None] | None = None
    #: The schema as written, for a free-form part with its own structure (the recipe).
    schema: Schema | None = None
    #: The spec key when it is not the attribute's name in camelCase (``recipeYAML``).
    key: str | None = None


def spec_field(description: str = "", **meta: Any) -> Any:
    """A block's dataclass field, described by ``Meta(description, **meta)``."""
    return dataclasses.field(metadata={"spec": Meta(description=description, **meta)})


# -- reading the description ---------------------------------------------------------------


def camel(name: str) -> str:
    """The spec key of a dataclass attribute: ``claim_name`` -> ``claimName``."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


@dataclass(frozen=True)
class FieldInfo:
    """A field of a block, resolved: its key, its type's shape and its meta."""

    attr: str
    key: str
    kind: str  # str | int | bool | obj | str_map | obj_list | str_list | block | block_list
    nullable: bool
    block: type | None
    meta: Meta


def _is_block(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp) and hasattr(tp, "BLOCK")


def _kind(tp: Any) -> tuple[str, type | None]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is str:
        return "str", None
    if tp is bool:
        return "bool", None
    if tp is int:
        return "int", None
    if _is_block(tp):
        return "block", tp
    if origin is dict and args == (str, str):
        return "str_map", None
    if origin is dict:
        return "obj", None
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        item = args[0]
        if item is str:
            return "str_list", None
        if _is_block(item):
            return "block_list", item
        if typing.get_origin(item) is dict:
            return "obj_list", None
    raise TypeError(f"a spec field of type {tp!r} is not supported")


_FIELDS: dict[type, tuple[FieldInfo, ...]] = {}


def fields(cls: type) -> tuple[FieldInfo, ...]:
    """The described fields of block ``cls``, in declaration order."""
    found = _FIELDS.get(cls)
    if found is not None:
        return found
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("spec")
        if not isinstance(meta, Meta):
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with spec_field")
        tp = hints[f.name]
        nullable = False
        if isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp):
            rest = [a for a in typing.get_args(tp) if a is not type(None)]
            tp, nullable = rest[0], True
        kind, block = _kind(tp)
        out.append(FieldInfo(f.name, meta.key or camel(f.name), kind, nullable, block, meta))
    _FIELDS[cls] = tuple(out)
    return _FIELDS[cls]


# -- the schema ------------------------------------------------------------------------------


def _field_schema(info: FieldInfo) -> Schema:
    meta = info.meta
    if meta.schema is not None:
        return meta.schema
    d = meta.description
    extra: Schema = {}
    if meta.choices is not None:
        extra["enum"] = list(meta.choices)
    if meta.default is not NO_DEFAULT and meta.crd_default:
        extra["default"] = meta.default
    for key, value in (
        ("minimum", meta.minimum),
        ("maximum", meta.maximum),
        ("pattern", meta.pattern),
        ("maxLength", meta.max_length),
    ):
        if value is not None:
            extra[key] = value
    if meta.rules:
        extra[oa.VALIDATIONS] = [r.render() for r in meta.rules]
    kind = info.kind
    if kind == "str":
        return oa.string(d, **extra)
    if kind == "int":
        return oa.integer(d, **extra)
    if kind == "bool":
        return oa.boolean(d, **extra)
    if kind == "obj":
        return oa.free(d)
    if kind == "str_map":
        return oa.string_map(d)
    if kind == "obj_list":
        assert meta.max_items is not None, f"{info.attr}: a list needs max_items"
        return oa.free_list(d, meta.max_items)
    if kind == "str_list":
        assert meta.max_items is not None, f"{info.attr}: a list needs max_items"
        out: Schema = {"type": "array", "description": d, "maxItems": meta.max_items}
        if meta.min_items is not None:
            out["minItems"] = meta.min_items
        out["items"] = {"type": "string", "maxLength": meta.item_max_length or 1024}
        return out
    assert info.block is not None
    if kind == "block":
        return schema(info.block, description=d or None, **extra)
    assert meta.max_items is not None, f"{info.attr}: a list needs max_items"
    out = {
        "type": "array",
        "description": d,
        "maxItems": meta.max_items,
        "items": schema(info.block),
    }
    if meta.map_keys:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = list(meta.map_keys)
    return out


def schema(cls: type, description: str | None = None, **extra: Any) -> Schema:
    """The OpenAPI schema of block ``cls``: its fields, required keys and CEL rules."""
    block: Block = cls.BLOCK  # type: ignore[attr-defined]
    infos = fields(cls)
    out = oa.obj(description or block.description, {i.key: _field_schema(i) for i in infos})
    required = [i.key for i in infos if i.meta.required]
    if required:
        out["required"] = required
    out.update(extra)
    if block.rules:
        out[oa.VALIDATIONS] = [r.render() for r in block.rules]
    return out


# -- parsing ---------------------------------------------------------------------------------


def as_object(raw: Any, path: str) -> Obj:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SpecError(path, raw, "an object")
    return raw


def _int(raw: Any, path: str, meta: Meta) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise SpecError(path, raw, "an integer")
    if meta.minimum is not None and raw < meta.minimum:
        raise SpecError(path, raw, meta.expected or f"an integer >= {meta.minimum}")
    if meta.maximum is not None and raw > meta.maximum:
        raise SpecError(path, raw, meta.expected or f"an integer <= {meta.maximum}")
    return raw


def _str(raw: Any, path: str, meta: Meta) -> str:
    if not isinstance(raw, str) or not raw:
        raise SpecError(path, raw, "a non-empty string")
    if meta.choices is not None and raw not in meta.choices:
        raise SpecError(path, raw, "one of " + ", ".join(meta.choices))
    if meta.pattern is not None and not re.search(meta.pattern, raw):
        raise SpecError(path, raw, meta.expected or f"a string matching {meta.pattern}")
    if meta.max_length is not None and len(raw) > meta.max_length:
        raise SpecError(path, raw, f"at most {meta.max_length} characters")
    return raw


def _str_map(raw: Any, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, item in as_object(raw, path).items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise SpecError(f"{path}.{key}", item, "a string")
        out[str(key)] = str(item)
    return out


def _list(raw: Any, path: str, meta: Meta, expected: str) -> list[Any]:
    if not isinstance(raw, list):
        raise SpecError(path, raw, expected)
    if meta.max_items is not None and len(raw) > meta.max_items:
        raise SpecError(path, raw, f"{expected} (at most {meta.max_items})")
    return raw


def _str_list(raw: Any, path: str, meta: Meta) -> tuple[str, ...]:
    expected = "a non-empty list of strings" if meta.min_items else "a list of strings"
    items = _list(raw, path, meta, expected)
    if len(items) < (meta.min_items or 0) or not all(isinstance(x, str) and x for x in items):
        raise SpecError(path, raw, expected)
    return tuple(items)


def _value(info: FieldInfo, raw: Any, path: str, defaults: Any) -> Any:
    meta = info.meta
    if raw is None:
        if meta.operator_default is not None:
            return getattr(defaults, meta.operator_default)
        if meta.default is not NO_DEFAULT and info.kind != "block":
            return meta.default
        if info.kind == "block" and (meta.default is not NO_DEFAULT or meta.required):
            raw = {}
        elif meta.required:
            raise SpecError(path, None, meta.expected or "a value")
        elif info.kind in ("obj_list", "block_list"):
            return ()
        elif info.kind == "str_map" or (info.kind == "obj" and not info.nullable):
            return {}
        else:
            return None
    kind = info.kind
    value: Any
    if kind == "str":
        value = _str(raw, path, meta)
    elif kind == "int":
        value = _int(raw, path, meta)
    elif kind == "bool":
        if not isinstance(raw, bool):
            raise SpecError(path, raw, "true or false")
        value = raw
    elif kind == "obj":
        value = as_object(raw, path)
        if meta.operator_default is not None:
            default = getattr(defaults, meta.operator_default)
            if meta.combine is not None:
                value = meta.combine(default, value) or None
            elif not value:
                value = default
    elif kind == "str_map":
        value = _str_map(raw, path)
    elif kind == "obj_list":
        items = _list(raw, path, meta, "a list of objects")
        if not all(isinstance(x, dict) for x in items):
            raise SpecError(path, raw, "a list of objects")
        value = tuple(items)
    elif kind == "str_list":
        value = _str_list(raw, path, meta)
    elif kind == "block":
        assert info.block is not None
        value = parse(info.block, raw, path, defaults)
    else:
        assert info.block is not None
        items = _list(raw, path, meta, "a list of objects")
        value = tuple(
            parse(info.block, item, f"{path}[{i}]", defaults) for i, item in enumerate(items)
        )
    if meta.check is not None:
        meta.check(value, path)
    return value


def parse(cls: type[Any], raw: Any, path: str, defaults: Any) -> Any:
    """Read block ``cls`` from ``raw`` (the mapping at ``path``), defaults applied."""
    mapping = as_object(raw, path)
    values = {
        info.attr: _value(info, mapping.get(info.key), f"{path}.{info.key}", defaults)
        for info in fields(cls)
    }
    block: Block = cls.BLOCK
    if block.check is not None:
        block.check(values, mapping, path)
    return cls(**values)
