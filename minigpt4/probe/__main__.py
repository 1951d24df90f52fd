"""``python -m minigpt4.probe --cfg-path eval_configs/probe_mw.yaml [--options probe.key=value ...]``"""

from __future__ import annotations

import argparse
from pathlib import Path

from minigpt4.datasets.errors import DataError
from minigpt4.probe.config import ProbeConfigError, load_config
from minigpt4.probe.export import export_detectors
from minigpt4.probe.labels import ProbeInputError
from minigpt4.probe.plots import write_plots
from minigpt4.probe.report import markdown_table, write_report
from minigpt4.probe.run import run_probe
from minigpt4.probe.timelines import timeline_plots, write_timeline_csv

USER_ERRORS = (ProbeConfigError, ProbeInputError, DataError)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m minigpt4.probe", description=__doc__)
    parser.add_argument("--cfg-path", required=True, help="probe config YAML (eval_configs/probe_mw.yaml)")
    parser.add_argument("--options", nargs="+", default=[], help="overrides such as probe.permutations=10")
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, Path]:
    args = parse_args(argv)
    cfg = load_config(args.cfg_path, args.options)
    result = run_probe(cfg)
    out = Path(cfg.output_dir)
    paths = write_report(result, out)
    timelines = write_timeline_csv(result, out)
    if timelines is not None:
        paths["timelines"] = timelines
    if cfg.plots:
        paths.update({path.stem: path for path in write_plots(result, out)})
        drawn = timeline_plots(result, out)
        if drawn:
            paths["timeline plots"] = drawn[0].parent  # one PNG per video
    for folder in export_detectors(result, out):
        paths[f"detector {folder.name}"] = folder
    print(markdown_table(result))
    print(f"probe results in {out}: " + ", ".join(path.name for path in paths.values()))
    return paths


if __name__ == "__main__":
    try:
        main()
    except USER_ERRORS as exc:
        raise SystemExit(f"error: {exc}") from exc
