"""A started job keeps its Ray mode and its work dir: a mid-run edit is reported, not applied."""

from __future__ import annotations

from operator_fixtures import make_job

from dj_operator.api import constants as c
from dj_operator.api.types import parse_spec
from dj_operator.api.validation import work_dir_for
from dj_operator.status import pinning


def started(spec_patch: dict | None = None) -> dict:
    """A job whose first attempt pinned the example's values, then `spec_patch` applied."""
    job = make_job()
    job["status"] = {"pinned": pinning.pins_of(job, parse_spec(job["spec"]))}
    for key, value in (spec_patch or {}).items():
        job["spec"][key] = {**job["spec"].get(key, {}), **value}
    return job


def test_the_pins_are_the_spec_as_it_resolves_at_the_first_attempt() -> None:
    job = make_job()
    pins = pinning.pins_of(job, parse_spec(job["spec"]))
    assert set(pins) == set(pinning.FIELDS)
    assert pins["rayMode"] == parse_spec(job["spec"]).ray.mode


def test_an_unchanged_spec_is_left_as_it_is() -> None:
    job = started()
    spec = parse_spec(job["spec"])
    assert pinning.apply(job, spec) == (spec, [])


def test_a_storage_change_mid_run_does_not_move_the_work_dir() -> None:
    original = make_job()
    before = work_dir_for(parse_spec(original["spec"]), "ns1", "demo")
    job = started({"storage": {"claimName": "other-claim", "workDir": "elsewhere"}})
    del job["spec"]["storage"]["volumeClaimTemplate"]  # the example's claim is templated
    spec, changed = pinning.apply(job, parse_spec(job["spec"]))
    assert work_dir_for(spec, "ns1", "demo") == before
    assert spec.storage.claim_name is None  # the templated claim, by its name
    assert any("spec.storage.claimName changed to 'other-claim'" in x for x in changed)
    assert any("spec.storage.workDir" in x for x in changed)
    assert "delete and recreate" in pinning.message(changed)


def test_kuberay_to_local_mid_run_keeps_kuberay_so_the_cluster_is_not_left_behind() -> None:
    job = make_job()
    job["spec"]["ray"] = {"mode": c.MODE_KUBERAY}
    job["status"] = {"pinned": pinning.pins_of(job, parse_spec(job["spec"]))}
    job["spec"]["ray"] = {"mode": "local"}
    spec, changed = pinning.apply(job, parse_spec(job["spec"]))
    assert spec.ray.mode == c.MODE_KUBERAY
    assert changed == ["spec.ray.mode changed to 'local'; the job keeps 'kuberay'"]


def test_a_job_without_pins_is_not_changed() -> None:
    job = make_job()
    job["spec"]["storage"]["workDir"] = "elsewhere"
    spec = parse_spec(job["spec"])
    assert pinning.apply(job, spec) == (spec, [])


def test_an_object_store_work_dir_change_mid_run_does_not_move_the_work_dir() -> None:
    job = make_job()
    job["spec"]["storage"] = {"objectStore": {"workDir": "s3://bucket/jobs/demo"}}
    job["status"] = {"pinned": pinning.pins_of(job, parse_spec(job["spec"]))}
    assert job["status"]["pinned"]["objectStoreWorkDir"] == "s3://bucket/jobs/demo"
    job["spec"]["storage"]["objectStore"]["workDir"] = "s3://bucket/elsewhere"
    spec, changed = pinning.apply(job, parse_spec(job["spec"]))
    assert spec.storage.object_store is not None
    assert spec.storage.object_store.work_dir == "s3://bucket/jobs/demo"
    assert any("spec.storage.objectStore.workDir changed to" in x for x in changed)
