"""A private mount namespace for tests: commands run where a small tmpfs hides a directory.

``MountNamespace()`` starts this file as its own agent under
``unshare --user --map-root-user --mount`` (unprivileged; it needs user namespaces). The agent
reads one JSON request a line on stdin, runs the command with the request's timeout and answers
one JSON line: exit code, stdout, stderr. A mount made by one command (``mount -t tmpfs``) stays
for the agent's life and is seen by every later command, and by nothing outside the namespace.
Closing the client ends the agent, and the namespace with it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

UNSHARE = ("unshare", "--user", "--map-root-user", "--mount")


def unavailable() -> str | None:
    """Why a mount namespace cannot be made here (None when it can)."""
    if shutil.which("unshare") is None:
        return "no unshare binary (util-linux)"
    try:
        probe = subprocess.run(
            [*UNSHARE, "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 3"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare -rm failed: {exc}"
    if probe.returncode != 0:
        return f"unshare -rm with a tmpfs mount failed here: {probe.stderr.strip()}"
    return None


class MountNamespace:
    """The client: ``run`` a command in the namespace, ``mount_tmpfs`` / ``resize`` a tmpfs."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env if env is not None else os.environ)
        self._proc = subprocess.Popen(
            [*UNSHARE, sys.executable, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(
        self, *argv: str, timeout: float = 300, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the namespace; returns when it ends or its ``timeout`` kills it."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        request = {"argv": list(argv), "timeout": timeout, "env": self.env, "cwd": cwd and str(cwd)}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()  # the agent answers within the command's timeout
        if not line:
            raise RuntimeError(f"the namespace agent exited (code {self._proc.poll()})")
        reply = json.loads(line)
        return subprocess.CompletedProcess(
            list(argv), reply["rc"], reply["stdout"], reply["stderr"]
        )

    def check(self, *argv: str, timeout: float = 60) -> str:
        proc = self.run(*argv, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def mount_tmpfs(self, directory: Path, size_bytes: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.check("mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(directory))

    def resize(self, directory: Path, size_bytes: int) -> None:
        self.check("mount", "-o", f"remount,size={size_bytes}", str(directory))

    def usage(self, directory: Path) -> tuple[int, int]:
        """``(used, size)`` bytes of the filesystem at ``directory``, as seen inside."""
        out = self.check("df", "-B1", "--output=used,size", str(directory))
        used, size = out.split()[-2:]
        return int(used), int(size)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        if self._proc.stdout is not None:
            self._proc.stdout.close()

    def __enter__(self) -> MountNamespace:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _text(out: str | bytes | None) -> str:
    return out.decode(errors="replace") if isinstance(out, bytes) else out or ""


def _serve() -> None:
    """The agent: one request a line in, one reply a line out, until stdin closes."""
    for line in sys.stdin:
        req: dict[str, Any] = json.loads(line)
        try:
            proc = subprocess.run(
                req["argv"],
                capture_output=True,
                text=True,
                timeout=req["timeout"],
                env=req["env"],
                cwd=req["cwd"],
            )
            reply = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
        except subprocess.TimeoutExpired as exc:
            reply = {
                "rc": 124,
                "stdout": _text(exc.stdout),
                "stderr": f"{_text(exc.stderr)}\ntimed out after {req['timeout']} s",
            }
        except OSError as exc:
            reply = {"rc": 127, "stdout": "", "stderr": str(exc)}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    _serve()
