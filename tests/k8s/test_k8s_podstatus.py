"""The pod status rules, table-tested without processes or an apiserver."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.harness.podstatus import ContainerRun, PodStatusRenderer, pod_phase, waiting

RUNNING = {"waiting": None, "running": {"startedAt": "t"}, "terminated": None}
PROC = SimpleNamespace(pid=4242)  # stands for a running container process


def _run(init: bool = False, **fields: object) -> ContainerRun:
    return ContainerRun({"name": "c", "image": "img"}, init, **fields)  # type: ignore[arg-type]


def _terminated(code: int) -> dict[str, object]:
    return {"waiting": None, "running": None, "terminated": {"exitCode": code}}


@pytest.mark.parametrize(
    ("stage", "inits", "mains", "phase"),
    [
        ("prepare", [], [_run()], "Pending"),
        ("init", [_run(True, proc=PROC, state=RUNNING)], [_run()], "Pending"),
        ("main", [], [_run()], "Pending"),  # not started yet
        ("main", [], [_run(proc=PROC, state=RUNNING)], "Running"),
        ("main", [], [_run(proc=PROC, state=RUNNING), _run()], "Pending"),
        # restarting after a crash: still Running, as a kubelet reports CrashLoopBackOff
        (
            "main",
            [],
            [_run(last_state={"terminated": {}}, state=waiting("CrashLoopBackOff"))],
            "Running",
        ),
        ("done", [], [_run(exit_code=0, finished=True)], "Succeeded"),
        ("done", [], [_run(exit_code=0), _run(exit_code=2)], "Failed"),
        ("done", [_run(True, exit_code=1, finished=True)], [_run()], "Failed"),
    ],
)
def test_phase(
    stage: str, inits: list[ContainerRun], mains: list[ContainerRun], phase: str
) -> None:
    assert pod_phase(stage, inits, mains) == phase


def _conditions(status: dict[str, object]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}  # type: ignore[attr-defined]


def test_ready_only_when_every_container_runs() -> None:
    renderer = PodStatusRenderer()
    main = _run(proc=PROC, state=RUNNING)
    status = renderer.render("main", [], [main], "t0")
    assert status["phase"] == "Running"
    assert _conditions(status)["Ready"] == "True"
    assert status["containerStatuses"][0]["ready"] is True
    assert status["containerStatuses"][0]["containerID"] == "process://4242"
    other = _run()
    status = renderer.render("main", [], [main, other], "t0")
    assert _conditions(status)["Ready"] == "False"
    assert status["conditions"][3]["reason"] == "ContainersNotReady"


def test_init_containers_are_never_ready_and_gate_initialized() -> None:
    renderer = PodStatusRenderer()
    init = _run(True, proc=PROC, state=RUNNING)
    status = renderer.render("init", [init], [_run()], "t0")
    assert _conditions(status)["Initialized"] == "False"
    assert status["initContainerStatuses"][0]["ready"] is False
    assert status["initContainerStatuses"][0]["started"] is True
    done = _run(True, exit_code=0, finished=True, state=_terminated(0))
    status = renderer.render("main", [done], [_run(proc=PROC, state=RUNNING)], "t0")
    assert _conditions(status)["Initialized"] == "True"


def test_a_condition_keeps_its_transition_time_until_it_changes() -> None:
    renderer = PodStatusRenderer()
    first = renderer.render("prepare", [], [_run()], "t0")["conditions"][0]
    again = renderer.render("prepare", [], [_run()], "t0")["conditions"][0]
    assert first == again and first["status"] == "False"
    changed = renderer.render("main", [], [_run()], "t0")["conditions"][0]
    assert changed["status"] == "True"


def test_terminal_phase_given_on_delete_overrides_and_says_completed() -> None:
    renderer = PodStatusRenderer()
    status = renderer.render("done", [], [_run(exit_code=143)], "t0", phase="Failed")
    assert status["phase"] == "Failed"
    assert status["conditions"][3]["reason"] == "PodCompleted"
