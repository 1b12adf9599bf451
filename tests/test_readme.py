"""The README cannot drift: its Python blocks run as written, in order, and every
shell command it shows names a subcommand, options and files that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from structinf import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str):
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def _commands():
    """Each shell command of the README (continuation lines joined, comments cut)."""
    out = []
    for block in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                out.append(line)
    return out


def test_readme_python_runs_as_written():
    blocks = _blocks("python")
    assert blocks
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102


@pytest.mark.parametrize("command", _commands())
def test_readme_shell_commands_exist(command):
    words = shlex.split(command.split("|")[-1].strip())
    tool, args = words[0], words[1:]
    if tool == "structinf":
        # Parsing fails (SystemExit) on an unknown subcommand or option.
        cli.build_parser().parse_args(args)
    elif tool in ("python", "python3"):
        script = next(a for a in args if not a.startswith("-"))
        if args[0] == "-m":
            module = args[1]
            assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
        else:
            assert (ROOT / script).is_file(), script
    elif tool == "pytest":
        for a in args:
            if not a.startswith("-") and "<" not in a:
                assert (ROOT / a).exists(), a
    elif tool in ("cmake", "ctest", "pip", "echo", "bash"):
        if tool == "bash":
            assert (ROOT / args[0]).is_file(), args[0]
    else:
        raise AssertionError(f"README runs an unknown tool: {command}")
