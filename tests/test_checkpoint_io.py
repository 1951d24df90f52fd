"""The one checkpoint reader: safe by default, clear when it refuses."""

from __future__ import annotations

import collections

import pytest
import torch

from minigpt4.common.atomic_io import save_torch_atomic
from minigpt4.common.checkpoint_io import CheckpointError, apply_state_dict, load_checkpoint


class Custom:
    """A class that full unpickling would have to import and build."""

    def __init__(self):
        self.value = 3


def test_reads_a_plain_tensor_dict(tmp_path):
    state = {"weight": torch.arange(6.0).view(2, 3), "bias": torch.ones(2)}
    path = tmp_path / "plain.pth"
    save_torch_atomic(path, {"model": state, "epoch": 3})
    loaded = load_checkpoint(path, "model.ckpt")
    assert loaded["epoch"] == 3
    torch.testing.assert_close(loaded["model"]["weight"], state["weight"])


def test_refuses_pickled_objects_unless_trusted(tmp_path):
    path = tmp_path / "custom.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Custom()}, path)
    with pytest.raises(CheckpointError, match="trust_checkpoint: true") as info:
        load_checkpoint(path, "model.ckpt")
    assert "model.ckpt" in str(info.value) and str(path) in str(info.value)
    assert load_checkpoint(path, "model.ckpt", trust_checkpoint=True)["extra"].value == 3


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"model.vit_checkpoint: file not found: .*absent.pth"):
        load_checkpoint(tmp_path / "absent.pth", "model.vit_checkpoint")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth is not a readable torch checkpoint"):
        load_checkpoint(broken, "model.ckpt")


def test_apply_state_dict_reports_everything():
    module = torch.nn.Sequential(collections.OrderedDict(a=torch.nn.Linear(2, 2), b=torch.nn.Linear(2, 1)))
    good = {k: torch.randn_like(v) for k, v in module.state_dict().items()}
    report = apply_state_dict(module, good, "test")
    assert report.clean and sorted(report.loaded) == sorted(good)
    torch.testing.assert_close(module.a.weight, good["a.weight"])

    with pytest.raises(CheckpointError, match=r"wrong shape: a.weight: file \(3, 2\) vs model \(2, 2\)"):
        apply_state_dict(module, {**good, "a.weight": torch.zeros(3, 2)}, "test")
    with pytest.raises(CheckpointError, match="missing from the file: b.bias"):
        apply_state_dict(module, {k: v for k, v in good.items() if k != "b.bias"}, "test")
    with pytest.raises(CheckpointError, match="not used by the model: c.weight"):
        apply_state_dict(module, {**good, "c.weight": torch.zeros(1)}, "test")
    report = apply_state_dict(module, {**good, "c.weight": torch.zeros(1)}, "test", strict_unexpected=False)
    assert report.unexpected == ["c.weight"]
