"""The recipe schema: every recipe key described once, as data, and the checks driven by it.

Each top-level and nested key is a ``Key``: its types, default, bounds, choices, pattern
and description. ``read_block`` validates one mapping against a block of keys (unknown keys
with the closest valid name, types, finite numbers, bounds, choices) and returns the values
with defaults filled in; ``check_param`` does the same for one op parameter from the op's
dataclass field (``dj_runner.ops.common.params``). ``openapi()`` renders the same data as a JSON
Schema (OpenAPI v3, structural, as a Kubernetes CRD embeds it) for ``spec.recipe``.

This module imports neither Arrow nor any op implementation; only ``openapi(ops=True)``
and op parameter checks import the op registry, on first use.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from dj_runner.errors import RecipeError, closest
from dj_runner.ops.common.params import ParamMeta, param_meta, unwrap_raw_pattern

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
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: Data-Juicer keys accepted only at the value that changes nothing (Data-Juicer's default),
#: each with that value and why another is refused: ignoring it would change the output or
#: what the runner reads, silently.
DJ_KEYS_AT_DEFAULT: dict[str, tuple[Any, str]] = {
    "encrypt_before_export": (False, "the runner does not encrypt exports"),
    "decrypt_after_reading": (False, "the runner does not decrypt its input"),
    "encryption_key_path": (None, "the runner does not encrypt or decrypt"),
    "export_original_dataset": (False, "the runner exports the processed samples"),
    "hpo_config": (None, "hyper-parameter search is a Data-Juicer tool, not the runner's"),
    "generated_dataset_config": (None, "the runner reads dataset_path only"),
    "validators": ([], "the runner checks the text key itself (malformed_records)"),
    "custom_operator_paths": (
        [],
        "custom ops load through DJ_RUNNER_OP_MODULES (docs/runner.md, Custom ops)",
    ),
    "open_insight_mining": (False, "Data-Juicer's insight miner is not part of the runner"),
    "export_aws_credentials": (
        None,
        "no credentials in a recipe: the runner takes them from the environment's AWS chain",
    ),
}
#: Data-Juicer keys that change nothing here, each with why: accepted, so existing recipes
#: run unchanged, and named in a notice (``validate``, ``run`` and the ``job_start`` event).
IGNORED_DJ_KEYS: dict[str, str] = {
    "use_cache": "Data-Juicer's dataset cache; the runner's checkpoints take its place",
    "ds_cache_dir": "Data-Juicer's dataset cache directory; the runner keeps no such cache",
    "cache_compress": "Data-Juicer's cache compression; the runner keeps no such cache",
    "open_tracer": "Data-Juicer's tracer of changed samples is not part of the runner",
    "trace_num": "Data-Juicer's tracer of changed samples is not part of the runner",
    "op_fusion": "the runner applies ops one after the other to Arrow batches, unfused",
    "temp_dir": "the runner writes its temporary files in the work dir",
    "open_monitor": "Data-Juicer's resource monitor; the runner reports through its event log "
    "and /metrics",
    "use_checkpoint": "Data-Juicer's old checkpoint switch; the runner always checkpoints "
    "(see checkpoint)",
    "suffixes": "the runner reads every input file of a known suffix",
    "skip_op_error": "an op error on a sample fails its partition, which is retried "
    "(max_retries; max_failed_partitions allows a partial success)",
    "turbo": "a Data-Juicer speed switch for its own executors",
    "export_shard_size": "the export's shards follow export_path (a directory: one shard per "
    "partition)",
    "export_in_parallel": "the export is written by the driver in partition order",
    "partition_dir": "the runner writes no copies of the partitions: each is a range of the "
    "input, read in place (plan.json)",
    "event_log_dir": "the event log is always <work_dir>/events/, where dj-runner events, "
    "/metrics and the operator read it",
    "checkpoint_dir": "checkpoints are always <work_dir>/checkpoints/, beside the plan they "
    "belong to",
    "keep_hashes_in_res_ds": "the deduplicators' hashes are working columns, never exported",
    **dict.fromkeys(
        (
            "image_key",
            "image_bytes_key",
            "image_special_token",
            "audio_key",
            "audio_special_token",
            "video_key",
            "video_special_token",
            "eoc_special_token",
        ),
        "a field or token of Data-Juicer's multimodal ops; the runner's ops read text only",
    ),
    **dict.fromkeys(
        (
            "auto_op_parallelism",
            "adaptive_batch_size",
            "elastic_juicer_adaptive_batching",
            "elastic_juicer_profile_seed",
            "override_num_blocks",
            "read_options",
            "use_dag",
            "fusion_strategy",
            "mapper_fusion",
            "mapper_fusion_vram_limit",
            "min_common_dep_num_to_combine",
            "conflict_resolve_strategy",
        ),
        "a scheduling or fusion setting of Data-Juicer's executors; the runner plans its own "
        "partitions and applies ops one after the other",
    ),
    **dict.fromkeys(
        ("op_list_to_trace", "trace_keys", "op_list_to_mine", "auto_num", "percentiles"),
        "a setting of Data-Juicer's tracer, analyser or insight miner, not part of the runner",
    ),
    **dict.fromkeys(
        ("data_probe_algo", "data_probe_ratio", "save_stats_in_one_file"),
        "a setting of Data-Juicer's analyser, not part of the runner",
    ),
    "load_dataset_kwargs": "the runner reads its input formats itself (docs/runner.md)",
    "load_jsonl_lenient": "malformed JSON Lines records go to rejects/ (malformed_records)",
    "export_extra_args": "the export's format follows export_path",
    "export_type": "the export's format follows export_path's suffix (.jsonl or .parquet)",
    "strict_preflight": "the runner always checks the recipe, the input and the paths first",
    "resume": "the runner always resumes from its work dir (--restart starts over)",
    "debug": "the runner's stack traces: DJ_RUNNER_DEBUG=1",
    **{
        key: f"{why} (accepted at Data-Juicer's default, {default!r}; another value is refused)"
        for key, (default, why) in DJ_KEYS_AT_DEFAULT.items()
    },
}
#: The same for keys of nested blocks, by block.
IGNORED_DJ_BLOCK_KEYS: dict[str, dict[str, str]] = {
    "intermediate_storage": {
        "write_partitions": "the runner writes no copies of the partitions: each is a range "
        "of the input, read in place (plan.json)",
    },
}
_SCHEDULING = (
    "a scheduling hint of Data-Juicer's executors; the runner runs each partition as one Ray "
    "task and applies built-in ops to its whole Arrow table"
)
_OTHER_FIELD = "a field a multimodal or chat op reads; built-in ops read only the text key"
#: The parameters every Data-Juicer op takes through its base class (``OP.__init__``), and
#: why a built-in op, which has no such field, ignores each (``text_key`` excepted: a built-in
#: op works on the recipe's text key, so it must name that one). Data-Juicer's own ops (the
#: ``dj`` extra) take them all, as Data-Juicer does.
COMMON_OP_PARAMS: dict[str, str] = {
    "text_key": "the field the op works on; a built-in op works on the recipe's text key",
    "image_key": _OTHER_FIELD,
    "audio_key": _OTHER_FIELD,
    "video_key": _OTHER_FIELD,
    "image_bytes_key": _OTHER_FIELD,
    "system_key": _OTHER_FIELD,
    "instruction_key": _OTHER_FIELD,
    "prompt_key": _OTHER_FIELD,
    "query_key": _OTHER_FIELD,
    "response_key": _OTHER_FIELD,
    "history_key": _OTHER_FIELD,
    "index_key": _OTHER_FIELD,
    "batch_size": _SCHEDULING,
    "num_proc": _SCHEDULING,
    "cpu_required": _SCHEDULING,
    "gpu_required": _SCHEDULING,
    "mem_required": _SCHEDULING,
    "num_cpus": _SCHEDULING,
    "num_gpus": _SCHEDULING,
    "memory": _SCHEDULING,
    "accelerator": _SCHEDULING,
    "runtime_env": _SCHEDULING,
    "ray_execution_mode": _SCHEDULING,
    "auto_op_parallelism": _SCHEDULING,
    "adaptive_batching": _SCHEDULING,
    "batch_mode": _SCHEDULING,
    "turbo": _SCHEDULING,
    "skip_op_error": "an op error on a sample fails its partition, which is retried "
    "(max_retries; max_failed_partitions allows a partial success)",
    "work_dir": "the op keeps no files of its own",
    "input_columns": "a built-in op reads the text key and writes the text key or its stats",
    "output_columns": "a built-in op reads the text key and writes the text key or its stats",
}
#: And every filter through ``Filter.__init__`` (the interval options are fields of every
#: built-in filter, honoured as Data-Juicer does).
COMMON_FILTER_PARAMS: dict[str, str] = {
    "min_closed_interval": "",
    "max_closed_interval": "",
    "reversed_range": "",
    "stats_export_path": "stats are kept in __dj__stats__ of the export with "
    "keep_stats_in_res_ds: true, not written to a file of their own",
}

#: What the MB bound of a partition measures (docs/runner.md, "Partitioning").
MB_BOUND_DOC = (
    "max MB per partition, as read and uncompressed: the JSON text of JSON and JSON Lines "
    "records, the in-memory Arrow size of Parquet, Arrow and CSV rows"
)
RAY_ADDRESS_PATTERN = r"^(auto|local|ray://.+|.+:[0-9]+)$"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

#: Where a job's partition tasks may run (the ``engine`` key, ``--engine``, ``DJ_RUNNER_ENGINE``).
ENGINES = ("auto", "ray", "local")


@dataclass(frozen=True)
class Key:
    """One recipe key: what it may hold and what it means."""

    name: str
    types: tuple[type, ...]
    default: Any
    description: str
    minimum: float | None = None
    exclusive_minimum: bool = False
    choices: tuple[str, ...] | None = None
    #: Choices compared case-insensitively, stored upper-case (log levels).
    upper: bool = False
    nullable: bool = False
    items: type | None = None  # element type of a list value
    pattern: str | None = None  # a regular expression a string value must match
    expected: str | None = None  # how to name a pattern's valid values in an error
    block: tuple[Key, ...] | None = None  # the keys of a nested mapping
    #: The default as documentation says it, when it depends on other keys.
    default_doc: str | None = None


def _keys(*keys: Key) -> tuple[Key, ...]:
    return keys


PARTITION_BLOCK = _keys(
    Key(
        "mode",
        (str,),
        None,
        "how the input is cut: auto (from the CPUs and the size bound), manual "
        "(num_of_partitions equal slices) or size (partition_size samples)",
        choices=("auto", "manual", "size"),
        default_doc="auto, or size when partition_size is given",
    ),
    Key(
        "num_of_partitions",
        (int,),
        4,
        "partitions in manual mode (only with mode: manual)",
        minimum=1,
    ),
    Key(
        "target_size_mb",
        (float,),
        None,
        MB_BOUND_DOC,
        minimum=0,
        exclusive_minimum=True,
        default_doc="max_partition_size_mb",
    ),
)

CHECKPOINT_BLOCK = _keys(
    Key("enabled", (bool,), True, "false is the same as strategy: disabled"),
    Key(
        "strategy",
        (str,),
        "every_op",
        "when to checkpoint a partition (the last op always is)",
        choices=STRATEGIES,
    ),
    Key("n_ops", (int,), 5, "with every_n_ops: checkpoint every n ops", minimum=1),
    Key(
        "op_names",
        (list,),
        [],
        "with manual: checkpoint after these ops of process",
        items=str,
    ),
)

STORAGE_BLOCK = _keys(
    Key(
        "format", (str,), None, "checkpoint format", choices=STORAGE_FORMATS, default_doc="parquet"
    ),
    Key(
        "compression",
        (str,),
        None,
        "checkpoint compression; parquet: snappy, zstd, gzip, brotli, lz4, none; "
        "arrow: lz4, zstd, none; jsonl: none, gzip",
        nullable=True,
        choices=tuple(dict.fromkeys(c for cs in COMPRESSIONS.values() for c in cs)),
        default_doc="snappy / lz4 / none by format",
    ),
)

EVENT_BLOCK = _keys(
    Key("enabled", (bool,), True, "write the event log"),
    Key(
        "log_level",
        (str,),
        "INFO",
        "events below this level are not written",
        choices=LOG_LEVELS,
        upper=True,
    ),
    Key(
        "max_log_size_mb",
        (float,),
        100.0,
        "rotate the log past this size",
        minimum=0,
        exclusive_minimum=True,
    ),
    Key("backup_count", (int,), 5, "rotated files kept", minimum=0),
)

#: What a finished job keeps (``retention``); applied at a run's end and by ``dj-runner clean``.
RETENTION_CHECKPOINTS = ("final", "all", "none")
RETENTION_BLOCK = _keys(
    Key(
        "checkpoints",
        (str,),
        None,
        "what a succeeded job keeps of its checkpoints once the export is written: final (each "
        "partition's last, so a rerun re-exports without recomputing), all, or none (a rerun "
        "recomputes); a job that did not succeed keeps them all, for its resume",
        choices=RETENTION_CHECKPOINTS,
        nullable=True,
        default_doc="all with preserve_intermediate_data, else final",
    ),
    Key(
        "event_log_max_age_days",
        (float,),
        None,
        "remove event-log segments of earlier runs older than this many days (the last run's "
        "log is always kept)",
        minimum=0,
        exclusive_minimum=True,
        nullable=True,
        default_doc="no limit",
    ),
    Key(
        "event_log_max_segments",
        (int,),
        None,
        "keep at most this many event-log segments of earlier runs, the newest (the last "
        "run's log is always kept)",
        minimum=0,
        nullable=True,
        default_doc="no limit",
    ),
)

S3_BLOCK = _keys(
    Key(
        "endpoint_url",
        (str,),
        None,
        "an S3-compatible store's endpoint (http:// or https:// URL)",
        nullable=True,
        pattern=r"^https?://[^/\s]+/?$",
        expected="an http:// or https:// URL of a host (and port)",
        default_doc="AWS_ENDPOINT_URL, else AWS S3",
    ),
    Key(
        "region",
        (str,),
        None,
        "the bucket's region",
        nullable=True,
        default_doc="AWS_REGION",
    ),
)
#: Keys that would put a credential into a recipe: refused wherever they appear (top level,
#: ``s3``), without echoing their value. Credentials come from the environment's AWS chain.
CREDENTIAL_KEYS = frozenset(
    {
        "access_key",
        "access_key_id",
        "aws_access_key_id",
        "secret_key",
        "secret_access_key",
        "aws_secret_access_key",
        "session_token",
        "aws_session_token",
    }
)


def credential_refused(where: str) -> RecipeError:
    """The error for a credential key ``where`` in a recipe (its value is never shown)."""
    return RecipeError(
        where,
        "<hidden>",
        "no credentials in a recipe: the runner takes them from the environment "
        "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity or "
        "instance metadata); remove this key",
    )


TOP_LEVEL = _keys(
    Key(
        "dataset_path",
        (str,),
        REQUIRED,
        "a file, a directory (searched recursively) or a glob of "
        + ", ".join(INPUT_SUFFIXES)
        + " files",
    ),
    Key(
        "export_path",
        (str,),
        REQUIRED,
        "a .jsonl or .parquet file, or a directory of shards (no suffix)",
    ),
    Key("process", (list,), REQUIRED, "the ops, each {op_name: {param: value}}"),
    Key(
        "project_name",
        (str,),
        None,
        "names the job and the default work dir",
        nullable=True,
        default_doc="dj-job",
    ),
    Key(
        "executor_type",
        (str,),
        "ray_partitioned",
        "which Data-Juicer executor the recipe was written for; every one runs as "
        "ray_partitioned, and validate, run and the job_start event say so",
        choices=("default", "ray", "ray_partitioned"),
    ),
    Key(
        "op_implementation",
        (str,),
        "builtin",
        "which implementation runs an op that exists both built in and in Data-Juicer "
        "(per op: the op option of the same name); ops only Data-Juicer has need the dj extra",
        choices=("builtin", "data_juicer"),
    ),
    Key(
        "ray_address",
        (str,),
        None,
        "auto, local, ray://host:port or host:port; none: an embedded Ray",
        nullable=True,
        pattern=RAY_ADDRESS_PATTERN,
        expected="'auto', 'local', 'ray://host:port' or 'host:port'",
    ),
    Key(
        "engine",
        (str,),
        None,
        "where partition tasks run: ray (an embedded Ray or the cluster named), local (worker "
        "processes of this machine, no Ray) or auto (local for inputs up to 1 GiB when no Ray "
        "cluster is named, else ray)",
        choices=ENGINES,
        nullable=True,
        default_doc="$DJ_RUNNER_ENGINE, else auto",
    ),
    Key(
        "np", (int,), None, "CPUs of the embedded Ray or the local engine", minimum=1, nullable=True
    ),
    Key(
        "text_keys",
        (str, list),
        ["text"],
        "the text field ops work on (the first of a list)",
        items=str,
    ),
    Key("job_id", (str,), None, "the job's name", nullable=True, default_doc="generated"),
    Key(
        "work_dir",
        (str,),
        None,
        "checkpoints, plan and event log",
        nullable=True,
        default_doc="<export dir>/<project_name>-work",
    ),
    Key("keep_stats_in_res_ds", (bool,), False, "keep __dj__stats__ in the export"),
    Key("partition_size", (int,), 10000, "max samples per partition", minimum=1),
    Key(
        "max_partition_size_mb",
        (float,),
        128.0,
        MB_BOUND_DOC,
        minimum=0,
        exclusive_minimum=True,
    ),
    Key("enable_fault_tolerance", (bool,), True, "false turns retries off"),
    Key("max_retries", (int,), 3, "retries per partition", minimum=0),
    Key(
        "retry_base_delay_s",
        (float,),
        1.0,
        "first backoff delay in seconds; doubles each retry",
        minimum=0,
    ),
    Key(
        "max_failed_partitions",
        (int,),
        0,
        "failed partitions allowed before the job fails (partial success)",
        minimum=0,
    ),
    Key(
        "malformed_records",
        (str,),
        "reject",
        "what a malformed input record does: reject (to rejects/) or fail the job",
        choices=("reject", "fail"),
    ),
    Key(
        "storage_format",
        (str,),
        None,
        "checkpoint format (same as intermediate_storage.format)",
        choices=STORAGE_FORMATS,
        nullable=True,
        default_doc="parquet",
    ),
    Key("preserve_intermediate_data", (bool,), False, "keep every checkpoint, not the newest"),
    Key("partition", (dict,), None, "partitioning", nullable=True, block=PARTITION_BLOCK),
    Key("checkpoint", (dict,), None, "checkpoints", nullable=True, block=CHECKPOINT_BLOCK),
    Key(
        "intermediate_storage",
        (dict,),
        None,
        "checkpoint storage",
        nullable=True,
        block=STORAGE_BLOCK,
    ),
    Key("event_logging", (dict,), None, "the event log", nullable=True, block=EVENT_BLOCK),
    Key(
        "retention",
        (dict,),
        None,
        "what a finished job keeps in its work dir",
        nullable=True,
        block=RETENTION_BLOCK,
    ),
    Key(
        "s3",
        (dict,),
        None,
        "where s3:// paths are served (endpoint, region); never credentials",
        nullable=True,
        block=S3_BLOCK,
    ),
)


# ---------------------------------------------------------------------------------------
# Checks


def _type_name(t: Any) -> str:
    return {
        int: "an integer",
        float: "a finite number",
        bool: "true or false",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(t, getattr(t, "__name__", str(t)))


#: A number in exponent form without a dot (``2e5``): YAML 1.1 (PyYAML) reads it as a string,
#: where Data-Juicer's config parser reads a number.
_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def check_type(key: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """``value`` if it has one of the ``expected`` types; an int is taken for a float.

    As in Data-Juicer's configs, a number written ``2e5`` (a string to YAML 1.1) is a number
    where a number is expected, and a float that is a whole number (``2.0e+5``, ``10.0``) is
    an integer where an integer is expected. Booleans are not integers here, and a float must
    be finite (``.inf`` and ``.nan`` are refused: nothing in a recipe is unbounded or
    undefined).
    """
    allowed = expected if isinstance(expected, tuple) else (expected,)
    what = " or ".join(_type_name(t) for t in allowed)
    if isinstance(value, bool) and bool not in allowed:
        raise RecipeError(key, value, what)
    numeric = int in allowed or float in allowed
    if numeric and str not in allowed and isinstance(value, str) and _EXPONENT_NUMBER.match(value):
        value = float(value)
    if (
        int in allowed
        and float not in allowed
        and isinstance(value, float)
        and math.isfinite(value)
        and value.is_integer()
    ):
        return int(value)
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, allowed):
        raise RecipeError(key, value, what)
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(key, value, "a finite number")
    return value


def check_choice(key: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        hint = closest(str(value), [str(c) for c in choices])
        raise RecipeError(key, value, "one of " + ", ".join(str(c) for c in choices), hint)
    return value


def check_min(key: str, value: float, minimum: float, strict: bool = False) -> None:
    if value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise RecipeError(key, value, f"a value {bound}")


def _check_key(where: str, spec: Key, value: Any) -> Any:
    if value is None:
        if spec.nullable or spec.default is None:
            return None
        if spec.default is REQUIRED:
            raise RecipeError(where, value, spec.description)
        raise RecipeError(where, value, f"{_type_name(spec.types[0])}, not null")
    if spec.block is not None:
        if not isinstance(value, dict):
            raise RecipeError(where, value, "a mapping")
        return read_block(where, value, spec.block, ignored=IGNORED_DJ_BLOCK_KEYS.get(where, {}))
    if str in spec.types and spec.items is str and isinstance(value, str):
        value = [value]  # text_keys: one name or a list of them
    value = check_type(where, value, spec.types)
    if isinstance(value, list) and spec.items is not None:
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, spec.items) or item == "":
                raise RecipeError(f"{where}[{i}]", item, _type_name(spec.items))
    if spec.choices is not None:
        if spec.upper and isinstance(value, str):
            value = value.upper()
        check_choice(where, value, spec.choices)
    if spec.minimum is not None:
        check_min(where, value, spec.minimum, spec.exclusive_minimum)
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise RecipeError(where, value, spec.expected or f"a value matching {spec.pattern}")
    return value


def read_block(
    where: str, raw: dict[str, Any], keys: tuple[Key, ...], ignored: Collection[str] = ()
) -> dict[str, Any]:
    """Validate a mapping against ``keys``; return every key's value, defaults filled in.

    A key given as null takes its default. Keys in ``ignored`` are accepted and dropped.
    """
    by_name = {k.name: k for k in keys}
    for name in raw:
        if name in ignored:
            continue
        if name not in by_name:
            full = f"{where}.{name}" if where else str(name)
            what = "a known recipe key" if not where else f"a known key of {where}"
            raise RecipeError(full, raw[name], what, closest(str(name), [*by_name, *ignored]))
    out: dict[str, Any] = {}
    for spec in keys:
        full = f"{where}.{spec.name}" if where else spec.name
        if spec.name in raw and raw[spec.name] is not None:
            out[spec.name] = _check_key(full, spec, raw[spec.name])
        elif spec.default is REQUIRED:
            raise RecipeError(full, raw.get(spec.name), spec.description)
        elif spec.block is not None:
            out[spec.name] = read_block(full, {}, spec.block)
        else:
            out[spec.name] = spec.default
    return out


def given(raw: dict[str, Any], name: str) -> bool:
    """Whether the recipe sets ``name`` (to something other than null)."""
    return raw.get(name) is not None


# ---------------------------------------------------------------------------------------
# Op parameters: the same checks, driven by each op's dataclass fields


def _optional(annotation: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        nullable = len(args) < len(typing.get_args(annotation))
        return nullable, args[0] if len(args) == 1 else tuple(args)
    return False, annotation


def _base_types(annotation: Any) -> tuple[type, ...] | None:
    """The runtime types of an annotation; None for ``Any``."""
    _, base = _optional(annotation)
    bases = base if isinstance(base, tuple) else (base,)
    if Any in bases:
        return None
    return tuple(typing.get_origin(b) or b for b in bases)


def check_param(key: str, value: Any, annotation: Any, meta: ParamMeta) -> Any:
    """Validate one op parameter against its type hint and declared metadata."""
    nullable, _ = _optional(annotation)
    allowed = _base_types(annotation)
    if value is None:
        if nullable:
            return None
        what = " or ".join(_type_name(t) for t in allowed) if allowed else "a value"
        raise RecipeError(key, value, f"{what}, not null")
    if allowed is not None:
        value = check_type(key, value, allowed)
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, float) and not math.isfinite(item):
                raise RecipeError(f"{key}[{i}]", item, "a finite number")
    if meta.choices is not None:
        check_choice(key, value, meta.choices)
    if meta.minimum is not None:
        check_min(key, value, meta.minimum, meta.exclusive_minimum)
    if meta.maximum is not None and value > meta.maximum:
        raise RecipeError(key, value, f"a value <= {meta.maximum:g}")
    return value


def check_patterns(where: str, cls: type, params: dict[str, Any]) -> None:
    """Compile every regex parameter (with its replacement template) the recipe sets."""
    for f in dataclasses.fields(cls):
        meta = param_meta(f)
        if not meta.regex:
            continue
        pattern = params.get(f.name, f.default)
        if pattern is None:
            continue
        try:
            compiled = re.compile(unwrap_raw_pattern(pattern), flags=re.DOTALL)
        except re.error as exc:
            raise RecipeError(
                f"{where}.{f.name}", pattern, f"a valid Python regular expression ({exc})"
            ) from exc
        if meta.repl_field is None:
            continue
        repl = params.get(meta.repl_field, "")
        try:
            compiled.sub(repl, "")  # parses the template (group references, escapes)
        except (re.error, IndexError) as exc:
            raise RecipeError(
                f"{where}.{meta.repl_field}",
                repl,
                f"a replacement valid for pattern {pattern!r} ({exc})",
            ) from exc


# ---------------------------------------------------------------------------------------
# JSON Schema / OpenAPI


def _json_type(t: type) -> str:
    return {
        int: "integer",
        float: "number",
        bool: "boolean",
        str: "string",
        list: "array",
        dict: "object",
    }[t]


def _json_default(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | list) else None


def _key_schema(spec: Key) -> dict[str, Any]:
    schema: dict[str, Any] = {}
    description = spec.description
    if spec.default_doc is not None:
        description += f" (default: {spec.default_doc})"
    schema["description"] = description
    if spec.block is not None:
        schema.update(_block_schema(spec.block))
    elif len(spec.types) > 1:
        # A union (a string or a list of them): structural schemas cannot type it, so it is
        # left to the runner's validator, and the schema says so.
        schema["x-kubernetes-preserve-unknown-fields"] = True
        schema["anyOf"] = [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}},
        ]
    else:
        schema["type"] = _json_type(spec.types[0])
        if spec.items is not None:
            schema["items"] = {"type": _json_type(spec.items)}
    if spec.choices is not None:
        schema["enum"] = list(spec.choices)
    if spec.minimum is not None:
        if spec.exclusive_minimum:
            schema["exclusiveMinimum"] = True
        schema["minimum"] = spec.minimum
    if spec.pattern is not None:
        schema["pattern"] = spec.pattern
    if spec.nullable:
        schema["nullable"] = True
    default = _json_default(spec.default)
    if default is not None and spec.default is not REQUIRED and spec.block is None:
        schema["default"] = default
    return schema


def _block_schema(keys: tuple[Key, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k.name: _key_schema(k) for k in keys},
    }


def _op_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        meta = param_meta(f)
        nullable, _ = _optional(hints[f.name])
        allowed = _base_types(hints[f.name])
        prop: dict[str, Any] = {}
        if meta.description:
            prop["description"] = meta.description
        if allowed is None or len(allowed) > 1:
            prop["x-kubernetes-preserve-unknown-fields"] = True
        else:
            prop["type"] = _json_type(allowed[0])
            if allowed[0] is list:
                prop["items"] = {"type": "string"}
        if meta.choices is not None:
            prop["enum"] = list(meta.choices)
        if meta.minimum is not None:
            prop["minimum"] = meta.minimum
            if meta.exclusive_minimum:
                prop["exclusiveMinimum"] = True
        if meta.maximum is not None:
            prop["maximum"] = meta.maximum
        if nullable:
            prop["nullable"] = True
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, str | bool | int | float) and not (
            isinstance(default, int) and abs(default) >= 2**53
        ):
            prop["default"] = default
        props[f.name] = prop
    return {"type": "object", "nullable": True, "properties": props}


def openapi(ops: bool = True) -> dict[str, Any]:
    """The recipe as an OpenAPI v3 schema, structural, for a CRD's ``spec.recipe``.

    Unknown keys are preserved rather than pruned: the runner's validator, which names the
    closest valid key, is the authority, so a misspelt key reaches it instead of vanishing.
    With ``ops``, each op of ``process`` is described with its parameters (this imports the
    op registry); without, an op item is any one-key mapping.
    """
    schema = _block_schema(TOP_LEVEL)
    schema["required"] = [k.name for k in TOP_LEVEL if k.default is REQUIRED]
    schema["x-kubernetes-preserve-unknown-fields"] = True
    schema["description"] = "A Data-Juicer recipe, as dj-runner validates it."
    # No type: an item is a one-key mapping or an op name alone (a string), as in YAML recipes.
    item: dict[str, Any] = {
        "minProperties": 1,
        "maxProperties": 1,
        "x-kubernetes-preserve-unknown-fields": True,
        "description": "one op: {op_name: {param: value}}, or the op name alone",
    }
    if ops:
        from dj_runner.ops import all_ops

        item["properties"] = {name: _op_schema(cls) for name, cls in sorted(all_ops().items())}
    process = schema["properties"]["process"]
    process["items"] = item
    process["minItems"] = 1
    for name in sorted(IGNORED_DJ_KEYS):
        schema["properties"][name] = {
            "description": f"a Data-Juicer key accepted for compatibility; no effect here: "
            f"{IGNORED_DJ_KEYS[name]}",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    for block, ignored in IGNORED_DJ_BLOCK_KEYS.items():
        for name, why in sorted(ignored.items()):
            schema["properties"][block]["properties"][name] = {
                "description": f"a Data-Juicer key accepted for compatibility; no effect here: "
                f"{why}",
                "x-kubernetes-preserve-unknown-fields": True,
            }
    return schema
