import socket
from pathlib import Path

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


def test_every_helper_is_used_by_the_project():
    """Helpers nothing calls are removed rather than kept "just in case" (dist_utils, registry)."""
    import ast

    from minigpt4.common.registry import Registry

    root = Path(__file__).resolve().parents[1]
    sources = [p for folder in ("minigpt4", "benchmarks", "scripts") for p in (root / folder).rglob("*.py")]
    sources += list(root.glob("*.py"))
    used = set()
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif isinstance(node, ast.Name):
                used.add(node.id)
    helpers = [n for n, v in vars(dist_utils).items() if callable(v) and getattr(v, "__module__", "") == dist_utils.__name__]
    methods = [n for n in vars(Registry) if not n.startswith("_")]
    assert [n for n in helpers + methods if n not in used] == []
