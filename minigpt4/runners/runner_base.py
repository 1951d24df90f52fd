"""Training runner: k-fold LoRA fine-tuning with per-epoch validation (``train.py``).

For each held-out fold in ``run.folds`` the trainable tensors are reset to their initial
values, trained for ``max_epoch`` epochs and validated after every epoch; the best epoch by
``run.best_metric`` is kept (by the validation loss where the held-out clips are all of one
class).  Per fold: ``checkpoint_last.pth`` (exact resume, byte for byte),
``checkpoint_best.pth`` (released layout, loadable through ``model.ckpt``), ``metrics.json``
and ``predictions.csv``; at the end ``summary.json`` with mean and spread across folds; and
``skipped.tsv`` naming the clips ``on_error: skip`` left out.  Every one of them is written
atomically (``minigpt4.common.atomic_io``).

An epoch is ``iters_per_epoch`` micro-batches (data batches of ``batch_size_train`` per
process), as in LAVIS; every ``accum_grad_iters`` of them make one optimizer step, and the lr
schedule (warm-up included) counts micro-batches too.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import itertools
import json
import logging
import random
import re
import shutil
from collections import OrderedDict
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, DataLoader, DistributedSampler, IterableDataset, RandomSampler

from minigpt4.common import dist_utils
from minigpt4.common.atomic_io import save_torch_atomic, write_text_atomic
from minigpt4.common.checkpoint_io import CheckpointError, load_checkpoint
from minigpt4.common.logger import MetricLogger, setup_logging
from minigpt4.common.config import Config, ConfigError, select_dotted
from minigpt4.common.optims import build_optimizer_param_groups
from minigpt4.common.registry import registry
from minigpt4.datasets.data_utils import collate_clips
from minigpt4.datasets.errors import SKIPPED_REPORT, write_skipped_report
from minigpt4.features.writer import fingerprint_differences
from minigpt4.models.checkpoint_maps import load_released_state
from minigpt4.runners.common import model_config_for, row_loader, seed_everything, select_device
from minigpt4.runners.tracking import Tracker
from minigpt4.tasks.metrics import format_metrics_table, summarize_folds

logger = logging.getLogger(__name__)

# Model keys that change the trainable tensors: a resume file must agree on all of them.
ARCHITECTURE_KEYS = (
    "arch", "model_type", "vit_model", "image_size", "image_token_merge", "video_feature_dim",
    "num_video_streams", "lora_r", "lora_alpha", "lora_target_modules", "freeze_vit",
)
# Run keys whose saved values the restored lr schedule and optimizer carry: with another value
# in the config the saved one would silently win, and the run would follow neither.
SCHEDULE_KEYS = (
    "lr_sched", "max_epoch", "iters_per_epoch", "init_lr", "min_lr", "warmup_lr", "warmup_steps", "decay_rate",
    "weight_decay",
)
# Run keys that say how a process was started, not what the run is: checkpoints leave them out.
INVOCATION_KEYS = ("resume_ckpt_path", "overwrite")
FOLD_DIR = re.compile(r"^fold_-?\d+$")  # the folders a run writes into output_dir


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict) -> None:
    """Restore what :func:`_rng_state` captured (one process's generators)."""
    version, *rest = state["python"]
    random.setstate((version, tuple(rest[0]), rest[1]))
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])


def _shared_strings(obj: Any, table: dict | None = None) -> Any:
    """``obj`` (plain data and tensors) rebuilt so that equal strings are one object.

    Pickle writes a string once and refers back to that object later; a history read back
    from a resume file holds other string objects than one built in this process, so without
    this a resumed run's checkpoint would hold the same data in other bytes.
    """
    table = {} if table is None else table
    if isinstance(obj, str):
        return table.setdefault(obj, obj)
    if type(obj) in (dict, OrderedDict):
        return type(obj)((_shared_strings(k, table), _shared_strings(v, table)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_shared_strings(item, table) for item in obj)
    return obj


def set_train_mode(model: torch.nn.Module) -> None:
    """Train mode for what learns; eval mode for every module whose parameters are all frozen.

    ``model.train()`` alone would switch the frozen ViT's drop-path (and any other frozen
    module's dropout) on, which the original prevented by disabling ``train()`` on its frozen
    encoder.  Modules without parameters (dropout, LoRA's dropout) follow their parent.
    """
    model.train()
    for module in model.modules():
        params = list(module.parameters())
        if params and not any(p.requires_grad for p in params):
            module.eval()


def micro_steps(
    net: torch.nn.Module,
    batches: Iterable[dict],
    num_micro_batches: int,
    loss_of: Callable[[torch.nn.Module, dict], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    set_lr: Callable[[int], float],
    accum_grad_iters: int,
    max_grad_norm: float,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Iterator[tuple[int, float, float]]:
    """Train on ``num_micro_batches`` batches; yields ``(micro_step, loss, lr)`` after each.

    Every ``accum_grad_iters`` consecutive micro-batches form one optimizer step; a last,
    shorter group at the end of the epoch steps too.  Each loss is divided by the size of its
    group, so a step follows the mean gradient of its micro-batches.  Under DDP the
    non-final micro-batches of a group run in ``no_sync`` (gradients are all-reduced once per
    step, not per micro-batch).  With loss scaling (fp16) the gradients are unscaled before
    clipping to ``max_grad_norm`` (0: no clipping), and the scaler skips a step whose
    gradients overflowed.  ``set_lr(micro_step)`` sets the schedule's rate first.
    """
    params = [p for p in net.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    for micro_step, samples in enumerate(batches):
        group_start = micro_step - micro_step % accum_grad_iters
        group_size = min(accum_grad_iters, num_micro_batches - group_start)
        steps_optimizer = micro_step == group_start + group_size - 1
        lr = set_lr(micro_step)
        syncing = steps_optimizer or not isinstance(net, DistributedDataParallel)
        with contextlib.nullcontext() if syncing else net.no_sync():
            with autocast():
                loss = loss_of(net, samples)
            scaler.scale(loss / group_size).backward()
        if steps_optimizer:
            if max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        yield micro_step, loss.item(), lr


@registry.register_runner("runner_base")
class RunnerBase:
    DEFAULT_TASK = "mw_classification"
    CONFIG = "configs/runners/runner_base.yaml"

    @classmethod
    def default_config_path(cls) -> Path:
        return Path(__file__).resolve().parents[1] / cls.CONFIG

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.run_cfg = cfg.run_cfg
        self.task = registry.get("task", self.run_cfg.task).setup_task(self.run_cfg)
        if self.run_cfg.best_metric not in self.task.METRICS:
            raise ConfigError(
                f"run.best_metric: {self.run_cfg.best_metric!r} is not a metric of task {self.run_cfg.task}; "
                f"choices: {', '.join(self.task.METRICS)}"
            )
        if self.run_cfg.max_epoch < 1:
            raise ConfigError(f"run.max_epoch: must be at least 1, got {self.run_cfg.max_epoch}")
        folds = list(self.run_cfg.folds)
        if not folds:
            raise ConfigError("run.folds: empty; list the test_fold_num of each held-out fold, e.g. [0, 1, 2]")
        repeated = sorted({fold for fold in folds if folds.count(fold) > 1})
        if repeated:
            raise ConfigError(f"run.folds: fold {repeated[0]} is listed more than once in {folds}")
        if not cfg.datasets_cfg:
            raise ConfigError("datasets: no training dataset configured")
        self.out_dir = Path(self.run_cfg.output_dir)
        self.resume = self._read_resume_file() if self.run_cfg.resume_ckpt_path else None

    # ---- set-up ------------------------------------------------------------------------------
    def _read_resume_file(self) -> dict:
        path = self.run_cfg.resume_ckpt_path
        state = load_checkpoint(path, "run.resume_ckpt_path")
        if not isinstance(state, dict) or "optimizer" not in state or "fold" not in state:
            raise CheckpointError(f"run.resume_ckpt_path: {path} is not a training checkpoint (checkpoint_last.pth)")
        saved = state.get("config", {}).get("model", {})
        current = OmegaConf.to_container(self.cfg.model_cfg, resolve=True)
        differing = [key for key in ARCHITECTURE_KEYS if saved.get(key) != current.get(key)]
        if differing:
            details = ", ".join(f"{k}: file {saved.get(k)!r} vs config {current.get(k)!r}" for k in differing)
            raise CheckpointError(f"run.resume_ckpt_path: {path} comes from a different model ({details})")
        saved_run = state.get("config", {}).get("run", {})
        changed = [key for key in SCHEDULE_KEYS if saved_run.get(key) != self.run_cfg.get(key)]
        if changed:
            details = ", ".join(f"run.{k}: file {saved_run.get(k)!r} vs config {self.run_cfg.get(k)!r}" for k in changed)
            raise ConfigError(
                f"run.resume_ckpt_path: a resume continues the saved run's schedule exactly, but {details}; "
                "resume with the saved values, or start a new run from its weights with model.ckpt"
            )
        saved_data = {"datasets": state.get("config", {}).get("datasets") or {}}
        current_data = {"datasets": OmegaConf.to_container(self.cfg.datasets_cfg, resolve=True)}
        changed = fingerprint_differences(saved_data, current_data)
        if changed:
            # the folds before the resumed one were trained on the saved data: summary.json would mix two data sets
            details = ", ".join(
                f"{key}: file {select_dotted(saved_data, key)!r} vs config {select_dotted(current_data, key)!r}"
                for key in changed
            )
            raise ConfigError(
                f"run.resume_ckpt_path: a resume trains on the saved run's data, but {details}; "
                "resume with the saved dataset settings, or start a new run from its weights with model.ckpt"
            )
        if state["fold"] not in self.run_cfg.folds:
            raise ConfigError(f"run.resume_ckpt_path: {path} belongs to fold {state['fold']}, not in run.folds")
        return state

    def _check_output_dir(self) -> None:
        earlier = sorted(self.out_dir.glob("fold_*/checkpoint_last.pth"))
        if earlier and self.resume is None and not self.run_cfg.overwrite:
            raise ConfigError(
                f"run.output_dir: {self.out_dir} holds an earlier run ({earlier[0]}); set run.resume_ckpt_path to "
                "continue it, run.overwrite: true to replace it, or another output_dir"
            )

    @cached_property
    def _builders(self) -> list:
        """One builder per dataset for the whole run: each checks its files once, not per fold."""
        return [registry.get("builder", name)(section) for name, section in self.cfg.datasets_cfg.items()]

    def _build_fold_datasets(self, fold: int) -> tuple:
        """Train and eval splits of every configured dataset for one held-out fold."""
        train, evaluation = [], []
        for builder in self._builders:
            train.append(builder.build("train", fold))
            evaluation.append(builder.build("eval", fold))
        merged_train = train[0] if len(train) == 1 else ConcatDataset(train)
        merged_eval = evaluation[0] if len(evaluation) == 1 else ConcatDataset(evaluation)
        return merged_train, merged_eval, list(evaluation[0].candidate_answers)

    def _train_loader(self, dataset, fold: int, epoch: int, data_pass: int = 0) -> DataLoader:
        # The shuffle depends only on (seed, fold, epoch, pass): a resumed run sees the same order.
        seed = int(np.random.SeedSequence([self.run_cfg.seed, fold, epoch, data_pass]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        if isinstance(dataset, IterableDataset):  # a shard stream splits per node and worker and shuffles itself
            return DataLoader(dataset.for_epoch(seed), batch_size=self.run_cfg.batch_size_train,
                              num_workers=self.run_cfg.num_workers, collate_fn=collate_clips)
        if dist_utils.get_world_size() > 1:
            sampler = DistributedSampler(dataset, shuffle=True, seed=seed, drop_last=False)
        else:
            sampler = RandomSampler(dataset, generator=generator)
        return DataLoader(
            dataset, batch_size=self.run_cfg.batch_size_train, sampler=sampler,
            num_workers=self.run_cfg.num_workers, collate_fn=collate_clips, generator=generator, drop_last=False,
        )

    def _scheduler(self, optimizer, steps_per_epoch: int):
        cls = registry.get("lr_scheduler", self.run_cfg.lr_sched)
        # iters_per_epoch of the schedule: micro-batches, the unit it is stepped in
        values = {
            "max_epoch": self.run_cfg.max_epoch, "iters_per_epoch": steps_per_epoch, "min_lr": self.run_cfg.min_lr,
            "init_lr": self.run_cfg.init_lr, "warmup_steps": self.run_cfg.warmup_steps,
            "warmup_start_lr": self.run_cfg.warmup_lr, "decay_rate": self.run_cfg.decay_rate,
        }
        accepted = inspect.signature(cls).parameters
        return cls(optimizer, **{k: v for k, v in values.items() if k in accepted})

    # ---- the run ---------------------------------------------------------------------------
    def run(self) -> dict:
        dist_utils.init_distributed()
        try:
            return self._run()
        finally:
            dist_utils.destroy_distributed()  # leave the process group cleanly, error or not

    def _run(self) -> dict:
        setup_logging(self.run_cfg.log_level)  # after init: it needs the rank
        self._check_output_dir()
        folds = list(self.run_cfg.folds)
        fold_data = {fold: self._build_fold_datasets(fold) for fold in folds}  # bad data fails here
        device = select_device(self.run_cfg.device)
        seed_everything(self.run_cfg.seed)  # the same initial weights on every process
        model = self.task.build_model(model_config_for(self.cfg.model_cfg, device)).to(device)
        initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self._remove_earlier_run()
        self._report_skipped()
        tracker = Tracker(self.run_cfg, self.out_dir, self.cfg.to_dict())
        # folds before the resumed one in run.folds order are finished: their metrics are read back
        finished = folds[: folds.index(self.resume["fold"])] if self.resume is not None else []
        results = {}
        try:
            for fold in folds:
                if fold in finished:
                    results[fold] = self._read_fold_metrics(fold)
                    continue
                # LAVIS's seed + rank: one dropout stream per process, the same for every fold
                seed_everything(self.run_cfg.seed + dist_utils.get_rank())
                model.load_state_dict(initial, strict=False)
                results[fold] = self._train_fold(model, fold, *fold_data[fold], tracker)
        finally:
            tracker.close()
        return self._write_summary(results)

    def _remove_earlier_run(self) -> None:
        """With ``run.overwrite`` (and no resume) the earlier run's fold folders and summary go,
        so output_dir never mixes its folds (say fold_4 of a 5-fold run) with this run's."""
        if self.resume is not None or not self.run_cfg.overwrite or not dist_utils.is_main_process():
            dist_utils.barrier()
            return
        earlier = [p for p in self.out_dir.glob("fold_*") if p.is_dir() and FOLD_DIR.match(p.name)]
        for folder in earlier:
            shutil.rmtree(folder)
        (self.out_dir / "summary.json").unlink(missing_ok=True)
        if earlier:
            logger.info("run.overwrite: removed %s of the earlier run in %s", ", ".join(sorted(p.name for p in earlier)), self.out_dir)
        dist_utils.barrier()

    def _report_skipped(self) -> None:
        """``skipped.tsv``: every problem of the clips ``on_error: skip`` left out of this run
        (none: a report an overwritten run left goes)."""
        if not dist_utils.is_main_process():
            return
        skipped = [bad for builder in self._builders for bad in builder.validated.skipped]
        if skipped:
            write_skipped_report(self.out_dir, skipped)
            logger.warning("left out %d clip(s) with bad input (on_error: skip); see %s",
                           len({bad.clip for bad in skipped}), self.out_dir / SKIPPED_REPORT)
        else:
            (self.out_dir / SKIPPED_REPORT).unlink(missing_ok=True)

    def _read_fold_metrics(self, fold: int) -> dict:
        path = self.out_dir / f"fold_{fold}" / "metrics.json"
        if not path.is_file():
            raise ConfigError(f"run.resume_ckpt_path: fold {fold} comes earlier but {path} is missing")
        return json.loads(path.read_text())["best"]

    def _train_fold(self, model, fold: int, train_set, eval_set, candidates, tracker: Tracker) -> dict:
        fold_dir = self.out_dir / f"fold_{fold}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        ddp = dist_utils.get_world_size() > 1
        net = DistributedDataParallel(model, find_unused_parameters=False) if ddp else model
        optimizer = torch.optim.AdamW(
            build_optimizer_param_groups(model, self.run_cfg.weight_decay), lr=self.run_cfg.init_lr, betas=(0.9, 0.999)
        )
        micro_batches = self.run_cfg.iters_per_epoch or len(self._train_loader(train_set, fold, 0))
        scheduler = self._scheduler(optimizer, micro_batches)
        use_scaler = model.compute_dtype == torch.float16  # fp16 weights/autocast on a GPU
        scaler = torch.amp.GradScaler(model.device.type, enabled=use_scaler)
        eval_rows = range(dist_utils.get_rank(), len(eval_set), dist_utils.get_world_size())
        eval_loader = row_loader(eval_set, eval_rows, self.run_cfg.batch_size_eval, self.run_cfg.num_workers)

        start_epoch, history, best = 0, [], {"epoch": -1, "value": None, "metrics": None}
        if self.resume is not None and self.resume["fold"] == fold:
            start_epoch, history, best = self._restore(model, optimizer, scheduler, scaler)
            self.resume = None

        for epoch in range(start_epoch, self.run_cfg.max_epoch):
            set_train_mode(model)
            train_loss = self._train_epoch(net, optimizer, scheduler, scaler, train_set, fold, epoch, micro_batches, tracker)
            net.eval()
            result = self.task.evaluation(model, eval_loader, candidates)
            selected_by = self._selection_metric(result.metrics)
            if selected_by != self.run_cfg.best_metric and epoch == start_epoch:
                present = [label for label, count in result.metrics["support"].items() if count]
                logger.warning(
                    "fold %d: every held-out clip is %r, where run.best_metric %s cannot rank epochs; "
                    "the best epoch is the one with the lowest validation loss",
                    fold, present[0], self.run_cfg.best_metric,
                )
            value = result.metrics.get(selected_by)
            history.append({"epoch": epoch, "train_loss": train_loss, "metrics": result.metrics})
            for name, metric in result.metrics.items():
                if isinstance(metric, (int, float)) and not isinstance(metric, bool):
                    tracker.scalar(f"fold_{fold}/val/{name}", metric, epoch)
            logger.info("fold %d epoch %d: train loss %.4f, %s %s", fold, epoch, train_loss, selected_by, value)
            if self._improves(value, best["value"], selected_by):
                best = {"epoch": epoch, "value": value, "metrics": result.metrics}
                self._save_best(model, fold_dir, fold, epoch, result)
            self._save_last(model, optimizer, scheduler, scaler, fold_dir, fold, epoch, history, best)
        self._write_fold_metrics(fold_dir, fold, history, best)
        return best["metrics"]

    def _selection_metric(self, metrics: dict) -> str:
        """``run.best_metric``, or ``loss`` where the held-out clips are all of one class: there
        every classification metric is undefined or degenerate (answering that class always
        scores 1.0), and the validation loss still tells epochs apart."""
        if metrics.get("single_class") and "loss" in metrics:
            return "loss"
        return self.run_cfg.best_metric

    def _improves(self, value, best, metric: str) -> bool:
        if value is None:
            return best is None
        if best is None:
            return True
        larger_is_better = self.task.METRICS[metric]
        return value > best if larger_is_better else value < best

    def _batches(self, train_set, fold: int, epoch: int, steps: int) -> Iterator[dict]:
        """``steps`` micro-batches, passing over the data again if ``iters_per_epoch`` asks for more."""
        passes = (self._train_loader(train_set, fold, epoch, data_pass) for data_pass in itertools.count())
        return itertools.islice(itertools.chain.from_iterable(passes), steps)

    def _train_epoch(self, net, optimizer, scheduler, scaler, train_set, fold, epoch, steps, tracker) -> float:
        """One epoch of ``steps`` micro-batches; returns the mean training loss."""
        meters = MetricLogger()
        model = net.module if isinstance(net, DistributedDataParallel) else net
        batches = meters.log_every(self._batches(train_set, fold, epoch, steps), self.run_cfg.log_freq, f"fold {fold} epoch {epoch}")
        for step, loss, lr in micro_steps(
            net, batches, steps, self.task.train_step, optimizer, scaler,
            set_lr=lambda step: scheduler.step(cur_epoch=epoch, cur_step=step),
            accum_grad_iters=self.run_cfg.accum_grad_iters, max_grad_norm=self.run_cfg.max_grad_norm,
            autocast=model.maybe_autocast,
        ):
            meters.update(loss=loss, lr=lr)
            tracker.scalar(f"fold_{fold}/train/loss", loss, epoch * steps + step)
            tracker.scalar(f"fold_{fold}/train/lr", lr, epoch * steps + step)
        meters.synchronize_between_processes()
        return meters.meters["loss"].global_avg

    # ---- checkpoints and reports -------------------------------------------------------------
    def _save_best(self, model, fold_dir: Path, fold: int, epoch: int, result) -> None:
        if not dist_utils.is_main_process():
            return
        save_torch_atomic(
            fold_dir / "checkpoint_best.pth",
            _shared_strings({"model": model.trainable_state_dict(), "fold": fold, "epoch": epoch,
                            "metrics": result.metrics, "config": self._saved_config()}),
        )
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["clip", "label", "prediction", "p_mw"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.predictions)
        write_text_atomic(fold_dir / "predictions.csv", buffer.getvalue())

    def _save_last(self, model, optimizer, scheduler, scaler, fold_dir, fold, epoch, history, best) -> None:
        rng = dist_utils.all_gather_object(_rng_state())  # every process's generators, by rank
        if dist_utils.is_main_process():
            save_torch_atomic(
                fold_dir / "checkpoint_last.pth",
                _shared_strings({"model": model.trainable_state_dict(), "optimizer": optimizer.state_dict(),
                                "scaler": scaler.state_dict(), "lr_sched": scheduler.state_dict(), "fold": fold,
                                "epoch": epoch, "history": history, "best": best, "rng": rng,
                                "config": self._saved_config()}),
            )
        dist_utils.barrier()

    def _saved_config(self) -> dict:
        """The config a checkpoint records: the run's, without how this process was started
        (``run.resume_ckpt_path``, ``run.overwrite``), so a resumed run saves the bytes an
        uninterrupted one does."""
        config = self.cfg.to_dict()
        for key in INVOCATION_KEYS:
            config["run"].pop(key, None)
        return config

    def _restore(self, model, optimizer, scheduler, scaler) -> tuple[int, list, dict]:
        state = self.resume
        world = dist_utils.get_world_size()
        if len(state["rng"]) != world:
            raise ConfigError(
                f"run.resume_ckpt_path: {self.run_cfg.resume_ckpt_path} was saved by {len(state['rng'])} process(es); "
                f"an exact resume needs as many, not {world}"
            )
        load_released_state(model, state["model"], f"run.resume_ckpt_path {self.run_cfg.resume_ckpt_path}", start_point=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["lr_sched"])
        if state["scaler"]:  # empty when fp16 loss scaling is off
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"][dist_utils.get_rank()])
        logger.info("resumed fold %d after epoch %d from %s", state["fold"], state["epoch"], self.run_cfg.resume_ckpt_path)
        return state["epoch"] + 1, state["history"], state["best"]

    def _write_fold_metrics(self, fold_dir: Path, fold: int, history: list, best: dict) -> None:
        if dist_utils.is_main_process():
            payload = {"fold": fold, "best_metric": self.run_cfg.best_metric,
                       "selected_by": self._selection_metric(best["metrics"]), "best_epoch": best["epoch"],
                       "best": best["metrics"], "history": history}
            write_text_atomic(fold_dir / "metrics.json", json.dumps(payload, indent=2) + "\n")

    def _write_summary(self, results: dict) -> dict:
        per_fold = {f"fold {fold}": metrics for fold, metrics in results.items()}
        # e.g. folds that split a participant, let through by allow_split_participants: read first
        warnings = [builder.fold_warning for builder in self._builders if builder.fold_warning]
        summary = {"warnings": warnings, "best_metric": self.run_cfg.best_metric, "folds": {str(k): v for k, v in results.items()},
                   "selected_by": {str(k): self._selection_metric(v) for k, v in results.items()},
                   "summary": summarize_folds(list(results.values()))}
        if dist_utils.is_main_process():
            write_text_atomic(self.out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
            heading = "".join(f"WARNING: {warning}\n" for warning in warnings)
            logger.info("results across folds:\n%s%s", heading, format_metrics_table(per_fold, summary["summary"]))
        return summary
