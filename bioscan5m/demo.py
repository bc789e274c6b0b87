"""The main job on the embedded default (the synthetic release), end to end: ``make demo``.

Dataset: make the release, export it Hub-native, load every config/split with stock ``datasets``. Models (tiny
presets, minutes on two CPU cores): pretrain and probe BarcodeBERT, fine-tune it, train CLIBD, run the benchmark
report against the k-mer (and, where ``blastn`` is installed, BLAST) baselines, evaluate CLIBD retrieval, build
the Space's key index and identify one specimen. Every step writes its outputs under ``workdir``.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def run_demo(workdir: str = "demo", num_records: int = 4000, models: bool = True) -> None:
    """Run the demo in ``workdir``; ``models=False`` stops after the dataset steps."""
    workdir = Path(workdir)
    release_root = _dataset_steps(workdir, num_records)
    if models:
        _model_steps(workdir, release_root)


def _dataset_steps(workdir: Path, num_records: int) -> Path:
    from .exporting import export
    from .sample import make_sample
    from .summary import summarize_export, summarize_release

    release_root = workdir / "release"
    if not (release_root / "bioscan5m").is_dir():
        print(f"[1] making a synthetic release of {num_records} records in {release_root}")
        make_sample(release_root, num_records=num_records)
    print(summarize_release(release_root))

    exported = workdir / "bioscan-5m"
    shutil.rmtree(exported, ignore_errors=True)  # the demo's own output from an earlier run
    print(f"\n[2] exporting Hub-native Parquet + dataset card to {exported}")
    export(release_root, exported)

    print(f"\n[3] loading every config and split of {exported} with stock datasets.load_dataset")
    print(summarize_export(exported))
    return release_root


def _model_steps(workdir: Path, release_root: Path) -> None:
    from .evaluation.clibd_retrieval import clibd_retrieval_report, markdown_table
    from .evaluation.report import run_benchmark
    from .identification import build_index, format_identification, identify
    from .metadata import read_metadata
    from .training.finetune import finetune
    from .training.pretrain import pretrain
    from .training.probes import probe
    from .training.train_clibd import train_clibd

    barcodebert = workdir / "barcodebert"
    print(f"\n[4] pretraining BarcodeBERT (tiny preset, 200 steps) on pretrain+other_heldout -> {barcodebert}")
    pretrain(release_root, barcodebert, preset="tiny", max_steps=200)
    results = probe(barcodebert, release_root, out_path=barcodebert / "probe.json")
    print(f"    linear probe species@test {results['linear_probe_species_test']:.2f} %, "
          f"1-NN genus@test_unseen {results['knn_genus_test_unseen']:.2f} %")

    finetuned = workdir / "barcodebert-finetuned"
    print(f"\n[5] fine-tuning it for species on train -> {finetuned}")
    results = finetune(barcodebert, release_root, finetuned, preset="tiny", max_steps=100)
    print(f"    species@test {results['species_test_accuracy']:.2f} %")

    benchmark = workdir / "benchmark"
    blast = shutil.which("blastn") is not None
    print(f"\n[6] benchmark report: BarcodeBERT vs 6-mer counts{' and BLAST' if blast else ''} -> {benchmark}/report.md")
    run_benchmark(release_root, models=[barcodebert], out_dir=benchmark, blast=blast,
                  command=f"bioscan5m benchmark --data {release_root} --model {barcodebert}"
                          f"{' --blast' if blast else ''} --out {benchmark}")
    print(_report_headline(benchmark / "report.md"))

    clibd = workdir / "clibd"
    print(f"\n[7] training CLIBD (tiny preset, 3 epochs; image + DNA + taxonomy) -> {clibd}")
    train_clibd(release_root, clibd, preset="tiny", epochs=3, dna_model=barcodebert)
    report = clibd_retrieval_report(clibd, release_root)
    print(markdown_table(report))

    index = clibd / "index"
    print(f"\n[8] the Space's key index (CLIBD, keys train+key_unseen) -> {index}")
    build_index(release_root, index, model=str(clibd))
    query = read_metadata(release_root, split="test_unseen").iloc[0]
    print(f"    identifying test_unseen record {query['processid']} (true genus {query['genus']}) from its barcode:")
    print(format_identification(identify(index, dna=query["dna_barcode"], top_k=3)))
    print(f"\nThe identification page: bioscan5m serve --index {index}   (then open http://127.0.0.1:7860)")


def _report_headline(report: Path) -> str:
    """The report's first section (classification), for the console."""
    text = report.read_text()
    start = text.find("\n## ")
    end = text.find("\n## ", start + 1)
    return text[start:end].strip() if start >= 0 else text
