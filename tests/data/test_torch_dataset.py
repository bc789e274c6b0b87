"""``bioscan5m.BIOSCAN5M`` against ``bioscan_dataset.BIOSCAN5M``, record for record: the real barcodes of
../shared/data/bold-insects for every split and option, and the sample release's photographs through a DataLoader."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import bioscan5m
from bioscan5m import release

from ..conftest import BOLD_SPLIT_COUNTS

BOLD_VAL = BOLD_SPLIT_COUNTS["val"]

reference_module = pytest.importorskip("bioscan_dataset.bioscan5m")

MODALITIES = ("dna", "coord-lat", "country", "processid")
TARGETS = ["species", "genus", "family"]


def same(ours, theirs) -> bool:
    """Equal values of the same type; NaN equals NaN (a missing value in both)."""
    if isinstance(ours, float) and isinstance(theirs, float) and math.isnan(ours) and math.isnan(theirs):
        return True
    if isinstance(ours, (tuple, dict)):
        if type(ours) is not type(theirs) or len(ours) != len(theirs):
            return False
        if isinstance(ours, dict):
            return ours.keys() == theirs.keys() and all(same(ours[k], theirs[k]) for k in ours)
        return all(same(a, b) for a, b in zip(ours, theirs))
    return type(ours) is type(theirs) and ours == theirs


def reference(root, **kwargs):
    # The integrity check compares the CSV with the official release's MD5, which the real-data CSV (a different,
    # smaller file) cannot match; everything else is the package's own code.
    dataset = reference_module.BIOSCAN5M.__new__(reference_module.BIOSCAN5M)
    dataset._check_integrity = lambda verbose=1: True
    dataset.__init__(str(root), **kwargs)
    return dataset


@pytest.fixture(scope="module")
def whole_release(bold_root):
    """bioscan-dataset's records of every split, each dedup setting; the CSV is read once per setting."""
    return {dedup: reference(bold_root, split="all", modality=MODALITIES, target_type=TARGETS,
                             reduce_repeated_barcodes=dedup) for dedup in (False, True)}


def reference_split(whole, split: str):
    """bioscan-dataset's dataset of one split: its metadata of all splits filtered to the split, which is what its
    loader does (barcode reduction over the whole CSV first, then the split filter)."""
    dataset = copy.copy(whole)
    dataset.metadata = whole.metadata.loc[whole.metadata["split"].isin(release.parse_split(split))]
    dataset.split = split
    return dataset


@pytest.mark.parametrize("dedup", [False, True])
@pytest.mark.parametrize("split", [*release.SPLITS, "seen+other_heldout", "all"])
def test_every_split_matches_bioscan_dataset(bold_root, whole_release, tmp_path_factory, split, dedup):
    ours = bioscan5m.BIOSCAN5M(bold_root, split=split, modality=MODALITIES, target_type=TARGETS,
                               reduce_repeated_barcodes=dedup, cache_dir=str(tmp_path_factory.getbasetemp() / "cache"))
    theirs = reference_split(whole_release[dedup], split)
    assert len(ours) == len(theirs) > 0
    # Every record's content, against bioscan-dataset's own table (its __getitem__ is ~0.5 ms a record) ...
    everything = [ours[i] for i in range(len(ours))]
    assert [record[0] for record in everything] == theirs.metadata["dna_barcode"].tolist()
    assert [record[3] for record in everything] == theirs.metadata["processid"].tolist()
    for rank_position, rank in enumerate(TARGETS):
        assert [record[-1][rank_position] for record in everything] == theirs.metadata[f"{rank}_index"].tolist()
    # ... and the outputs themselves, in every format, on a spread of records.
    step = max(1, len(theirs) // 400)
    for output_format in ("tuple", "dict"):
        for target_format in ("index", "text"):
            ours.output_format = theirs.output_format = output_format
            ours.target_format = theirs.target_format = target_format
            for i in range(0, len(theirs), step):
                assert same(ours[i], theirs[i]), (split, dedup, output_format, target_format, i, ours[i], theirs[i])
    assert same(ours[-1], theirs[len(theirs) - 1])


def test_labels_and_indices_convert_as_in_bioscan_dataset(bold_root, whole_release):
    ours = bioscan5m.BIOSCAN5M(bold_root, split="all", modality=("dna",), target_type="species")
    theirs = whole_release[False]
    for column in ("species", "genus", "order", "dna_bin"):
        categories = list(theirs.metadata[column].cat.categories)
        last = len(categories) - 1
        indices = [0, last // 2, last, -1]
        np.testing.assert_array_equal(ours.index2label(indices, column), theirs.index2label(indices, column))
        assert ours.index2label(last, column) == theirs.index2label(last, column) and ours.index2label(-1, column) == ""
        assert ours.label2index(categories[last], column) == theirs.label2index(categories[last], column) == last
        np.testing.assert_array_equal(ours.label2index([categories[1], "", categories[0]], column), [1, -1, 0])
    assert ours.index2label(4) == theirs.index2label(4, "species")  # the single target_type is the default column
    with pytest.raises(KeyError, match="not found in metadata column 'genus'"):
        ours.label2index("Nonexistentia", "genus")
    several = bioscan5m.BIOSCAN5M(bold_root, split="val", modality=("dna",), target_type=["genus", "species"])
    with pytest.raises(ValueError, match="column must be specified"):
        several.index2label(1)


def test_bad_arguments_are_refused_at_construction(bold_root):
    for kwargs, message in [({"target_format": "onehot"}, "Unknown target_format"),
                            ({"output_format": "list"}, "Unknown output_format"),
                            ({"modality": ("dna", "wingspan")}, "Unfamiliar modality: 'wingspan'"),
                            ({"target_type": "kingdom"}, "Unknown target_type 'kingdom'"),
                            ({"split": "train+tset"}, "Unknown split 'tset'"),
                            ({"max_nucleotides": 0}, "max_nucleotides must be a positive integer")]:
        with pytest.raises(ValueError, match=message):
            bioscan5m.BIOSCAN5M(bold_root, **{"modality": ("dna",), **kwargs})
    with pytest.raises(RuntimeError, match="target_transform is specified but target_type is empty"):
        bioscan5m.BIOSCAN5M(bold_root, modality=("dna",), target_type=[], target_transform=str)
    dataset = bioscan5m.BIOSCAN5M(bold_root, split="val_unseen", modality=("dna",))
    with pytest.raises(IndexError):
        dataset[len(dataset)]


@pytest.fixture(scope="module")
def archives_only_root(sample_root, tmp_path_factory):
    """The sample release with its images in the official zip archives only (no extracted folder)."""
    root = tmp_path_factory.mktemp("archives-only")
    (root / "bioscan5m").mkdir()
    (root / "bioscan5m" / "metadata").symlink_to(sample_root / "bioscan5m" / "metadata", target_is_directory=True)
    for archive in sample_root.glob("BIOSCAN_5M_cropped_256*.zip"):
        (root / archive.name).symlink_to(archive)
    return root


def test_images_through_a_dataloader_with_two_workers(sample_root, archives_only_root):
    import torch
    from torchvision.transforms import functional

    ours = bioscan5m.BIOSCAN5M(archives_only_root, split="train+test", modality=("image", "dna"),
                               target_type=["species", "genus"], transform=functional.pil_to_tensor)
    theirs = reference(sample_root, split="train+test", modality=("image", "dna"), target_type=["species", "genus"],
                       transform=functional.pil_to_tensor)
    assert len(ours) == len(theirs) > 100
    loader = torch.utils.data.DataLoader(ours, batch_size=16, num_workers=2,
                                         collate_fn=lambda records: records)
    seen = 0
    for batch in loader:
        for image, dna, target in batch:
            expected_image, expected_dna, expected_target = theirs[seen]
            assert torch.equal(image, expected_image) and dna == expected_dna and same(target, expected_target)
            seen += 1
    assert seen == len(theirs)
    assert ours._images is None  # the workers opened the archives, not the parent process


def test_metadata_and_normalisation_constants(bold_root, whole_release):
    ours = bioscan5m.BIOSCAN5M(bold_root, split="test_unseen", modality=("dna",))
    theirs = reference_split(whole_release[False], "test_unseen")
    assert list(ours.metadata["processid"]) == list(theirs.metadata["processid"])
    assert list(ours.metadata["image_path"]) == list(theirs.metadata["image_path"])
    np.testing.assert_array_equal(bioscan5m.RGB_MEAN.numpy(), reference_module.RGB_MEAN.numpy())
    np.testing.assert_array_equal(bioscan5m.RGB_STDEV.numpy(), reference_module.RGB_STDEV.numpy())
    assert repr(ours).startswith("Dataset BIOSCAN5M\n    Number of datapoints: 1971\n")


LATER_START = """
import sys
import bioscan5m
dataset = bioscan5m.BIOSCAN5M(sys.argv[1], split="val", modality=("dna",), cache_dir=sys.argv[2])
print(len(dataset), dataset[0][0][:12], dataset[0][1], "datasets" in sys.modules)
"""


@pytest.mark.slow
def test_a_later_start_maps_the_prepared_files_and_a_changed_file_is_prepared_again(bold_root, tmp_path):
    import subprocess
    import sys

    def start() -> list[str]:
        done = subprocess.run([sys.executable, "-c", LATER_START, str(bold_root), str(tmp_path)],
                              capture_output=True, text=True, check=True)
        return done.stdout.split()

    first = start()
    assert first[0] == str(BOLD_VAL) and first[-1] == "True"  # prepared through the datasets builder
    assert start() == first[:-1] + ["False"]  # found through the manifest: datasets is not even imported
    arrow = next(tmp_path.rglob("*-val.arrow"))
    arrow.write_bytes(arrow.read_bytes())  # same bytes, new modification time: no longer the listed file
    assert start() == first
