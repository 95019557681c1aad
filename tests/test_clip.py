"""CLIP family: parity with transformers (test-only dependency), tokenizers, the shipped digits-clip.

Parity: random-init transformers models shaped like openai/clip-vit-large-patch14 (quick_gelu,
causal text mask, 77 positions, eos pooling by largest id (eos_token_id 2, as that config
says) and by eos_token_id as newer configs do), scaled down; their state dicts load into
latentzoo's classes with strict=True and every output agrees to 1e-5.
"""

from __future__ import annotations

import json
import subprocess
import sys
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

    from latentzoo.core.runtime.text import CLIP_PATTERN

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
    from latentzoo.core.runtime import text

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


def test_clip_bpe_from_openai_merges_file(tmp_path: Path) -> None:
    """OpenAI's merges-only ``bpe_simple_vocab_16e6.txt.gz`` format gives the same ids as vocab.json + merges.txt."""
    import gzip

    from latentzoo.core.runtime import text

    vocab, merges = clip_vocab_files(tmp_path / "tok")
    lines = merges.read_text(encoding="utf-8").splitlines()
    (tmp_path / "bpe_simple_vocab_16e6.txt.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    from_gz = text.clip_bpe_from_merges(tmp_path / "bpe_simple_vocab_16e6.txt.gz")
    assert json.loads(from_gz.tokenizer.to_str())["model"]["vocab"] == json.loads(vocab.read_text())
    assert from_gz.encode(CORPUS)[0].tolist() == text.clip_bpe(vocab, merges).encode(CORPUS)[0].tolist()


def test_long_prompt_truncated_with_warning_empty_prompt_is_bos_eos() -> None:
    from latentzoo.core.runtime import text

    tok = text.train_word_level(["a thick seven", "a thin one"], context_length=6)
    with pytest.warns(UserWarning, match="6 tokens were truncated"):
        ids, mask = tok.encode(["a thick thick thick thick seven"])
    assert ids[0, -1] == tok.eos_token_id and mask.all()
    ids, mask = tok.encode([""])  # unconditional: just <start><end>
    assert ids[0, :2].tolist() == [tok.bos_token_id, tok.eos_token_id] and mask.sum() == 2
    assert tok.encode(["a GIRAFFE seven"])[0][0, 2] == tok.tokenizer.token_to_id(text.UNK_WORD)


def test_tokenizer_json_round_trip_and_vocab_mismatch(tmp_path: Path) -> None:
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.core.runtime import text

    ties = text.train_word_level(["b a", "a b", "z", "y"], context_length=8).tokenizer.get_vocab()
    assert ties["a"] < ties["b"] < ties["y"] < ties["z"]  # by frequency, ties alphabetical: the same file every time
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


# ---------------------------------------------------------------------------------------
# the shipped digits-clip: zero-shot target, conditioner output, CLI and API


@pytest.fixture(scope="module")
def digits_clip():
    import latentzoo

    return latentzoo.load_scorer("digits-clip")


def test_digits_clip_zero_shot_accuracy_on_held_out(digits_clip) -> None:
    """Target: >= 95 % of the 360 held-out digits get "a handwritten <their digit>" as the most probable of ten prompts."""
    from latentzoo.plugins.clip.zero_shot import attribute_accuracy, digit_accuracy
    from latentzoo.plugins.datasets.captions import load

    held = load("test")
    assert len(held) == 360
    assert digit_accuracy(digits_clip, held.images, held.labels) >= 0.95
    attributes = attribute_accuracy(digits_clip, held)
    assert min(attributes.values()) > 0.6, attributes  # well above chance (0.5) for thickness, slant and width


def test_digits_clip_conditioner_output(digits_clip) -> None:
    import latentzoo

    entry = latentzoo.info("digits-clip")
    space = entry.data["conditioning_space"]
    out = digits_clip.condition(["a thick, slanted seven", ""])
    assert out["tokens"].shape == (2, space["sequence_length"], space["width"])
    assert out["pooled"].shape == (2, space["width"]) and out["mask"].dtype == torch.bool
    assert out["mask"][1].sum() == 2  # the empty prompt: <start><end>, the unconditional input
    assert space["encoder"] == "sha256:" + entry.data["weights"]["sha256"][:16]
    assert digits_clip.tokenizer.vocab_size == entry.data["config"]["text_config"]["vocab_size"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "latentzoo", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory) -> list[Path]:
    """Held-out digits 0..9 (the first of each), saved as 32x32 PNGs as `latentzoo sample` writes them."""
    from latentzoo.core.runtime.images import save_each
    from latentzoo.plugins.datasets.captions import load

    held = load("test")
    picks = [int((held.labels == c).nonzero()[0]) for c in range(10)]
    return save_each(held.images[picks], tmp_path_factory.mktemp("digits"))


def test_cli_classify_and_score(digit_pngs: list[Path], tmp_path: Path) -> None:
    from latentzoo.plugins.datasets.captions import NAMES

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"a handwritten {n}" for n in NAMES) + "\n")
    r = run_cli("classify", "digits-clip", *map(str, digit_pngs), "--texts-file", str(prompts), "--json")
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout)
    labels = [x["label"] for x in results]
    assert sum(label == f"a handwritten {n}" for label, n in zip(labels, NAMES, strict=True)) >= 9  # 97.8 % on the whole held-out set
    import latentzoo

    assert labels == [r["label"] for r in latentzoo.classify("digits-clip", digit_pngs, [f"a handwritten {n}" for n in NAMES])]
    assert all(abs(sum(x["probabilities"].values()) - 1) < 1e-4 for x in results)
    r = run_cli("classify", "digits-clip", str(digit_pngs[7]), "-l", "a handwritten seven", "-l", "a handwritten one")
    assert r.returncode == 0 and "a handwritten seven" in r.stdout.split("(")[0]
    r = run_cli("score", "digits-clip", str(digit_pngs[7]), "--text", "a handwritten seven", "--text", "a handwritten zero", "--json")
    scores = json.loads(r.stdout)[0]["scores"]
    assert -1 <= scores["a handwritten zero"] < scores["a handwritten seven"] <= 1


def test_api_matches_cli(digit_pngs: list[Path], digits_clip) -> None:
    import latentzoo

    out = latentzoo.classify(
        "digits-clip", [str(p) for p in digit_pngs[:3]], ["a handwritten zero", "a handwritten one", "a handwritten two"]
    )
    assert [r["label"] for r in out] == ["a handwritten zero", "a handwritten one", "a handwritten two"]
    (row,) = latentzoo.clip_score(digits_clip, str(digit_pngs[3]), "a handwritten three")
    assert 0 < row[0] <= 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("classify", "digits-clip", "{img}"), "no candidate texts"),
        (("classify", "digits-clip", "{img}", "-l", "  "), "is empty"),
        (("classify", "no-such-model", "{img}", "-l", "a seven"), "no component or pipeline named 'no-such-model'"),
        (("classify", "digits", "{img}", "-l", "a seven"), "is a pipeline"),
        (("classify", "digits-vqgan", "{img}", "-l", "a seven"), "cannot score images against texts"),
        (("classify", "digits-clip", "{txt}", "-l", "a seven"), "not an image"),
        (("classify", "digits-clip", "{missing}", "-l", "a seven"), "no such file"),
        (("classify", "digits-clip", "{big}", "-l", "a seven"), "pass --fit"),
        (("classify", "digits-clip", "{img}", "--texts-file", "{missing}"), "cannot read --texts-file"),
        (("score", "digits-clip", "{img}"), "no text to score against"),
    ],
)
def test_cli_bad_input_is_one_line(args: tuple[str, ...], message: str, digit_pngs: list[Path], tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "notes.txt").write_text("not an image")
    Image.new("L", (64, 48)).save(tmp_path / "big.png")
    paths = {"img": digit_pngs[0], "txt": tmp_path / "notes.txt", "missing": tmp_path / "nope.png", "big": tmp_path / "big.png"}
    r = run_cli(*(a.format(**paths) for a in args))
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr


def test_commands_and_listing_stay_light() -> None:
    """`--help` lists the plugin's commands; `list --role conditioner` shows digits-clip; neither imports torch."""
    code = (
        "import sys; from latentzoo.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    for args in (["--help"], ["list", "--role", "conditioner"]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert ("classify" in r.stdout and "score" in r.stdout) if args == ["--help"] else "digits-clip" in r.stdout


def test_train_clip_cli_on_a_captioned_folder(tmp_path: Path) -> None:
    """A tiny run end to end: weights, tokenizer.json (sha256 in the entry), conditioning_space,
    and the fragment usable with --registry by `classify`."""
    import yaml
    from PIL import Image

    from latentzoo.core.contract.weights import sha256_file

    folder = tmp_path / "imgs"
    folder.mkdir()
    rows = []
    for i in range(8):
        img = Image.new("L", (32, 32), 0)
        img.paste(255, (4 + 2 * i, 4, 10 + 2 * i, 28))
        img.save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": f"a bar at {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    tiny = ["vision_width=32", "vision_layers=1", "text_width=32", "text_layers=1", "projection_dim=16", "patch_size=8"]
    sets = [a for kv in tiny for a in ("--set", kv)]
    r = run_cli("train", "clip", "--data", str(folder), "-o", str(out), "--steps", "3", "--batch-size", "4", "--no-progress", *sets)
    assert r.returncode == 0, r.stderr
    (entry,) = yaml.safe_load((out / "registry.yaml").read_text())["components"].values()
    assert entry["class"] == "clip.model" and entry["roles"] == ["conditioner"]
    assert entry["config"]["tokenizer"] == {"file": "tokenizer.json", "sha256": sha256_file(out / "tokenizer.json")}
    space = entry["conditioning_space"]
    assert space == {
        "kind": "text",
        "width": 32,
        "sequence_length": 16,
        "pooled": True,
        "encoder": "sha256:" + entry["weights"]["sha256"][:16],
    }
    name = next(iter(yaml.safe_load((out / "registry.yaml").read_text())["components"]))
    r = run_cli("--registry", str(out / "registry.yaml"), "classify", name, str(folder / "0.png"), "-l", "a bar at 0", "-l", "a bar at 7")
    assert r.returncode == 0, r.stderr
    # a tokenizer that is not the one the entry names is refused at load, in one line
    (out / "tokenizer.json").write_text((out / "tokenizer.json").read_text().replace('"bar"', '"baz"'))
    r = run_cli("--registry", str(out / "registry.yaml"), "classify", name, str(folder / "0.png"), "-l", "a bar")
    assert r.returncode == 1 and "fails its sha256 check" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_train_clip_resume_is_exact(tmp_path: Path) -> None:
    """2 steps, then --resume to 4, gives the same weights bit for bit as 4 steps in one go
    (caption picks, shifts and dropout are stateless draws; the tokenizer is retrained identically)."""
    tiny = [
        "vision_width=16",
        "vision_layers=1",
        "text_width=16",
        "text_layers=1",
        "projection_dim=8",
        "patch_size=8",
        "vision_heads=2",
        "text_heads=2",
    ]
    sets = [a for kv in tiny for a in ("--set", kv)]
    common = ["train", "clip", "--data", "digits-captions", "--batch-size", "8", "--checkpoint-every", "2", "--no-progress", *sets]
    r = run_cli(*common, "-o", str(tmp_path / "a"), "--steps", "4")
    assert r.returncode == 0, r.stderr
    r = run_cli(*common, "-o", str(tmp_path / "b"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    r = run_cli(*common, "-o", str(tmp_path / "b"), "--steps", "4", "--resume")
    assert r.returncode == 0, r.stderr
    for name in ("model.safetensors", "tokenizer.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_transformers_folders_load_with_their_tokenizer(tmp_path: Path) -> None:
    """save_pretrained folders (a CLIPModel with its tokenizer; a Stable Diffusion-style text_encoder/ +
    tokenizer/ pair) load into the matching class and give transformers' outputs."""
    from latentzoo.core.contract.errors import LatentzooError
    from latentzoo.plugins.clip.model import from_transformers

    vocab_file, _ = clip_vocab_files(tmp_path / "tok")
    vocab = len(json.loads(vocab_file.read_text()))
    hf_tok = transformers.CLIPTokenizer.from_pretrained(str(tmp_path / "tok"))
    text, vision = small_configs(hf_tok.eos_token_id, vocab=vocab)
    ref = hf_clip(text, vision)
    ref.save_pretrained(tmp_path / "clip")
    hf_tok.save_pretrained(tmp_path / "clip")
    ours = from_transformers(tmp_path / "clip")
    assert isinstance(ours, CLIPModel) and ours.tokenizer is not None
    prompts = ["a photo of a cat", "an astronaut riding a horse"]
    batch = hf_tok(prompts, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        expected = ref.get_text_features(**batch)
        expected = getattr(expected, "pooler_output", expected)
    assert err(ours.encode_texts(prompts), torch.nn.functional.normalize(expected, dim=-1)) < TOL

    sd = tmp_path / "sd"  # diffusers' Stable Diffusion folder: text_encoder/ and tokenizer/ side by side
    torch.manual_seed(5)
    te = transformers.CLIPTextModel(
        transformers.CLIPTextConfig(**text, bos_token_id=hf_tok.bos_token_id, pad_token_id=hf_tok.pad_token_id)
    ).eval()
    te.save_pretrained(sd / "text_encoder")
    hf_tok.save_pretrained(sd / "tokenizer")
    encoder = from_transformers(sd / "text_encoder")
    assert isinstance(encoder, CLIPTextEncoder) and encoder.text_projection is None
    out = encoder.condition(prompts)
    with torch.no_grad():
        r = te(**hf_tok(prompts, padding="max_length", max_length=77, return_tensors="pt"))
    assert err(out["tokens"], r.last_hidden_state) < TOL and err(out["pooled"], r.pooler_output) < TOL

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(LatentzooError, match="not a CLIP model"):
        from_transformers(tmp_path / "bad")
