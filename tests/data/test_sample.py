"""The synthetic release: official layout, all splits by the partition rules, realistic barcodes."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest

from bioscan5m import release
from bioscan5m.data.synthetic import make_sample


@pytest.fixture(scope="module")
def metadata(sample_root):
    return pd.read_csv(sample_root / release.METADATA_RELPATH, dtype=str, keep_default_na=False)


def _distance(a: str, b: str) -> float:
    n = min(len(a), len(b), 560)
    return float(np.mean(np.frombuffer(a[:n].encode(), "u1") != np.frombuffer(b[:n].encode(), "u1")))


def test_layout_and_marking(sample_root, metadata):
    assert list(metadata.columns) == list(release.COLUMNS)
    assert (sample_root / "SYNTHETIC_DATA.md").is_file() and (sample_root / release.METADATA_ZIP_NAME).is_file()
    assert metadata["processid"].str.startswith("SYNTH").all()
    assert sorted(p.name for p in sample_root.glob("BIOSCAN_5M_cropped_256_*.zip")) == [
        "BIOSCAN_5M_cropped_256_eval.zip", "BIOSCAN_5M_cropped_256_pretrain.01.zip",
        "BIOSCAN_5M_cropped_256_pretrain.02.zip", "BIOSCAN_5M_cropped_256_train.zip"]
    chunks = metadata.groupby("split")["chunk"].agg(lambda c: set(c.str.len()))
    assert chunks["pretrain"] == {2} and chunks["train"] == {1} and chunks["test"] == {0}


def test_every_split_follows_the_partition_rules(metadata):
    assert set(metadata["split"]) == set(release.SPLITS)
    species = {s: set(metadata.loc[metadata["split"] == s, "species"]) - {""} for s in release.SPLITS}
    seen = species["train"] | species["val"] | species["test"]
    unseen = species["key_unseen"] | species["val_unseen"] | species["test_unseen"]
    assert species["test"] <= species["train"] | species["val"]  # test species are seen species
    assert not seen & unseen and all(" sp. " in s for s in unseen)
    genera = lambda splits: set(metadata.loc[metadata["split"].isin(splits), "genus"]) - {""}
    assert not genera(["other_heldout"]) & genera([s for s in release.SPLITS if s != "other_heldout"])
    assert genera(["test_unseen"]) <= genera(["train", "val", "test"])  # unseen species of seen genera
    labelled = metadata.loc[metadata["split"] == "pretrain", "species"]
    assert (labelled == "").mean() > 0.8
    # Identical barcodes of a species never straddle two splits.
    groups = metadata.assign(key=metadata["dna_barcode"].str.rstrip("N")).groupby(["species", "key"])["split"].nunique()
    assert (groups.drop(index="", level=0, errors="ignore") == 1).all()


def test_barcodes_evolved_along_the_tree(metadata):
    lengths = metadata["dna_barcode"].str.len()
    assert lengths.median() == 658 and lengths.min() >= 500 and (lengths > 660).any()
    assert metadata["dna_barcode"].str.contains("N").mean() > 0.02
    assert metadata["dna_barcode"].str.contains("[RYKMSWBDHV]").any()
    assert metadata["dna_barcode"].str.fullmatch("[ACGTNRYKMSWBDHV]+").all()
    by_species = defaultdict(list)
    for row in metadata[metadata["species"] != ""].itertuples():
        by_species[(row.genus, row.species)].append(row.dna_barcode)
    within = [_distance(a, b) for seqs in by_species.values() for a, b in itertools.combinations(seqs[:6], 2)]
    congeneric = [_distance(by_species[a][0], by_species[b][0])
                  for a, b in itertools.combinations(by_species, 2) if a[0] == b[0]]
    assert np.percentile(within, 95) <= 0.03
    assert 0.03 <= np.median(congeneric) <= 0.13


def test_same_seed_same_release(tmp_path):
    a = make_sample(tmp_path / "a", num_records=300, packages=[], seed=7)
    b = make_sample(tmp_path / "b", num_records=300, packages=[], seed=7)
    c = make_sample(tmp_path / "c", num_records=300, packages=[], seed=8)
    read = lambda root: (root / release.METADATA_RELPATH).read_text()
    assert read(a) == read(b) != read(c)
    nested = make_sample(tmp_path / "new" / "release", num_records=200, packages=["cropped_256"], seed=7)
    assert (nested / "BIOSCAN_5M_cropped_256_train.zip").is_file()  # folders that did not exist yet are made
    with pytest.raises(ValueError, match="Unknown image package 'thumbnails'"):
        make_sample(tmp_path / "d", packages=["thumbnails"])


def test_specimen_measurements_match_the_drawn_images(sample_root, metadata):
    """Size columns are measured while drawing: filled for every record, and consistent with the crop."""
    from PIL import Image

    sizes = metadata["image_measurement_value"].astype(float)
    assert (sizes > 0).all()
    fraction = metadata["area_fraction"].astype(float)
    assert ((fraction > 0) & (fraction < 1)).all()
    # A bigger specimen is cropped from a bigger box: scale factor grows with the measured area.
    assert np.corrcoef(sizes, metadata["scale_factor"].astype(float))[0, 1] > 0.5
    record = metadata[metadata["split"] == "test"].iloc[0]
    image = Image.open(release.image_package_dir(sample_root, "cropped_256")
                       / release.image_relpath("test", None, record["processid"]))
    assert min(image.size) == 256


def test_same_seed_same_release_across_processes(tmp_path):
    """The generator does not depend on hash randomisation or anything else of one interpreter."""
    import os
    import subprocess
    import sys

    script = "import sys; from bioscan5m.data.synthetic import make_sample; make_sample(sys.argv[1], 300, (), seed=7)"
    for name, hash_seed in (("a", "1"), ("b", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, env=env, timeout=300)
    read = lambda root: (root / release.METADATA_RELPATH).read_text()
    assert read(tmp_path / "a") == read(tmp_path / "b")
