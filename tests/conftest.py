"""Shared fixtures: the real data in ../shared/data (skipped cleanly when absent) and the synthetic sample."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Prepared datasets and copied remote code go to a throwaway cache, never the user's ~/.cache. Set before
# any Hugging Face library is imported, because they read it at import time.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="bioscan5m-tests-hf-")

pytest_plugins = ("tests.fake_hub",)   # the ``hub`` fixture: a fake Hugging Face Hub on 127.0.0.1

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BOLD_ROOT = SHARED_DATA / "bold-insects"
IMAGES_ROOT = SHARED_DATA / "bioscan1m-images"

#: Row counts per split of ../shared/data/bold-insects (from its README).
BOLD_SPLIT_COUNTS = {
    "pretrain": 33_931, "train": 33_397, "val": 4_494, "test": 12_057,
    "key_unseen": 4_954, "val_unseen": 729, "test_unseen": 1_971, "other_heldout": 6_254,
}


@pytest.fixture(scope="session")
def bold_root() -> Path:
    """Real BOLD insect barcodes in the official release layout (DNA only)."""
    if not (BOLD_ROOT / "bioscan5m").is_dir():
        pytest.skip(f"real data not available: {BOLD_ROOT} is absent")
    return BOLD_ROOT


@pytest.fixture(scope="session")
def images_root() -> Path:
    """Real BIOSCAN photographs."""
    if not IMAGES_ROOT.is_dir():
        pytest.skip(f"real images not available: {IMAGES_ROOT} is absent")
    return IMAGES_ROOT


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A small synthetic release (CSV, cropped_256 + original_256 folders and zips), made once per session."""
    from bioscan5m.data.synthetic import make_sample

    return make_sample(tmp_path_factory.mktemp("sample"), num_records=1200, seed=0)


@pytest.fixture(scope="session")
def tiny_barcodebert(tmp_path_factory) -> Path:
    """A tiny untrained BarcodeBERT folder (k = 4, 2 layers, hidden 32) with its tokenizer; copy it before changing it."""
    import torch

    from bioscan5m.modeling import BarcodeBertConfig, BarcodeBertForMaskedLM
    from bioscan5m.tokenization import KmerTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-barcodebert") / "model"
    torch.manual_seed(0)
    BarcodeBertForMaskedLM(BarcodeBertConfig(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64)).save_pretrained(folder)
    KmerTokenizerFast(k=4).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def space_demo_index(sample_root, tmp_path_factory) -> Path:
    """The Space's embedded default (tiny CLIBD + key index), made by the page's own code on the session's sample."""
    from bioscan5m.apps.space import demo_index

    folder = tmp_path_factory.mktemp("space-demo")
    (folder / "release").symlink_to(sample_root, target_is_directory=True)
    return demo_index(folder)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on the 2 shared project cores, two OpenMP threads each spin-wait and
    run ~10x slower than one."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
