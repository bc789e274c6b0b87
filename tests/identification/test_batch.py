"""Batch identification: the streaming FASTA reader on every kind of bad record, identify_many against one-at-a-time
identify on real BOLD barcodes, the hit table in each format, and the command line over both."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

import bioscan5m
from bioscan5m import cli
from bioscan5m.identification import IDENTIFICATION_COLUMNS, InputError, iter_fasta, iter_photos
from bioscan5m.identification.batch import MAX_RECORD_CHARACTERS, _READ_BYTES

BARCODE = "ACGT" * 40


# ---------------------------------------------------------------------------------------------- FASTA reader
def test_iter_fasta_reads_wrapped_records_and_names_each_bad_one(tmp_path):
    path = tmp_path / "plate.fasta"
    path.write_bytes(b"ACGT\n"                                        # sequence before any header
                     b">BIOUG001-22 Diptera sp.\r\n" + BARCODE[:80].encode() + b"\r\n" + BARCODE[80:].encode() + b"\n"
                     b">\n" + BARCODE.encode() + b"\n"               # a header without an id
                     b">empty\n"                                       # a header only
                     b">latin\n\xe9\xe9ACGT\n"                         # not UTF-8
                     b">last\n" + BARCODE.encode())                    # no final newline
    records = list(iter_fasta(path))
    assert [r.id for r in records] == ["record 1", "BIOUG001-22", "record 3", "empty", "latin", "last"]
    assert "line 1: sequence before the first '>' header" in records[0].error
    assert records[1].sequence == BARCODE and records[1].error is None
    assert records[2].sequence == BARCODE and records[5].sequence == BARCODE
    assert records[3].sequence == "" and records[3].error is None  # refused later, as a pasted header-only text is
    assert "line 9: not UTF-8 text" in records[4].error


def test_iter_fasta_caps_a_huge_record_and_a_huge_line_without_holding_them(tmp_path):
    path = tmp_path / "genome.fasta.gz"
    long_line = b"A" * (3 * _READ_BYTES + 17)
    with gzip.open(path, "wb") as handle:
        handle.write(b">chromosome " + b"x" * (2 * _READ_BYTES) + b"\n" + long_line + b"\n")
        handle.write(b">ok\n" + BARCODE.encode() + b"\n")
    records = list(iter_fasta(path))
    assert [r.id for r in records] == ["chromosome", "ok"]  # the header's tail is not read as sequence
    assert f"over {MAX_RECORD_CHARACTERS:,} characters" in records[0].error and records[0].sequence == ""
    assert records[1].sequence == BARCODE and records[1].error is None


def test_iter_fasta_is_lazy(tmp_path):
    path = tmp_path / "many.fasta"
    path.write_text("".join(f">q{i}\n{BARCODE}\n" for i in range(1000)))
    records = iter_fasta(path)
    assert next(records).id == "q0"
    path.write_text("")  # truncated under the open reader: only what it had already buffered is left
    assert next(records).id == "q1" and len(list(records)) < 100


def test_iter_fasta_names_a_truncated_gzip_file_and_a_folder(tmp_path):
    import gzip

    path = tmp_path / "queries.fa.gz"
    path.write_bytes(gzip.compress("".join(f">q{i}\n{BARCODE}\n" for i in range(200)).encode())[:300])
    with pytest.raises(InputError, match="queries.fa.gz: not a whole gzip file"):
        list(iter_fasta(path))
    with pytest.raises(InputError, match="is a folder, not a FASTA file"):
        list(iter_fasta(tmp_path))


def test_iter_photos_takes_a_folder_or_a_list_and_stays_inside_the_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "b.jpg").write_bytes(b"x")
    (folder / "a.JPG").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    (folder / "link.jpg").symlink_to(outside)
    assert [name for name, _ in iter_photos(folder)] == ["a.JPG", "b.jpg"]
    listing = tmp_path / "list.txt"
    listing.write_text("photos/b.jpg\n\n" + str(outside) + "\n")
    assert [path for _, path in iter_photos(listing)] == [folder / "b.jpg", outside]


# ---------------------------------------------------------------------------------------------- identify_many
@pytest.fixture(scope="module")
def real_queries(bold_root):
    return bioscan5m.read_metadata(bold_root, split="test_unseen").sample(40, random_state=1)


def test_identify_many_answers_like_identify_and_reports_bad_records_in_place(bold_index, real_queries):
    records = [(pid, seq) for pid, seq in zip(real_queries["processid"], real_queries["dna_barcode"])]
    records.insert(5, ("too-short", "ACGT"))
    records.insert(9, ("rna", "ACGU" * 40))
    table = bioscan5m.identify_many(bold_index, dna=records, batch_size=7, progress=False)
    assert list(table.columns) == list(IDENTIFICATION_COLUMNS) and len(table) == 42
    assert table["query_id"].tolist() == [pid for pid, _ in records]
    assert "determined nucleotides" in table.loc[5, "error"] and "U is RNA" in table.loc[9, "error"]
    assert pd.isna(table.loc[5, "species"]) and pd.isna(table.loc[5, "nearest_similarity"])
    good = table.drop(index=[5, 9]).reset_index(drop=True)
    assert good["error"].isna().all()
    for row, sequence in zip(good.itertuples(), real_queries["dna_barcode"]):
        single = bioscan5m.identify(bold_index, dna=sequence)
        assert row.species == single.prediction("species").label
        assert row.species_confidence == pytest.approx(single.prediction("species").confidence, abs=1e-4)
        assert row.nearest_processid == single.neighbours[0]["processid"]
        assert row.nearest_similarity == pytest.approx(single.neighbours[0]["similarity"], abs=1e-4)
        assert row.possibly_undescribed == single.novelty.possibly_undescribed
    assert (good["species"] == real_queries["species"].to_numpy()).mean() >= 0.9


def test_identify_many_refuses_what_it_cannot_answer(sample_index, images_root):
    with pytest.raises(InputError, match="Nothing to identify"):
        bioscan5m.identify_many(sample_index, progress=False)
    with pytest.raises(InputError, match="DNA-only model"):
        bioscan5m.identify_many(sample_index, images=list((images_root / "specimens").glob("*.jpg"))[:2], progress=False)
    with pytest.raises(InputError, match="batch_size must be a positive integer"):
        bioscan5m.identify_many(sample_index, dna=[BARCODE], batch_size=0, progress=False)


# ---------------------------------------------------------------------------------------------- command line
def test_cli_writes_the_hit_table_for_a_plate(bold_index, real_queries, tmp_path, capsys):
    fasta = tmp_path / "plate.fasta"
    fasta.write_text("".join(f">{pid} some description\n{seq[:300]}\n{seq[300:]}\n"
                             for pid, seq in zip(real_queries["processid"], real_queries["dna_barcode"]))
                     + ">broken\nACGTXACGT\n")
    out = tmp_path / "hits.tsv"
    assert cli.main(["identify", "--index", str(bold_index.folder), "--fasta", str(fasta), "--out", str(out),
                     "--batch-size", "16"]) == 0
    table = pd.read_csv(out, sep="\t")
    assert table["query_id"].tolist() == [*real_queries["processid"], "broken"]
    assert table["error"].notna().tolist() == [False] * 40 + [True] and "'X' at position 5" in table["error"].iloc[-1]
    assert (table["species"].iloc[:40] == real_queries["species"].to_numpy()).mean() >= 0.9
    # An existing table is kept unless --overwrite says otherwise.
    assert cli.main(["identify", "--index", str(bold_index.folder), "--fasta", str(fasta), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    capsys.readouterr()
    assert cli.main(["identify", "--index", str(bold_index.folder), "--fasta", str(fasta), "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["query_id"] for r in rows] == table["query_id"].tolist()
    assert rows[0]["species_confidence"] == pytest.approx(table["species_confidence"].iloc[0])
    csv_out = tmp_path / "hits.csv"
    assert cli.main(["identify", "--index", str(bold_index.folder), "--fasta", str(fasta), "--out", str(csv_out)]) == 0
    assert pd.read_csv(csv_out)["query_id"].tolist() == table["query_id"].tolist()
    assert cli.main(["identify", "--index", str(bold_index.folder), "--fasta", str(fasta), "--out",
                     str(tmp_path / "hits.xlsx")]) == 2
    assert ".tsv, .csv or .jsonl" in capsys.readouterr().err
