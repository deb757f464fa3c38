"""Recipes: load a Data-Juicer YAML recipe, validate every key before work starts, normalise.

Accepts the keys users already write for Data-Juicer: the top-level keys, the seed's flat
partitioning keys, and Data-Juicer's nested ``partition``, ``checkpoint``,
``intermediate_storage`` and ``event_logging`` blocks. Every error names the key, the value
and what would be valid, with the closest valid name for a misspelt key or op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dj_runner.errors import RecipeError, closest
from dj_runner.ops import all_ops
from dj_runner.ops.base import Op

STORAGE_FORMATS = ("parquet", "arrow", "jsonl")
COMPRESSIONS = {
    "parquet": ("snappy", "zstd", "gzip", "brotli", "lz4", "none"),
    "arrow": ("lz4", "zstd", "none"),
    "jsonl": ("none", "gzip"),
}
DEFAULT_COMPRESSION = {"parquet": "snappy", "arrow": "lz4", "jsonl": "none"}
STRATEGIES = ("every_op", "every_n_ops", "manual", "disabled")
INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json", ".parquet", ".arrow", ".csv")
EXPORT_SUFFIXES = (".jsonl", ".parquet")
#: Data-Juicer keys that change nothing here; accepted so existing recipes run unchanged.
IGNORED_DJ_KEYS = frozenset(
    {
        "use_cache",
        "ds_cache_dir",
        "cache_compress",
        "open_tracer",
        "trace_num",
        "op_fusion",
        "temp_dir",
        "open_monitor",
        "use_checkpoint",
        "suffixes",
        "skip_op_error",
        "turbo",
        "export_shard_size",
        "export_in_parallel",
    }
)


@dataclass(frozen=True)
class OpSpec:
    """One op of the recipe's ``process`` list, validated and instantiated."""

    name: str
    params: dict[str, Any]
    op: Op


@dataclass(frozen=True)
class PartitionConfig:
    mode: str  # "auto" | "manual" | "size"
    partition_size: int  # max samples per partition (size mode; upper bound in auto mode)
    max_size_mb: float  # max MB per partition
    num_partitions: int | None  # manual mode


@dataclass(frozen=True)
class CheckpointConfig:
    strategy: str
    n_ops: int
    op_names: tuple[str, ...]
    storage_format: str
    compression: str
    preserve_intermediate_data: bool


@dataclass(frozen=True)
class EventLogConfig:
    enabled: bool
    log_level: str
    max_log_size_mb: float
    backup_count: int


@dataclass(frozen=True)
class Recipe:
    """A validated recipe. Paths are absolute."""

    project_name: str
    dataset_path: str
    export_path: str
    text_keys: tuple[str, ...]
    process: tuple[OpSpec, ...]
    keep_stats_in_res_ds: bool
    ray_address: str | None
    np: int | None
    job_id: str | None
    work_dir: str | None
    partition: PartitionConfig
    checkpoint: CheckpointConfig
    event_logging: EventLogConfig
    max_retries: int
    retry_base_delay_s: float
    max_failed_partitions: int
    malformed_records: str  # "reject" | "fail"
    source: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def text_key(self) -> str:
        return self.text_keys[0]

    def result_defining(self) -> dict[str, Any]:
        """The parts of the recipe that decide the output; a resume requires them unchanged."""
        return {
            "dataset_path": self.dataset_path,
            "text_keys": list(self.text_keys),
            "process": [{s.name: s.params} for s in self.process],
            "keep_stats_in_res_ds": self.keep_stats_in_res_ds,
            "partition": dataclasses.asdict(self.partition),
        }

    def fingerprint(self) -> str:
        blob = json.dumps(self.result_defining(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# Validation helpers


def _type_name(t: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        t, str(t)
    )


def _check_type(key: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    types = expected if isinstance(expected, tuple) else (expected,)
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in types:
        raise RecipeError(key, value, " or ".join(_type_name(t) for t in types))
    if not isinstance(value, types):
        raise RecipeError(key, value, " or ".join(_type_name(t) for t in types))
    return value


def _check_choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = closest(str(value), choices)
        raise RecipeError(key, value, "one of " + ", ".join(choices), hint)
    return value


def _check_min(key: str, value: float, minimum: float, strict: bool = False) -> None:
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum}" if strict else f">= {minimum}"
        raise RecipeError(key, value, f"a value {bound}")


def _check_keys(where: str, block: dict[str, Any], valid: tuple[str, ...] | frozenset[str]):
    for key in block:
        if key not in valid:
            full = f"{where}.{key}" if where else str(key)
            raise RecipeError(full, block[key], "a known key", closest(str(key), valid))


def _block(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(key, value, "a mapping")
    return value


TOP_LEVEL_KEYS = (
    "project_name",
    "dataset_path",
    "export_path",
    "executor_type",
    "ray_address",
    "np",
    "text_keys",
    "process",
    "job_id",
    "work_dir",
    "keep_stats_in_res_ds",
    "partition_size",
    "max_partition_size_mb",
    "enable_fault_tolerance",
    "max_retries",
    "retry_base_delay_s",
    "max_failed_partitions",
    "malformed_records",
    "storage_format",
    "preserve_intermediate_data",
    "event_logging",
    "partition",
    "checkpoint",
    "intermediate_storage",
    "op_implementation",
)


def _is_optional(annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return True, args[0] if len(args) == 1 else tuple(args)
    return False, annotation


def _check_op_param(op_key: str, name: str, value: Any, annotation: Any) -> Any:
    optional, base = _is_optional(annotation)
    if value is None:
        if optional:
            return None
        raise RecipeError(f"{op_key}.{name}", value, f"{_type_name(base)}, not null")
    if isinstance(base, tuple):
        base = tuple(typing.get_origin(b) or b for b in base)
    else:
        base = typing.get_origin(base) or base
    if base is Any:
        return value
    return _check_type(f"{op_key}.{name}", value, base)


def build_op(
    name: str, params: dict[str, Any], where: str, implementation: str = "builtin"
) -> OpSpec:
    """Validate one op's name and parameters and instantiate it."""
    registry = all_ops()
    # -- hook: Data-Juicer ops (dj_runner.dj_ops), for names not built in or when chosen
    from dj_runner.dj_ops import resolve as dj

    impl, params = dj.choose(name, params, implementation, where)
    if impl == "data_juicer" or name not in registry:
        op = dj.resolve(name, params, where, registry, impl)
        if name in registry:  # the choice decides the output: part of the fingerprint
            params = {**params, dj.OPTION: impl}
        return OpSpec(name=name, params=params, op=op)
    # -- end hook
    cls = registry[name]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    checked: dict[str, Any] = {}
    for pname, pvalue in params.items():
        if pname not in fields:
            raise RecipeError(
                f"{where}.{name}.{pname}",
                pvalue,
                f"a parameter of {name} ({', '.join(sorted(fields)) or 'none'})",
                closest(pname, fields),
            )
        checked[pname] = _check_op_param(f"{where}.{name}", pname, pvalue, hints[pname])
    try:
        op = cls(**checked)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{where}.{name}", params, str(exc)) from exc
    return OpSpec(name=name, params=checked, op=op)


def _parse_process(raw: Any, implementation: str = "builtin") -> tuple[OpSpec, ...]:
    if raw is None:
        raise RecipeError(
            "process", raw, "a non-empty list of ops, like [{text_length_filter: {}}]"
        )
    if not isinstance(raw, list) or not raw:
        raise RecipeError("process", raw, "a non-empty list of ops")
    specs = []
    for i, item in enumerate(raw):
        where = f"process[{i}]"
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            raise RecipeError(where, item, "a mapping with exactly one op name, like {op: {...}}")
        ((name, params),) = item.items()
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise RecipeError(f"{where}.{name}", params, "a mapping of parameters")
        specs.append(build_op(str(name), params, where, implementation))
    return tuple(specs)


def _check_path_suffix(key: str, path: str, suffixes: tuple[str, ...], allow_dir: bool) -> None:
    if any(path.endswith(s) for s in suffixes):
        return
    if allow_dir and (path.endswith("/") or "." not in os.path.basename(path)):
        return
    what = "a path ending in " + ", ".join(suffixes)
    if allow_dir:
        what += ", or a directory"
    raise RecipeError(key, path, what)


def _resolve(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


# ---------------------------------------------------------------------------------------


def parse_recipe(raw: Any, base_dir: Path | None = None) -> Recipe:
    """Validate a recipe mapping and return the normalised Recipe."""
    if not isinstance(raw, dict):
        raise RecipeError("<recipe>", raw, "a YAML mapping of keys")
    base_dir = base_dir or Path.cwd()
    for key in list(raw):
        if key in IGNORED_DJ_KEYS:
            continue
        if key not in TOP_LEVEL_KEYS:
            raise RecipeError(
                str(key), raw[key], "a known recipe key", closest(str(key), TOP_LEVEL_KEYS)
            )

    for required in ("dataset_path", "export_path"):
        if raw.get(required) in (None, ""):
            raise RecipeError(required, raw.get(required), "a path")
    dataset_path = _check_type("dataset_path", raw["dataset_path"], str)
    export_path = _check_type("export_path", raw["export_path"], str)
    if not any(ch in dataset_path for ch in "*?["):
        _check_path_suffix("dataset_path", dataset_path, INPUT_SUFFIXES, allow_dir=True)
    _check_path_suffix("export_path", export_path, EXPORT_SUFFIXES, allow_dir=True)

    executor_type = raw.get("executor_type", "ray_partitioned")
    _check_choice("executor_type", executor_type, ("default", "ray", "ray_partitioned"))

    text_keys = raw.get("text_keys", "text")
    if isinstance(text_keys, str):
        text_keys = [text_keys]
    if (
        not isinstance(text_keys, list)
        or not text_keys
        or not all(isinstance(k, str) and k for k in text_keys)
    ):
        raise RecipeError("text_keys", raw.get("text_keys"), "a field name or a list of them")

    np_ = raw.get("np")
    if np_ is not None:
        _check_type("np", np_, int)
        _check_min("np", np_, 1)

    ray_address = raw.get("ray_address")
    if ray_address is not None:
        _check_type("ray_address", ray_address, str)
        if not (
            ray_address in ("auto", "local")
            or ray_address.startswith("ray://")
            or (":" in ray_address and ray_address.rsplit(":", 1)[1].isdigit())
        ):
            raise RecipeError(
                "ray_address", ray_address, "'auto', 'local', 'ray://host:port' or 'host:port'"
            )

    # -- partitioning: flat keys and the nested block
    pblock = _block(raw, "partition")
    _check_keys("partition", pblock, ("mode", "num_of_partitions", "target_size_mb"))
    partition_size = raw.get("partition_size", 10000)
    _check_type("partition_size", partition_size, int)
    _check_min("partition_size", partition_size, 1)
    max_mb = raw.get("max_partition_size_mb", 128)
    max_mb = _check_type("max_partition_size_mb", max_mb, float)
    _check_min("max_partition_size_mb", max_mb, 0, strict=True)
    if "target_size_mb" in pblock:
        max_mb = _check_type("partition.target_size_mb", pblock["target_size_mb"], float)
        _check_min("partition.target_size_mb", max_mb, 0, strict=True)
    default_mode = "size" if "partition_size" in raw else "auto"
    mode = _check_choice(
        "partition.mode", pblock.get("mode", default_mode), ("auto", "manual", "size")
    )
    num_parts = None
    if mode == "manual":
        num_parts = pblock.get("num_of_partitions", 4)
        _check_type("partition.num_of_partitions", num_parts, int)
        _check_min("partition.num_of_partitions", num_parts, 1)
    elif "num_of_partitions" in pblock:
        raise RecipeError(
            "partition.num_of_partitions",
            pblock["num_of_partitions"],
            "to be set only with partition.mode: manual",
        )
    partition = PartitionConfig(mode, partition_size, float(max_mb), num_parts)

    # -- processing and checkpoints
    implementation = _check_choice(  # hook: Data-Juicer ops
        "op_implementation", raw.get("op_implementation", "builtin"), ("builtin", "data_juicer")
    )
    process = _parse_process(raw.get("process"), implementation)
    op_names = [s.name for s in process]

    cblock = _block(raw, "checkpoint")
    _check_keys("checkpoint", cblock, ("enabled", "strategy", "n_ops", "op_names"))
    enabled = _check_type("checkpoint.enabled", cblock.get("enabled", True), bool)
    strategy = _check_choice("checkpoint.strategy", cblock.get("strategy", "every_op"), STRATEGIES)
    if not enabled:
        strategy = "disabled"
    n_ops = cblock.get("n_ops", 5)
    _check_type("checkpoint.n_ops", n_ops, int)
    _check_min("checkpoint.n_ops", n_ops, 1)
    ck_names = cblock.get("op_names", [])
    if not isinstance(ck_names, list) or not all(isinstance(n, str) for n in ck_names):
        raise RecipeError("checkpoint.op_names", ck_names, "a list of op names from process")
    for n in ck_names:
        if n not in op_names:
            raise RecipeError(
                "checkpoint.op_names", n, "an op name used in process", closest(n, op_names)
            )
    if strategy == "manual" and not ck_names:
        raise RecipeError(
            "checkpoint.op_names", ck_names, "at least one op name for strategy manual"
        )

    sblock = _block(raw, "intermediate_storage")
    _check_keys("intermediate_storage", sblock, ("format", "compression"))
    fmt = raw.get("storage_format")
    if fmt is not None:
        _check_choice("storage_format", fmt, STORAGE_FORMATS)
    if "format" in sblock:
        nested = _check_choice("intermediate_storage.format", sblock["format"], STORAGE_FORMATS)
        if fmt is not None and nested != fmt:
            raise RecipeError(
                "intermediate_storage.format", nested, f"the same as storage_format ({fmt!r})"
            )
        fmt = nested
    fmt = fmt or "parquet"
    compression = sblock.get("compression", DEFAULT_COMPRESSION[fmt])
    if compression is None:
        compression = "none"
    _check_choice("intermediate_storage.compression", compression, COMPRESSIONS[fmt])
    preserve = _check_type(
        "preserve_intermediate_data", raw.get("preserve_intermediate_data", False), bool
    )
    checkpoint = CheckpointConfig(strategy, n_ops, tuple(ck_names), fmt, compression, preserve)

    # -- event log
    eblock = _block(raw, "event_logging")
    _check_keys(
        "event_logging", eblock, ("enabled", "log_level", "max_log_size_mb", "backup_count")
    )
    ev_enabled = _check_type("event_logging.enabled", eblock.get("enabled", True), bool)
    level = _check_choice(
        "event_logging.log_level",
        str(eblock.get("log_level", "INFO")).upper(),
        ("DEBUG", "INFO", "WARNING", "ERROR"),
    )
    max_log = _check_type(
        "event_logging.max_log_size_mb", eblock.get("max_log_size_mb", 100), float
    )
    _check_min("event_logging.max_log_size_mb", max_log, 0, strict=True)
    backups = eblock.get("backup_count", 5)
    _check_type("event_logging.backup_count", backups, int)
    _check_min("event_logging.backup_count", backups, 0)
    events = EventLogConfig(ev_enabled, level, float(max_log), backups)

    # -- faults
    fault_tolerant = _check_type(
        "enable_fault_tolerance", raw.get("enable_fault_tolerance", True), bool
    )
    max_retries = raw.get("max_retries", 3)
    _check_type("max_retries", max_retries, int)
    _check_min("max_retries", max_retries, 0)
    if not fault_tolerant:
        max_retries = 0
    delay = _check_type("retry_base_delay_s", raw.get("retry_base_delay_s", 1.0), float)
    _check_min("retry_base_delay_s", delay, 0)
    max_failed = raw.get("max_failed_partitions", 0)
    _check_type("max_failed_partitions", max_failed, int)
    _check_min("max_failed_partitions", max_failed, 0)
    malformed = _check_choice(
        "malformed_records", raw.get("malformed_records", "reject"), ("reject", "fail")
    )

    for key in ("project_name", "job_id", "work_dir"):
        if raw.get(key) is not None:
            _check_type(key, raw[key], str)
    keep_stats = _check_type("keep_stats_in_res_ds", raw.get("keep_stats_in_res_ds", False), bool)

    work_dir = raw.get("work_dir")
    return Recipe(
        project_name=raw.get("project_name") or "dj-job",
        dataset_path=_resolve(base_dir, dataset_path),
        export_path=_resolve(base_dir, export_path),
        text_keys=tuple(text_keys),
        process=process,
        keep_stats_in_res_ds=keep_stats,
        ray_address=ray_address,
        np=np_,
        job_id=raw.get("job_id"),
        work_dir=_resolve(base_dir, work_dir) if work_dir else None,
        partition=partition,
        checkpoint=checkpoint,
        event_logging=events,
        max_retries=max_retries,
        retry_base_delay_s=float(delay),
        max_failed_partitions=max_failed,
        malformed_records=malformed,
        source=raw,
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file.

    Relative paths in it resolve against the current directory, as Data-Juicer resolves them.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError("<recipe file>", str(path), "an existing YAML file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RecipeError("<recipe file>", str(path), f"valid YAML ({exc})") from exc
    return parse_recipe(raw, base_dir=Path.cwd())
