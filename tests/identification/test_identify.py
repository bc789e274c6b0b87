"""Specimen identification: input checks, key index build/save/load, calibrated confidences and novelty flag,
on the synthetic sample (with photographs) and on real BOLD barcodes; the CLI commands over the same API."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import bioscan5m
from bioscan5m import cli
from bioscan5m.identification import (
    MAX_BARCODE_NUCLEOTIDES,
    MAX_PHOTO_BYTES,
    MAX_PHOTO_PIXELS,
    InputError,
    KeyIndexError,
    model_fingerprint,
    open_photo,
    parse_barcode,
    read_fasta_file,
)


# ---------------------------------------------------------------------------------------------- input checks
def test_parse_barcode_reads_plain_text_and_one_fasta_record():
    sequence = "acgt" * 50
    assert parse_barcode(sequence) == (None, sequence.upper())
    assert parse_barcode(f">BLPAA123-17 Adelpha\n{sequence[:100]}\n{sequence[100:]}\n") == ("BLPAA123-17 Adelpha", sequence.upper())
    # Alignment gaps, spaces and GenBank position numbers go; IUPAC ambiguity codes stay in place.
    assert parse_barcode("1 ACGT-ACGT.RY\n" + "ACGT" * 30)[1] == "ACGTACGTRY" + "ACGT" * 30


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("   \n ", "empty"),
    (">a\n" + "ACGT" * 40 + "\n>b\n" + "ACGT" * 40 + "\n>c\nACGT", "3 records (a, b, c)"),
    ("ACGT" * 30 + "X" + "ACGT" * 30, "'X' at position 121"),
    ("ACGU" * 40, "U is RNA"),
    ("ACGT" * (MAX_BARCODE_NUCLEOTIDES // 4 + 1), "2,004 nucleotides long"),
    ("N" * 300 + "ACGT" * 10, "only 40 determined nucleotides"),
    (">header only\n", "no sequence"),
])
def test_parse_barcode_names_what_is_wrong(text, words):
    with pytest.raises(InputError, match=words.replace("(", r"\(").replace(")", r"\)")):
        parse_barcode(text)


def test_read_fasta_file_refuses_binary_and_oversized_files(tmp_path):
    binary = tmp_path / "photo.fasta"
    binary.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    with pytest.raises(InputError, match="not a text FASTA"):
        read_fasta_file(binary)
    big = tmp_path / "genome.fasta"
    with open(big, "wb") as handle:
        handle.truncate(2_100_000)
    with pytest.raises(InputError, match="over 1 MB"):
        read_fasta_file(big)


def test_open_photo_checks_format_file_size_and_pixels_before_decoding(tmp_path, images_root):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        open_photo(text)
    huge_file = tmp_path / "huge.jpg"
    with open(huge_file, "wb") as handle:
        handle.truncate(MAX_PHOTO_BYTES + 1)
    with pytest.raises(InputError, match="MB; at most 20 MB"):
        open_photo(huge_file)
    # A tiny file that claims a huge canvas (a decompression bomb) is refused from its header.
    side = int(MAX_PHOTO_PIXELS ** 0.5) + 100
    bomb = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(bomb)
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(InputError, match=f"{side}x{side} pixels"):
        open_photo(bomb)
    photo = open_photo(next((images_root / "specimens").glob("*.jpg")))
    assert photo.mode == "RGB" and photo.size == (1024, 768)


# ---------------------------------------------------------------------------------------------- the index
def test_index_folder_is_safe_to_load_and_complete(sample_index):
    folder = sample_index.folder
    names = {p.name for p in folder.iterdir()}
    assert {"index.json", "keys.parquet", "dna.faiss", "kmer_projection.npy", "thumbnails"} <= names
    assert not any(name.endswith((".pkl", ".pickle", ".pt", ".bin")) for name in names)
    np.load(folder / "kmer_projection.npy", allow_pickle=False)
    manifest = json.loads((folder / "index.json").read_text())
    keys = bioscan5m.read_metadata(manifest["data"], split="train+key_unseen")
    assert manifest["keys"] == len(keys) == len(sample_index.keys) == sample_index.dna_index.ntotal
    # The sample has photographs, so every key has a thumbnail no larger than 160 px.
    assert manifest["thumbnails"] == len(keys)
    with Image.open(folder / sample_index.keys["thumbnail"].iloc[0]) as thumbnail:
        assert max(thumbnail.size) <= 160


def test_loaded_index_answers_like_the_one_just_built(sample_index, sample_root):
    query = bioscan5m.read_metadata(sample_root, split="test")["dna_barcode"].iloc[3]
    reloaded = bioscan5m.load_index(sample_index.folder)
    first, second = bioscan5m.identify(sample_index, dna=query), bioscan5m.identify(reloaded, dna=query)
    assert [n["processid"] for n in first.neighbours] == [n["processid"] for n in second.neighbours]
    assert first.ranks == second.ranks
    # A folder works as well as a loaded index.
    assert bioscan5m.identify(str(sample_index.folder), dna=query).ranks == first.ranks


def test_identifies_seen_species_and_flags_held_out_genera_on_the_sample(sample_index, sample_root):
    test = bioscan5m.read_metadata(sample_root, split="test").head(30)
    correct = flagged = 0
    for barcode, species in zip(test["dna_barcode"], test["species"]):
        result = bioscan5m.identify(sample_index, dna=barcode, top_k=5)
        correct += result.prediction("species").label == species
        flagged += result.novelty.possibly_undescribed
        confidences = [p.confidence for p in result.ranks]
        assert all(0 < c <= 1 for c in confidences)
        assert [p.rank for p in result.ranks] == ["order", "family", "genus", "species"]
        assert len(result.neighbours) == 5 and all(n["thumbnail"] for n in result.neighbours)
        similarities = [n["similarity"] for n in result.neighbours]
        assert similarities == sorted(similarities, reverse=True)
    assert correct >= 27 and flagged <= 3
    heldout = bioscan5m.read_metadata(sample_root, split="other_heldout").head(20)
    assert sum(bioscan5m.identify(sample_index, dna=b).novelty.possibly_undescribed for b in heldout["dna_barcode"]) >= 17


def test_real_barcodes_identified_and_novelty_calibrated(bold_index, bold_root):
    calibration = bold_index.manifest["calibration"]["dna"]
    assert calibration["novelty_auroc"] > 0.95 and calibration["novel_leave_species_out"] > 0
    # test_unseen species are among the key_unseen keys: named, and rarely flagged.
    queries = bioscan5m.read_metadata(bold_root, split="test_unseen").sample(60, random_state=0)
    results = [bioscan5m.identify(bold_index, dna=b) for b in queries["dna_barcode"]]
    accuracy = np.mean([r.prediction("species").label == s for r, s in zip(results, queries["species"])])
    assert accuracy >= 0.9
    assert np.mean([r.novelty.possibly_undescribed for r in results]) <= 0.1
    # other_heldout genera are absent from the keys: flagged.
    novel = bioscan5m.read_metadata(bold_root, split="other_heldout").sample(60, random_state=0)
    assert np.mean([bioscan5m.identify(bold_index, dna=b).novelty.possibly_undescribed
                    for b in novel["dna_barcode"]]) >= 0.9
    neighbour = results[0].neighbours[0]
    assert neighbour["dna_bin"].startswith("BOLD:") and neighbour["country"] and neighbour["thumbnail"] is None


def test_identify_refuses_photographs_on_a_dna_only_index_and_empty_queries(sample_index, images_root):
    photo = next((images_root / "specimens").glob("*.jpg"))
    with pytest.raises(InputError, match="DNA-only model.*CLIBD"):
        bioscan5m.identify(sample_index, image=photo)
    with pytest.raises(InputError, match="Nothing to identify"):
        bioscan5m.identify(sample_index, dna="  ")


def test_barcodebert_index_finds_a_key_from_its_own_barcode(sample_root, tiny_barcodebert, tmp_path):
    model_dir = tmp_path / "tiny-barcodebert"
    shutil.copytree(tiny_barcodebert, model_dir)  # the index goes beside the model by default
    folder = bioscan5m.build_index(sample_root, model=str(model_dir), splits="key_unseen", calibration=None,
                                   thumbnails=False)
    assert folder == model_dir / "index"  # saved beside the model by default
    index = bioscan5m.load_index(folder)
    encoder = index.manifest["encoder"]  # the model is named relative to the index folder, with its content hash
    assert encoder["kind"] == "barcodebert" and (index.folder / encoder["model"]).resolve() == model_dir.resolve()
    assert encoder["model_sha256"] == model_fingerprint(model_dir)
    key = index.keys.iloc[7]
    barcode = bioscan5m.read_metadata(sample_root, split="key_unseen")["dna_barcode"].iloc[7]
    result = bioscan5m.identify(index, dna=barcode)
    assert result.neighbours[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert key["dna_bin"] in {n["dna_bin"] for n in result.neighbours if n["similarity"] > 0.9999}
    assert result.novelty.possibly_undescribed is None  # built without calibration: no flag either way


def test_clibd_index_identifies_photographs_against_image_and_dna_keys(sample_root, tmp_path):
    from bioscan5m.modeling.configuration_clibd import ClibdConfig
    from bioscan5m.modeling.image_processing_clibd import ClibdImageProcessor
    from bioscan5m.modeling.modeling_clibd import ClibdModel
    from bioscan5m.tokenization import KmerTokenizerFast
    from bioscan5m.tokenization.tokenization_taxonomy import build_taxonomy_tokenizer

    model_dir = tmp_path / "tiny-clibd"
    torch.manual_seed(0)
    ClibdModel(ClibdConfig(image_model_name="vit_tiny_patch16_224", image_size=64, projection_dim=16,
                           image_model_kwargs=dict(embed_dim=64, depth=2, num_heads=2),
                           dna_config=dict(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64),
                           text_config=dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                            intermediate_size=64, max_position_embeddings=32))).save_pretrained(model_dir)
    ClibdImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}).save_pretrained(model_dir)
    build_taxonomy_tokenizer(["Diptera Culicidae Aedes Aedes aegypti"]).save_pretrained(model_dir)
    KmerTokenizerFast(k=4).save_pretrained(model_dir / "dna_tokenizer")

    folder = bioscan5m.build_index(sample_root, model=str(model_dir), splits="key_unseen",
                                   calibration="val_unseen+other_heldout", thumbnails=False)
    index = bioscan5m.load_index(folder)
    keys = bioscan5m.load_dataset(sample_root, "cropped_256", split="key_unseen")
    assert index.image_index.ntotal == len(keys) == len(index.keys)
    assert set(index.manifest["calibration"]) == {"dna", "image"}  # photographs are calibrated on their own
    photo, processid = keys[4]["image"], keys[4]["processid"]
    by_photo = bioscan5m.identify(index, image=photo, key_modality="image")
    assert by_photo.neighbours[0]["processid"] == processid
    assert by_photo.neighbours[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    against_dna = bioscan5m.identify(index, image=photo)
    assert against_dna.query["modalities"] == ["image"] and len(against_dna.neighbours) == 10
    assert against_dna.novelty.threshold == index.manifest["calibration"]["image"]["novelty_threshold"]
    both = bioscan5m.identify(index, dna=keys[4]["dna_barcode"], image=photo)
    assert both.query["modalities"] == ["dna", "image"]
    assert both.novelty.threshold == index.manifest["calibration"]["dna"]["novelty_threshold"]
    # Many photographs at once, paired with their barcodes or alone: the same nearest keys as one at a time.
    photos = [(keys[i]["processid"], keys[i]["image"]) for i in range(6)]
    table = bioscan5m.identify_many(index, images=photos, key_modality="image", batch_size=4, progress=False)
    assert table["query_id"].tolist() == table["nearest_processid"].tolist() == [p for p, _ in photos]
    paired = bioscan5m.identify_many(index, dna=[keys[i]["dna_barcode"] for i in range(6)], images=photos,
                                     progress=False)
    assert paired["query_id"].tolist() == [p for p, _ in photos] and paired["error"].isna().all()
    assert paired["species"].iloc[4] == both.prediction("species").label


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_builds_an_index_and_identifies_a_fasta_file(sample_root, tmp_path, capsys):
    out = tmp_path / "index"
    assert cli.main(["index", "build", "--data", str(sample_root), "--out", str(out), "--no-thumbnails",
                     "--splits", "train", "--calibration", "val+other_heldout"]) == 0
    assert "novelty threshold" in capsys.readouterr().out
    record = bioscan5m.read_metadata(sample_root, split="val").iloc[0]
    fasta = tmp_path / "query.fasta"
    fasta.write_text(f">{record['processid']}\n{record['dna_barcode']}\n")
    assert cli.main(["identify", "--index", str(out), "--fasta", str(fasta), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["query"]["record_id"] == record["processid"]
    assert result["ranks"][3]["label"] == record["species"]
    fasta.write_text(">one\nACGT\n")
    assert cli.main(["identify", "--index", str(out), "--fasta", str(fasta)]) == 2
    assert "query.fasta, record one: The sequence has only 4 determined nucleotides" in capsys.readouterr().err
    fasta.write_text(">one\nHELLO\n>two\nWORLD\n")                  # a table of errors is no answer
    assert cli.main(["identify", "--index", str(out), "--fasta", str(fasta), "--out", str(tmp_path / "hits.tsv")]) == 2
    assert "none of the 2 queries could be identified" in capsys.readouterr().err
    assert cli.main(["identify", "--index", str(out), "--fasta", str(fasta), "--json"]) == 2   # two records
    assert "--json and --top are for one specimen" in capsys.readouterr().err
    assert cli.main(["index", "build", "--data", str(sample_root), "--out", str(tmp_path / "i2"), "--splits", "train",
                     "--calibration", "val+train"]) == 2
    assert "share train with the key splits" in capsys.readouterr().err and not (tmp_path / "i2").exists()


# ---------------------------------------------------------------------------------------------- the aligned encoder
def test_aligned_query_scores_identical_minus_differing_bases_over_the_query(bold_root):
    from bioscan5m.embedding import AlignedIdentityEncoder, aligned_base_codes

    frame = bioscan5m.read_metadata(bold_root, split="train").drop_duplicates("dna_barcode").head(40)
    barcodes = frame["dna_barcode"].str.rstrip("N").tolist()
    fragment = barcodes[0][100:400]  # a partial read of key 0
    encoder = AlignedIdentityEncoder()
    scores = encoder.query_vectors(barcodes + [fragment]) @ encoder.key_vectors(barcodes).T
    codes = aligned_base_codes(barcodes + [fragment])
    keys, queries = codes[:len(barcodes)], codes
    both = (queries[:, None] < 4) & (keys[None] < 4)
    same = (queries[:, None] == keys[None]) & both
    by_hand = (2 * same.sum(-1) - both.sum(-1)) / (queries < 4).sum(1)[:, None]
    # float32 sums over ~660 positions round to a few 1e-6; one differing base moves a score by 1.5e-3.
    np.testing.assert_allclose(scores, by_hand, atol=1e-5)
    np.testing.assert_allclose(np.diag(scores[:len(barcodes)]), 1.0, atol=1e-5)  # each barcode against itself
    # The fragment matches key 0 over all its bases; a long key with differences must not outrank it.
    assert scores[-1].argmax() == 0 and scores[-1, 0] == pytest.approx(1.0)


def test_vote_with_a_sharp_temperature_never_divides_by_zero():
    from bioscan5m.identification.prediction import vote

    # The nearest key has no species: the others vote although their weight relative to it underflows.
    labels = {rank: np.array(["A", "A", "B"], dtype=object) for rank in ("order", "family", "genus")}
    labels["species"] = np.array([None, "x", "y"], dtype=object)
    ranks = {p.rank: p for p in vote(labels, np.array([1.0, 0.2, 0.1]), temperature=0.001)}
    assert ranks["species"].label == "x" and ranks["species"].confidence == pytest.approx(1.0)
    assert ranks["genus"].label == "A"


def test_refine_index_finds_the_exact_nearest_keys_and_survives_a_round_trip(bold_root, tmp_path):
    import faiss

    from bioscan5m.embedding import AlignedIdentityEncoder
    from bioscan5m.evaluation.retrieval import faiss_index

    keys = bioscan5m.read_metadata(bold_root, split="train").drop_duplicates("dna_barcode").head(3000)
    queries = bioscan5m.read_metadata(bold_root, split="test_unseen").head(300)["dna_barcode"].tolist()
    encoder = AlignedIdentityEncoder()
    vectors, query_vectors = encoder.key_vectors(keys["dna_barcode"]), encoder.query_vectors(queries)
    exact, _ = faiss_index(vectors, "flat").search(query_vectors, 5)
    refine = faiss_index(vectors, "refine", refine_dims=128)
    faiss.write_index(refine, str(tmp_path / "refine.faiss"))
    loaded = faiss.read_index(str(tmp_path / "refine.faiss"))
    scores, hits = loaded.search(query_vectors, 5)
    np.testing.assert_array_equal(hits, refine.search(query_vectors, 5)[1])
    # Candidates from the projection, scored exactly: the nearest key's similarity is the exact one.
    assert np.mean(np.isclose(scores[:, 0], exact[:, 0], atol=1e-5)) >= 0.98
    assert np.all(scores[:, 0] <= exact[:, 0] + 1e-5)

    # One-hot keys stored as float16: the same scores as float32, in half the bytes.
    half = faiss_index(vectors, "refine", refine_dims=128, integer_vectors=True)
    np.testing.assert_array_equal(half.search(query_vectors, 5)[0], scores)
    faiss.write_index(half, str(tmp_path / "half.faiss"))
    assert (tmp_path / "half.faiss").stat().st_size < 0.6 * (tmp_path / "refine.faiss").stat().st_size
    # For millions of keys: an inverted file over the projection, its candidates scored exactly.
    ivf = faiss_index(vectors, "ivf", refine_dims=128, integer_vectors=True)
    found, _ = ivf.search(query_vectors, 1)
    assert np.all(found[:, 0] <= exact[:, 0] + 1e-5) and np.mean(np.isclose(found[:, 0], exact[:, 0], atol=1e-5)) >= 0.9
    assert faiss.extract_index_ivf(ivf).nlist > 1
    with pytest.raises(ValueError, match="choose one of flat, refine, ivf"):
        faiss_index(vectors, "hnsw")


def test_a_chunked_build_answers_as_a_whole_one(bold_root, tmp_path, monkeypatch):
    # Past KEY_CHUNK keys the index is trained on a sample and filled chunk by chunk (the release's 2.5 M aligned
    # keys would not fit in memory as float32); exact search must find the same keys either way.
    from bioscan5m.identification import key_index

    keys = bioscan5m.read_metadata(bold_root, split="key_unseen").head(1200)
    queries = bioscan5m.read_metadata(bold_root, split="test_unseen").head(50)["dna_barcode"].tolist()
    whole = bioscan5m.load_index(key_index.write_index(keys, tmp_path / "whole", model="aligned", index_type="flat"))
    monkeypatch.setattr(key_index, "KEY_CHUNK", 500)
    monkeypatch.setattr(key_index, "KEY_TRAINING_SAMPLE", 300)
    chunked = bioscan5m.load_index(key_index.write_index(keys, tmp_path / "chunked", model="aligned",
                                                       index_type="flat"))
    vectors = whole.encoder.query_vectors(queries)
    assert chunked.dna_index.ntotal == whole.dna_index.ntotal == len(keys)
    np.testing.assert_allclose(chunked.dna_index.search(vectors, 5)[0], whole.dna_index.search(vectors, 5)[0])
    assert chunked.manifest["dimensions"] == 2640


def test_aligned_index_identifies_its_keys_and_refuses_a_tampered_length(bold_root, tmp_path):
    folder = bioscan5m.build_index(bold_root, tmp_path / "index", model="aligned", splits="key_unseen",
                                   calibration="val_unseen+other_heldout", max_calibration_queries=500)
    index = bioscan5m.load_index(folder)
    assert index.manifest["index_type"] == "refine" and index.manifest["encoder"] == {"kind": "aligned", "length": 660}
    assert index.manifest["calibration"]["dna"]["temperature"] == 0.001  # fixed, not fitted
    assert index.manifest["calibration"]["dna"]["novelty_auroc"] > 0.95
    keys = bioscan5m.read_metadata(bold_root, split="key_unseen").sample(30, random_state=0)
    results = [bioscan5m.identify(index, dna=b) for b in keys["dna_barcode"]]
    assert all(r.neighbours[0]["similarity"] == pytest.approx(1.0) for r in results)
    assert np.mean([r.prediction("species").label == s for r, s in zip(results, keys["species"])]) >= 0.95
    # A plate with repeated barcodes: each searched once, every row answered in input order.
    plate = [(f"q{i}", b) for i, b in enumerate(list(keys["dna_barcode"][:5]) * 3)]
    table = bioscan5m.identify_many(index, dna=plate, progress=False)
    assert table["query_id"].tolist() == [q for q, _ in plate]
    assert table["species"].tolist() == [r.prediction("species").label for r in results[:5]] * 3

    manifest = json.loads((folder / "index.json").read_text())
    manifest["encoder"]["length"] = 10 ** 9
    (folder / "index.json").write_text(json.dumps(manifest))
    with pytest.raises(KeyIndexError, match="not a barcode length"):
        bioscan5m.load_index(folder)
