"""Photographs and fusions as embedding sources: timm and CLIBD image towers over a release's image package, fused
DNA + image embeddings, and the commands that take them (cluster, retrieve, benchmark)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bioscan5m.cli import main
from bioscan5m.evaluation.benchmark import embed_records, parse_source, read_records

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")


@pytest.fixture(scope="module")
def test_vit_weights(tmp_path_factory):
    """Random weights of timm's small ``test_vit`` (160 px, 64 features), with its classifier head."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("test_vit", pretrained=False)
    path = tmp_path_factory.mktemp("timm") / "test_vit.safetensors"
    save_file({name: tensor.contiguous() for name, tensor in model.state_dict().items()}, path)
    return path


def test_timm_embeddings_match_a_plain_pil_and_torchvision_loop(sample_root, test_vit_weights, one_torch_thread):
    from PIL import Image
    from safetensors.torch import load_file
    from torchvision import transforms

    import bioscan5m
    from bioscan5m.embedding import TimmImageEncoder, embed_release_images

    dataset = bioscan5m.load_dataset(sample_root, "cropped_256", split="test")
    processids = dataset["processid"][:10][::-1]  # not in file order: rows must follow the ids given
    encoder = TimmImageEncoder("test_vit", test_vit_weights, num_threads=2)
    ours = embed_release_images(encoder, sample_root, processids, ["test"], batch_size=4, progress=False)

    reference = timm.create_model("test_vit", pretrained=False, num_classes=0)
    reference.load_state_dict({k: v for k, v in load_file(test_vit_weights).items() if not k.startswith("head.")})
    transform = transforms.Compose([transforms.Resize(160), transforms.CenterCrop(160), transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    row_of = {pid: i for i, pid in enumerate(dataset["processid"])}
    images = [dataset[row_of[pid]]["image"] for pid in processids]
    assert all(isinstance(image, Image.Image) for image in images)
    with torch.inference_mode():
        expected = reference.eval()(torch.stack([transform(image.convert("RGB")) for image in images])).numpy()
    assert ours.shape == (10, 64)
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_image_sources_cluster_retrieve_and_benchmark_the_release_photographs(sample_root, test_vit_weights,
                                                                              tmp_path, capsys):
    weights = ["--weights", str(test_vit_weights)]
    assert main(["cluster", "--embeddings", "image:test_vit", *weights, "--data", str(sample_root),
                 "--out", str(tmp_path / "c")]) == 0
    clustered = json.loads((tmp_path / "c" / "clustering.json").read_text())
    assert clustered["records"] == len(read_records(sample_root, "test+test_unseen"))
    assert "cropped_256 photographs" in clustered["source"] and 0 <= clustered["ami"]["species"] <= 1

    assert main(["retrieve", "--model", "image:test_vit", *weights, "--data", str(sample_root), "--top-k", "1,5",
                 "--out", str(tmp_path / "r")]) == 0
    species = json.loads((tmp_path / "r" / "retrieval.json").read_text())["image->image"]["species"]
    assert species["test"]["micro_top1"] <= species["test"]["micro_top5"]
    assert "image->image" in capsys.readouterr().out

    assert main(["benchmark", "--data", str(sample_root), "--model", "image:test_vit",
                 "--model", "kmer:4+0.5*image:test_vit", *weights, "--no-linear-probe",
                 "--out", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    fused = "4-mer counts + 0.5*test_vit"
    assert set(report["clustering"]) == {"test_vit", fused, "6-mer counts"}
    assert set(report["retrieval"][fused]) == {"dna+image->dna+image"}
    assert "image->image" in (tmp_path / "b" / "report.md").read_text()


def test_a_fused_source_concatenates_unit_parts_times_their_weights(sample_root, test_vit_weights):
    records = read_records(sample_root, "test_unseen")
    image = parse_source("image:test_vit", root=sample_root, weights=test_vit_weights)
    fused = parse_source("2*kmer:3+image:test_vit", root=sample_root, weights=test_vit_weights)
    rows = embed_records(fused, [records]).rows(records)
    kmer_width = rows.shape[1] - 64  # the k-mer part is compacted (SVD) as the source compacts it for clustering
    assert rows.shape[0] == len(records) and 0 < kmer_width <= 4 ** 3
    np.testing.assert_allclose(np.linalg.norm(rows[:, :kmer_width], axis=1), 2.0, rtol=1e-5)
    image_rows = embed_records(image, [records]).rows(records)
    np.testing.assert_allclose(rows[:, kmer_width:],
                               image_rows / np.linalg.norm(image_rows, axis=1, keepdims=True), atol=1e-6)


def test_clibd_towers_are_sources_for_photographs_and_barcodes(space_demo_index, sample_root):
    from bioscan5m.embedding import ClibdEncoder

    clibd = space_demo_index.parent / "clibd"
    records = read_records(sample_root, "test_unseen")
    encoder = ClibdEncoder(clibd)
    dna = embed_records(parse_source(f"dna:{clibd}"), [records]).rows(records)
    np.testing.assert_allclose(dna, encoder.embed_dna(records.sequences), atol=1e-5)
    images = embed_records(parse_source(f"image:{clibd}", root=sample_root), [records]).rows(records)
    assert images.shape == dna.shape
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, rtol=1e-5)  # CLIBD's features are unit vectors


@pytest.mark.parametrize(("spec", "options", "message"), [
    ("image:no_such_model", {}, "neither a saved CLIBD folder nor a timm model name"),
    ("image:test_vit", {"root": None}, "give the release root"),
    ("kmer:4", {"weights": "w.safetensors"}, "--weights applies to image:TIMM_NAME"),
    ("0*kmer:4+kmer:5", {}, "weight must be positive"),
    ("emb.npy+kmer:4", {}, "cannot be fused"),
    ("kmer:4", {"reading_frames": 3}, "--reading-frames applies to BarcodeBERT models"),
    ("kmer:4+image:test_vit", {"reading_frames": 3}, "the spec has none"),
])
def test_bad_source_specs_are_refused_with_the_reason(spec, options, message, tmp_path, sample_root):
    (tmp_path / "emb.npy").write_bytes(b"")
    options = {"root": sample_root, **options}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        parse_source(spec.replace("emb.npy", str(tmp_path / "emb.npy")), **options)


def test_weights_of_another_model_are_refused_before_any_image_is_read(tmp_path, sample_root):
    from safetensors.torch import save_file

    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), tmp_path / "resnet.safetensors")
    with pytest.raises(ValueError, match="not weights of this model"):
        parse_source("image:test_vit", root=sample_root, weights=tmp_path / "resnet.safetensors")
    (tmp_path / "damaged.safetensors").write_bytes(b"\x08")
    with pytest.raises(ValueError, match="not a readable .safetensors file"):
        parse_source("image:test_vit", root=sample_root, weights=tmp_path / "damaged.safetensors")
    (tmp_path / "weights.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="from .safetensors files only"):
        parse_source("image:test_vit", root=sample_root, weights=tmp_path / "weights.pt")
