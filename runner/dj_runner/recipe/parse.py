"""Recipes: load a Data-Juicer YAML recipe, validate every key before work starts, normalise.

Accepts the keys users already write for Data-Juicer: the top-level keys, the seed's flat
partitioning keys, and Data-Juicer's nested ``partition``, ``checkpoint``,
``intermediate_storage`` and ``event_logging`` blocks. The keys are described once, as data,
in ``dj_runner.recipe.keys``; this module turns the checked values into the frozen
``Recipe`` and applies the rules that span keys. Every error names the key, the value and
what would be valid, with the closest valid name for a misspelt key or op.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dj_runner.errors import RecipeError, closest
from dj_runner.ops.common.params import param_meta
from dj_runner.recipe.dj_dataset import translate_dataset_block
from dj_runner.recipe.keys import (
    COMMON_FILTER_PARAMS,
    COMMON_OP_PARAMS,
    COMPRESSIONS,
    CREDENTIAL_KEYS,
    DEFAULT_COMPRESSION,
    DJ_KEYS_AT_DEFAULT,
    EXPORT_SUFFIXES,
    IGNORED_DJ_BLOCK_KEYS,
    IGNORED_DJ_KEYS,
    INPUT_SUFFIXES,
    RETENTION_BLOCK,
    STORAGE_FORMATS,
    STRATEGIES,
    TOP_LEVEL,
    check_choice,
    check_param,
    check_patterns,
    credential_refused,
    given,
    read_block,
)
from dj_runner.store.location import S3Config

if typing.TYPE_CHECKING:
    from dj_runner.ops.common.base import Op

__all__ = [
    "EXPORT_SUFFIXES",
    "INPUT_SUFFIXES",
    "STORAGE_FORMATS",
    "STRATEGIES",
    "CheckpointConfig",
    "EventLogConfig",
    "OpSpec",
    "PartitionConfig",
    "Recipe",
    "RetentionConfig",
    "load_recipe",
    "parse_recipe",
]


@dataclass(frozen=True)
class OpSpec:
    """One op of the recipe's ``process`` list, validated and instantiated."""

    name: str
    params: dict[str, Any]
    op: Op
    #: Parameters accepted and ignored (Data-Juicer's common ones a built-in op has no use for).
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionConfig:
    mode: str  # "auto" | "manual" | "size"
    partition_size: int  # max samples per partition (size mode; upper bound in auto mode)
    max_size_mb: float  # max MB per partition (keys.MB_BOUND_DOC says what it measures)
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
class RetentionConfig:
    """What a finished job keeps (``retention``); ``engine/retention.py`` applies it."""

    checkpoints: str = "final"  # final | all | none
    event_log_max_age_days: float | None = None
    event_log_max_segments: int | None = None


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
    engine: str | None
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
    s3: S3Config = field(default_factory=S3Config)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    source: dict[str, Any] = field(repr=False, default_factory=dict)
    #: The executor the recipe asked for (``executor_type``); the runner's is the partitioned one.
    executor_type: str = "ray_partitioned"
    #: What the recipe sets that is accepted but read differently from Data-Juicer or not at
    #: all, one sentence each naming the key: ``validate`` prints them, ``run`` prints them and
    #: records them in the ``job_start`` event.
    notices: tuple[str, ...] = ()

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
# Ops


def build_op(
    name: str,
    params: dict[str, Any],
    where: str,
    implementation: str = "builtin",
    text_key: str | None = None,
) -> OpSpec:
    """Validate one op's name and parameters and instantiate it.

    A built-in op also takes the parameters every Data-Juicer op takes
    (``keys.COMMON_OP_PARAMS``): ``text_key`` must then be the recipe's ``text_key`` (when
    given), the others are accepted, named in the spec's notices and left out of its
    parameters (they change nothing here, so neither does the recipe's fingerprint).
    """
    # Op implementations load only when a recipe names them, each op's own module alone.
    from dj_runner.ops import all_ops, find_op

    found = find_op(name)
    # -- hook: Data-Juicer ops (dj_runner.dj_ops), for names not built in or when chosen
    from dj_runner.dj_ops import resolve as dj

    impl, params = dj.choose(name, params, implementation, where)
    if impl == "data_juicer" or found is None:
        registry = all_ops()
        op, notices = dj.resolve(name, params, where, registry, impl)
        kept = getattr(op, "params", params)  # a Ray deduplicator's tuning is left out
        if name in registry:  # the choice decides the output: part of the fingerprint
            kept = {**kept, dj.OPTION: impl}
        return OpSpec(name=name, params=kept, op=op, notices=tuple(notices))
    # -- end hook
    cls = found
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    common = _common_params(cls)
    checked: dict[str, Any] = {}
    notices: list[str] = []
    for pname, pvalue in params.items():
        if pname not in fields and pname in common:
            key = f"{where}.{name}.{pname}"
            if pname != "text_key":
                notices.append(f"{key}: {common[pname]}; accepted and ignored")
            elif text_key is not None and pvalue != text_key:
                raise RecipeError(
                    key,
                    pvalue,
                    f"the recipe's text key {text_key!r}: a built-in op works on the first of "
                    f"text_keys (set text_keys: {pvalue}, or {name}.op_implementation: "
                    "data_juicer to run Data-Juicer's op on that field)",
                )
            continue
        if pname not in fields:
            raise RecipeError(
                f"{where}.{name}.{pname}",
                pvalue,
                f"a parameter of {name} ({', '.join(sorted(fields)) or 'none'}) or one every "
                "Data-Juicer op takes (text_key, batch_size, num_proc, ...)",
                closest(str(pname), [*fields, *common]),
            )
        checked[pname] = check_param(
            f"{where}.{name}.{pname}", pvalue, hints[pname], param_meta(fields[pname])
        )
    check_patterns(f"{where}.{name}", cls, checked)
    try:
        op = cls(**checked)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"{where}.{name}", params, str(exc)) from exc
    return OpSpec(name=name, params=checked, op=op, notices=tuple(notices))


def _common_params(cls: type) -> dict[str, str]:
    """The Data-Juicer parameters common to every op of ``cls``'s kind, with why each is
    ignored by a built-in op."""
    from dj_runner.ops.common.base import Filter

    if issubclass(cls, Filter):
        return {**COMMON_OP_PARAMS, **COMMON_FILTER_PARAMS}
    return dict(COMMON_OP_PARAMS)


def _parse_process(
    raw: Any, implementation: str = "builtin", text_key: str | None = None
) -> tuple[OpSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise RecipeError(
            "process", raw, "a non-empty list of ops, like [{text_length_filter: {}}]"
        )
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
        specs.append(build_op(str(name), params, where, implementation, text_key))
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


def resolve_path(base: Path, value: str) -> str:
    """``value`` as an absolute path against ``base`` (an ``s3://`` URL unchanged)."""
    if value.startswith("s3://"):
        return value
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p))


# ---------------------------------------------------------------------------------------
# One function per block; each takes the values ``read_block`` checked against the schema.


def _partition(top: dict[str, Any], raw: dict[str, Any]) -> PartitionConfig:
    block = top["partition"]
    given_block = raw.get("partition") or {}
    max_mb = block["target_size_mb"] or top["max_partition_size_mb"]
    mode = block["mode"] or ("size" if given(raw, "partition_size") else "auto")
    if mode != "manual" and given(given_block, "num_of_partitions"):
        raise RecipeError(
            "partition.num_of_partitions",
            given_block["num_of_partitions"],
            "to be set only with partition.mode: manual",
        )
    num = block["num_of_partitions"] if mode == "manual" else None
    return PartitionConfig(mode, top["partition_size"], float(max_mb), num)


def _checkpoint(top: dict[str, Any], op_names: list[str]) -> CheckpointConfig:
    block, storage = top["checkpoint"], top["intermediate_storage"]
    strategy = block["strategy"] if block["enabled"] else "disabled"
    ck_names = block["op_names"]
    for n in ck_names:
        if n not in op_names:
            raise RecipeError(
                "checkpoint.op_names", n, "an op name used in process", closest(n, op_names)
            )
    if strategy == "manual" and not ck_names:
        raise RecipeError(
            "checkpoint.op_names", ck_names, "at least one op name for strategy manual"
        )
    fmt = top["storage_format"]
    if storage["format"] is not None:
        if fmt is not None and storage["format"] != fmt:
            raise RecipeError(
                "intermediate_storage.format",
                storage["format"],
                f"the same as storage_format ({fmt!r})",
            )
        fmt = storage["format"]
    fmt = fmt or "parquet"
    compression = storage["compression"] or DEFAULT_COMPRESSION[fmt]
    check_choice("intermediate_storage.compression", compression, COMPRESSIONS[fmt])
    return CheckpointConfig(
        strategy,
        block["n_ops"],
        tuple(ck_names),
        fmt,
        compression,
        top["preserve_intermediate_data"],
    )


def _event_logging(top: dict[str, Any]) -> EventLogConfig:
    b = top["event_logging"]
    return EventLogConfig(
        b["enabled"], b["log_level"], float(b["max_log_size_mb"]), b["backup_count"]
    )


def retention_config(raw: dict[str, Any], preserve: bool = False) -> RetentionConfig:
    """The ``retention`` block ``raw`` (as a recipe or ``dj-runner clean`` gives it), checked;
    ``preserve``: the recipe's ``preserve_intermediate_data`` (its checkpoints default)."""
    b = read_block("retention", raw, RETENTION_BLOCK)
    keep = b["checkpoints"] or ("all" if preserve else "final")
    age = b["event_log_max_age_days"]
    return RetentionConfig(
        keep, float(age) if age is not None else None, b["event_log_max_segments"]
    )


def refuse_inline_credentials(raw: dict[str, Any]) -> None:
    """Refuse a recipe that carries an access key or secret (never echoing the value)."""
    for key in ("dataset_path", "export_path", "work_dir"):
        value = raw.get(key)
        if isinstance(value, str) and value.startswith("s3://") and "@" in value.split("/")[2]:
            raise RecipeError(
                key,
                "s3://<hidden>@...",
                "an s3:// URI without credentials in it; the runner takes them from the "
                "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, web identity)",
            )
    blocks: list[tuple[str, Any]] = [("", raw), ("s3.", raw.get("s3"))]
    for prefix, block in blocks:
        if not isinstance(block, dict):
            continue
        for name in block:
            if str(name).lower() in CREDENTIAL_KEYS:
                raise credential_refused(f"{prefix}{name}")


def parse_recipe(
    raw: Any,
    base_dir: Path | None = None,
    job_id: str | None = None,
    work_dir: str | None = None,
) -> Recipe:
    """Validate a recipe mapping against the schema and return the normalised Recipe.

    ``job_id`` and ``work_dir`` are the command line's (``--job-id``, ``--work-dir``): they
    take the place of the recipe's in its ``{job_id}`` and ``{work_dir}`` placeholders.
    """
    if not isinstance(raw, dict):
        raise RecipeError("<recipe>", raw, "a YAML mapping of keys")
    base_dir = base_dir or Path.cwd()
    raw, dataset_notices = translate_dataset_block(raw)
    refuse_inline_credentials(raw)
    for key, (default, why) in DJ_KEYS_AT_DEFAULT.items():
        if key in raw and raw[key] not in (default, None):
            shown = "<hidden>" if key == "export_aws_credentials" else raw[key]
            raise RecipeError(key, shown, f"{default!r} (Data-Juicer's default): {why}")
    top = read_block("", raw, TOP_LEVEL, ignored=IGNORED_DJ_KEYS)
    substitute_placeholders(top, job_id, work_dir)
    for required in ("dataset_path", "export_path"):
        if top[required] == "":
            raise RecipeError(required, "", "a path")
    dataset_path, export_path = top["dataset_path"], top["export_path"]
    if not any(ch in dataset_path for ch in "*?["):
        _check_path_suffix("dataset_path", dataset_path, INPUT_SUFFIXES, allow_dir=True)
    _check_path_suffix("export_path", export_path, EXPORT_SUFFIXES, allow_dir=True)
    if not top["text_keys"]:
        raise RecipeError("text_keys", raw.get("text_keys"), "a field name or a list of them")

    process = _parse_process(raw.get("process"), top["op_implementation"], top["text_keys"][0])
    notices = [
        *dataset_notices,
        *executor_notices(top["executor_type"]),
        *ignored_key_notices(raw),
        *(n for spec in process for n in spec.notices),
    ]
    max_retries = top["max_retries"] if top["enable_fault_tolerance"] else 0
    work_dir = top["work_dir"]
    return Recipe(
        project_name=top["project_name"] or "dj-job",
        dataset_path=resolve_path(base_dir, dataset_path),
        export_path=resolve_path(base_dir, export_path),
        text_keys=tuple(top["text_keys"]),
        process=process,
        keep_stats_in_res_ds=top["keep_stats_in_res_ds"],
        ray_address=top["ray_address"],
        engine=top["engine"],
        np=top["np"],
        job_id=top["job_id"],
        work_dir=resolve_path(base_dir, work_dir) if work_dir else None,
        partition=_partition(top, raw),
        checkpoint=_checkpoint(top, [s.name for s in process]),
        event_logging=_event_logging(top),
        max_retries=max_retries,
        retry_base_delay_s=float(top["retry_base_delay_s"]),
        max_failed_partitions=top["max_failed_partitions"],
        malformed_records=top["malformed_records"],
        s3=S3Config(**top["s3"]),
        retention=retention_config(raw.get("retention") or {}, top["preserve_intermediate_data"]),
        source=raw,
        executor_type=top["executor_type"],
        notices=tuple(notices),
    )


#: The keys whose values may hold Data-Juicer's ``{job_id}`` and ``{work_dir}`` placeholders.
PLACEHOLDER_KEYS = ("work_dir", "export_path", "dataset_path")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def substitute_placeholders(top: dict[str, Any], job_id: str | None, work_dir: str | None) -> None:
    """Replace ``{job_id}`` and ``{work_dir}`` in the path keys of ``top``, as Data-Juicer does.

    As in Data-Juicer, ``{job_id}`` may only end ``work_dir``; ``{work_dir}`` is the work dir
    after substitution (``--work-dir`` when given). The job id is ``--job-id``, else the
    recipe's ``job_id``, else ``<project_name>-<8 hex digits>`` derived from the recipe's
    paths: the same on every run, so a rerun finds its work dir and resumes (Data-Juicer
    draws a new one per run). The id used is recorded as the recipe's ``job_id``.
    """
    used = [k for k in PLACEHOLDER_KEYS if isinstance(top[k], str) and "{" in top[k]]
    if not any("{job_id}" in top[k] or "{work_dir}" in top[k] for k in used):
        return
    wd = top["work_dir"]
    if wd is not None and "{work_dir}" in wd:
        raise RecipeError("work_dir", wd, "a path that does not refer to {work_dir} itself")
    last = wd is not None and os.path.basename(wd.rstrip("/")) == "{job_id}"
    if wd is not None and "{job_id}" in wd and not (last and wd.count("{job_id}") == 1):
        raise RecipeError(
            "work_dir",
            wd,
            "'{job_id}' only as the last part of the path, like ./outputs/my_project/{job_id} "
            "(as Data-Juicer requires)",
        )
    if any("{job_id}" in top[k] for k in used):
        ident = job_id or top["job_id"] or _derived_job_id(top)
        if not _JOB_ID.match(ident):
            raise RecipeError(
                "job_id",
                ident,
                "letters, digits, '.', '_' and '-', starting with a letter "
                "or digit (it names a directory through {job_id})",
            )
        top["job_id"] = ident
        for key in used:
            top[key] = top[key].replace("{job_id}", ident)
    actual = work_dir or top["work_dir"]
    for key in ("export_path", "dataset_path"):
        value = top[key]
        if "{work_dir}" not in value:
            continue
        if actual is None:
            raise RecipeError(
                key, value, "a path without {work_dir} unless work_dir (or --work-dir) is set"
            )
        top[key] = value.replace("{work_dir}", actual.rstrip("/"))


def _derived_job_id(top: dict[str, Any]) -> str:
    """``<project_name>-<hash>``: the same recipe paths give the same id on every run."""
    name = top["project_name"] or "dj-job"
    blob = "\0".join(str(top[k]) for k in (*PLACEHOLDER_KEYS, "project_name"))
    return f"{name}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def executor_notices(executor_type: str) -> list[str]:
    """How the runner honours ``executor_type``: it has one executor, the partitioned one."""
    if executor_type == "ray_partitioned":
        return []
    how = {
        "default": "Data-Juicer's default executor runs the dataset in one local process; "
        "here it runs on this machine (on local worker processes for inputs up to 1 GiB, else "
        "on an embedded Ray; see the engine key), unless a Ray address is given (ray_address, "
        "--ray-address or RAY_ADDRESS)",
        "ray": "Data-Juicer's ray executor runs the dataset whole on Ray; here it runs on "
        "the same Ray",
    }[executor_type]
    return [
        f"executor_type: {executor_type!r} runs as 'ray_partitioned': {how}, cut into "
        "partitions with checkpoints and resume; the ops and the output are the same"
    ]


def ignored_key_notices(raw: dict[str, Any]) -> list[str]:
    """One notice per Data-Juicer key the recipe sets that has no effect here."""
    notices = [
        f"{key}: {IGNORED_DJ_KEYS[key]}; accepted and ignored"
        for key in raw
        if key in IGNORED_DJ_KEYS
    ]
    for block, keys in IGNORED_DJ_BLOCK_KEYS.items():
        given_block = raw.get(block)
        for key in given_block if isinstance(given_block, dict) else ():
            if key in keys:
                notices.append(f"{block}.{key}: {keys[key]}; accepted and ignored")
    return notices


def load_recipe(path: str | Path, job_id: str | None = None, work_dir: str | None = None) -> Recipe:
    """Read and validate a recipe file (``job_id``, ``work_dir``: as ``parse_recipe``).

    Relative paths in it resolve against the current directory, as Data-Juicer resolves them.
    """
    path = Path(path)
    if not path.is_file():
        raise RecipeError("<recipe file>", str(path), "an existing YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise RecipeError(
            "<recipe file>",
            str(path),
            f"a UTF-8 text file (byte 0x{exc.object[exc.start]:02x} on line {line} is not "
            "UTF-8; save the recipe as UTF-8)",
        ) from exc
    except OSError as exc:
        raise RecipeError("<recipe file>", str(path), f"a readable file ({exc.strerror})") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RecipeError("<recipe file>", str(path), f"valid YAML ({exc})") from exc
    return parse_recipe(raw, base_dir=Path.cwd(), job_id=job_id, work_dir=work_dir)
