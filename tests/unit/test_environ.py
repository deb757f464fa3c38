"""``engine.environ.environ_for``: set for a block, then exactly as before, even on an error."""

from __future__ import annotations

import os

import pytest

from dj_runner.engine.environ import environ_for


def test_keys_are_set_and_unset_inside_and_restored_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DJ_T_SET", "before")
    monkeypatch.setenv("DJ_T_UNSET", "before")
    monkeypatch.delenv("DJ_T_NEW", raising=False)
    with (
        pytest.raises(RuntimeError),
        environ_for({"DJ_T_SET": "inside", "DJ_T_UNSET": None, "DJ_T_NEW": "inside"}),
    ):
        assert os.environ["DJ_T_SET"] == "inside" and os.environ["DJ_T_NEW"] == "inside"
        assert "DJ_T_UNSET" not in os.environ
        raise RuntimeError("the block fails")
    assert os.environ["DJ_T_SET"] == "before" and os.environ["DJ_T_UNSET"] == "before"
    assert "DJ_T_NEW" not in os.environ
