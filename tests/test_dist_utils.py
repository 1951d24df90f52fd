import socket

import pytest

from minigpt4.common import dist_utils


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


def test_single_process_defaults(no_torchrun_env):
    assert not dist_utils.launched_by_torchrun()
    assert dist_utils.init_distributed() is False
    assert not dist_utils.is_dist_avail_and_initialized()
    assert (dist_utils.get_rank(), dist_utils.get_world_size(), dist_utils.get_local_rank()) == (0, 1, 0)
    assert dist_utils.is_main_process()
    dist_utils.barrier()  # no-op
    assert dist_utils.all_gather_object({"a": 1}) == [{"a": 1}]
    dist_utils.destroy_distributed()  # no-op


def test_main_process_decorator(monkeypatch):
    calls = []

    @dist_utils.main_process
    def save(value):
        """Writes a file."""
        calls.append(value)
        return "saved"

    assert save.__name__ == "save" and save.__doc__ == "Writes a file."
    assert save(1) == "saved"
    monkeypatch.setattr(dist_utils, "get_rank", lambda: 1)
    assert save(2) is None
    assert calls == [1]


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_one_process_group_under_torchrun_env(monkeypatch):
    env = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(_free_port())
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert dist_utils.init_distributed(backend="gloo") is True
    try:
        assert dist_utils.is_dist_avail_and_initialized()
        assert (dist_utils.get_rank(), dist_utils.get_world_size()) == (0, 1)
        dist_utils.barrier()
        assert dist_utils.all_gather_object(["x"]) == [["x"]]
    finally:
        dist_utils.destroy_distributed()
    assert not dist_utils.is_dist_avail_and_initialized()
