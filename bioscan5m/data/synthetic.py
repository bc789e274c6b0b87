"""A small synthetic BIOSCAN-5M release in the exact official layout: the embedded default.

Everything is made up, and marked so (process IDs start with ``SYNTH``, sample IDs with ``SYNTHETIC-``, and
the root holds ``SYNTHETIC_DATA.md``), but it is realistic enough to train and evaluate on:

* a taxonomy tree (orders → families → genera → species) with BIOSCAN-like imbalance;
* barcodes evolved along that tree: within a species 0–2 % divergence (a few haplotypes, so identical
  barcodes repeat as in the real data), congeneric species ~4–12 %, lengths around 658 with occasional
  trailing-N padding, internal N and IUPAC ambiguity codes;
* specimen images drawn procedurally, whose colour, body plan and markings depend on order, family,
  genus and species, in the requested packages (folders and the official split-group zips);
* the eight official splits following the BIOSCAN-5M partition rules at barcode level.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import release
from ..staging import check_output, staged_folder

logger = logging.getLogger(__name__)

NUCLEOTIDES = np.array(list("ACGT"))
IUPAC_AMBIGUITY = list("RYKMSWBDHV")
ORDERS = {  # order → (share of specimens, hue in degrees); Diptera dominates as in BIOSCAN-5M
    "Diptera": (0.50, 30), "Hymenoptera": (0.18, 50), "Coleoptera": (0.10, 0),
    "Hemiptera": (0.09, 120), "Lepidoptera": (0.08, 280), "Psocodea": (0.05, 200),
}
SITES = [  # (country, province_state, latitude, longitude)
    ("Costa Rica", "Guanacaste", 10.84, -85.61), ("Costa Rica", "Alajuela", 10.93, -85.47),
    ("Canada", "Ontario", 43.53, -80.22), ("South Africa", "Western Cape", -33.93, 18.42),
    ("Thailand", "Chiang Mai", 18.79, 98.98), ("Pakistan", "Punjab", 31.55, 74.34),
]
SYLLABLES = ["ka", "lo", "mi", "ne", "ta", "ri", "su", "po", "ve", "da", "xe", "gu", "bo", "phi", "ste", "cra"]
BARCODE_LENGTH = 658
ORIGINAL_SIZE = (1024, 768)
DRAW_SIZE = (512, 384)  # drawn at half resolution, then scaled, to keep the sample fast to make


@dataclass
class Species:
    order: str
    family: str
    subfamily: str | None
    genus: str
    name: str  # binomial, or a placeholder name for an undescribed ("unseen") species
    bin: str
    haplotypes: list[np.ndarray]
    placeholder: bool
    heldout_genus: bool
    trait_seed: int


#: The fewest records that fill all eight splits.
MIN_RECORDS = 200


def make_sample(out: str | os.PathLike, num_records: int = 4000,
                packages: tuple[str, ...] | list[str] = ("cropped_256", "original_256"),
                seed: int = 0, folders: bool = True, zips: bool = True, overwrite: bool = False) -> Path:
    """Write a synthetic release under ``out`` and return the release root.

    Args:
        out: the release root to create (``out/bioscan5m/...``); an existing folder that is not empty (a real
            release, say) is refused unless ``overwrite``. The sample appears there whole or not at all.
        num_records: number of specimen records.
        packages: image packages to draw (any of ``release.IMAGE_PACKAGES``); empty for DNA only.
        seed: random seed; the same seed gives the same release.
        folders / zips: write the images as extracted folders and/or as the official split-group zips.
        overwrite: replace ``out`` if it exists (only once the new sample is complete).
    """
    for package in packages:
        if package not in release.IMAGE_PACKAGES:
            raise ValueError(f"Unknown image package {package!r}; choose from {release.IMAGE_PACKAGES}.")
    if num_records < MIN_RECORDS:
        raise ValueError(f"num_records={num_records} is too small to populate all eight splits; use at least "
                         f"{MIN_RECORDS}.")
    destination = check_output(out, overwrite)
    rng = np.random.default_rng(seed)
    species = _make_taxonomy(rng, num_records)
    records = _make_records(rng, species, num_records)
    _assign_splits(rng, records)
    with staged_folder(destination, overwrite) as root:
        if packages:
            # Drawing measures each specimen (image_measurement_value, area_fraction, scale_factor), so the
            # metadata is written after the images.
            logger.info("sample: drawing the %s packages' photographs of %s records", ", ".join(packages), f"{len(records):,}")
            _write_images(root, records, list(packages), folders=folders, zips=zips)
        _write_metadata(root, records)
        (root / "SYNTHETIC_DATA.md").write_text(
            "# Synthetic BIOSCAN-5M sample\n\nEvery record, barcode and image here is SYNTHETIC, made by "
            f"`bioscan5m sample` (seed {seed}, {num_records} records). It follows the official release layout "
            "so that code can be exercised end to end; it is not real biodiversity data.\n"
        )
    return destination


# ---------------------------------------------------------------------------------------------- taxonomy
def _latin(rng, syllables=3, taken: set[str] | None = None) -> str:
    """A pseudo-Latin name, distinct from those in ``taken`` (which it joins)."""
    while True:
        name = "".join(rng.choice(SYLLABLES, size=syllables)).capitalize()
        if taken is None or name not in taken:
            if taken is not None:
                taken.add(name)
            return name


def _mutate(rng, sequence: np.ndarray, rate: float) -> np.ndarray:
    """Substitute a fraction ``rate`` of positions, with third codon positions three times likelier."""
    weights = np.where(np.arange(len(sequence)) % 3 == 2, 3.0, 1.0)
    count = rng.binomial(len(sequence), rate)
    positions = rng.choice(len(sequence), size=count, replace=False, p=weights / weights.sum())
    mutated = sequence.copy()
    mutated[positions] = (mutated[positions] + rng.integers(1, 4, size=count)) % 4
    return mutated


def _make_taxonomy(rng, num_records: int) -> list[Species]:
    # Insect COI is AT-rich: draw the ancestor with ~65 % A+T.
    ancestor = rng.choice(4, size=BARCODE_LENGTH, p=[0.33, 0.17, 0.17, 0.33])
    num_species = max(24, num_records // 30)
    species: list[Species] = []
    genus_count = 0
    names: set[str] = set()
    for order, (share, _) in ORDERS.items():
        order_seq = _mutate(rng, ancestor, 0.15)
        for f in range(max(1, round(share * num_species / 12))):
            family = _latin(rng, 2, names) + "idae"
            subfamily = _latin(rng, 2, names) + "inae" if rng.random() < 0.7 else None
            family_seq = _mutate(rng, order_seq, 0.08)
            for g in range(int(rng.integers(2, 4))):
                genus = _latin(rng, 3, names)
                genus_seq = _mutate(rng, family_seq, 0.05)
                # Every eighth genus is set aside entirely: its species form other_heldout.
                heldout = genus_count % 8 == 5
                genus_count += 1
                for s in range(int(rng.integers(2, 5))):
                    # Each species lies 2-6 % from the genus, so congeneric pairs differ by ~4-12 %.
                    species_seq = _mutate(rng, genus_seq, rng.uniform(0.02, 0.06))
                    placeholder = not heldout and s > 0 and rng.random() < 0.35
                    epithet = _latin(rng, 2).lower()
                    name = f"{genus} sp. BIOUG{rng.integers(10000, 99999)}" if placeholder else f"{genus} {epithet}"
                    haplotypes = [species_seq] + [_mutate(rng, species_seq, rng.uniform(0.0, 0.02))
                                                  for _ in range(int(rng.integers(0, 4)))]
                    code = "".join(rng.choice(list("ABCDEFGHJKLMNPQRSTUVWXYZ"), size=4))
                    species.append(Species(order, family, subfamily, genus, name, f"BOLD:SYN{code}", haplotypes,
                                           placeholder, heldout, int(rng.integers(1 << 30))))
    return species


# ---------------------------------------------------------------------------------------------- records
def _barcode_text(rng, sequence: np.ndarray) -> str:
    text = NUCLEOTIDES[sequence]
    roll = rng.random()
    if roll < 0.03:  # a few internal ambiguous reads
        text[rng.choice(len(text), size=int(rng.integers(1, 6)), replace=False)] = "N"
    elif roll < 0.05:
        text[rng.integers(len(text))] = rng.choice(IUPAC_AMBIGUITY)
    barcode = "".join(text)
    roll = rng.random()
    if roll < 0.08:  # shorter reads
        barcode = barcode[: int(rng.integers(560, BARCODE_LENGTH))]
    elif roll < 0.12:  # trailing N padding, as in the release
        barcode += "N" * int(rng.integers(1, 12))
    elif roll < 0.14:  # longer reads, past the 660 nucleotides the loaders keep
        barcode += "".join(NUCLEOTIDES[rng.integers(0, 4, size=int(rng.integers(5, 60)))])
    return barcode


def _make_records(rng, species: list[Species], num_records: int) -> list[dict]:
    # Zipf-like abundances give BIOSCAN's long tail: most species are rare, a few are very common.
    abundance = 1.0 / np.arange(1, len(species) + 1) ** 0.7
    abundance = abundance[rng.permutation(len(species))]
    order_share = np.array([ORDERS[s.order][0] for s in species])
    weights = abundance * order_share
    chosen = rng.choice(len(species), size=num_records, p=weights / weights.sum())
    records = []
    for i, index in enumerate(chosen):
        sp = species[index]
        haplotype = int(rng.integers(len(sp.haplotypes)))
        country, province, lat, lon = SITES[int(rng.integers(len(SITES)))]
        size = 0.35 + 0.6 * ((sp.trait_seed % 1000) / 1000)  # specimen size depends on the species
        records.append({
            "species_obj": sp, "haplotype": haplotype, "size": size,
            "processid": f"SYNTH{i:06d}-24", "sampleid": f"SYNTHETIC-{i:06d}",
            "phylum": "Arthropoda", "class": "Insecta", "order": sp.order, "family": sp.family,
            "subfamily": sp.subfamily, "genus": sp.genus, "species": sp.name, "dna_bin": sp.bin,
            "dna_barcode": _barcode_text(rng, sp.haplotypes[haplotype]),
            "country": country, "province_state": province,
            "coord-lat": round(lat + rng.normal(0, 0.05), 4), "coord-lon": round(lon + rng.normal(0, 0.05), 4),
            "inferred_ranks": int(rng.choice([0, 0, 0, 1, 2])),
            "index_bioscan_1M_insect": int(rng.integers(0, 1_128_313)) if rng.random() < 0.2 else None,
        })
    return records


# ---------------------------------------------------------------------------------------------- splits
def _test_target(n: int) -> int:
    """Test records per species, as in BIOSCAN-5M's partitioning: min(25, 4 + (n - 8) / 4), from n ≥ 8."""
    return min(25, int(4 + (n - 8) / 4)) if n >= 8 else 0


def _take_groups(rng, groups: list[list[dict]], target: int) -> tuple[list[dict], list[list[dict]]]:
    """Take whole barcode groups (identical barcodes stay together) until ``target`` records are reached."""
    taken, rest = [], []
    for group in [groups[i] for i in rng.permutation(len(groups))]:
        if len(taken) < target and len(taken) + len(group) <= max(target, 1) * 1.5:
            taken.extend(group)
        else:
            rest.append(group)
    return taken, rest


def _assign_splits(rng, records: list[dict]) -> None:
    # Specimens identified no further than family or genus form the unlabelled pretraining pool.
    for record in records:
        # Held-out genera stay whole in other_heldout, absent from every other split.
        if not record["species_obj"].heldout_genus and rng.random() < 0.35:
            record["split"] = "pretrain"
            record["species"] = None
            if rng.random() < 0.5:
                record["genus"] = None
    by_species: dict[str, list[dict]] = {}
    for record in records:
        if record.get("split") != "pretrain":
            by_species.setdefault(record["species"], []).append(record)
    for members in by_species.values():
        sp = members[0]["species_obj"]
        groups = _barcode_groups(members)
        if sp.heldout_genus:
            _label(members, "other_heldout")
        elif sp.placeholder and len(members) >= 8:
            test, rest = _take_groups(rng, groups, _test_target(len(members)))
            val, rest = _take_groups(rng, rest, max(1, round(0.15 * len(members))))
            _label(test, "test_unseen"), _label(val, "val_unseen"), _label([r for g in rest for r in g], "key_unseen")
        elif sp.placeholder:
            _label(members, "pretrain")  # too rare to be an unseen-species benchmark class
        else:
            test, rest = _take_groups(rng, groups, _test_target(len(members)) if len(groups) > 1 else 0)
            val, rest = _take_groups(rng, rest, max(1, round(0.05 * len(members))) if len(members) >= 12 else 0)
            _label(test, "test"), _label(val, "val"), _label([r for g in rest for r in g], "train")
    _fill_small_splits(rng, by_species)
    counts = {split: 0 for split in release.SPLITS}
    for record in records:
        counts[record["split"]] += 1
    empty = [split for split, count in counts.items() if count == 0]
    if empty:
        raise ValueError(f"{len(records)} records left split(s) {', '.join(empty)} empty; use more records.")
    for record in records:
        record["taxon"] = record["species"] or record["genus"] or record["subfamily"] or record["family"]
        digest = hashlib.md5(record["processid"].encode()).hexdigest()
        record["chunk"] = {"pretrain": digest[:2], "train": digest[:1], "other_heldout": digest[:1]}.get(record["split"])


def _fill_small_splits(rng, by_species: dict[str, list[dict]]) -> None:
    """In a small sample no undescribed species may be common enough for the unseen splits, nor any species for
    ``val``: then the commonest described species (by distinct barcodes) becomes undescribed and is divided over the
    three unseen splits, and one barcode of the commonest training species moves to ``val``."""
    splits = {record["split"] for members in by_species.values() for record in members}
    described = sorted((members for members in by_species.values()
                        if not members[0]["species_obj"].heldout_genus and not members[0]["species_obj"].placeholder),
                       key=lambda members: -len(_barcode_groups(members)))
    if not {"key_unseen", "val_unseen", "test_unseen"} <= splits and len(described) > 1:
        members = described.pop(0)
        groups = _barcode_groups(members)
        if len(groups) >= 3:
            sp = members[0]["species_obj"]
            sp.placeholder, sp.name = True, f"{sp.genus} sp. BIOUG{rng.integers(10000, 99999)}"
            for record in members:
                record["species"] = sp.name
            _label(groups[0], "test_unseen"), _label(groups[1], "val_unseen")
            _label([r for g in groups[2:] for r in g], "key_unseen")
    if "val" not in {record["split"] for members in by_species.values() for record in members}:
        for members in described:
            train = _barcode_groups([r for r in members if r["split"] == "train"])
            if len(train) >= 2:
                _label(train[0], "val")
                break


def _barcode_groups(members: list[dict]) -> list[list[dict]]:
    """Records grouped by barcode (trailing N stripped): identical barcodes go to one split together."""
    groups: dict[str, list[dict]] = {}
    for record in members:
        groups.setdefault(record["dna_barcode"].rstrip("N"), []).append(record)
    return list(groups.values())


def _label(records: list[dict], split: str) -> None:
    for record in records:
        record["split"] = split


# ---------------------------------------------------------------------------------------------- files
def _write_metadata(root: Path, records: list[dict]) -> None:
    path = root / release.METADATA_RELPATH
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(release.COLUMNS)
    for record in records:
        writer.writerow(["" if record.get(c) is None else record.get(c) for c in release.COLUMNS])
    path.write_text(buffer.getvalue())
    with zipfile.ZipFile(root / release.METADATA_ZIP_NAME, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, release.METADATA_RELPATH)


def _write_images(root: Path, records: list[dict], packages: list[str], folders: bool, zips: bool) -> None:
    from tqdm.auto import tqdm

    archives = {}
    if zips:
        for package in packages:
            for group in release.SPLIT_GROUPS:
                names = [f"{group}.01", f"{group}.02"] if group == "pretrain" else [group]
                for name in names:
                    archives[(package, name)] = zipfile.ZipFile(root / f"BIOSCAN_5M_{package}_{name}.zip", "w", zipfile.ZIP_STORED)
    try:
        for record in tqdm(records, desc="drawing specimens", unit="img", leave=False, disable=None):
            images = _draw_specimen(record, packages)
            relpath = release.image_relpath(record["split"], record["chunk"], record["processid"])
            for package, data in images.items():
                if folders:
                    path = release.image_package_dir(root, package) / relpath
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(data)
                if zips:
                    group = next(g for g, members in release.SPLIT_GROUPS.items() if record["split"] in members)
                    if group == "pretrain":
                        group += ".01" if record["chunk"] < "80" else ".02"
                    member = f"{release.RELEASE_FOLDER}/images/{package}/{relpath}"
                    archives[(package, group)].writestr(member, data)
    finally:
        for archive in archives.values():
            archive.close()


def _draw_specimen(record: dict, packages: list[str]) -> dict[str, bytes]:
    """Draw one specimen; colour, body plan and markings depend on its taxa, pose on the individual."""
    from PIL import Image, ImageDraw, ImageFilter

    sp: Species = record["species_obj"]
    traits = np.random.default_rng(sp.trait_seed)
    individual = np.random.default_rng(int(hashlib.md5(record["processid"].encode()).hexdigest()[:8], 16))
    hue = ORDERS[sp.order][1] + _stable_int(sp.family) % 30 - 15
    light = 0.25 + 0.35 * (_stable_int(sp.genus) % 100) / 100
    body = _hsl(hue, 0.6, light)
    marking = _hsl(hue + 150 + _stable_int(sp.name) % 60, 0.7, 0.75 - light / 2)
    segments = 2 + _stable_int(sp.family) % 3
    spots = int(traits.integers(0, 6))
    wing_span = 0.4 + 0.8 * (_stable_int(sp.genus) % 7) / 7

    width, height = DRAW_SIZE
    image = Image.new("RGB", DRAW_SIZE, (int(individual.integers(205, 225)),) * 3)
    canvas = Image.new("RGBA", (240, 240), (0, 0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    length = 60 + 90 * record["size"]
    for s in range(segments):  # head → thorax → abdomen along the body axis
        y0 = 120 - length / 2 + s * length / segments
        half_width = (10 + 8 * s) * (0.6 + record["size"])
        draw.ellipse([120 - half_width, y0, 120 + half_width, y0 + length / segments + 6], fill=body)
    if wing_span > 0.55:
        draw.ellipse([120 - 60 * wing_span, 100, 120, 100 + length / 2], fill=marking + (120,))
        draw.ellipse([120, 100, 120 + 60 * wing_span, 100 + length / 2], fill=marking + (120,))
    for _ in range(spots):
        x, y = traits.uniform(105, 135), traits.uniform(120 - length / 3, 120 + length / 3)
        draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=marking)
    canvas = canvas.rotate(float(individual.uniform(0, 360)), resample=Image.BILINEAR)
    x = int(individual.integers(60, width - 300)); y = int(individual.integers(40, height - 280))
    # A slight blur gives the soft edges of a microscope photograph.
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.8))
    image.paste(canvas, (x, y), canvas)

    bbox = canvas.getbbox() or (0, 0, 240, 240)
    margin = 12
    crop_box = (max(0, x + bbox[0] - margin), max(0, y + bbox[1] - margin),
                min(width, x + bbox[2] + margin), min(height, y + bbox[3] + margin))
    record["image_measurement_value"] = float(np.count_nonzero(np.asarray(canvas)[..., 3]) * 4)  # full-res pixels
    record["area_fraction"] = round(record["image_measurement_value"] / (ORIGINAL_SIZE[0] * ORIGINAL_SIZE[1]), 6)
    crop_w, crop_h = (crop_box[2] - crop_box[0]) * 2, (crop_box[3] - crop_box[1]) * 2
    record["scale_factor"] = round(min(crop_w, crop_h) / 256, 6)

    out = {}
    for package in packages:
        if package == "original_full":
            picture = image.resize(ORIGINAL_SIZE, Image.BILINEAR)
        elif package == "original_256":
            picture = image.resize((round(256 * width / height), 256), Image.BILINEAR)
        elif package == "cropped":
            picture = image.crop(crop_box).resize((crop_w, crop_h), Image.BILINEAR)
        else:  # cropped_256: the crop resized to 256 pixels on its shorter side
            crop = image.crop(crop_box)
            scale = 256 / min(crop.size)
            picture = crop.resize((max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))), Image.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=88)
        out[package] = buffer.getvalue()
    return out


def _stable_int(text: str) -> int:
    return int(hashlib.md5(text.encode()).hexdigest()[:8], 16)


def _hsl(hue: float, saturation: float, lightness: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hls_to_rgb((hue % 360) / 360, lightness, saturation)
    return (round(r * 255), round(g * 255), round(b * 255))
