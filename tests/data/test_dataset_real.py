"""The builder and metadata reader on the real BOLD release (../shared/data/bold-insects), checked against
the split counts of its README and against the `bioscan-dataset` package's semantics."""

from __future__ import annotations

import os

import numpy as np
import pytest

import bioscan5m
from bioscan5m import release
from bioscan5m.data.derived import label_vocabularies
from bioscan5m.data.metadata import find_metadata

from ..conftest import BOLD_SPLIT_COUNTS


@pytest.fixture(scope="module")
def bold_dna(bold_root, tmp_path_factory):
    return bioscan5m.load_dataset(bold_root, "dna", cache_dir=str(tmp_path_factory.mktemp("cache")))


def test_dna_config_loads_every_record_of_every_split(bold_dna):
    assert {name: len(split) for name, split in bold_dna.items()} == BOLD_SPLIT_COUNTS
    assert sum(len(split) for split in bold_dna.values()) == 97_787
    for name, split in bold_dna.items():
        assert set(split.unique("split")) == {name}


def test_every_official_column_is_present_and_typed(bold_dna):
    features = bold_dna["train"].features
    assert list(features)[: len(release.COLUMNS)] == list(release.COLUMNS)
    assert features["coord-lat"].dtype == "float64" and features["index_bioscan_1M_insect"].dtype == "int64"
    first = bold_dna["train"][0]
    assert isinstance(first["coord-lat"], float)
    # The image columns are empty in this release: empty fields become None, never 0 or "".
    assert first["image_measurement_value"] is None and first["chunk"] is None
    assert all(len(b) <= 660 for b in bold_dna["train"]["dna_barcode"])


def test_targets_are_identical_across_splits(bold_dna):
    train, test = bold_dna["train"], bold_dna["test"]
    assert train.features["species_index"] == test.features["species_index"]
    names = train.features["species_index"].names
    for split in (train, test):
        for species, index in zip(split["species"][:500], split["species_index"][:500]):
            assert (index == -1) if species is None else (names[index] == species)
    shared = set(train["species"]) & set(test["species"]) - {None}
    assert len(shared) > 100
    train_codes = dict(zip(train["species"], train["species_index"]))
    test_codes = dict(zip(test["species"], test["species_index"]))
    assert all(train_codes[s] == test_codes[s] for s in shared)


def test_targets_and_values_match_bioscan_dataset(bold_root):
    """Our integer targets are the `bioscan-dataset` package's pandas category codes, record for record."""
    reference_module = pytest.importorskip("bioscan_dataset.bioscan5m")
    reference = reference_module.load_bioscan5m_metadata(bold_root / release.METADATA_RELPATH)
    ours = bioscan5m.read_metadata(bold_root)
    assert list(ours["processid"]) == list(reference["processid"])
    assert list(ours["dna_barcode"]) == list(reference["dna_barcode"])
    for column in release.TARGET_COLUMNS:
        np.testing.assert_array_equal(ours[f"{column}_index"].to_numpy(), reference[f"{column}_index"].to_numpy())
    np.testing.assert_allclose(ours["coord-lat"].to_numpy(dtype=float), reference["coord-lat"].to_numpy(dtype=float))


@pytest.mark.parametrize("max_nucleotides", [660, None])
def test_reduce_repeated_barcodes_matches_bioscan_dataset(bold_root, max_nucleotides):
    reference_module = pytest.importorskip("bioscan_dataset.bioscan5m")
    reference = reference_module.load_bioscan5m_metadata(
        bold_root / release.METADATA_RELPATH, reduce_repeated_barcodes=True, max_nucleotides=max_nucleotides,
        split="train+test_unseen")
    ours = bioscan5m.read_metadata(bold_root, split="train+test_unseen", reduce_repeated_barcodes=True,
                                   max_nucleotides=max_nucleotides)
    assert len(ours) < BOLD_SPLIT_COUNTS["train"] + BOLD_SPLIT_COUNTS["test_unseen"]
    assert list(ours["processid"]) == list(reference["processid"])
    stripped = ours["dna_barcode"].str.rstrip("N")
    assert not stripped.duplicated().any()


def test_max_nucleotides_none_keeps_full_sequences(bold_root):
    full = bioscan5m.read_metadata(bold_root, split="other_heldout+test", max_nucleotides=None)
    cut = bioscan5m.read_metadata(bold_root, split="other_heldout+test", max_nucleotides=300)
    assert full["dna_barcode"].str.len().max() > 660
    assert cut["dna_barcode"].str.len().max() == 300
    assert (full["dna_barcode"].str[:300] == cut["dna_barcode"]).all()


def test_streaming_yields_the_same_records(bold_root, bold_dna):
    stream = bioscan5m.load_dataset(bold_root, "dna", split="key_unseen", streaming=True)
    streamed = [record for _, record in zip(range(50), stream)]
    assert streamed == bold_dna["key_unseen"].select(range(50)).to_list()
    assert stream.features == bold_dna["key_unseen"].features


def test_split_expressions(bold_root):
    combined = bioscan5m.load_dataset(bold_root, "dna", split="train+validation", streaming=True)
    batch_sizes = sum(len(b["processid"]) for b in combined.iter(batch_size=4096))
    assert batch_sizes == BOLD_SPLIT_COUNTS["train"] + BOLD_SPLIT_COUNTS["val"]
    assert release.parse_split("unseen") == ["key_unseen", "val_unseen", "test_unseen"]
    assert release.parse_split("seen+other_heldout") == ["train", "val", "test", "other_heldout"]
    with pytest.raises(ValueError, match="Unknown split 'tset'.*pretrain, train, val"):
        bioscan5m.load_dataset(bold_root, "dna", split="train+tset")
    with pytest.raises(ValueError, match="Unknown config 'croped_256'"):
        bioscan5m.load_dataset(bold_root, "croped_256")


def test_label_vocabularies_are_sorted_and_complete(bold_root):
    vocabularies = label_vocabularies(find_metadata(bold_root))
    assert len(vocabularies["species"]) == 877 and len(vocabularies["genus"]) == 320
    assert len(vocabularies["family"]) == 89
    for names in vocabularies.values():
        assert list(names) == sorted(names) and "" not in names


def test_preparing_every_split_reads_the_csv_once(bold_root, tmp_path, monkeypatch):
    from bioscan5m.data import builder

    label_vocabularies(find_metadata(bold_root))  # the cached label pass is not part of preparing
    passes = []
    read_batches = builder.iter_batches
    monkeypatch.setattr(builder, "iter_batches", lambda *args, **kwargs: passes.append(args) or read_batches(*args, **kwargs))
    prepared = bioscan5m.load_dataset(bold_root, "dna", cache_dir=str(tmp_path))
    assert len(passes) == 1
    everything = bioscan5m.read_metadata(bold_root, split="all")
    for name in release.SPLITS:
        expected = everything[everything["split"] == name]
        assert prepared[name]["processid"] == list(expected["processid"])
        assert prepared[name]["genus_index"] == list(expected["genus_index"])
    assert not list(tmp_path.rglob(".records-by-split"))


KILLED_WHILE_ROUTING = """
import os, signal, sys
import bioscan5m
from bioscan5m.data import builder

route = builder.Bioscan5M._split_records

def killed_while_routing(self, split):
    for count, item in enumerate(route(self, split)):
        yield item
        if count == 3:
            os.kill(os.getpid(), signal.SIGKILL)

builder.Bioscan5M._split_records = killed_while_routing
bioscan5m.load_dataset(sys.argv[1], "dna", cache_dir=sys.argv[2])
"""


@pytest.mark.slow
def test_a_preparation_killed_while_routing_splits_is_redone_whole(bold_root, tmp_path):
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_ROUTING, str(bold_root), str(tmp_path)],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    assert [p.parent.name.endswith(".incomplete") for p in tmp_path.rglob(".records-by-split")] == [True]
    prepared = bioscan5m.load_dataset(bold_root, "dna", cache_dir=str(tmp_path))
    assert {name: len(split) for name, split in prepared.items()} == BOLD_SPLIT_COUNTS
    assert not list(tmp_path.rglob(".records-by-split")) and not list(tmp_path.rglob("*.incomplete"))


def test_labels_and_barcode_mask_are_cached_per_csv_and_option(bold_root, tmp_path):
    from bioscan5m.data import derived

    lines = (bold_root / release.METADATA_RELPATH).read_text().splitlines(keepends=True)
    csv_path = tmp_path / "metadata.csv"
    csv_path.write_text("".join(lines[:3001]))
    source = find_metadata(csv_path)
    species = label_vocabularies(source)["species"]
    assert derived.count_records_per_split(source)["pretrain"] > 0
    profile = derived._derived_cache_path("metadata-profile", source.stamp(), ".json")
    assert profile.is_file()

    # A changed file is a new key: its new label is there, not the old file's answer.
    fields = lines[1].rstrip("\n").split(",")
    fields[release.COLUMNS.index("species")] = "Zzyzx novaspecies"
    with open(csv_path, "a") as handle:
        handle.write(",".join(fields) + "\n")
    source = find_metadata(csv_path)
    assert set(label_vocabularies(source)["species"]) == set(species) | {"Zzyzx novaspecies"}

    # An unreadable cache entry is recomputed, not trusted.
    cached = derived._derived_cache_path("metadata-profile", source.stamp(), ".json")
    cached.write_text("{not json")
    derived._profile.cache_clear()
    assert "Zzyzx novaspecies" in label_vocabularies(source)["species"]

    masks = {n: derived.barcode_reduction_mask(source, n) for n in (660, 100)}
    assert (masks[660] != masks[100]).any()  # shorter barcodes collide more: each option has its own mask
    for n, mask in masks.items():
        path = derived._derived_cache_path("barcode-mask", (*source.stamp(), n), ".npy")
        assert path.is_file()
        np.testing.assert_array_equal(mask, derived._barcode_reduction_mask(source, n))
        path.write_bytes(b"garbage")
        np.testing.assert_array_equal(derived.barcode_reduction_mask(source, n), mask)


def test_a_folder_at_the_routing_path_that_is_not_ours_is_refused_not_deleted(tmp_path):
    from bioscan5m.data.builder import ROUTED_FOLDER, _RoutedSplits
    from bioscan5m.staging import STAGING_MARKER

    foreign = tmp_path / "a" / ROUTED_FOLDER
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("someone's file")
    with pytest.raises(FileExistsError, match="was not made by bioscan5m"):
        _RoutedSplits.create(foreign, ("train",))
    assert (foreign / "notes.txt").read_text() == "someone's file"

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / STAGING_MARKER).touch()
    (elsewhere / "keep.txt").write_text("kept")
    link = tmp_path / "b" / ROUTED_FOLDER
    link.parent.mkdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(FileExistsError):
        _RoutedSplits.create(link, ("train",))  # a link is never followed into, even to a marked folder
    assert (elsewhere / "keep.txt").read_text() == "kept"

    ours = tmp_path / "c" / ROUTED_FOLDER  # what a killed run leaves: our marker and its files
    ours.mkdir(parents=True)
    (ours / STAGING_MARKER).touch()
    (ours / "train.arrow").write_bytes(b"half")
    routed = _RoutedSplits.create(ours, ("train",))
    assert sorted(p.name for p in ours.iterdir()) == [STAGING_MARKER] and routed.splits == ("train",)


def test_cache_entries_are_written_whole_and_clean_up_only_their_own_staging(tmp_path):
    from bioscan5m.data.caching import write_atomically

    entry = tmp_path / "entry.json"
    lookalike = tmp_path / f".entry.json.{os.getpid()}.partial"  # the name an earlier version would have used
    lookalike.write_text("not ours to delete")
    write_atomically(entry, lambda path: path.write_text("v1"))
    assert entry.read_text() == "v1" and lookalike.read_text() == "not ours to delete"

    def fails(path):
        path.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(entry, fails)
    assert entry.read_text() == "v1"  # the old entry stands
    assert sorted(p.name for p in tmp_path.iterdir()) == [lookalike.name, "entry.json"]


def test_unreadable_split_codes_are_recomputed_in_the_cache(bold_root):
    from bioscan5m.data import derived
    from bioscan5m.data.caching import cache_folder

    source = find_metadata(bold_root)
    codes = derived.split_codes(source)
    path = derived._profile(source.stamp(), source)["split_codes"]
    assert path.parent == cache_folder("metadata")  # the only file split_codes may replace is its own cache entry
    path.write_bytes(b"garbage")
    np.testing.assert_array_equal(derived.split_codes(source), codes)
    assert np.bincount(codes, minlength=8).tolist() == [BOLD_SPLIT_COUNTS[s] for s in release.SPLITS]
