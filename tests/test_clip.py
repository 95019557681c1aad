"""CLIP family: parity with transformers (test-only dependency), tokenizers, the shipped digits-clip.

Parity: random-init transformers models shaped like openai/clip-vit-large-patch14 (quick_gelu,
causal text mask, 77 positions, eos pooling by largest id (eos_token_id 2, as that config
says) and by eos_token_id as newer configs do), scaled down; their state dicts load into
latentzoo's classes with strict=True and every output agrees to 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from latentzoo.plugins.clip.model import CLIPModel, CLIPTextEncoder, CLIPVisionEncoder, hf_state_dict  # noqa: E402

TOL = 1e-5


def small_configs(eos_token_id: int, act: str = "quick_gelu", vocab: int = 1000):
    text = {
        "vocab_size": vocab,
        "hidden_size": 48,
        "intermediate_size": 192,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
        "eos_token_id": eos_token_id,
    }
    vision = {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_channels": 3,
        "image_size": 28,
        "patch_size": 7,
        "hidden_act": act,
        "layer_norm_eps": 1e-5,
    }
    return text, vision


def hf_clip(text: dict, vision: dict, projection_dim: int = 32):
    cfg = transformers.CLIPConfig(
        text_config={**text, "bos_token_id": text["vocab_size"] - 2, "pad_token_id": 1},
        vision_config=vision,
        projection_dim=projection_dim,
    )
    cfg.text_config.eos_token_id = text["eos_token_id"]
    torch.manual_seed(0)
    model = transformers.CLIPModel(cfg).eval()
    with torch.no_grad():  # random non-trivial norms and temperature
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or "layernorm" in name:
                p.add_(torch.randn_like(p) * 0.1)
        model.logit_scale.fill_(2.3)
    return model


def text_batch(vocab: int, eos: int, lengths=(5, 77, 12, 1)):
    """Rows of BOS, random ids, EOS, then padding (with EOS) up to the longest; a mask of real tokens."""
    g = torch.Generator().manual_seed(1)
    bos = vocab - 2
    n = max(lengths) + 2 if max(lengths) + 2 <= 77 else 77
    ids = torch.full((len(lengths), n), eos, dtype=torch.long)
    mask = torch.zeros((len(lengths), n), dtype=torch.long)
    for i, k in enumerate(lengths):
        k = min(k, n - 2)
        ids[i, 0] = bos
        ids[i, 1 : k + 1] = torch.randint(3, vocab - 3, (k,), generator=g)
        ids[i, k + 1] = eos
        mask[i, : k + 2] = 1
    return ids, mask


def err(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


@pytest.mark.parametrize("eos_mode", ["largest-id", "eos-token-id"])
@pytest.mark.parametrize("with_mask", [True, False])
def test_clip_model_matches_transformers(eos_mode: str, with_mask: bool) -> None:
    vocab = 1000
    eos = 2 if eos_mode == "largest-id" else vocab - 1
    text, vision = small_configs(eos, vocab=vocab)
    ref = hf_clip(text, vision)
    ours = CLIPModel(text_config=text, vision_config=vision, projection_dim=32)
    ours.load_state_dict(hf_state_dict(ref.state_dict()), strict=True)
    ours.eval()
    if eos_mode == "largest-id":  # legacy configs: the end token is the largest id in each row
        ids, mask = text_batch(vocab, vocab - 1)
    else:
        ids, mask = text_batch(vocab, eos)
    pixels = torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        r = ref(input_ids=ids, pixel_values=pixels, attention_mask=mask if with_mask else None)
        o = ours(ids, pixels, mask if with_mask else None)
        r_text = ref.text_model(input_ids=ids, attention_mask=mask if with_mask else None)
        o_hidden, o_pooled = ours.text_model(ids, mask if with_mask else None)
        r_vis = ref.vision_model(pixel_values=pixels)
        o_vis_hidden, o_vis_pooled = ours.vision_model(pixels)
    assert err(o_hidden, r_text.last_hidden_state) < TOL
    assert err(o_pooled, r_text.pooler_output) < TOL
    assert err(o_vis_hidden, r_vis.last_hidden_state) < TOL
    assert err(o_vis_pooled, r_vis.pooler_output) < TOL
    for key in ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text"):
        assert err(o[key], getattr(r, key)) < TOL, key


@pytest.mark.parametrize("act", ["quick_gelu", "gelu"])
def test_text_and_vision_models_match_transformers(act: str) -> None:
    vocab, eos = 1000, 999
    text, vision = small_configs(eos, act=act, vocab=vocab)
    tcfg = transformers.CLIPTextConfig(**text, bos_token_id=vocab - 2, pad_token_id=1)
    torch.manual_seed(3)
    ref_text = transformers.CLIPTextModelWithProjection(tcfg).eval()
    ours_text = CLIPTextEncoder(text_config=text, projection_dim=tcfg.projection_dim).eval()
    ours_text.load_state_dict(hf_state_dict(ref_text.state_dict()), strict=True)
    ref_plain = transformers.CLIPTextModel(tcfg).eval()  # transformers >= 5 keeps no text_model. prefix in memory
    ours_plain = CLIPTextEncoder(text_config=text).eval()
    ours_plain.load_state_dict(hf_state_dict(ref_plain.state_dict()), strict=True)
    ref_vis = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(**vision, projection_dim=24)).eval()
    ours_vis = CLIPVisionEncoder(vision_config=vision, projection_dim=24).eval()
    ours_vis.load_state_dict(hf_state_dict(ref_vis.state_dict()), strict=True)
    ids, mask = text_batch(vocab, eos)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        r, (h, p) = ref_text(input_ids=ids, attention_mask=mask), ours_text(ids, mask)
        assert err(h, r.last_hidden_state) < TOL and err(p, r.text_embeds) < TOL
        r, (h, p) = ref_plain(input_ids=ids, attention_mask=mask), ours_plain(ids, mask)
        assert err(h, r.last_hidden_state) < TOL and err(p, r.pooler_output) < TOL
        r, (h, p) = ref_vis(pixel_values=pixels), ours_vis(pixels)
        assert err(h, r.last_hidden_state) < TOL and err(p, r.image_embeds) < TOL


def test_checkpoint_files_load_key_for_key(tmp_path: Path) -> None:
    """save_pretrained files (what users hold) load strictly, old ``position_ids`` buffers included."""
    from safetensors.torch import load_file

    text, vision = small_configs(2)
    ref = hf_clip(text, vision)
    ref.save_pretrained(tmp_path / "clip")
    state = load_file(str(tmp_path / "clip" / "model.safetensors"))
    state["text_model.embeddings.position_ids"] = torch.arange(77)[None]  # as in openai/clip-vit-large-patch14's file
    ours = CLIPModel(text_config=text, vision_config=vision, projection_dim=32)
    ours.load_state_dict(hf_state_dict(state), strict=True)
    assert set(ours.state_dict()) == {k for k in state if not k.endswith("position_ids")}


# ---------------------------------------------------------------------------------------
# tokenizers

CORPUS = [
    "a photo of a cat",
    "A handwritten SEVEN, slanted!",
    "the digit 7, thin and upright",
    "it's a dog's life; they're here, we've gone, I'm fine, you'll see, he'd go",
    "numbers 12345 and 3.14159 and 1,000,000",
    "Café naïve résumé — ünïcödé 東京 🙂",
    "   lots   of\twhitespace\n\nand newlines   ",
    "punctuation!!! ??? ... (brackets) [square] {curly} <angle> #hash @at",
    "an astronaut riding a horse on the moon, highly detailed, 8k, trending on artstation",
]


def clip_vocab_files(folder: Path) -> tuple[Path, Path]:
    """A small CLIP-format vocab.json + merges.txt, its merges learned with tokenizers' BpeTrainer:
    256 byte symbols, the same with ``</w>``, the merged tokens in merge order, then the two specials."""
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    from latentzoo.core.text import CLIP_PATTERN

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    trainer = BpeTrainer(vocab_size=600, initial_alphabet=alphabet, end_of_word_suffix="</w>", show_progress=False)
    tok.train_from_iterator(CORPUS * 20, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    byte_symbols = sorted(alphabet, key=lambda c: ord(c))
    tokens = byte_symbols + [s + "</w>" for s in byte_symbols] + ["".join(m) for m in merges]
    vocab: dict[str, int] = {}
    for t in [*tokens, "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(t, len(vocab))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


def test_clip_bpe_matches_transformers(tmp_path: Path) -> None:
    """Token ids and masks equal transformers' CLIP tokenizer (the tokenizers-backed one) at 77 tokens."""
    from latentzoo.core import text

    vocab, merges = clip_vocab_files(tmp_path / "tok")
    ours = text.clip_bpe(vocab, merges)
    reference = getattr(transformers, "CLIPTokenizerFast", None) or transformers.CLIPTokenizer
    ref = reference.from_pretrained(str(tmp_path / "tok"))  # a model folder: vocab.json + merges.txt
    strings = [*CORPUS, "", "a", "A  B", "x" * 300, " ".join(["word"] * 100), "a cat<|endoftext|>dog", "don't STOP"]
    expected = ref(strings, padding="max_length", max_length=77, truncation=True)
    with pytest.warns(UserWarning, match="77 tokens"):
        ids, mask = ours.encode(strings)
    assert ids.tolist() == expected["input_ids"]
    assert mask.long().tolist() == expected["attention_mask"]
    assert ours.vocab_size == len(json.loads(vocab.read_text()))
    # the same tokenizer through a folder, as model folders ship it
    assert text.load(tmp_path / "tok").encode(["a photo of a cat"])[0].tolist() == ids[:1].tolist()


def test_long_prompt_truncated_with_warning_empty_prompt_is_bos_eos() -> None:
    from latentzoo.core import text

    tok = text.train_word_level(["a thick seven", "a thin one"], context_length=6)
    with pytest.warns(UserWarning, match="6 tokens were truncated"):
        ids, mask = tok.encode(["a thick thick thick thick seven"])
    assert ids[0, -1] == tok.eos_token_id and mask.all()
    ids, mask = tok.encode([""])  # unconditional: just <start><end>
    assert ids[0, :2].tolist() == [tok.bos_token_id, tok.eos_token_id] and mask.sum() == 2
    assert tok.encode(["a GIRAFFE seven"])[0][0, 2] == tok.tokenizer.token_to_id(text.UNK_WORD)


def test_tokenizer_json_round_trip_and_vocab_mismatch(tmp_path: Path) -> None:
    from latentzoo.core import text
    from latentzoo.core.errors import LatentzooError

    tok = text.train_word_level(["a thick seven", "7, thin"], context_length=8)
    tok.save(tmp_path / "tokenizer.json")
    again = text.load(tmp_path / "tokenizer.json")
    assert again.context_length == 8 and again.pad_token == text.PAD_WORD
    assert again.encode(["7, thin"])[0].tolist() == tok.encode(["7, thin"])[0].tolist()
    model = CLIPTextEncoder(text_config=dict(small_configs(3, vocab=tok.vocab_size + 1)[0], max_position_embeddings=8))
    with pytest.raises(LatentzooError, match="token embedding has"):
        model.set_tokenizer(again)
    for bad in ("not json", '{"model": 3}'):
        (tmp_path / "bad.json").write_text(bad)
        with pytest.raises(LatentzooError, match="cannot load tokenizer"):
            text.load(tmp_path / "bad.json")
