"""Running a real agent CLI (Claude Code, Codex) from a test: where its binary is, and one bounded run.

The CLIs come from npm and are installed by .ci/run under .venv; nothing is downloaded at test
time. Each CLI's environment variable names another binary (a checkout that has them installed).
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parents[1]


def find_cli(env_var: str, installed: str, name: str) -> str | None:
    """The binary `env_var` names, else the one under ROOT (`installed`), else `name` on PATH."""
    for candidate in (os.environ.get(env_var), str(ROOT / installed), shutil.which(name)):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


async def run_cli(argv: list[str], cwd: pathlib.Path, env: dict[str, str], timeout: float = 120) -> tuple[int, bytes, bytes]:
    """(exit status, stdout, stderr) of one run; killed, and the timeout raised, if it hangs."""
    proc = await asyncio.create_subprocess_exec(*argv, cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out, err
