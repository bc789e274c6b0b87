"""BIOSCAN-5M specimen identification: a Gradio page (and Hugging Face Space) over ``bioscan5m.identify``.

    bioscan5m serve                                   # the embedded default: synthetic release + tiny CLIBD
    bioscan5m serve --index runs/index                # any index made by `bioscan5m index build`
    python spaces/app.py --index runs/index           # the same page, as the Hugging Face Space runs it

A user pastes a barcode (or uploads a FASTA file) and/or uploads a photograph, and sees the predicted lineage
with confidences, a "possibly undescribed species" flag, the nearest reference specimens with their
photographs, and a map of where those were collected. Only the public ``bioscan5m`` API is used here.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import gradio as gr

import bioscan5m

#: Where the embedded default (synthetic release, model and index) is made on first start.
DEMO_DIR = Path(os.environ.get("BIOSCAN5M_SPACE_DIR", Path.home() / ".cache" / "bioscan5m" / "space-demo"))
DEMO_RECORDS = 1200
DEMO_EPOCHS = 4  # tiny CLIBD on 1,200 records: about a minute on two CPU cores
MAX_UPLOAD = "25mb"  # the server refuses larger uploads before they reach identify()
#: Uploaded files are deleted an hour after upload (checked hourly), so a long-running page does not fill the disk.
UPLOAD_LIFETIME_SECONDS = 3600
CONCURRENT_IDENTIFICATIONS = 4
QUEUE_STATUS_SECONDS = 1.0

logger = logging.getLogger("bioscan5m.apps.space")


def demo_index(folder: Path = DEMO_DIR) -> Path:
    """The embedded default: a synthetic release with photographs, a tiny CLIBD trained on it (photographs, barcodes
    and taxonomy) and its key index, so that both barcodes and photographs can be identified (~2 min, once).

    Made on first start rather than shipped, so a fresh machine (or a Space) needs no download.
    """
    from bioscan5m.training.train_clibd import train_clibd

    # The folder is this page's own cache: whatever in it is incomplete is made again (overwrite=True).
    index_dir = folder / "index"
    if not (index_dir / "index.json").is_file():
        root = folder / "release"
        if not (root / "bioscan5m").is_dir():
            bioscan5m.make_sample(root, num_records=DEMO_RECORDS, packages=("cropped_256",), seed=0, overwrite=True)
        model_dir = folder / "clibd"
        if not (model_dir / "model.safetensors").is_file():
            train_clibd(root, model_dir, preset="tiny", epochs=DEMO_EPOCHS, save_no_alignment=False, overwrite=True)
        bioscan5m.build_index(root, index_dir, model=str(model_dir), splits="train+key_unseen", overwrite=True)
    return index_dir


def example_barcodes(index) -> list[tuple[str, str]]:
    """Two labelled queries from the index's release that are not keys: a known species, and one from a genus
    absent from the library."""
    data = index.manifest.get("data")
    if not data or not Path(data).exists():
        return []
    examples = []
    for split, label in (("test", "a known species"), ("other_heldout", "a genus absent from the library")):
        records = bioscan5m.read_metadata(data, split=split)
        if len(records):
            examples.append((records["dna_barcode"].iloc[0], label))
    return examples


# ---------------------------------------------------------------------------------------------- one request
def run_identification(index, dna_text: str | None, fasta_path: str | None, photo_path: str | None):
    """The page's handler: the outputs for one query, or a clear message and empty outputs when it fails."""
    try:
        if fasta_path and dna_text and dna_text.strip():
            raise bioscan5m.InputError("Both a pasted barcode and a FASTA file were given: clear one of them.")
        dna = bioscan5m.read_fasta_file(fasta_path) if fasta_path else dna_text
        result = bioscan5m.identify(index, dna=dna, image=photo_path or None)
    except bioscan5m.InputError as error:
        return _empty_outputs(f"### ⚠️ Cannot identify\n{error}")
    except Exception:  # the page shows a message, never a stack trace; the log keeps the details
        logger.exception("identification failed")
        return _empty_outputs("### ⚠️ Something went wrong on the server\nThe error was logged; please try again.")
    return (summary_markdown(result), lineage_rows(result), species_label(result), gallery_items(result),
            neighbour_rows(result), collection_map(result), result.to_dict())


def _empty_outputs(message: str):
    return message, [], None, [], [], None, None


def summary_markdown(result) -> str:
    species = result.prediction("species")
    genus = result.prediction("genus")
    novelty = result.novelty
    lines = []
    if novelty.possibly_undescribed:
        lines.append(f"### 🟠 Possibly undescribed species\nThe nearest reference specimen has similarity "
                     f"**{novelty.similarity:.3f}**, below the calibrated threshold {novelty.threshold:.3f}: this "
                     f"specimen may belong to a species absent from the reference library. Nearest genus: "
                     f"*{genus.label}* ({100 * genus.confidence:.0f} %).")
    else:
        lines.append(f"### Identified as *{species.label}* ({100 * species.confidence:.0f} %)")
        if novelty.threshold is not None:
            lines.append(f"Nearest reference similarity {novelty.similarity:.3f} (novelty threshold "
                         f"{novelty.threshold:.3f}).")
    modalities = " + ".join(result.query["modalities"])
    lines.append(f"Query: {modalities}" + (f", {result.query['nucleotides']} nt" if "nucleotides" in result.query else "")
                 + f" · answered in {1000 * result.seconds:.0f} ms")
    return "\n\n".join(lines)


def lineage_rows(result) -> list[list]:
    """Rank, prediction, confidence. Confidences are shares among the reference species, so a species flagged
    as possibly undescribed is shown as such, with its nearest reference species."""
    rows = [[p.rank, p.label or "-", f"{100 * p.confidence:.1f} %"] for p in result.ranks]
    if result.novelty.possibly_undescribed:
        rows[-1][1] = f"possibly undescribed (nearest: {rows[-1][1]})"
    return rows


def species_label(result) -> dict[str, float]:
    return {label: confidence for label, confidence in result.prediction("species").alternatives}


def gallery_items(result) -> list[tuple[str, str]]:
    return [(n["thumbnail"], f"{n['species'] or n['genus'] or '?'} · {n['dna_bin'] or 'no BIN'} · "
             f"{n['country'] or '?'} · {n['similarity']:.3f}") for n in result.neighbours if n["thumbnail"]]


NEIGHBOUR_HEADERS = ["similarity", "processid", "species", "BIN", "collected in"]


def neighbour_rows(result) -> list[list]:
    """One short row per neighbour, so the table reads without sideways scrolling (coordinates are on the map)."""
    return [[n["similarity"], n["processid"], n["species"] or (f"{n['genus']} sp." if n["genus"] else "-"),
             n["dna_bin"] or "-", ", ".join(part for part in (n["province_state"], n["country"]) if part) or "-"]
            for n in result.neighbours]


#: Natural Earth 1:110m land outline (public domain): (longitude, latitude) rows, rings separated by NaN rows.
WORLD_OUTLINE = Path(__file__).with_name("world_outline.npy")


class WorldMap:
    """Collection sites over a world outline, drawn on the server without any map tiles (the page works offline).

    The outline is drawn once; each answer restores that background and draws only its points (a few ms), so the
    map costs the server little under load. One figure is shared by the worker threads, hence the lock.
    """

    def __init__(self):
        import threading

        import numpy as np
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self._lock = threading.Lock()
        self.figure = Figure(figsize=(8.4, 4.2), dpi=100)
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0.08, 0.11, 0.9, 0.81))
        outline = np.load(WORLD_OUTLINE, allow_pickle=False)
        self.axes.plot(outline[:, 0], outline[:, 1], color="#9aa5b1", linewidth=0.6)
        self.axes.set(xlim=(-180, 180), ylim=(-90, 90), xlabel="longitude", ylabel="latitude",
                      title="Collection sites of the nearest reference specimens")
        self.axes.grid(color="#eeeeee", linewidth=0.5)
        self.canvas.draw()
        self.background = self.canvas.copy_from_bbox(self.figure.bbox)

    def render(self, sites: list[tuple[float, float]]):
        """An RGB image of the ``(longitude, latitude)`` sites (their countries are in the neighbours table)."""
        import numpy as np

        with self._lock:
            self.canvas.restore_region(self.background)
            points = self.axes.scatter(*np.asarray(sites, dtype=float).T, s=44, color="#e4572e", edgecolors="black",
                                       linewidths=0.6, zorder=3)
            self.axes.draw_artist(points)
            image = np.asarray(self.canvas.buffer_rgba())[..., :3].copy()
            points.remove()
        return image


@functools.cache
def world_map() -> WorldMap:
    return WorldMap()


def collection_map(result):
    """The nearest specimens' collection sites on the world map (an image), or None when none has coordinates."""
    sites = [(n["coord-lon"], n["coord-lat"]) for n in result.neighbours
             if n["coord-lat"] is not None and n["coord-lon"] is not None]
    if not sites:
        return None
    return world_map().render(sites)


# ---------------------------------------------------------------------------------------------- the page
def build_demo(index) -> gr.Blocks:
    """The page over a loaded key index (`bioscan5m.load_index`)."""
    photos = "image" in index.modalities
    thumbnails = photos or int(index.manifest.get("thumbnails") or 0) > 0
    library = index.library()
    with gr.Blocks(title="BIOSCAN-5M specimen identification",
                   delete_cache=(UPLOAD_LIFETIME_SECONDS, UPLOAD_LIFETIME_SECONDS)) as demo:
        gr.Markdown("# BIOSCAN-5M: identify an insect from its DNA barcode" + (" or photograph" if photos else "")
                    + f"\n**Reference library:** {library['sentence']}", elem_id="header")
        if library["synthetic"]:
            gr.Markdown("> ⚠️ **This reference library is synthetic**: generated records that demonstrate the page. "
                        "Its answers say nothing about real insects; serve an index built from the BIOSCAN-5M release "
                        "for real identifications.", elem_id="synthetic-banner")
        warning = calibration_warning(index)
        if warning:
            gr.Markdown(warning, elem_id="calibration-warning")
        with gr.Row():
            with gr.Column():
                dna = gr.Textbox(label="DNA barcode (COI-5P; plain sequence or one FASTA record)", lines=6,
                                 max_lines=12, placeholder="AACATTATATTTTATTTTTGGAATTTGAGCAGG...", elem_id="dna-input")
                fasta = gr.File(label="...or a FASTA file (one record)", file_types=[".fasta", ".fa", ".fas", ".fna", ".txt"],
                                type="filepath", elem_id="fasta-input")
                # A file, not gr.Image: gradio would decode an upload before identify() could check its size
                # and pixels; the checked photograph is shown beside it.
                photo = gr.File(label="Specimen photograph", file_types=["image"], type="filepath", visible=photos,
                                elem_id="photo-input")
                preview = gr.Image(label="Your photograph", interactive=False, visible=photos, height=220,
                                   elem_id="photo-preview")
                photo.change(preview_photo, inputs=[photo], outputs=[preview], show_progress="hidden")
                button = gr.Button("Identify", variant="primary", elem_id="identify-button")
                examples = example_barcodes(index)
                if examples:
                    gr.Examples([barcode for barcode, _ in examples], inputs=[dna], label="Example barcodes",
                                example_labels=[label for _, label in examples])
            with gr.Column():
                status = gr.Markdown("Paste a barcode or upload a file, then press **Identify**.", elem_id="status")
                lineage = gr.Dataframe(headers=["rank", "prediction", "confidence"], label="Predicted lineage",
                                       interactive=False, elem_id="lineage")
                species = gr.Label(num_top_classes=5, label="Species (confidence)")
        gallery = gr.Gallery(label="Nearest reference specimens", columns=5, height=260, visible=thumbnails,
                             elem_id="gallery")
        neighbours = gr.Dataframe(headers=NEIGHBOUR_HEADERS, label="Nearest reference specimens", interactive=False,
                                  wrap=True, elem_id="neighbours")
        # JPEG: a twelfth of PNG's encoding time, which matters when the page is busy.
        where = gr.Image(label="Where they were collected", interactive=False, format="jpeg", elem_id="map")
        with gr.Accordion("Full result (JSON)", open=False):
            details = gr.JSON()
        button.click(lambda *inputs: run_identification(index, *inputs), inputs=[dna, fasta, photo],
                     outputs=[status, lineage, species, gallery, neighbours, where, details], api_name="identify")
        gr.Markdown(FOOTER, elem_id="footer")
    return demo


def preview_photo(path: str | None):
    """The uploaded photograph, checked like a query (size, format, pixels) and shrunk for display; None when it
    cannot be read (pressing Identify then says why)."""
    if not path:
        return None
    try:
        photo = bioscan5m.identification.open_photo(path)
    except bioscan5m.InputError:
        return None
    photo.thumbnail((480, 480))
    return photo


FOOTER = ("---\nData: [BIOSCAN-5M](https://github.com/bioscan-ml/BIOSCAN-5M) (CC BY 3.0), Gharaee et al., "
          "*BIOSCAN-5M: A Multimodal Dataset for Insect Biodiversity*, NeurIPS 2024 "
          "([paper](https://arxiv.org/abs/2406.12723)). Page: the bioscan5m package (MIT). Identifications are "
          "suggestions from the nearest reference barcodes, not an expert determination.")


def calibration_warning(index) -> str | None:
    """A warning for the page when the index cannot say which specimens may be undescribed."""
    calibration = (index.manifest.get("calibration") or {}).get("dna") or {}
    auroc = calibration.get("novelty_auroc")
    if not calibration or calibration.get("novelty_threshold") is None:
        return ("> ⚠️ **No novelty threshold**: this index was built without calibration (or it failed), so the page "
                "cannot flag possibly undescribed species, and confidences are uncalibrated.")
    if auroc is not None and auroc < 0.6:
        return (f"> ⚠️ **Unreliable novelty flag**: on held-out records its threshold separated known from novel "
                f"species with AUROC {auroc:.2f} only (0.5 is chance).")
    return None


def serve(index: str | os.PathLike | None = None, model: str | None = None, host: str = "127.0.0.1",
          port: int | None = 7860, **launch_kwargs) -> gr.Blocks:
    """Load ``index`` (default: the embedded synthetic demo) and serve the page.

    Blocks until interrupted, unless ``prevent_thread_lock=True`` is passed (tests); returns the running page,
    whose ``local_url`` says where it listens. ``port=None`` takes the first free port from 7860.
    """
    import faiss

    # Requests run side by side, one per worker thread; one query's scan of the keys is memory-bound, so
    # OpenMP threads inside it only contend (measured 3x slower with 2 threads on 2 busy cores, BENCHMARKS.md).
    faiss.omp_set_num_threads(1)
    folder = Path(index) if index else demo_index()
    demo = build_demo(bioscan5m.load_index(folder, model=model))
    # Queue positions are sent to waiting clients once a second, not after every event: with 'auto', 20 waiting
    # clients get 20 messages per answer, and the server spends its time on those, not on identifications.
    demo.queue(default_concurrency_limit=CONCURRENT_IDENTIFICATIONS, status_update_rate=QUEUE_STATUS_SECONDS)
    # The gallery serves the index's thumbnails, which sit outside gradio's own folders; load_index has checked
    # that each is a regular file inside it. Nothing else of the index folder is served.
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD,
                allowed_paths=[str((folder / "thumbnails").resolve())], **launch_kwargs)
    return demo


def main(argv: list[str] | None = None) -> int:
    """``bioscan5m serve`` (one command line for the page, wherever it is started from)."""
    import sys

    from ..cli import main as command_line

    return command_line(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
