"""CLIBD model, loss, image processor, processor and taxonomy tokenizer: behaviour, bad input, and remote-code loading."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from bioscan5m.modeling import ClibdConfig, ClibdImageProcessor, ClibdModel, ClibdProcessor
from bioscan5m.modeling.loss_clibd import ClibdLoss
from bioscan5m.tokenization.tokenization_taxonomy import build_taxonomy_tokenizer, taxonomy_string

TINY = dict(image_model_name="vit_tiny_patch16_224", image_model_kwargs=dict(embed_dim=64, depth=2, num_heads=2),
            image_size=64, projection_dim=16,
            dna_config=dict(k_mer=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
            text_config=dict(vocab_size=40, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=32))


# The 2 project cores are shared: CLIBD steps run on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(**overrides) -> ClibdModel:
    torch.manual_seed(0)
    return ClibdModel(ClibdConfig(**{**TINY, **overrides})).eval()


def inputs(batch=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 258, (batch, 20), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, 15:] = 0
    text = torch.randint(5, 40, (batch, 6), generator=generator)
    return {"pixel_values": torch.randn(batch, 3, 64, 64, generator=generator), "dna_input_ids": ids,
            "dna_attention_mask": mask, "text_input_ids": text, "text_attention_mask": torch.ones_like(text)}


def test_dna_features_pool_as_the_dna_config_says():
    model = tiny_model(dna_config={**TINY["dna_config"], "pooling": "per_position", "per_position_size": 4})
    batch = inputs()
    ids, mask = batch["dna_input_ids"], batch["dna_attention_mask"]
    assert model.dna_projection.in_features == model.config.dna_config.embedding_size == (660 // 4) * 4
    with torch.no_grad():
        hidden = model.dna_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.dna_projection(model.dna_model.pool(hidden, ids, mask))
        assert torch.allclose(model.get_dna_features(ids, mask), expected)
    assert tiny_model().dna_projection.in_features == TINY["dna_config"]["hidden_size"]  # mean pooling: hidden width


# ---------------------------------------------------------------------------------------------- tokenizer
def test_taxonomy_string_matches_clibd():
    record = {"order": "Diptera", "family": "Cecidomyiidae", "genus": None, "species": float("nan")}
    assert taxonomy_string(record) == "Diptera Cecidomyiidae not_classified not_classified"
    assert taxonomy_string(order="Diptera", family="", genus="Aedes", species="Aedes aegypti") == \
        "Diptera not_classified Aedes Aedes aegypti"
    with pytest.raises(ValueError, match="Unknown rank"):
        taxonomy_string(kingdom="Animalia")


def test_taxonomy_tokenizer_roundtrip_without_custom_code(tmp_path):
    from transformers import AutoTokenizer

    texts = ["Diptera Culicidae Aedes Aedes aegypti", "Diptera Culicidae not_classified not_classified"]
    tokenizer = build_taxonomy_tokenizer(texts)
    encoded = tokenizer(["diptera culicidae Aedes Aedes novus"])["input_ids"][0]
    vocab = tokenizer.get_vocab()
    assert encoded[0] == vocab["[CLS]"] and encoded[-1] == vocab["[SEP]"]
    assert encoded[1:4] == [vocab["diptera"], vocab["culicidae"], vocab["aedes"]]
    assert encoded[5] == vocab["[UNK]"]                      # unseen species epithet
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)          # a plain fast tokenizer: no trust_remote_code
    assert loaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert loaded.model_max_length == 20


# ---------------------------------------------------------------------------------------------- processor
def test_processor_constants_are_bioscans():
    from bioscan5m.data.release import RGB_MEAN, RGB_STD

    processor = ClibdImageProcessor()
    assert tuple(processor.image_mean) == tuple(RGB_MEAN) and tuple(processor.image_std) == tuple(RGB_STD)
    assert processor.size["shortest_edge"] == 256 and processor.crop_size["height"] == 224


def test_processor_matches_manual_torchvision_pipeline(images_root):
    from torchvision import transforms

    from bioscan5m.data.release import RGB_MEAN, RGB_STD

    paths = sorted((images_root / "cropped").glob("*"))[:3] + sorted((images_root / "orders").glob("*.jpg"))[:1]
    images = [Image.open(p).convert("RGB") for p in paths]
    manual = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                                 transforms.Normalize(RGB_MEAN, RGB_STD)])
    expected = torch.stack([manual(image) for image in images])
    got = torch.cat([ClibdImageProcessor()(image, return_tensors="pt")["pixel_values"] for image in images])
    assert got.shape == expected.shape == (len(images), 3, 224, 224)
    # PIL resizes uint8 pixels, torch resizes and rounds on tensors: the two agree to rounding.
    difference = (got - expected).abs()
    assert difference.mean() < 0.02, difference.mean()
    assert torch.quantile(difference.flatten(), 0.999) < 0.15


def test_processor_converts_modes_and_refuses_bad_input():
    processor = ClibdImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64})
    grey = Image.new("L", (100, 80), 128)
    rgba = Image.new("RGBA", (100, 80), (10, 20, 30, 255))
    out = processor([grey, rgba], return_tensors="pt")["pixel_values"]
    assert out.shape == (2, 3, 64, 64)
    assert torch.allclose(out[0, 0], out[0, 1], atol=0.1 * 7)  # grey: equal channels up to per-channel normalisation
    with pytest.raises(ValueError, match="too small"):
        processor(Image.new("RGB", (4, 300)))
    with pytest.raises(ValueError, match="uint8"):
        processor(np.random.rand(32, 32, 3).astype(np.float32))
    with pytest.raises(ValueError, match="No images"):
        processor([])
    with pytest.raises((ValueError, TypeError)):
        processor("not an image at all")


# ---------------------------------------------------------------------------------------------- model
def test_features_shapes_and_normalisation():
    model = tiny_model()
    batch = inputs()
    with torch.no_grad():
        image = model.get_image_features(batch["pixel_values"])
        dna = model.get_dna_features(batch["dna_input_ids"], batch["dna_attention_mask"])
        text = model.get_text_features(batch["text_input_ids"], batch["text_attention_mask"])
        output = model(**batch)
    for features, embeds in ((image, output.image_embeds), (dna, output.dna_embeds), (text, output.text_embeds)):
        assert features.shape == (4, 16)
        assert not torch.allclose(features.norm(dim=-1), torch.ones(4))      # projections are not normalised
        assert torch.allclose(embeds.norm(dim=-1), torch.ones(4), atol=1e-5)  # forward's embeddings are
        assert torch.allclose(embeds, torch.nn.functional.normalize(features, dim=-1), atol=1e-6)
    assert math.isclose(float(output.logit_scale), 1 / 0.07, rel_tol=1e-4)
    # DNA padding is masked: changing padded ids does not change the features.
    changed = batch["dna_input_ids"].clone()
    changed[0, 15:] = 7
    with torch.no_grad():
        assert torch.allclose(model.get_dna_features(changed, batch["dna_attention_mask"]), dna, atol=1e-5)


def test_loss_is_the_symmetric_clip_loss_over_pairs():
    torch.manual_seed(0)
    a, b, c = (torch.nn.functional.normalize(torch.randn(5, 8), dim=-1) for _ in range(3))
    scale = torch.tensor(10.0)
    target = torch.arange(5)

    def clip(x, y):
        logits = scale * x @ y.T
        return (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2

    loss, pairs = ClibdLoss()({"image": a, "dna": b, "text": None}, scale)
    assert torch.allclose(loss, clip(a, b)) and list(pairs) == ["image-dna"]
    loss, pairs = ClibdLoss()({"image": a, "dna": b, "text": c}, scale)
    assert torch.allclose(loss, (clip(a, b) + clip(a, c) + clip(b, c)) / 3)
    assert set(pairs) == {"image-dna", "image-text", "dna-text"}
    # Aligned pairs score lower than random ones.
    assert ClibdLoss()({"image": a, "dna": a}, scale)[0] < ClibdLoss()({"image": a, "dna": b}, scale)[0]
    with pytest.raises(ValueError, match="at least two"):
        ClibdLoss()({"image": a}, scale)


def test_two_modalities_and_missing_modalities():
    model = tiny_model()
    batch = inputs()
    output = model(pixel_values=batch["pixel_values"], dna_input_ids=batch["dna_input_ids"],
                   dna_attention_mask=batch["dna_attention_mask"])
    assert output.loss is not None and set(output.pair_losses) == {"image-dna"} and output.text_embeds is None
    assert model(pixel_values=batch["pixel_values"]).loss is None            # one modality: embeddings only
    with pytest.raises(ValueError, match="at least one modality"):
        model()


def test_bad_input_is_refused_clearly():
    model = tiny_model()
    batch = inputs()
    with pytest.raises(ValueError, match="64x64"):
        model.get_image_features(torch.randn(2, 3, 224, 224))
    with pytest.raises(ValueError, match="batch, 3"):
        model.get_image_features(torch.randn(2, 1, 64, 64))
    with pytest.raises(ValueError, match="uint8|normalised floats"):
        model.get_image_features(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="outside this model's vocabulary"):
        model.get_dna_features(batch["dna_input_ids"] + 1000)
    with pytest.raises(ValueError, match="does not match"):
        model.get_text_features(batch["text_input_ids"], batch["text_attention_mask"][:, :3])
    with pytest.raises(ValueError, match="Unknown metadata"):
        ClibdConfig(**{**TINY, "metadata_features": ["altitude"]})


def test_metadata_fusion_starts_neutral_and_needs_its_inputs():
    plain, fused = tiny_model(), tiny_model(metadata_features=["geo", "size"], size_log_mean=5.0, size_log_std=2.0)
    pixels = inputs()["pixel_values"]
    meta = dict(latitude=torch.tensor([10.0, -33.9, float("nan"), 43.5]), longitude=torch.tensor([-85.0, 18.4, 0.0, -80.2]),
                size=torch.tensor([300.0, float("nan"), 5000.0, 12.0]))
    with torch.no_grad():
        # Zero-initialised metadata output layer: the fused model starts out as its plain image tower.
        plain_features = fused.image_projection(fused.image_encoder(pixels))
        assert torch.allclose(fused.get_image_features(pixels, **meta), plain_features, atol=1e-6)
        assert plain.metadata_encoder is None
        encoded = fused.metadata_encoder.encode(**meta)
    assert encoded.shape == (4, 6)
    assert torch.allclose(encoded[:, :3].norm(dim=-1), torch.tensor([1.0, 1.0, 0.0, 1.0]), atol=1e-6)
    assert encoded[:, 3].tolist() == [0, 0, 1, 0] and encoded[:, 5].tolist() == [0, 1, 0, 0]
    assert math.isclose(float(encoded[0, 4]), (math.log1p(300.0) - 5.0) / 2.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="fuses geography"):
        fused.get_image_features(pixels, size=meta["size"])
    with pytest.raises(ValueError, match="latitude must lie"):
        fused.get_image_features(pixels, latitude=torch.full((4,), 95.0), longitude=meta["longitude"], size=meta["size"])


def test_freeze_and_partial_fine_tuning():
    model = tiny_model()
    model.freeze("dna")
    assert not any(p.requires_grad for p in model.dna_model.parameters())
    assert all(p.requires_grad for p in model.dna_projection.parameters())
    model.freeze("image", trainable_layers=1)
    trainable = {n for n, p in model.image_encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("blocks.1.", "norm.", "fc_norm.")) for n in trainable)
    assert not model.image_encoder.patch_embed.proj.weight.requires_grad
    with pytest.raises(ValueError, match="blocks"):
        model.freeze("text", trainable_layers=5)


def test_registered_with_auto_classes(tmp_path):
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    model = tiny_model()
    model.save_pretrained(tmp_path)
    ClibdImageProcessor().save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), ClibdConfig)
    assert type(AutoModel.from_pretrained(tmp_path)) is ClibdModel
    assert type(ClibdImageProcessor.from_pretrained(tmp_path)) is ClibdImageProcessor
    # The processor is not registered eagerly (that would import torchvision with bioscan5m): through the Auto class
    # it loads from the code saved beside it.
    assert type(AutoImageProcessor.from_pretrained(tmp_path, trust_remote_code=True)).__name__ == "ClibdImageProcessor"


def tiny_processor():
    from bioscan5m.tokenization import KmerTokenizerFast

    return ClibdProcessor(ClibdImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64}),
                          build_taxonomy_tokenizer(["Diptera Culicidae Aedes Aedes aegypti", "Diptera Sciaridae Bradysia"]),
                          KmerTokenizerFast(k=4))


def test_processor_prepares_every_input_the_model_takes_and_round_trips(tmp_path, images_root):
    from transformers import AutoProcessor

    processor = tiny_processor()
    photos = [Image.open(path).convert("RGB") for path in sorted(images_root.rglob("*.jpg"))[:2]]
    texts = ["Diptera Culicidae Aedes Aedes aegypti", "Diptera Sciaridae Bradysia not_classified"]
    batch = processor(images=photos, dna=["ACGTACGTAAAAT", "ACGTAC"], text=texts, latitude=[45.5, None])
    assert set(batch) == {"pixel_values", "latitude", "dna_input_ids", "dna_attention_mask", "text_input_ids",
                          "text_attention_mask"}
    assert tuple(batch["pixel_values"].shape) == (2, 3, 64, 64) and math.isnan(batch["latitude"][1])
    # The same tensors as each component called on its own.
    assert torch.equal(batch["pixel_values"], processor.image_processor(photos, return_tensors="pt")["pixel_values"])
    dna = processor.dna_tokenizer(["ACGTACGTAAAAT", "ACGTAC"], padding=True, return_tensors="pt")
    assert torch.equal(batch["dna_input_ids"], dna["input_ids"]) and batch["dna_attention_mask"][1].sum() < dna["attention_mask"][0].sum()
    model = tiny_model(text_config={**TINY["text_config"], "vocab_size": len(processor.tokenizer)})
    with torch.no_grad():
        output = model(**{k: v for k, v in batch.items() if k != "latitude"})
    assert output.loss is not None and output.image_embeds.shape == (2, 16)
    processor.save_pretrained(tmp_path)
    for loaded in (ClibdProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)):
        again = loaded(images=photos, dna=["ACGTACGTAAAAT", "ACGTAC"], text=texts)
        for key in ("pixel_values", "dna_input_ids", "text_input_ids"):
            assert torch.equal(again[key], batch[key]), key


def test_processor_refuses_what_it_cannot_prepare():
    processor = tiny_processor()
    with pytest.raises(ValueError, match="at least one of images, dna or text"):
        processor()
    with pytest.raises(TypeError, match="Unexpected arguments"):
        processor(dna=["ACGT"], padding="max_length")
    with pytest.raises(ValueError, match="latitude has 1 values for 2 images"):
        processor(images=[np.full((80, 80, 3), 200, np.uint8)] * 2, latitude=[1.0])


# ---------------------------------------------------------------------------------------------- remote code
REMOTE_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.modules["bioscan5m"] = None          # our package must not be needed (import raises ImportError)
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor
    folder, inputs_path, out_path = sys.argv[1:4]
    torch.set_num_threads(1)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    x = load_file(inputs_path)
    with torch.no_grad():
        out = {"image": model.get_image_features(x["pixel_values"]),
               "dna": model.get_dna_features(x["dna_input_ids"], x["dna_attention_mask"]),
               "text": model.get_text_features(x["text_input_ids"], x["text_attention_mask"])}
    save_file({k: v.contiguous() for k, v in out.items()}, out_path)
    encoded = processor(dna=["ACGTACGTAAAA"], text=["diptera culicidae"])
    print(json.dumps({"model": type(model).__module__, "image_processor": type(image_processor).__name__,
                      "processor": type(processor).__module__ + "." + type(processor).__name__,
                      "dna_tokenizer": type(processor.dna_tokenizer).__module__,
                      "dna_ids": encoded["dna_input_ids"][0].tolist(), "text_ids": encoded["text_input_ids"][0].tolist()}))
""")


def test_save_load_in_fresh_process_without_package(tmp_path):
    from safetensors.torch import load_file, save_file

    from bioscan5m.tokenization import KmerTokenizerFast

    folder = tmp_path / "clibd"
    model = tiny_model()
    model.save_pretrained(folder)
    text_tokenizer = build_taxonomy_tokenizer(["Diptera Culicidae Aedes Aedes aegypti"])
    dna_tokenizer = KmerTokenizerFast(k=4)
    image_processor = ClibdImageProcessor(size={"shortest_edge": 72}, crop_size={"height": 64, "width": 64})
    ClibdProcessor(image_processor, text_tokenizer, dna_tokenizer).save_pretrained(folder)
    for name in ("modeling_clibd.py", "configuration_clibd.py", "loss_clibd.py", "modeling_barcodebert.py",
                 "configuration_barcodebert.py", "image_processing_clibd.py", "processing_clibd.py",
                 "processor_config.json", "dna_tokenizer/tokenization_kmer.py", "model.safetensors"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))
    batch = inputs()
    save_file(batch, tmp_path / "inputs.safetensors")
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": ""}
    done = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "inputs.safetensors"),
                           str(tmp_path / "out.safetensors")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-2000:]
    info = json.loads(lines[-1])
    assert info["model"].startswith("transformers_modules")
    assert info["image_processor"] == "ClibdImageProcessor"
    assert info["processor"].startswith("transformers_modules") and info["processor"].endswith(".ClibdProcessor")
    assert info["dna_tokenizer"].startswith("transformers_modules")
    assert info["dna_ids"] == dna_tokenizer(["ACGTACGTAAAA"])["input_ids"][0]
    assert info["text_ids"] == text_tokenizer(["diptera culicidae"])["input_ids"][0]
    remote = load_file(tmp_path / "out.safetensors")
    with torch.no_grad():
        local = {"image": model.get_image_features(batch["pixel_values"]),
                 "dna": model.get_dna_features(batch["dna_input_ids"], batch["dna_attention_mask"]),
                 "text": model.get_text_features(batch["text_input_ids"], batch["text_attention_mask"])}
    for name, value in local.items():
        assert torch.allclose(remote[name], value, atol=1e-6), name


def test_zero_shot_image_classification_pipeline_over_taxonomy_strings(tmp_path, images_root):
    """transformers' zero-shot image classification runs on a saved CLIBD folder: its scores are the softmax of the
    model's own scaled image–taxonomy similarities."""
    from transformers import pipeline

    processor = tiny_processor()
    model = tiny_model(text_config={**TINY["text_config"], "vocab_size": len(processor.tokenizer)})
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    photo = Image.open(next((images_root / "specimens").glob("*.jpg"))).convert("RGB")
    labels = ["Diptera Culicidae Aedes Aedes aegypti", "Diptera Sciaridae Bradysia not_classified"]
    classify = pipeline("zero-shot-image-classification", model=str(tmp_path), trust_remote_code=True)
    answer = classify(photo, candidate_labels=labels, hypothesis_template="{}")
    with torch.no_grad():
        output = model(**processor(images=[photo], text=labels))
    assert output.loss is None and output.logits_per_image.shape == (1, 2)  # one photo, two strings: no pairs
    expected = output.logits_per_image[0].softmax(-1)
    assert {item["label"]: item["score"] for item in answer} == pytest.approx(
        {label: float(p) for label, p in zip(labels, expected)}, abs=1e-5)
