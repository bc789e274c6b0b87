"""Published CLIBD checkpoints: files in exactly the original format (its SimpleCLIP, rebuilt below from
bioscan-ml/clibd's bioscanclip/model/*.py at a tiny size) convert into ClibdModel with the original's outputs."""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from transformers import AutoModel, AutoProcessor, BertConfig, BertForMaskedLM, BertModel, BertTokenizerFast

from bioscan5m.modeling.convert_clibd import CLIBD_5M_CHECKPOINT, convert_clibd

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_VIT = dict(img_size=32, embed_dim=32, depth=2, num_heads=2)
TINY_BERT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TAXA = ["Diptera Cecidomyiidae Asynapta Asynapta longicauda", "Hymenoptera Formicidae not_classified not_classified",
        "Lepidoptera Noctuidae Euxoa Euxoa tessellata"]


# ---------------------------------------------------------------- the original model (bioscanclip/model/*.py)
class LoraQkvTimm(nn.Module):
    """image_encoder.py _LoRA_qkv_timm: rank-r adapters added to the query and value thirds of qkv."""

    def __init__(self, qkv, rank=4):
        super().__init__()
        width = qkv.in_features
        self.qkv, self.dim = qkv, width
        self.linear_a_q, self.linear_b_q = nn.Linear(width, rank, bias=False), nn.Linear(rank, width, bias=False)
        self.linear_a_v, self.linear_b_v = nn.Linear(width, rank, bias=False), nn.Linear(rank, width, bias=False)

    def forward(self, x):
        qkv = self.qkv(x)
        qkv[:, :, :self.dim] += self.linear_b_q(self.linear_a_q(x))
        qkv[:, :, -self.dim:] += self.linear_b_v(self.linear_a_v(x))
        return qkv


class OriginalImageEncoder(nn.Module):
    def __init__(self, vit, name, output_dim):
        super().__init__()
        for block in vit.blocks:   # lora_layer=[] is falsy: every block gets adapters
            block.attn.qkv = LoraQkvTimm(block.attn.qkv)
        vit.reset_classifier(num_classes=output_dim)
        self.name = name
        setattr(self, name, vit)

    def forward(self, x):
        return getattr(self, self.name)(x)


class OriginalDnaEncoder(nn.Module):
    def __init__(self, bert, name, output_dim):
        super().__init__()
        bert.cls.predictions.decoder = nn.Linear(bert.cls.predictions.decoder.in_features, output_dim)
        self.name = name
        setattr(self, name, bert)

    def forward(self, ids):
        return getattr(self, self.name)(ids).logits.softmax(dim=-1).mean(dim=1)


class OriginalLanguageEncoder(nn.Module):
    def __init__(self, bert, name, output_dim):
        super().__init__()
        self.name = name
        setattr(self, name, bert)
        self.proj = nn.Linear(bert.pooler.dense.out_features, output_dim)

    def forward(self, text):
        return self.proj(getattr(self, self.name)(**text).last_hidden_state.mean(dim=1))


class SimpleClip(nn.Module):
    def __init__(self, image, dna, text):
        super().__init__()
        self.image_encoder, self.dna_encoder, self.language_encoder = image, dna, text
        self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))


def original_model(old_names: bool = False, text: bool = True, output_dim: int = 16) -> SimpleClip:
    torch.manual_seed(0)
    names = ("lora_vit", "lora_barcode_bert", "lora_bert") if old_names else (
        "base_image_encoder", "base_dna_encoder", "base_language_encoder")
    image = OriginalImageEncoder(timm.create_model("vit_base_patch16_224", pretrained=False, **TINY_VIT), names[0],
                                 output_dim)
    dna = OriginalDnaEncoder(BertForMaskedLM(BertConfig(vocab_size=4 ** 5 + 3, **TINY_BERT)), names[1], output_dim)
    language = OriginalLanguageEncoder(BertModel(BertConfig(vocab_size=64, **TINY_BERT)), names[2],
                                       output_dim) if text else None
    model = SimpleClip(image, dna, language).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "linear_b_" in name:  # trained adapters are not zero
                parameter.normal_(0, 0.05)
        model.logit_scale.fill_(3.2)
    return model


def original_dna_ids(barcodes: list[str]) -> torch.Tensor:
    """dna_encoder.py: PadSequence(660) with N, non-overlapping 5-mers, torchtext vocabulary
    <MASK>, <CLS>, <UNK> + product('ACGT'), any other k-mer <UNK>, led by id 0."""
    vocabulary = {"".join(kmer): 3 + i for i, kmer in enumerate(itertools.product("ACGT", repeat=5))}
    rows = []
    for barcode in barcodes:
        barcode = barcode[:660] + "N" * max(0, 660 - len(barcode))
        rows.append([0] + [vocabulary.get(barcode[i:i + 5], 2) for i in range(0, 660, 5)])
    return torch.tensor(rows)


def original_state_dict(model: SimpleClip) -> dict:
    state_dict = model.state_dict()
    for key in list(state_dict):   # transformers 4.29 saved BERT's position_ids buffers
        if key.endswith("embeddings.word_embeddings.weight"):
            state_dict[key.replace("word_embeddings.weight", "position_ids")] = torch.arange(512)[None]
    return state_dict


@pytest.fixture(scope="module")
def text_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer in bert-small's format, over this test's taxonomy words."""
    folder = tmp_path_factory.mktemp("bert-small-tokenizer")
    words = sorted({word.lower() for text in TAXA for word in text.split()})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def real_barcodes(bold_root):
    from bioscan5m import read_metadata

    barcodes = read_metadata(bold_root, split="test")["dna_barcode"].tolist()
    return [barcodes[0], barcodes[1][:400], barcodes[2] + "ACGT" * 30, barcodes[3].replace("A", "N", 3)]


def convert(path, out, text_tokenizer, **kwargs):
    return convert_clibd(path, out_dir=out, text_tokenizer=str(text_tokenizer), image_model_kwargs=TINY_VIT,
                         dna_attention_heads=2, text_attention_heads=2, **kwargs)


@pytest.mark.parametrize("old_names", [False, True])
def test_conversion_reproduces_the_original_model(tmp_path, text_tokenizer, real_barcodes, images_root, old_names):
    original = original_model(old_names)
    torch.save(original_state_dict(original), tmp_path / "best.pth")
    converted = convert(tmp_path / "best.pth", tmp_path / "converted", text_tokenizer)
    tokenizer = BertTokenizerFast.from_pretrained(text_tokenizer)
    pixels = torch.rand(2, 3, 32, 32)
    text = tokenizer(TAXA, padding="max_length", max_length=20, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = [F.normalize(x, dim=-1) for x in (original.image_encoder(pixels),
                                                     original.dna_encoder(original_dna_ids(real_barcodes)),
                                                     original.language_encoder(dict(text)))]
        processor = AutoProcessor.from_pretrained(tmp_path / "converted", trust_remote_code=True)
        reloaded = AutoModel.from_pretrained(tmp_path / "converted", trust_remote_code=True).eval()
        for model in (converted, reloaded):
            dna = processor(dna=real_barcodes)
            words = processor(text=TAXA)
            got = [model.get_image_features(pixels, normalize=True),
                   model.get_dna_features(dna["dna_input_ids"], dna["dna_attention_mask"], normalize=True),
                   model.get_text_features(words["text_input_ids"], words["text_attention_mask"], normalize=True)]
            for name, ours, theirs in zip(("image", "DNA", "text"), got, expected):
                torch.testing.assert_close(ours, theirs, atol=2e-6, rtol=1e-5, msg=f"{name} embeddings differ")
            assert torch.isclose(model(pixel_values=pixels, return_loss=False).logit_scale,
                                 original.logit_scale.exp())

    # The original's evaluation transform: ToTensor, Resize(256), CenterCrop, no normalisation.
    from torchvision import transforms

    photo = Image.open(sorted((images_root / "specimens").glob("*.jpg"))[0]).convert("RGB")
    reference = transforms.Compose([transforms.ToTensor(), transforms.Resize(256, antialias=True),
                                    transforms.CenterCrop(32)])(photo)
    ours = processor(images=[photo])["pixel_values"][0]
    assert (ours - reference).abs().max() < 2 / 255
    card = (tmp_path / "converted" / "README.md").read_text()
    assert "converted from the published CLIBD checkpoint" in card and "best.pth" in card


def test_two_tower_checkpoints_and_the_hub(tmp_path, text_tokenizer, real_barcodes, hub):
    original = original_model(text=False)
    buffer = io.BytesIO()
    torch.save(original_state_dict(original), buffer)
    hub.files[("bioscan-ml/clibd", "main", CLIBD_5M_CHECKPOINT)] = buffer.getvalue()
    converted = convert("bioscan-ml/clibd", tmp_path / "converted", text_tokenizer)   # the default file
    assert converted.config.modalities == ["image", "dna"]
    assert ("GET", f"/bioscan-ml/clibd/resolve/main/{CLIBD_5M_CHECKPOINT}") in {
        request[:2] for request in hub.requests}
    with torch.no_grad():
        expected = F.normalize(original.dna_encoder(original_dna_ids(real_barcodes)), dim=-1)
        dna = AutoProcessor.from_pretrained(tmp_path / "converted", trust_remote_code=True)(dna=real_barcodes)
        torch.testing.assert_close(converted.get_dna_features(dna["dna_input_ids"], dna["dna_attention_mask"],
                                                              normalize=True), expected, atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="no trained text tower"):
        converted.get_text_features(torch.zeros(1, 4, dtype=torch.long))


def test_bad_checkpoints_are_refused(tmp_path, text_tokenizer):
    state_dict = original_state_dict(original_model())
    torch.save({k: v for k, v in state_dict.items() if not k.startswith("image_encoder.")}, tmp_path / "no_image.pth")
    with pytest.raises(ValueError, match="no image tower"):
        convert(tmp_path / "no_image.pth", None, text_tokenizer)
    torch.save({**state_dict, "optimizer.step": torch.zeros(1)}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match="keys outside CLIBD's towers"):
        convert(tmp_path / "extra.pth", None, text_tokenizer)
    wrong = dict(state_dict)
    wrong["dna_encoder.base_dna_encoder.bert.embeddings.word_embeddings.weight"] = torch.zeros(100, 32)
    torch.save(wrong, tmp_path / "wrong_vocabulary.pth")
    with pytest.raises(ValueError, match="not 4\\*\\*k \\+ 3"):
        convert(tmp_path / "wrong_vocabulary.pth", None, text_tokenizer)
    torch.save(state_dict, tmp_path / "best.pth")
    with pytest.raises(ValueError, match="do not fit vit_small_patch16_224"):   # a ViT of another size
        convert_clibd(tmp_path / "best.pth", image_model_name="vit_small_patch16_224", dna_attention_heads=2,
                      text_attention_heads=2)


class Payload:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickled_code_is_never_run(tmp_path, capsys):
    torch.save({"logit_scale": torch.ones(()), "payload": Payload()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="weights-only torch checkpoint \\(Unsupported global") as refused:
        convert_clibd(tmp_path / "unsafe.pth")
    assert "unpickled" not in capsys.readouterr().out and "\n" not in str(refused.value)
    (tmp_path / "garbage.pth").write_bytes(b"x\n")
    with pytest.raises(ValueError, match="garbage.pth: not a weights-only torch checkpoint") as refused:
        convert_clibd(tmp_path / "garbage.pth")
    assert "\n" not in str(refused.value)   # torch's several paragraphs cut to the line that says why


def test_cli_refuses_a_checkpoint_that_is_not_clibd(tmp_path, capsys):
    from bioscan5m import cli

    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(258, 8)}, tmp_path / "barcodebert.pth")
    code = cli.main(["convert-clibd", str(tmp_path / "barcodebert.pth"), "--out", str(tmp_path / "converted")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("bioscan5m ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "barcodebert.pth" in lines[0] and "not a CLIBD checkpoint" in lines[0]
    assert not (tmp_path / "converted").exists()
