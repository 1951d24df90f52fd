"""Every benchmark script runs: its smallest run, and gpu_check.sh's command lines on the CPU.

No timing is asserted (speed is measured by the scripts, never by tests).  A run must exit 0,
print its table, write its JSON (``--json``) and, where it compares its methods' outputs,
report them agreeing within its tolerance.  How each script is smoke-run is declared in the
script itself: a module-level ``SMOKE_ARGS`` list (docs/PERFORMANCE.md, "Adding a
benchmark"); a ``benchmarks/bench_*.py`` without one fails here.

A script that ``benchmarks/gpu_check.sh`` runs is smoke-run through each of its ``run`` lines
there: the same flags, with the values its ``SMOKE_ARGS`` give for the flags it sets (the
tiny preset and small counts), ``--device cpu``, ``$OUT`` a temporary folder, and its other
smoke flags added.  So a flag a script no longer accepts fails the suite, not the GPU run,
and each script still runs once.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO_ROOT / "benchmarks"
GPU_CHECK = BENCHMARKS / "gpu_check.sh"
SCRIPTS = sorted(path.stem for path in BENCHMARKS.glob("bench_*.py"))
# The scripts that compare their methods' outputs: their JSON must say how closely they agree.
COMPARING = {"bench_extract", "bench_train", "bench_frame_memory"}
RUN_TIMEOUT_S = 600  # a smoke run takes seconds; this only stops a hang
PARALLEL_RUNS = 2  # the CI machine's cores
# the line under a table's header: format_table's dashes, or a Markdown table's | --- |
TABLE_RULE = re.compile(r"^(?:-+(?: +-+)+|\|(?: *-{3,} *\|)+) *$", re.MULTILINE)


def smoke_args(script: str) -> list[str]:
    """``SMOKE_ARGS`` of ``benchmarks/<script>.py``, read from its source without importing it."""
    tree = ast.parse((BENCHMARKS / f"{script}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "SMOKE_ARGS" for target in node.targets):
            return list(ast.literal_eval(node.value))
    pytest.fail(
        f"benchmarks/{script}.py declares no SMOKE_ARGS: add a module-level list of the arguments of its "
        "smallest run (seconds on 2 CPU cores; see docs/PERFORMANCE.md, 'Adding a benchmark')"
    )


def gpu_check_runs() -> list[tuple[str, list[str]]]:
    """(name, command words) of every ``run NAME LIMIT COMMAND...`` line of gpu_check.sh."""
    runs = []
    for line in GPU_CHECK.read_text().replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if len(words) >= 4 and words[0] == "run":
            runs.append((words[1], words[3:]))
    return runs


def flag_values(args: list[str]) -> dict[str, list[str]]:
    """``--flag value...`` words as {flag: values}, in order (a flag takes the words up to the next flag)."""
    if args and not args[0].startswith("--"):
        raise ValueError(f"expected a --flag first, got {args[0]!r} in {args}")
    flags: dict[str, list[str]] = {}
    for word in args:
        if word.startswith("--"):
            flags[word] = []
        else:
            flags[next(reversed(flags))].append(word)
    return flags


def script_of(command: list[str]) -> str:
    """The benchmark a gpu_check.sh command runs (``"$PYTHON" -m benchmarks.bench_x ...``)."""
    python, dash_m, module = command[:3]
    assert (python, dash_m) == ("$PYTHON", "-m") and module.startswith("benchmarks.bench_"), command
    return module.removeprefix("benchmarks.")


def as_smoke_run(command: list[str], smoke_args: list[str], out_dir: Path) -> list[str]:
    """The arguments of a gpu_check.sh command at the script's smoke size on the CPU."""
    smoke = flag_values(smoke_args)
    flags = flag_values([word.replace("$OUT", str(out_dir)) for word in command[3:]])
    flags = {flag: smoke.get(flag, values) for flag, values in flags.items()}
    if "--device" in flags:
        flags["--device"] = ["cpu"]
    flags = {**flags, **{flag: values for flag, values in smoke.items() if flag not in flags}}
    flags.setdefault("--json", [str(out_dir / f"{script_of(command)}.json")])
    return [word for flag, values in flags.items() for word in (flag, *values)]


def smoke_runs() -> dict[str, tuple[str, str | None]]:
    """{test id: (script, gpu_check.sh run name or None)}: one run per gpu_check.sh line, and the
    ``SMOKE_ARGS`` run of every script gpu_check.sh does not run."""
    in_gpu_check = {script_of(command) for _, command in gpu_check_runs()}
    runs = {f"gpu_check-{name}": (script_of(command), name) for name, command in gpu_check_runs()}
    runs.update({script: (script, None) for script in SCRIPTS if script not in in_gpu_check})
    return runs


SMOKE_RUNS = smoke_runs()


@dataclass
class Finished:
    script: str
    command_line: str
    completed: subprocess.CompletedProcess
    report_path: Path


def run_benchmark(script: str, gpu_check_run: str | None, tmp_path: Path) -> Finished:
    if gpu_check_run is None:
        args = [*smoke_args(script), "--json", str(tmp_path / f"{script}.json")]
    else:
        args = as_smoke_run(dict(gpu_check_runs())[gpu_check_run], smoke_args(script), tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{script}", *args],
        cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},  # the parallel runs share the cores
        capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False,
    )
    command_line = f"python -m benchmarks.{script} {shlex.join(args)}"
    return Finished(script, command_line, completed, Path(flag_values(args)["--json"][0]))


@pytest.fixture(scope="module")
def finished_runs(request, tmp_path_factory) -> Iterator[dict[str, Future]]:
    """Every smoke run this session selected, started PARALLEL_RUNS at a time when the first is
    asked for (most of a run is one process starting Python and torch, on one core)."""
    selected = [item.callspec.id for item in request.session.items if getattr(item, "function", None) is test_benchmark_runs]
    with ThreadPoolExecutor(max_workers=PARALLEL_RUNS) as pool:
        futures = {
            run_id: pool.submit(run_benchmark, *SMOKE_RUNS[run_id], tmp_path_factory.mktemp(run_id))
            for run_id in selected
        }
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_declares_its_smoke_run(script):
    args = smoke_args(script)
    assert args and all(isinstance(word, str) for word in args), f"benchmarks/{script}.py: SMOKE_ARGS {args!r}"
    assert "--json" not in args, f"benchmarks/{script}.py: the test picks the JSON path"


def test_gpu_check_runs_only_benchmarks_that_exist():
    names = [name for name, _ in gpu_check_runs()]
    assert "extract" in names  # the lines were found at all
    assert len(set(names)) == len(names), f"gpu_check.sh names a run twice: {names}"
    for name, command in gpu_check_runs():
        assert script_of(command) in SCRIPTS, f"gpu_check.sh run {name}: no benchmarks/{script_of(command)}.py"


def test_as_smoke_run_keeps_gpu_checks_flags_at_the_smoke_size(tmp_path):
    command = ["$PYTHON", "-m", "benchmarks.bench_x", "--preset", "full", "--device", "cuda", "--sizes", "64", "128",
               "--batch-size", "8", "--json", "$OUT/x.json"]
    smoke = ["--preset", "tiny", "--sizes", "2", "--steps", "1"]
    assert as_smoke_run(command, smoke, tmp_path) == [
        "--preset", "tiny", "--device", "cpu", "--sizes", "2", "--batch-size", "8", "--json", f"{tmp_path}/x.json",
        "--steps", "1",
    ]
    assert as_smoke_run(command[:5], smoke, tmp_path)[-2:] == ["--json", f"{tmp_path}/bench_x.json"]


@pytest.mark.slow
@pytest.mark.parametrize("run_id", SMOKE_RUNS)
def test_benchmark_runs(run_id, finished_runs):
    run = finished_runs[run_id].result()
    completed = run.completed
    assert completed.returncode == 0, f"{run.command_line} exited {completed.returncode}:\n{completed.stderr[-3000:]}"
    assert TABLE_RULE.search(completed.stdout), f"{run.command_line} printed no table:\n{completed.stdout[-2000:]}"
    report = json.loads(run.report_path.read_text())
    assert isinstance(report, dict) and report
    agreement = report.get("agreement", [])
    if run.script in COMPARING:
        assert agreement, f"{run.command_line}: its JSON reports no agreement of its methods"
    for row in agreement:
        assert row["max_abs_diff"] <= row["tolerance"], f"{run.command_line}: {row['what']} differs: {row}"
