import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    return Path(os.environ.get("CREPS_FIXTURES", REPO.parent / "shared" / "fixtures"))


def network_fixtures(network: str) -> list[Path]:
    """The fixture files (*.json) that record `network`, sorted; none without a fixtures directory."""
    root = fixtures_dir()
    if not root.is_dir():
        return []
    return [path for path in sorted(root.glob("*.json")) if json.loads(path.read_text()).get("network") == network]


def seeded_randn(*shape, dtype=torch.float64, seed=0) -> torch.Tensor:
    """Standard normal samples from their own generator: the same for a seed whatever ran before."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=dtype)


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def saved_bytes(run) -> int:
    """Bytes of the distinct storages autograd keeps for backward while run() executes."""
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(storages.values())
