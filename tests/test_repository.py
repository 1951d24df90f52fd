"""Repository-wide rules: no absolute machine paths, no debugger calls (SPEC 10.5)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
ABSOLUTE_PATH = re.compile(r"""(?:^|["' =:(\[])/(?:home|mnt|root|export|data|scratch|Users|media|opt|srv|work|tmp)/""")
SCANNED = ("*.py", "*.yaml", "*.yml", "*.sh", "*.toml", "*.cfg", "Makefile", "*.md")


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", *SCANNED], cwd=REPO_ROOT, capture_output=True, text=True, check=False
    ).stdout
    files = [REPO_ROOT / line for line in out.splitlines() if line]
    if not files:  # not a git checkout (e.g. an sdist): scan the tree instead
        files = [p for pattern in SCANNED for p in REPO_ROOT.rglob(pattern) if ".venv" not in p.parts]
    return files


def test_no_absolute_machine_paths():
    offenders = []
    for path in tracked_files():
        if path.name == "test_repository.py":
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if ABSOLUTE_PATH.search(line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "absolute machine paths:\n" + "\n".join(offenders)


def test_no_debugger_calls():
    pattern = re.compile(r"^\s*(breakpoint\(\)|import pdb|pdb\.set_trace)")
    offenders = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for path in tracked_files()
        if path.suffix == ".py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders
