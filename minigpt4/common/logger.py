"""Console logging for runs, and the running averages the training loop reports.

:func:`setup_logging` configures the root logger once per process: the main process logs
at the requested level, the other ranks only warnings and errors (tagged with their rank), so
a ``torchrun`` job prints one copy of the progress.  :class:`MetricLogger` wraps the loop
iterable and logs progress through ``logging``, never ``print``.
"""

from __future__ import annotations

import datetime
import logging
import statistics
import time
from collections import defaultdict, deque
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist

from minigpt4.common.dist_utils import get_rank, is_dist_avail_and_initialized, is_main_process

logger = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MB = 1024.0 * 1024.0


def setup_logging(level: int | str = logging.INFO) -> None:
    """Send log records to the console; safe to call again (it replaces its own handler)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_minigpt4_console", False)]:
        root.removeHandler(handler)

    handler = logging.StreamHandler()
    handler._minigpt4_console = True  # marks the handler this function owns
    if is_main_process():
        handler.setFormatter(logging.Formatter(LOG_FORMAT, DATE_FORMAT))
        root.setLevel(level.upper() if isinstance(level, str) else level)
    else:
        handler.setFormatter(logging.Formatter(f"[rank {get_rank()}] {LOG_FORMAT}", DATE_FORMAT))
        root.setLevel(logging.WARNING)
    root.addHandler(handler)


class SmoothedValue:
    """A series of values: median/avg over the last ``window_size``, global_avg over all."""

    def __init__(self, window_size: int = 20, fmt: str = "{median:.4f} ({global_avg:.4f})"):
        self.window: deque[float] = deque(maxlen=window_size)
        self.total = 0.0
        self.count = 0
        self.fmt = fmt

    def update(self, value: float, n: int = 1) -> None:
        self.window.append(value)
        self.count += n
        self.total += value * n

    def synchronize_between_processes(self) -> None:
        """Sum ``count`` and ``total`` over ranks so ``global_avg`` covers every process.

        The window stays local: medians of other ranks' recent values are not needed for
        the end-of-epoch summary this serves.
        """
        if not is_dist_avail_and_initialized():
            return
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        totals = torch.tensor([self.count, self.total], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        self.count = int(totals[0].item())
        self.total = totals[1].item()

    @property
    def median(self) -> float:
        return statistics.median(self.window)

    @property
    def avg(self) -> float:
        return statistics.fmean(self.window)

    @property
    def global_avg(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def max(self) -> float:
        return max(self.window)

    @property
    def value(self) -> float:
        return self.window[-1]

    def __str__(self) -> str:
        if not self.window:
            return "n/a"
        return self.fmt.format(
            median=self.median, avg=self.avg, global_avg=self.global_avg, max=self.max, value=self.value
        )


class MetricLogger:
    """Named :class:`SmoothedValue` meters plus a progress-logging loop wrapper."""

    def __init__(self, delimiter: str = "  "):
        self.meters: defaultdict[str, SmoothedValue] = defaultdict(SmoothedValue)
        self.delimiter = delimiter

    def update(self, **values: float | torch.Tensor) -> None:
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if not isinstance(value, (int, float)):
                raise TypeError(f"meter {name!r}: expected a number or a 1-element tensor, got {type(value).__name__}")
            self.meters[name].update(float(value))

    def add_meter(self, name: str, meter: SmoothedValue) -> None:
        self.meters[name] = meter

    def synchronize_between_processes(self) -> None:
        for meter in self.meters.values():
            meter.synchronize_between_processes()

    def global_avg(self) -> dict[str, float]:
        return {name: meter.global_avg for name, meter in self.meters.items()}

    def __str__(self) -> str:
        return self.delimiter.join(f"{name}: {meter}" for name, meter in self.meters.items())

    def log_every(self, iterable: Iterable[Any], print_freq: int, header: str = "") -> Iterator[Any]:
        """Yield from ``iterable``, logging progress every ``print_freq`` items and at the end.

        Each line holds the position, the ETA (when ``iterable`` has a length), the meters,
        the time per iteration and per data fetch, and the peak CUDA memory when on a GPU.
        """
        total = len(iterable) if hasattr(iterable, "__len__") else None
        iter_time = SmoothedValue(fmt="{avg:.4f}")
        data_time = SmoothedValue(fmt="{avg:.4f}")
        start = end = time.time()
        index = -1
        for index, item in enumerate(iterable):
            data_time.update(time.time() - end)
            yield item
            iter_time.update(time.time() - end)
            is_last = total is not None and index == total - 1
            if index % print_freq == 0 or is_last:
                self._log_progress(header, index, total, iter_time, data_time)
            end = time.time()
        elapsed = time.time() - start
        done = index + 1
        logger.info(
            "%s Total time: %s (%.4f s / it)",
            header,
            datetime.timedelta(seconds=int(elapsed)),
            elapsed / max(done, 1),
        )

    def _log_progress(
        self, header: str, index: int, total: int | None, iter_time: SmoothedValue, data_time: SmoothedValue
    ) -> None:
        parts = [header] if header else []
        if total is None:
            parts.append(f"[{index}]")
        else:
            width = len(str(total))
            eta = datetime.timedelta(seconds=int(iter_time.global_avg * (total - index - 1)))
            parts += [f"[{index:>{width}}/{total}]", f"eta: {eta}"]
        parts += [str(self)] if self.meters else []
        parts += [f"time: {iter_time}", f"data: {data_time}"]
        if torch.cuda.is_available():
            parts.append(f"max mem: {torch.cuda.max_memory_allocated() / MB:.0f} MB")
        logger.info(self.delimiter.join(parts))
