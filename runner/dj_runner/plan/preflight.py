"""Pre-flight checks of a valid recipe against the filesystem, shared by ``validate`` and ``run``.

Everything ``run`` would refuse about where data comes from and goes to is found here,
before Ray starts or any work is done: the input exists and has records (a glob that matches
nothing is an error); the export does not overwrite the input, is not inside the dataset
directory and is not an ancestor of the input or of the work dir; the work dir is not inside
the dataset directory (it would be read back as input); the export location and the work
dir are directories the runner can write (checked by creating and removing a probe file; a
full device there is ``NoSpace``, not a recipe error);
each text key names a field that the first records of the input carry; and JSONL
checkpoints are not asked to keep a column type they cannot restore.

In object storage (``s3://``) the same rules hold by key prefix: the export is not the input
nor inside its prefix, the bucket exists, and the export location takes a probe object
(``store/location.py``: a missing bucket, refused credentials or a missing permission is an
``InvalidInput`` naming the bucket and the operation). A work dir in object storage is not
inside the input's prefix and does not contain the export, and its store must honour
conditional writes: a probe object is created with ``If-None-Match: *`` twice, and the second
must be refused (``check_work_dir_store``).
"""

from __future__ import annotations

import glob
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from dj_runner.errors import InvalidInput, RecipeError, closest
from dj_runner.io.sources import (
    LINE_FORMATS,
    SourceFile,
    iter_columnar_batches,
    iter_lines,
    list_sources,
)
from dj_runner.recipe.parse import Recipe
from dj_runner.store.arrow_json import jsonl_unsupported
from dj_runner.store.location import check_writable_prefix, is_s3, resolve
from dj_runner.store.nospace import is_no_space, no_space

#: Records of the input looked at for the text keys (from the first files, in order).
TEXT_KEY_SAMPLE = 1000


@dataclass(frozen=True)
class Preflight:
    """What the checks found: the input files, and the work dir they were made for."""

    sources: tuple[SourceFile, ...]
    work_dir: str


def preflight(recipe: Recipe, work_dir: str | Path) -> Preflight:
    """Run every check; raise ``RecipeError`` (or ``InputError`` for an unreadable input file)
    for the first that fails."""
    s3_work = is_s3(str(work_dir))
    work = str(work_dir) if s3_work else os.path.abspath(work_dir)
    sources = tuple(list_sources(recipe.dataset_path))
    if is_s3(recipe.dataset_path) or is_s3(recipe.export_path) or s3_work:
        check_s3_locations(recipe, work)
    else:
        check_locations(recipe, Path(work))
    if is_s3(recipe.export_path):
        check_writable_prefix("export_path", resolve(recipe.export_path, "export_path"))
    else:
        check_writable("export_path", Path(recipe.export_path).parent)
    if s3_work:
        check_work_dir_store(work)
    else:
        check_writable("work_dir", Path(work))
    check_text_keys(recipe, sources)
    check_checkpoint_types(recipe, sources)
    return Preflight(sources, work)


def _dataset_root(dataset_path: str) -> Path | None:
    """The directory the dataset is read from: the directory itself, or a glob's fixed part."""
    if any(ch in dataset_path for ch in "*?["):
        fixed = []
        for part in Path(dataset_path).parts:
            if glob.has_magic(part):
                break
            fixed.append(part)
        return Path(*fixed) if fixed else None
    if os.path.isdir(dataset_path):
        return Path(dataset_path)
    return None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_locations(recipe: Recipe, work: Path) -> None:
    """Refuse an export or work dir that would overwrite or be read back as the input."""
    export = Path(os.path.realpath(recipe.export_path))
    dataset = Path(os.path.realpath(recipe.dataset_path))
    real_work = Path(os.path.realpath(work))
    if export == dataset:
        raise RecipeError(
            "export_path", recipe.export_path, "a path other than dataset_path (the input)"
        )
    root = _dataset_root(recipe.dataset_path)
    if root is not None:
        root = Path(os.path.realpath(root))
        if _within(export, root):
            raise RecipeError(
                "export_path",
                recipe.export_path,
                f"a path outside the dataset directory {root} (it would be read back as input)",
            )
        if _within(real_work, root):
            raise RecipeError(
                "work_dir",
                str(work),
                f"a directory outside the dataset directory {root} (its files would be read "
                "back as input); set work_dir or --work-dir",
            )
    for name, path in (("dataset_path", dataset), ("work dir", real_work)):
        if export != path and export in path.parents:
            raise RecipeError(
                "export_path",
                recipe.export_path,
                f"a path that does not contain the {name} {path} (exporting there would "
                "replace it)",
            )


def _s3_root(dataset_path: str) -> str:
    """The key prefix an ``s3://`` dataset is read from (a glob's fixed part)."""
    magic = [dataset_path.index(ch) for ch in "*?[" if ch in dataset_path]
    return dataset_path[: min(magic)] if magic else dataset_path


def check_s3_locations(recipe: Recipe, work_dir: str = "") -> None:
    """Refuse an export that is the input or lies inside the input's prefix, and a work dir
    inside the input's prefix or inside the export's (object storage)."""
    export = recipe.export_path.rstrip("/")
    dataset = recipe.dataset_path.rstrip("/")
    work = work_dir.rstrip("/")
    root = _s3_root(dataset).rstrip("/")
    if is_s3(work) and is_s3(dataset) and (work == root or work.startswith(root + "/")):
        raise RecipeError(
            "work_dir",
            work_dir,
            f"a location outside the input prefix {root}/ (its objects would be read back as "
            "input); set work_dir or --work-dir",
        )
    if is_s3(work) and is_s3(export) and (work == export or work.startswith(export + "/")):
        raise RecipeError(
            "work_dir",
            work_dir,
            f"a location outside export_path {recipe.export_path} (the export owns its prefix)",
        )
    if not (is_s3(export) and is_s3(dataset)):
        return  # one local, one in a bucket: they cannot overlap
    if export in (dataset, root) or export.startswith(root + "/"):
        raise RecipeError(
            "export_path",
            recipe.export_path,
            f"a location outside the input prefix {root}/ (it would be read back as input)",
        )
    if dataset.startswith(export + "/"):
        raise RecipeError(
            "export_path",
            recipe.export_path,
            f"a location that does not contain dataset_path {recipe.dataset_path} (exporting "
            "there would replace it)",
        )


def check_work_dir_store(work_dir: str) -> None:
    """A work dir in object storage: its bucket answers, the credentials may read, write,
    list and delete there, and the store honours ``If-None-Match: *`` (the lease and the
    commit logs rely on it). Raises ``InvalidInput`` (exit 2) naming what failed."""
    from dj_runner.store.blobs import S3Blobs, S3Error

    blobs = S3Blobs(work_dir)
    probe = f".dj-runner-probe-{uuid.uuid4().hex}"
    hint = (
        " (check the bucket's name, and that the credentials - AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the role - may read, write, list and delete there)"
    )
    try:
        blobs.list("checkpoints")
        if blobs.create(probe, b"probe") is None:
            raise InvalidInput(f"work_dir {work_dir}: a fresh probe object already existed")
        try:
            if blobs.create(probe, b"again") is not None:
                raise InvalidInput(
                    f"work_dir {work_dir}: this store ignores conditional writes (a second "
                    "PutObject with If-None-Match: * on an existing key succeeded); a work dir in "
                    "object storage needs them for its lease and commit logs. Use a store that "
                    "honours them (AWS S3, MinIO, SeaweedFS, Ceph RGW) or a local work dir"
                )
        finally:
            blobs.delete(probe)
    except S3Error as exc:
        raise InvalidInput(f"work_dir {work_dir}: {exc}{hint}") from None


def check_writable(key: str, directory: Path) -> None:
    """``directory`` (or its nearest existing ancestor) is a directory the runner can write."""
    probe_dir = directory
    while not probe_dir.exists():
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise RecipeError(key, str(directory), f"a directory; {probe_dir} is a file")
    probe = probe_dir / f".dj-runner-probe-{uuid.uuid4().hex}"
    created = False
    try:
        with open(probe, "wb") as fh:
            created = True
            fh.write(b"probe")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if is_no_space(exc):  # not a bad recipe: the volume is full (exit 8, retryable)
            raise no_space(directory, exc) from exc
        raise RecipeError(
            key, str(directory), f"a writable location ({probe_dir}: {exc.strerror})"
        ) from exc
    finally:
        if created:  # on a read-only file system even unlinking a missing file fails
            probe.unlink(missing_ok=True)


def check_checkpoint_types(recipe: Recipe, sources: tuple[SourceFile, ...]) -> None:
    """Refuse JSONL checkpoints over a columnar input with a type they cannot restore."""
    if recipe.checkpoint.storage_format != "jsonl":
        return
    for src in sources:
        if src.fmt not in ("parquet", "arrow"):
            continue  # JSON and CSV input only yields JSON-representable types
        schema = next(iter_columnar_batches(src, batch_rows=1), None)
        for f in schema.schema if schema is not None else ():
            if jsonl_unsupported(f.type):
                raise RecipeError(
                    "storage_format",
                    "jsonl",
                    f"parquet or arrow: column '{f.name}' of {src.path} is {f.type}, which "
                    "JSONL checkpoints cannot keep",
                )


def _sample_fields(sources: tuple[SourceFile, ...], limit: int) -> tuple[int, dict[str, int]]:
    """Records looked at, and how many of them carry each field with a non-null value."""
    seen, present = 0, {}
    for src in sources:
        if seen >= limit:
            break
        if src.fmt in LINE_FORMATS:
            for _, _, line in iter_lines(src):
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # malformed lines are rejects, not evidence
                if not isinstance(rec, dict):
                    continue
                seen += 1
                for k, v in rec.items():
                    if v is not None:
                        present[k] = present.get(k, 0) + 1
                if seen >= limit:
                    break
        else:
            for batch in iter_columnar_batches(src, batch_rows=limit):
                n = min(batch.num_rows, limit - seen)
                batch = batch.slice(0, n)
                seen += n
                for name, col in zip(batch.schema.names, batch.columns, strict=True):
                    present[name] = present.get(name, 0) + n - col.null_count
                if seen >= limit:
                    break
    return seen, present


def check_text_keys(recipe: Recipe, sources: tuple[SourceFile, ...]) -> None:
    """Refuse a text key that none of the first records carries (a typo, most likely)."""
    seen, present = _sample_fields(sources, TEXT_KEY_SAMPLE)
    if seen == 0:
        return  # no record parsed: nothing to compare with; the rejects will say why
    for key in recipe.text_keys:
        if present.get(key, 0) == 0:
            fields = sorted(present, key=lambda k: -present[k])[:8]
            raise RecipeError(
                "text_keys",
                key,
                f"a field of the input records; none of the first {seen} records has "
                f"'{key}' (their fields: {', '.join(fields) or 'none'})",
                closest(key, present),
            )
