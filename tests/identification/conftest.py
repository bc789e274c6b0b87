"""Key indexes shared by the identification tests: one per test process."""

from __future__ import annotations

import pytest

import bioscan5m


@pytest.fixture(scope="session")
def sample_index(sample_root, tmp_path_factory):
    folder = bioscan5m.build_index(sample_root, tmp_path_factory.mktemp("index") / "kmer", model="kmer")
    return bioscan5m.load_index(folder)


@pytest.fixture(scope="session")
def bold_index(bold_root, tmp_path_factory):
    """Real keys: key_unseen (4,954 BOLD records); calibrated on val_unseen (known) and other_heldout (novel)."""
    folder = bioscan5m.build_index(bold_root, tmp_path_factory.mktemp("bold") / "index", model="kmer",
                                   splits="key_unseen", calibration="val_unseen+other_heldout",
                                   max_calibration_queries=1500)
    return bioscan5m.load_index(folder)
