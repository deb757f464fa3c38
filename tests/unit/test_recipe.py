"""Recipe validation: every bad recipe is refused before work, naming key, value and fix."""

from __future__ import annotations

import pytest

from dj_runner.errors import RecipeError
from dj_runner.recipe.parse import parse_recipe

BASE = {
    "dataset_path": "data.jsonl",
    "export_path": "out.jsonl",
    "process": [{"text_length_filter": {"min_len": 10}}],
}


def parse(**changes):
    raw = dict(BASE)
    raw.update(changes)
    return parse_recipe({k: v for k, v in raw.items() if v is not None})


def error(**changes) -> str:
    with pytest.raises(RecipeError) as info:
        parse(**changes)
    return str(info.value)


def test_valid_recipe_with_data_juicer_keys():
    r = parse(
        project_name="p",
        executor_type="ray_partitioned",
        ray_address="auto",
        np=4,
        text_keys=["text"],
        partition_size=5000,
        max_partition_size_mb=64,
        enable_fault_tolerance=True,
        max_retries=2,
        storage_format="arrow",
        preserve_intermediate_data=True,
        event_logging={
            "enabled": True,
            "log_level": "info",
            "max_log_size_mb": 5,
            "backup_count": 2,
        },
        checkpoint={"enabled": True, "strategy": "every_n_ops", "n_ops": 2},
        intermediate_storage={"format": "arrow", "compression": "zstd"},
        use_cache=False,  # a Data-Juicer key that changes nothing here
    )
    assert r.partition.mode == "size" and r.partition.partition_size == 5000
    assert r.checkpoint.strategy == "every_n_ops" and r.checkpoint.storage_format == "arrow"
    assert r.checkpoint.compression == "zstd" and r.event_logging.log_level == "INFO"
    assert r.process[0].op.min_len == 10


def test_unknown_key_names_the_closest():
    msg = error(partition_sise=10)
    assert "'partition_sise'" in msg and "did you mean 'partition_size'" in msg


def test_unknown_op_names_the_closest():
    msg = error(process=[{"text_lenght_filter": {}}])
    assert "process[0]" in msg and "'text_lenght_filter'" in msg
    assert "did you mean 'text_length_filter'" in msg


def test_unknown_op_parameter_names_the_closest():
    msg = error(process=[{"text_length_filter": {"min_length": 3}}])
    assert "text_length_filter.min_length" in msg and "did you mean 'min_len'" in msg


def test_wrong_type():
    msg = error(partition_size="big")
    assert "'partition_size'" in msg and "'big'" in msg and "an integer" in msg
    msg = error(process=[{"text_length_filter": {"min_len": "ten"}}])
    assert "min_len" in msg and "'ten'" in msg and "an integer" in msg
    msg = error(keep_stats_in_res_ds="yes")
    assert "true or false" in msg


def test_out_of_range():
    assert ">= 1" in error(partition_size=0)
    assert "> 0" in error(max_partition_size_mb=0)
    assert ">= 0" in error(max_retries=-1)
    msg = error(process=[{"text_length_filter": {"min_len": 10, "max_len": 5}}])
    assert "max_len" in msg and "min_len" in msg


def test_bad_choices_name_the_valid_ones():
    msg = error(storage_format="parket")
    assert "parquet, arrow, jsonl" in msg and "did you mean 'parquet'" in msg
    msg = error(checkpoint={"strategy": "every-op"})
    assert "did you mean 'every_op'" in msg
    msg = error(intermediate_storage={"format": "arrow", "compression": "snappy"})
    assert "lz4" in msg
    msg = error(checkpoint={"strategy": "manual", "op_names": ["nope_mapper"]})
    assert "checkpoint.op_names" in msg and "'nope_mapper'" in msg


def test_missing_and_bad_paths():
    assert "'dataset_path'" in error(dataset_path=None)
    msg = error(export_path="out.txt")
    assert ".jsonl, .parquet" in msg
    assert "'ray_address'" in error(ray_address="somewhere")


def test_nested_block_unknown_key():
    msg = error(partition={"mode": "auto", "num_partitions": 3})
    assert "partition.num_partitions" in msg and "did you mean 'num_of_partitions'" in msg


def test_empty_process_and_bad_op_shape():
    assert "non-empty list" in error(process=[])
    assert "exactly one op name" in error(process=[{"a": {}, "b": {}}])


def test_modes_and_flat_keys():
    assert parse().partition.mode == "auto"
    assert parse(partition={"mode": "manual", "num_of_partitions": 8}).partition.num_partitions == 8
    assert parse(enable_fault_tolerance=False, max_retries=5).max_retries == 0
    assert parse(checkpoint={"enabled": False}).checkpoint.strategy == "disabled"


def test_fingerprint_tracks_what_decides_the_output():
    a = parse()
    assert a.fingerprint() == parse(event_logging={"enabled": False}, max_retries=9).fingerprint()
    assert a.fingerprint() != parse(process=[{"text_length_filter": {"min_len": 11}}]).fingerprint()
    assert a.fingerprint() != parse(partition_size=7).fingerprint()


@pytest.mark.parametrize("executor_type", ["default", "ray"])
def test_executor_type_is_honoured_as_partitioned_and_said(executor_type):
    r = parse(executor_type=executor_type)
    assert r.executor_type == executor_type
    (notice,) = r.notices
    assert notice.startswith(f"executor_type: {executor_type!r} runs as 'ray_partitioned'")
    assert parse(executor_type="ray_partitioned").notices == ()
    assert parse().notices == ()
    msg = error(executor_type="ray_partition")
    assert "'executor_type'" in msg and "did you mean 'ray_partitioned'" in msg


def test_data_juicer_keys_without_effect_are_named_in_notices():
    r = parse(use_cache=True, op_fusion=False, turbo=True)
    assert [n.split(":", 1)[0] for n in r.notices] == ["use_cache", "op_fusion", "turbo"]
    assert all(n.endswith("accepted and ignored") for n in r.notices)


# ------------------------------------------------------------ Data-Juicer's configs as written


def test_job_id_and_work_dir_placeholders_are_substituted_as_data_juicer_does(tmp_path):
    raw = {
        **BASE,
        "work_dir": str(tmp_path / "outputs" / "my_project" / "{job_id}"),
        "export_path": "{work_dir}/processed.jsonl",
    }
    r = parse_recipe(raw)
    assert r.job_id is not None and r.job_id.startswith("dj-job-")
    assert r.work_dir == str(tmp_path / "outputs" / "my_project" / r.job_id)
    assert r.export_path == f"{r.work_dir}/processed.jsonl"
    assert parse_recipe(raw).job_id == r.job_id  # the same id on every run: a rerun resumes
    named = parse_recipe({**raw, "job_id": "run-7"})
    assert named.work_dir.endswith("/my_project/run-7")
    cli = parse_recipe(raw, job_id="cli", work_dir=str(tmp_path / "w"))
    assert cli.job_id == "cli" and cli.export_path == str(tmp_path / "w" / "processed.jsonl")
    assert "{" not in "".join((r.work_dir, r.export_path, cli.work_dir or ""))


def test_placeholder_misuse_is_refused_by_name():
    msg = error(work_dir="./{job_id}/results")
    assert "'work_dir'" in msg and "only as the last part of the path" in msg
    msg = error(export_path="{work_dir}/processed.jsonl")
    assert "'export_path'" in msg and "unless work_dir" in msg
    msg = error(work_dir="./out/{job_id}", job_id="a/b")
    assert "'job_id'" in msg and "letters, digits" in msg


def test_data_juicer_storage_keys_are_accepted_with_notices():
    r = parse(
        partition_dir="{work_dir}/partitions",
        event_log_dir="./logs",
        checkpoint_dir="./ckpt",
        keep_hashes_in_res_ds=True,
        intermediate_storage={"format": "parquet", "write_partitions": False},
    )
    named = [n.split(":", 1)[0] for n in r.notices]
    assert named == [
        "partition_dir",
        "event_log_dir",
        "checkpoint_dir",
        "keep_hashes_in_res_ds",
        "intermediate_storage.write_partitions",
    ]
    msg = error(intermediate_storage={"write_partition": False})
    assert "did you mean 'write_partitions'" in msg


def test_the_parameters_every_data_juicer_op_takes_are_accepted_on_built_in_ops():
    ops = [
        {"clean_links_mapper": {"text_key": "text", "batch_size": 100, "num_proc": 4}},
        {"text_length_filter": {"min_len": 10, "cpu_required": 1, "mem_required": "1GB"}},
        {"text_length_filter": {"min_len": 10, "skip_op_error": True, "reversed_range": True}},
    ]
    r = parse(process=ops)
    assert [n.split(":", 1)[0] for n in r.notices] == [
        "process[0].clean_links_mapper.batch_size",
        "process[0].clean_links_mapper.num_proc",
        "process[1].text_length_filter.cpu_required",
        "process[1].text_length_filter.mem_required",
        "process[2].text_length_filter.skip_op_error",
    ]
    # ignored parameters change nothing, the fingerprint included; honoured ones are kept
    assert r.process[0].params == {} and r.process[2].op.reversed_range is True
    plain = parse(process=[{"clean_links_mapper": {}}, *ops[1:]])
    assert plain.process[0].params == r.process[0].params
    # text_key: honoured when it is the recipe's; another field is refused with the way out
    msg = error(process=[{"clean_links_mapper": {"text_key": "content"}}])
    assert "'process[0].clean_links_mapper.text_key'" in msg and "text_keys: content" in msg
    assert parse(text_keys="content", process=[{"clean_links_mapper": {"text_key": "content"}}])
    # a key neither side knows is still a typo
    msg = error(process=[{"clean_links_mapper": {"batch_sise": 3}}])
    assert (
        "'process[0].clean_links_mapper.batch_sise'" in msg and "did you mean 'batch_size'" in msg
    )
