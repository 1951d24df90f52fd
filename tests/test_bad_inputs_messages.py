"""What a new user reads: documents the README names exist, and the demo says why its MER
stage scores near zero."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_document_the_readme_names_is_in_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # links, and repository documents named in code style (SPEC.md, CONTRIBUTING.md); a
    # lower-case `probe.md` in backticks is an output file a command writes
    named = set(re.findall(r"\]\(([^)#\s]+\.md)\)", readme)) | set(re.findall(r"`((?:[\w-]+/)*[A-Z][A-Z_]*\.md)`", readme))
    assert named, "the README names no documents"
    missing = sorted(name for name in named if not (ROOT / name).is_file())
    assert not missing, f"README.md names documents the repository does not hold: {missing}"


def test_readme_points_to_the_differences_from_the_original():
    assert "docs/differences.md" in (ROOT / "README.md").read_text(encoding="utf-8")
    assert (ROOT / "docs" / "differences.md").is_file()


def test_demo_says_its_mer_stage_runs_on_random_weights():
    demo = (ROOT / "scripts" / "demo.sh").read_text(encoding="utf-8")
    mer_step = demo[demo.index("emotion recognition on the MER-format clips") :]
    assert "weights are random" in mer_step.split("step ")[0]


def test_one_table_formatter_for_every_command():
    from minigpt4.common.text_table import format_table
    from minigpt4.tasks import emotion_eval, metrics

    assert format_table(["fold", "auc"], [["0", "0.5"], ["mean", "0.75"]], rule=True) == (
        "fold   auc\n----  ----\n0      0.5\nmean  0.75"
    )
    assert format_table(["", "happy"], [["sad", "3"]], indent="  ") == "       happy\n  sad      3"
    # the metrics table and the emotion summary print through it, not through copies of it
    assert metrics.format_table is format_table and emotion_eval.format_table is format_table
    assert not hasattr(emotion_eval, "_table")
