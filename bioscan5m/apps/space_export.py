"""A folder that is a working Hugging Face Space: the identification page over one key index, as is.

    bioscan5m space export my-space --index runs/index        # then: hf upload USER/SPACE my-space . --repo-type space

The folder holds everything the Space needs and nothing of this machine: the page's README header, ``app.py``,
``requirements.txt`` (CPU-only torch, and the package's dependencies with the extras the page needs, from the
package index; gradio comes from the header's ``sdk_version``), the ``bioscan5m`` source (imported by ``app.py``
from the folder itself, so no wheel and no local path), the key index, the model it was built with, and the
licences.
"""

from __future__ import annotations

import os
import shutil
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from ..data import release
from ..staging import check_output, staged_folder

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
#: Files of a model folder a Space needs: configuration, weights, tokenizers, processors and their code.
MODEL_SUFFIXES = (".json", ".safetensors", ".py", ".txt")
#: Packages the Space gets elsewhere: gradio from the header's sdk_version, torch from the CPU wheel index.
PROVIDED = ("gradio", "torch", "torchvision")
#: The package's extras the page needs beside its core: the models, and the key index's search (gradio, the
#: app extra, is in PROVIDED).
SPACE_EXTRAS = ("models", "evaluation")
CPU_WHEELS = "https://download.pytorch.org/whl/cpu"

APP = '''"""The identification page over the key index in this folder (made by `bioscan5m space export`)."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bioscan5m source shipped in this folder

from bioscan5m.apps.space import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(["--index", str(HERE / "index"){model}, *sys.argv[1:]]))
'''


def export_space(out_dir: str | os.PathLike, index: str | os.PathLike, model: str | os.PathLike | None = None,
                 title: str = "BIOSCAN-5M specimen identification", overwrite: bool = False) -> Path:
    """Write the Space folder ``out_dir`` for the key index ``index`` (``model``: its model folder, if it moved
    since the index was built). The index is loaded first, so a damaged index or a changed model is refused before
    anything is written; the folder is staged and renamed into place when complete."""
    import bioscan5m

    out_dir = check_output(out_dir, overwrite, inputs=(index, model), copies_inputs=True)
    key_index = bioscan5m.load_index(index, model=model)
    model_dir = key_index.model_dir
    check_output(out_dir, overwrite, inputs=(model_dir,), copies_inputs=True)   # the model the index names
    with staged_folder(out_dir, overwrite) as staging:
        shutil.copytree(PACKAGE_ROOT, staging / "bioscan5m", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        _copy_index(key_index, staging / "index")
        if model_dir is not None:
            _copy_model(Path(model_dir), staging / "model")
        (staging / "app.py").write_text(APP.format(model=', "--model", str(HERE / "model")' if model_dir else ""))
        (staging / "requirements.txt").write_text(requirements())
        (staging / "README.md").write_text(readme(key_index, title))
        licence = PACKAGE_ROOT.parent / "LICENSE"
        if licence.is_file():
            shutil.copyfile(licence, staging / "LICENSE")
    return Path(out_dir)


def _copy_index(key_index, destination: Path) -> None:
    """The files `load_index` checked: those its manifest lists, and the thumbnails that are regular files (a
    Space is public, so nothing else lying in the folder, and no link out of it, goes with it)."""
    from ..identification.key_index import MANIFEST_NAME, THUMBNAIL_DIR

    destination.mkdir()
    for name in (MANIFEST_NAME, *key_index.manifest["files"]):
        shutil.copyfile(key_index.folder / name, destination / name)
    thumbnails = key_index.folder / THUMBNAIL_DIR
    if thumbnails.is_dir() and not thumbnails.is_symlink():
        (destination / THUMBNAIL_DIR).mkdir()
        with os.scandir(thumbnails) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    shutil.copyfile(entry.path, destination / THUMBNAIL_DIR / entry.name)


def _copy_model(source: Path, destination: Path) -> None:
    for folder in (source, source / "dna_tokenizer"):
        if not folder.is_dir():
            continue
        target = destination / folder.relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file() and not path.is_symlink() and path.suffix in MODEL_SUFFIXES:
                shutil.copyfile(path, target / path.name)


def requirements() -> str:
    """The Space's requirements: CPU-only torch at this installation's versions, then the package's own
    dependencies as it declares them."""
    lines = ["# CPU-only torch: a Space without a GPU needs no CUDA libraries.", f"--extra-index-url {CPU_WHEELS}"]
    for name in ("torch", "torchvision"):
        lines.append(f"{name}=={_base_version(metadata.version(name))}")
    for requirement in map(Requirement, metadata.requires("bioscan5m") or []):
        needed = requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                                   for extra in SPACE_EXTRAS)
        if needed and requirement.name not in PROVIDED:
            lines.append(f"{requirement.name}{requirement.specifier}")
    return "\n".join(lines) + "\n"


def _base_version(version: str) -> str:
    return version.split("+")[0]  # 2.5.1+cu124 -> 2.5.1: the CPU index names its wheels 2.5.1+cpu


def readme(key_index, title: str) -> str:
    """The Space's README: its Hub header, what the page answers, the reference library in words, the licences."""
    import gradio

    library = key_index.library()
    header = ["---", f"title: {title}", "emoji: 🪲", "colorFrom: green", "colorTo: blue", "sdk: gradio",
              f"sdk_version: {gradio.__version__}", "app_file: app.py",
              f'python_version: "{sys.version_info.major}.{sys.version_info.minor}"', "pinned: false",
              "license: mit", "short_description: Identify an insect from its DNA barcode"
              + (" or photograph" if "image" in key_index.modalities else ""), "---", ""]
    body = [f"# {title}", "",
            "Paste a COI-5P DNA barcode (or upload a FASTA record)"
            + (", and/or upload a specimen photograph" if "image" in key_index.modalities else "")
            + ". The page answers with the predicted order → family → genus → species with confidences, a "
            "\"possibly undescribed species\" flag when the nearest reference is farther than a calibrated "
            "threshold, and the nearest reference specimens with where they were collected.", "",
            "## Reference library", "", library["sentence"], ""]
    if library["synthetic"]:
        body += ["> **Synthetic reference library.** Its records were generated to demonstrate the page; they are "
                 "not real specimens, and its answers say nothing about real insects.", ""]
    body += ["## Licences and attribution", "",
             "- Code: MIT (`LICENSE`), the [bioscan5m](" + release.HOMEPAGE + ") package.",
             f"- Data: BIOSCAN-5M, {release.LICENSE.upper()}: Gharaee et al., *BIOSCAN-5M: A Multimodal Dataset for "
             "Insect Biodiversity*, NeurIPS 2024 ([paper](https://arxiv.org/abs/2406.12723), "
             f"[data]({release.HOMEPAGE})).", ""]
    return "\n".join(header + body)
