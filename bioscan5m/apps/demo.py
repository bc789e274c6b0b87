"""The main job on the embedded default (the synthetic release), end to end: ``make demo``.

Dataset: make the release, export it Hub-native, load every config/split with stock ``datasets``. Models (tiny
presets, minutes on two CPU cores): pretrain and probe BarcodeBERT, fine-tune it, train CLIBD, run the benchmark
report against the k-mer (and, where ``blastn`` is installed, BLAST) baselines, evaluate CLIBD retrieval, build
the Space's key index and identify one specimen. Every step writes its outputs under ``workdir``.

The demo replaces only what it made itself: ``workdir/.bioscan5m-demo.json`` lists the outputs it created, and a
run refuses a ``workdir`` (or an output in it) that it did not make, rather than writing over somebody's files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..staging import OutputExistsError

DEMO_MARKER = ".bioscan5m-demo.json"


class DemoFolder:
    """The demo's working folder and the record of which outputs in it the demo created."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir)
        self.marker = self.path / DEMO_MARKER
        if self.marker.is_file():
            self.created = set(json.loads(self.marker.read_text())["created"])
        elif self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise OutputExistsError(f"{self.path} exists and was not made by the demo (no {DEMO_MARKER}); choose "
                                    "another --workdir, so the demo writes nothing over files it did not make.")
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.created = set()
            self._save()

    def output(self, name: str) -> tuple[Path, bool]:
        """The path of output ``name`` and whether the demo may replace what is there (it made it earlier)."""
        path = self.path / name
        if path.exists() and name not in self.created:
            raise OutputExistsError(f"{path} was not made by the demo; move it away or choose another --workdir.")
        if name not in self.created:
            self.created.add(name)  # recorded before it is written, so no output of the demo goes unrecorded
            self._save()
        return path, path.exists()

    def _save(self) -> None:
        partial = self.marker.with_name(self.marker.name + ".partial")
        partial.write_text(json.dumps({"created": sorted(self.created)}, indent=2) + "\n")
        partial.replace(self.marker)


def run_demo(workdir: str = "demo", num_records: int = 4000, models: bool = True) -> None:
    """Run the demo in ``workdir``; ``models=False`` stops after the dataset steps."""
    folder = DemoFolder(workdir)
    release_root = _dataset_steps(folder, num_records)
    if models:
        _model_steps(folder, release_root)


def _dataset_steps(workdir: DemoFolder, num_records: int) -> Path:
    from ..data.export import export
    from ..data.synthetic import make_sample
    from ..data.summary import summarize_export, summarize_release

    release_root, made_before = workdir.output("release")
    if not (made_before and (release_root / "bioscan5m").is_dir()):
        print(f"[1] making a synthetic release of {num_records} records in {release_root}")
        make_sample(release_root, num_records=num_records, overwrite=made_before)
    print(summarize_release(release_root))

    exported, made_before = workdir.output("bioscan-5m")
    print(f"\n[2] exporting Hub-native Parquet + dataset card to {exported}")
    export(release_root, exported, overwrite=made_before)

    print(f"\n[3] loading every config and split of {exported} with stock datasets.load_dataset")
    print(summarize_export(exported))
    return release_root


def _model_steps(workdir: DemoFolder, release_root: Path) -> None:
    from ..evaluation.clibd_retrieval import clibd_retrieval_report, markdown_table
    from ..evaluation.benchmark import run_benchmark
    from ..identification import build_index, format_identification, identify
    from ..data.metadata import read_metadata
    from ..training.finetune import finetune
    from ..training.pretrain import pretrain
    from ..evaluation.encoder_probes import probe
    from ..training.train_clibd import train_clibd

    barcodebert, made_before = workdir.output("barcodebert")
    print(f"\n[4] pretraining BarcodeBERT (tiny preset, 200 steps) on pretrain+other_heldout -> {barcodebert}")
    pretrain(release_root, barcodebert, preset="tiny", max_steps=200, overwrite=made_before)
    results = probe(barcodebert, release_root, out_path=barcodebert / "probe.json")
    print(f"    linear probe species@test {results['linear_probe_species_test']:.2f} %, "
          f"1-NN genus@test_unseen {results['knn_genus_test_unseen']:.2f} %")

    finetuned, made_before = workdir.output("barcodebert-finetuned")
    print(f"\n[5] fine-tuning it for species on train -> {finetuned}")
    results = finetune(barcodebert, release_root, finetuned, preset="tiny", max_steps=100, overwrite=made_before)
    print(f"    species@test {results['species_test_accuracy']:.2f} %")

    benchmark, made_before = workdir.output("benchmark")
    blast = shutil.which("blastn") is not None
    print(f"\n[6] benchmark report: BarcodeBERT vs 6-mer counts{' and BLAST' if blast else ''} -> {benchmark}/report.md")
    run_benchmark(release_root, models=[barcodebert], out_dir=benchmark, blast=blast, overwrite=made_before,
                  command=f"bioscan5m benchmark --data {release_root} --model {barcodebert}"
                          f"{' --blast' if blast else ''} --out {benchmark}")
    print(_report_headline(benchmark / "report.md"))

    clibd, made_before = workdir.output("clibd")
    print(f"\n[7] training CLIBD (tiny preset, 3 epochs; image + DNA + taxonomy) -> {clibd}")
    train_clibd(release_root, clibd, preset="tiny", epochs=3, dna_model=barcodebert, overwrite=made_before)
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
