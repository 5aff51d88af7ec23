import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A tiny CREPS run on 16x16 shapes (32 images): a second or so per tick of 2 steps on CPUs, for
# the tests of many processes and many hosts. Add --kimg (0.016 per tick).
TINY_TRAIN_FLAGS = ["--cfg=creps", "--batch=8", "--gamma=1", "--cbase=256", "--cmax=32", "--map-depth=1",
                    "--mbstd-group=2", "--aug=ada", "--metrics=none", "--tick=0.016", "--snap=1", "--grid=2x2",
                    "--workers=1"]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """The dataset of TINY_TRAIN_FLAGS runs."""
    from creps.data.synthetic import make_synthetic_dataset

    path = tmp_path_factory.mktemp("tiny-data") / "shapes.zip"
    make_synthetic_dataset(str(path), num_images=32, resolution=16, seed=0)
    return path


def only_run_dir(outdir: Path) -> Path:
    """The one run directory in `outdir`."""
    (run_dir,) = [p for p in Path(outdir).iterdir() if p.is_dir()]
    return run_dir


def final_snapshot(outdir: Path) -> dict[str, torch.Tensor]:
    """The tensors of the newest network snapshot of the one run in `outdir`."""
    from safetensors.torch import load_file

    return load_file(str(sorted(only_run_dir(outdir).glob("network-snapshot-*.safetensors"))[-1]))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Bit for bit: the same names, and every tensor equal."""
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


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
