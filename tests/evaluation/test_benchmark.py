"""The benchmark report and the evaluation commands, end to end on the synthetic release with a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bioscan5m.cli import main
from bioscan5m.evaluation.baselines import blast_available
from bioscan5m.evaluation.probes import knn_probe
from bioscan5m.evaluation.benchmark import load_benchmark_records, unique_barcode_records
from bioscan5m.evaluation.benchmark.run import IDENTIFICATION_ABLATION


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from bioscan5m.modeling import BarcodeBertConfig, BarcodeBertModel
    from bioscan5m.tokenization import KmerTokenizerFast

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-barcodebert")
    config = BarcodeBertConfig(k_mer=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BarcodeBertModel(config).save_pretrained(folder)
    KmerTokenizerFast(k=4).save_pretrained(folder)
    return folder


def test_benchmark_report_with_model_and_baselines(sample_root, tiny_model, tmp_path):
    out = tmp_path / "report"
    argv = ["benchmark", "--data", str(sample_root), "--model", str(tiny_model), "--out", str(out)]
    assert main(argv + (["--blast"] if blast_available() else [])) == 0
    report = json.loads((out / "report.json").read_text())
    methods = [tiny_model.name, "6-mer counts"] + (["BLAST"] if blast_available() else [])
    assert list(report["sources"]) == methods
    assert set(report["clustering"]) == set(report["retrieval"]) - {"BLAST"} == {tiny_model.name, "6-mer counts"}
    markdown = (out / "report.md").read_text()
    for heading in ("## Classification", "## Zero-shot clustering", "## Retrieval within", "## Performance"):
        assert heading in markdown
    for path in report["plots"].values():
        assert (out / path).read_bytes()[:4] == b"\x89PNG"
    # The reported 1-NN accuracy is what the model's own embeddings give on the same unique barcodes.
    import transformers

    model = transformers.AutoModel.from_pretrained(str(tiny_model))
    sets = load_benchmark_records(sample_root, tasks=("classification",))["classification"]
    expected = knn_probe(model.embed(sets["train"].sequences, return_numpy=True), sets["train"].labels["species"],
                         model.embed(sets["test"].sequences, return_numpy=True), sets["test"].labels["species"])
    got = report["classification"][tiny_model.name]["species@test 1-NN"]
    assert got["micro_top1"] == pytest.approx(expected["micro_top1"], abs=1e-9)
    species_ami = report["clustering"]["6-mer counts"]["ami"]["species"]
    assert f"{100 * species_ami:.2f}" in markdown
    if blast_available():
        assert 0 < report["classification"]["BLAST"]["species@test top hit"]["micro_top1"] <= 1


def test_cluster_and_retrieve_commands(sample_root, tmp_path, capsys):
    assert main(["cluster", "--embeddings", "kmer:5", "--data", str(sample_root), "--out", str(tmp_path / "c")]) == 0
    result = json.loads((tmp_path / "c" / "clustering.json").read_text())
    assert result["split"] == "test+test_unseen" and 0 <= result["ami"]["species"] <= 1
    assert (tmp_path / "c" / "umap_5_mer_counts.png").is_file()
    assert main(["retrieve", "--model", "kmer", "--data", str(sample_root), "--queries", "test,test_unseen",
                 "--top-k", "1,5", "--out", str(tmp_path / "r")]) == 0
    retrieval = json.loads((tmp_path / "r" / "retrieval.json").read_text())["dna->dna"]
    species = retrieval["species"]
    assert species["test"]["micro_top1"] <= species["test"]["micro_top5"]
    assert "harmonic_mean_macro_top1" in species
    assert "species" in capsys.readouterr().out


def test_commands_report_bad_input_in_one_line(sample_root, tmp_path, capsys):
    assert main(["cluster", "--embeddings", f"dna:{tmp_path}", "--data", str(sample_root)]) == 2
    assert "is not a saved model folder" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    assert "No BIOSCAN-5M metadata" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(sample_root), "--tasks", "identify", "--out", str(tmp_path / "b")]) == 2
    assert "Unknown task(s) identify" in capsys.readouterr().err


def test_unique_barcode_protocols():
    frame = pd.DataFrame({"split": ["train", "test", "test", "train"],
                          "dna_barcode": ["ACGTNN", "ACGT", "NACGT", "TTTT"]})
    # BarcodeBERT: trailing N stripped, first occurrence across the whole release kept.
    assert unique_barcode_records(frame, "barcodebert").index.tolist() == [0, 2, 3]
    # Per split, N stripped at both ends: the test copies collapse, the train one stays.
    assert unique_barcode_records(frame, "per-split").index.tolist() == [0, 1, 3]
    with pytest.raises(ValueError, match="Unknown dedup protocol"):
        unique_barcode_records(frame, "none")


def test_per_split_protocol_gives_the_reference_query_counts(bold_root):
    # shared/data/README.md measured its BLAST and 6-mer figures on 7,411 test and 1,057 test_unseen barcodes.
    sets = load_benchmark_records(bold_root, dedup="per-split", tasks=("classification",))["classification"]
    assert (len(sets["test"]), len(sets["test_unseen"])) == (7_411, 1_057)
    assert np.all(sets["test"].labels["species"] >= 0)


def test_model_sources_embed_over_reading_frames(tiny_model, bold_root):
    import transformers

    from bioscan5m.evaluation.benchmark import parse_source

    sequences = pd.read_csv(bold_root / "bioscan5m/metadata/csv/BIOSCAN_5M_Insect_Dataset_metadata.csv",
                            usecols=["dna_barcode"], nrows=8)["dna_barcode"].tolist()
    single, framed = parse_source(f"dna:{tiny_model}"), parse_source(f"dna:{tiny_model}", reading_frames=4)
    model = transformers.AutoModel.from_pretrained(str(tiny_model))
    np.testing.assert_allclose(framed.embed(sequences), model.embed(sequences, reading_frames=4, return_numpy=True),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(single.embed(sequences), framed.embed(sequences))
    # Cached embeddings and report columns must not mix the two.
    assert single.cache_key != framed.cache_key and single.name != framed.name
    assert "mean over 4 reading frames" in framed.description


def test_retrieve_refuses_reading_frames_for_a_clibd_folder(sample_root, tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clibd"}))
    assert main(["retrieve", "--model", str(tmp_path), "--data", str(sample_root), "--reading-frames", "4"]) != 0
    assert "--reading-frames applies to BarcodeBERT models" in capsys.readouterr().err


def test_benchmark_refuses_reading_frames_without_a_barcodebert_model(sample_root, tmp_path, capsys):
    argv = ["benchmark", "--data", str(sample_root), "--out", str(tmp_path / "b"), "--reading-frames", "3"]
    assert main([*argv, "--model", "kmer:4"]) == 2
    assert "none is benchmarked" in capsys.readouterr().err and not (tmp_path / "b").exists()


def test_open_world_protocol_holds_whole_taxa_out_of_the_keys(bold_root):
    from bioscan5m import read_metadata
    from bioscan5m.evaluation.benchmark.records import OPEN_WORLD_TASKS, open_world_sets

    unique = unique_barcode_records(read_metadata(bold_root, split="all", max_nucleotides=None))
    sets = open_world_sets(unique, seed=0)
    assert list(sets) == list(OPEN_WORLD_TASKS)
    assert [task["rank"] for task in sets.values()] == ["species", "genus", "family", "order"]
    assert len(sets["genus | species absent"]["queries"]) == 1069  # the paper's test_unseen unique barcodes
    again = open_world_sets(unique, seed=0)
    for name, (held, parent) in (("family | genus absent", ("genus", "family")), ("order | family absent", ("family", "order"))):
        task = sets[name]
        keys, queries = task["keys"], task["queries"]
        assert 0 < len(queries) <= 2000 and queries.sequences == again[name]["queries"].sequences
        # No key shares a query's held-out taxon, and every query's answer is among the keys.
        assert not set(keys.labels[held]) & set(queries.labels[held])
        assert set(queries.labels[parent]) <= set(keys.labels[parent])


def test_benchmark_runs_the_open_world_protocol_beside_identity_and_blast(sample_root, tmp_path):
    out = tmp_path / "open-world"
    argv = ["benchmark", "--data", str(sample_root), "--tasks", "open_world", "--out", str(out)]
    assert main(argv + (["--blast"] if blast_available() else [])) == 0
    report = json.loads((out / "report.json").read_text())
    methods = (["6-mer counts", "aligned identity"] + [name for name, _, _ in IDENTIFICATION_ABLATION]
               + (["BLAST"] if blast_available() else []))
    assert list(report["open_world"]) == methods
    for result in report["open_world"].values():
        assert list(result) == ["species | species in keys", "genus | species absent", "family | genus absent",
                                "order | family absent"]
        assert all(0 <= score["micro_top1"] <= 1 for score in result.values())
    assert "## Open world at every rank" in (out / "report.md").read_text()


def test_benchmark_reports_species_delimitation_beside_the_bins(bold_root, tmp_path):
    out = tmp_path / "delimitation"
    assert main(["benchmark", "--data", str(bold_root), "--tasks", "delimitation", "--max-records-per-split", "1500",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["delimitation"]
    assert list(rows) == ["BOLD BINs", "UPGMA, 2 %", "single linkage, calibrated on val+val_unseen",
                          "learned linkage, fitted on val+val_unseen"]
    assert rows["UPGMA, 2 %"]["threshold"] == 0.02 and rows["BOLD BINs"]["threshold"] is None
    calibrated = rows["single linkage, calibrated on val+val_unseen"]
    assert calibrated["named_species"] == rows["BOLD BINs"]["named_species"] > 50
    assert all(0 < row["species_ami"] <= 100 for row in rows.values())
    assert "## Species delimitation without labels" in (out / "report.md").read_text()
    assert report["clustering"] == {} and report["classification"] == {}   # no embedding task ran
