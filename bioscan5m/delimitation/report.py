"""What a delimitation found, beside the names: the summary, the barcode-gap figure and the delimit command."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..embedding import aligned_base_codes
from ..evaluation.scoring import clustering_agreement, is_missing
from .distances import DENSE_LIMIT, MIN_OVERLAP, check_min_overlap, p_distances
from .linkage import THRESHOLD_METHODS, Calibration, calibrate_threshold, check_threshold, delimit_barcodes

#: Every method `delimit` runs: the learned merges, and the two threshold cuts.
METHODS = ("learned",) + THRESHOLD_METHODS


def delimitation_summary(clusters: np.ndarray, labels: dict[str, np.ndarray], bins: np.ndarray | None = None) -> dict:
    """How putative species compare with the names: clusters vs species, AMI/ARI per rank (percent), the species
    split over several clusters and the clusters holding several species, and agreement with the BINs. A rank
    (or BINs) without a single label is left out: there is nothing to compare with."""
    clusters = np.asarray(clusters)
    summary: dict = {"records": int(len(clusters)), "clusters": int(len(np.unique(clusters)))}
    labels = {rank: values for rank, values in labels.items()
              if (~is_missing(np.asarray(values, dtype=object))).any()}
    for rank, values in labels.items():
        agreement = clustering_agreement(values, clusters)
        summary[rank] = {"named": agreement["num_classes"], "ami": 100 * agreement["ami"],
                         "ari": 100 * agreement["ari"], "unlabelled": agreement["num_missing"]}
    if "species" in labels:
        species = np.asarray(labels["species"], dtype=object)
        named = ~is_missing(species)
        pairs = {(str(s), int(c)) for s, c in zip(species[named], clusters[named])}
        per_species, per_cluster = {}, {}
        for name, cluster in pairs:
            per_species.setdefault(name, set()).add(cluster)
            per_cluster.setdefault(cluster, set()).add(name)
        summary["species_split"] = sorted(name for name, found in per_species.items() if len(found) > 1)
        summary["clusters_merging_species"] = sorted(cluster for cluster, names in per_cluster.items()
                                                     if len(names) > 1)
    if bins is not None and (~is_missing(np.asarray(bins, dtype=object))).any():
        agreement = clustering_agreement(bins, clusters)
        summary["bins"] = {"count": agreement["num_classes"], "without_bin": agreement["num_missing"],
                           "ami_with_clusters": 100 * agreement["ami"]}
        if "species" in labels:
            summary["bins"]["species_ami"] = 100 * clustering_agreement(
                labels["species"], _codes_of(bins))["ami"]
    return summary


def _codes_of(values) -> np.ndarray:
    """Integer codes of labels, missing ones each in a group of their own (a record without a BIN is alone)."""
    values = np.asarray(values, dtype=object)
    missing = is_missing(values)
    codes = np.unique(values[~missing].astype(str), return_inverse=True)[1] if (~missing).any() else []
    out = np.empty(len(values), dtype=np.int64)
    out[~missing] = codes
    out[missing] = np.arange(missing.sum()) + (int(np.max(codes)) + 1 if len(codes) else 0)
    return out


def barcode_gap(sequences: Sequence[str], species: Sequence,
                min_overlap: int = MIN_OVERLAP) -> tuple[np.ndarray, np.ndarray]:
    """Each named barcode's distance to its nearest conspecific (where its species has another barcode) and to
    its nearest barcode of another species: the two distributions whose gap a threshold should fall in."""
    sequences, species = list(sequences), np.asarray(species, dtype=object)
    if len(sequences) != len(species):
        raise ValueError(f"{len(sequences):,} barcodes but {len(species):,} species labels: give one per barcode.")
    known = np.flatnonzero(~is_missing(species))
    names = species[known].astype(str)
    distances = p_distances(aligned_base_codes([sequences[i] for i in known]), min_overlap)
    same = names[:, None] == names[None, :]
    np.fill_diagonal(same, False)
    intra = np.where(same, distances, np.inf).min(axis=1)
    other = ~same
    np.fill_diagonal(other, False)
    inter = np.where(other, distances, np.inf).min(axis=1)
    return intra[np.isfinite(intra)], inter[np.isfinite(inter)]


def plot_barcode_gap(intra: np.ndarray, inter: np.ndarray, calibration: Calibration | None,
                     threshold: float | None, path, band: tuple[float, float] | None = None) -> None:
    """The barcode-gap histogram with the chosen threshold (or the band a merge model decides in), and the
    calibration curve beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if calibration is not None else 1
    figure, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    bins = np.linspace(0, 0.2, 81)
    ax.hist(np.clip(intra, 0, 0.2), bins=bins, alpha=0.6, label="nearest conspecific")
    ax.hist(np.clip(inter, 0, 0.2), bins=bins, alpha=0.6, label="nearest other species")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {100 * threshold:.2f} %")
    if band is not None:
        ax.axvspan(*band, color="grey", alpha=0.2,
                   label=f"merges decided by the model ({100 * band[0]:g}-{100 * band[1]:g} %)")
    ax.set_yscale("log")
    ax.set_xlabel("ungapped p-distance (COI-5P frame; > 0.2 shown at 0.2)")
    ax.set_ylabel("barcodes (log scale)")
    ax.set_title(f"Barcode gap of the {len(intra):,} barcodes with a conspecific (names used for this figure only)",
                 fontsize=9)
    ax.legend()
    if calibration is not None:
        ax = axes[0, 1]
        percent = 100 * np.asarray(calibration.thresholds)
        ax.plot(percent, calibration.ami, marker="o", label="species AMI")
        ax.axvline(100 * calibration.threshold, color="black", linestyle="--")
        ax.set_xlabel("threshold (%)")
        ax.set_ylabel("species AMI (%)")
        twin = ax.twinx()
        twin.plot(percent, calibration.clusters, color="tab:orange", marker=".", label="putative species")
        twin.axhline(calibration.species, color="tab:orange", linestyle=":", label="named species")
        twin.set_ylabel("putative species")
        ax.set_title(f"Calibration ({calibration.records:,} records, {calibration.method})")
        lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        ax.legend(lines, [line.get_label() for line in lines], loc="center right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def delimit(data_root, out_dir, split: str = "test+test_unseen", method: str = "learned",
            threshold: float | None = None, calibrate_on: str | None = None, min_overlap: int = MIN_OVERLAP,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Delimit the barcodes of ``split`` into putative species and write ``out_dir``:

    * ``clusters.tsv``: ``processid``, ``cluster`` for every record given;
    * ``species.tsv``: per named species, its records and the putative species they fall in (its splits);
    * ``summary.json``: method, threshold or merge model (and its calibration), clusters vs species, AMI/ARI per
      rank, the species split and the clusters merging species, agreement with the BINs;
    * ``barcode_gap.png``: the barcode gap of the records (names used for the figure only) with the threshold or
      the band the merge model decides in, and the calibration curve; only where some of the records are named and
      there are at most `DENSE_LIMIT` of them (it compares every pair).

    ``learned`` fits its merge model on ``calibrate_on`` (labelled splits that must not overlap ``split``, e.g.
    ``val+val_unseen+train``); ``single`` and ``upgma`` take exactly one of ``threshold`` and ``calibrate_on``.
    """
    import json

    import pandas as pd

    from ..data.metadata import read_metadata
    from ..data.release import parse_split
    from ..staging import check_output, staged_folder
    from .learned import CEILING, FLOOR, LearnedLinkage

    if method not in METHODS:
        raise ValueError(f"Unknown delimitation method {method!r}; choose from {', '.join(METHODS)}.")
    check_min_overlap(min_overlap)
    if threshold is not None:
        check_threshold(threshold)
    if method == "learned" and (threshold is not None or calibrate_on is None):
        raise ValueError("The learned method has no threshold: it is fitted on labelled splits; give those (e.g. "
                         "val+val_unseen+train), or choose the single or upgma method for a threshold.")
    if (threshold is None) == (calibrate_on is None):
        raise ValueError("Give a threshold (e.g. 0.02) or splits to calibrate it on (e.g. val+val_unseen), not "
                         "both and not neither.")
    shared = set(parse_split(split)) & set(parse_split(calibrate_on)) if calibrate_on else set()
    if shared:
        raise ValueError(f"--calibrate-on shares {', '.join(sorted(shared))} with --split: nothing may be chosen "
                         "on the labels of the records being delimited.")
    out_dir = check_output(out_dir, overwrite, inputs=(data_root,))
    calibration = model = None
    records = read_metadata(data_root, split=split)
    barcodes = records["dna_barcode"].tolist()
    if calibrate_on:
        labelled = read_metadata(data_root, split=calibrate_on)
        if method == "learned":
            model = LearnedLinkage(min_overlap=min_overlap).fit(
                labelled["dna_barcode"].tolist(), labelled["species"].to_numpy(), progress=progress)
        else:
            calibration = calibrate_threshold(labelled["dna_barcode"].tolist(), labelled["species"].to_numpy(),
                                              method=method, min_overlap=min_overlap)
            threshold = calibration.threshold
            if progress:
                print(f"calibrated on {calibrate_on} ({calibration.records:,} records): threshold "
                      f"{100 * threshold:.2f} %")
    if model is not None:
        clusters = model.delimit(barcodes, progress=progress)
    else:
        clusters = delimit_barcodes(barcodes, threshold, method=method, min_overlap=min_overlap, progress=progress)
    ranks = ["species", "genus", "family"]
    summary = {"split": split, "method": method, "threshold": threshold, "min_overlap": min_overlap,
               "calibration": None if calibration is None else {
                   "splits": calibrate_on, "records": calibration.records, "species": calibration.species,
                   "thresholds": calibration.thresholds, "species_ami": calibration.ami,
                   "clusters": calibration.clusters},
               "merge_model": None if model is None else {
                   "splits": calibrate_on, "records": model.records, "species": model.species,
                   "merges": model.merges, "floor": FLOOR, "ceiling": CEILING, "accept": model.accept},
               **delimitation_summary(clusters, {rank: records[rank].to_numpy() for rank in ranks},
                                      bins=records["dna_bin"].to_numpy())}
    with staged_folder(out_dir, overwrite) as staging:
        pd.DataFrame({"processid": records["processid"], "cluster": clusters}).to_csv(
            staging / "clusters.tsv", sep="\t", index=False)
        named = records[["species"]].assign(cluster=clusters)
        named = named[~is_missing(named["species"].to_numpy(dtype=object))]
        per_species = named.groupby("species")["cluster"].agg(
            records="size", putative_species="nunique",
            clusters=lambda found: ",".join(str(c) for c in sorted(set(found))))
        per_species.sort_values(["putative_species", "records"], ascending=False).to_csv(
            staging / "species.tsv", sep="\t")
        (staging / "summary.json").write_text(json.dumps(summary, indent=2))
        if len(named) and len(records) <= DENSE_LIMIT:
            intra, inter = barcode_gap(barcodes, records["species"].to_numpy(), min_overlap)
            plot_barcode_gap(intra, inter, calibration, threshold, staging / "barcode_gap.png",
                             band=None if model is None else (FLOOR, CEILING))
        elif progress:
            print("no barcode-gap figure: " + ("none of the records delimited has a species name" if not len(named)
                  else f"it compares every pair, and {len(records):,} records are more than {DENSE_LIMIT:,}"))
    return summary
