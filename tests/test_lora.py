"""LoRA adapters (kohya-ss and diffusers / PEFT files) and checkpoint merging on a scaled-down SD 1.x pipeline.

Checked against diffusers + peft (test-only references): ``fuse`` at strength s gives the weights
of ``load_lora_weights`` + ``fuse_lora(lora_scale=s)`` to 1e-6 relative, for both file layouts;
``sample --lora`` gives the fused pipeline's bytes, strength 0 the base's; ``merge`` gives
(1 - a) A + a B and A + a (B - C) with its recipe; each class of bad input is one line and
writes nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("peft")
torch = pytest.importorskip("torch")

from sd_tiny import build_sd  # noqa: E402

RANK, ALPHA = 4, 2.0  # alpha != rank: the alpha / rank scale is exercised
UNET_TARGETS = [
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k",
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_out.0",
    "down_blocks.0.attentions.0.proj_in",  # a 1x1 conv (SD 1.x's conv projections)
    "down_blocks.0.resnets.0.conv1",  # a 3x3 conv (kohya's LoCon-style conv LoRA)
    "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj",
]
TE_TARGETS = ["text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.mlp.fc1"]


def rel_err(got, want) -> float:
    got, want = torch.as_tensor(got).double(), torch.as_tensor(want).double()
    assert got.shape == want.shape, (got.shape, want.shape)
    return float((got - want).abs().max() / want.abs().max())


def lora_pairs(shapes: dict[str, tuple[int, ...]], targets: list[str], seed: int) -> dict[str, tuple]:
    """Module path -> (down, up) of rank RANK for a Linear or Conv2d weight of the given shape."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for t in targets:
        shape = shapes[t]
        conv = len(shape) == 4
        down = 0.2 * torch.randn((RANK, *shape[1:]) if conv else (RANK, shape[1]), generator=g)
        up = 0.2 * torch.randn((shape[0], RANK, 1, 1) if conv else (shape[0], RANK), generator=g)
        out[t] = (down, up)
    return out


def kohya_file(path: Path, unet: dict, te: dict, *, alpha: float | None = ALPHA) -> Path:
    from safetensors.torch import save_file

    tensors = {}
    for prefix, pairs in (("lora_unet_", unet), ("lora_te_", te)):
        for module, (down, up) in pairs.items():
            key = prefix + module.replace(".", "_")
            tensors[f"{key}.lora_down.weight"], tensors[f"{key}.lora_up.weight"] = down.contiguous(), up.contiguous()
            if alpha is not None:
                tensors[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(tensors, str(path))
    return path


def peft_file(path: Path, unet: dict, te: dict) -> Path:
    """diffusers' save_lora_weights layout (unet. / text_encoder. + lora_A / lora_B), alpha = rank folded into B."""
    from safetensors.torch import save_file

    tensors = {}
    for prefix, pairs in (("unet.", unet), ("text_encoder.", te)):
        for module, (down, up) in pairs.items():
            tensors[f"{prefix}{module}.lora_A.weight"] = down.contiguous()
            tensors[f"{prefix}{module}.lora_B.weight"] = (up * (ALPHA / RANK)).contiguous()
    save_file(tensors, str(path))
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """tiny-sd1 (converted in this process), a second SD 1.x with another VAE, and LoRA files for tiny-sd1."""
    base = tmp_path_factory.mktemp("lora")
    saved = {k: os.environ.get(k) for k in ("LATENTZOO_REGISTRY", "XDG_CONFIG_HOME", "HF_HUB_OFFLINE")}
    os.environ.update(LATENTZOO_REGISTRY=str(base / "user.yaml"), XDG_CONFIG_HOME=str(base / "cfg"), HF_HUB_OFFLINE="1")
    (base / "user.yaml").write_text("version: 1\n")
    from latentzoo.core.runtime.adapters import weight_shapes
    from latentzoo.core.runtime.api import info
    from latentzoo.interop.api import convert

    build_sd(base / "sd1", "sd1", seed=0)
    build_sd(base / "other", "sd1", seed=3)
    convert(base / "sd1", "tiny-sd1", from_format="diffusers")
    convert(base / "other", "other-sd1", from_format="diffusers")
    unet_w, te_w = info("tiny-sd1-unet").weights_path(), info("tiny-sd1-text-encoder").weights_path()
    unet = lora_pairs(weight_shapes(unet_w), UNET_TARGETS, 1)
    te = lora_pairs(weight_shapes(te_w), TE_TARGETS, 2)
    files = {
        "kohya": kohya_file(base / "kohya.safetensors", unet, te),
        "peft": peft_file(base / "peft.safetensors", unet, te),
        "no-alpha": kohya_file(base / "no-alpha.safetensors", unet, te, alpha=None),
    }
    yield {"base": base, "files": files, "unet_w": unet_w, "te_w": te_w}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def cli(capsys, helpers):
    return helpers.in_process_cli(capsys)


def one_line(result, *fragments: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def registry_text(lab) -> str:
    return (lab["base"] / "user.yaml").read_text()


def ensure_fused(cli) -> None:
    """fused-kohya (tiny-sd1 + lr at 0.7), made by test_fuse_... or here when that test did not run."""
    if cli("info", "fused-kohya").returncode != 0:
        assert cli("fuse", "tiny-sd1", "--lora", "lr:0.7", "--name", "fused-kohya").returncode == 0


def diffusers_fused(lab, lora: Path, scale: float):
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(str(lab["base"] / "sd1"), safety_checker=None)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name)
    pipe.fuse_lora(lora_scale=scale)
    pipe.unload_lora_weights()  # the fused weights stay
    return pipe


@pytest.fixture(scope="module")
def registered(lab):
    from latentzoo.interop.lora import add

    entry, notes = add(lab["files"]["kohya"], base="tiny-sd1", name="lr")
    add(lab["files"]["peft"], base="tiny-sd1", name="lr-peft")
    return entry, notes


def test_lora_add_records_format_rank_and_base(lab, registered, cli):
    entry, notes = registered
    cfg = entry["config"]
    assert cfg["format"] == "kohya" and cfg["rank"] == RANK and cfg["alpha"] == ALPHA and not notes
    assert cfg["parts"]["prior"]["base"] == "tiny-sd1-unet" and cfg["parts"]["prior"]["modules"] == len(UNET_TARGETS)
    assert cfg["parts"]["conditioner"]["modules"] == len(TE_TARGETS) and len(cfg["parts"]["prior"]["fingerprint"]) == 64
    r = cli("list", "--role", "adapter")
    assert r.returncode == 0 and "lr" in r.stdout and "lr-peft" in r.stdout
    # a missing alpha is kohya's alpha = rank, said in a note
    r = cli("lora", "add", str(lab["files"]["no-alpha"]), "--base", "tiny-sd1", "--name", "lr-noalpha")
    assert r.returncode == 0 and "alpha = rank" in r.stderr, r.stderr
    # a registered name is refused, not replaced
    before = registry_text(lab)
    one_line(cli("lora", "add", str(lab["files"]["kohya"]), "--base", "tiny-sd1", "--name", "lr"), "already names lr")
    assert registry_text(lab) == before


@pytest.mark.parametrize("fmt", ["kohya", "peft"])
def test_fuse_matches_diffusers_fuse_lora(lab, registered, cli, fmt):
    from latentzoo.core.contract.weights import load_tensors, read_metadata
    from latentzoo.core.runtime.api import info

    name, s = f"fused-{fmt}", 0.7
    r = cli("fuse", "tiny-sd1", "--lora", f"{'lr' if fmt == 'kohya' else 'lr-peft'}:{s}", "--name", name)
    assert r.returncode == 0, r.stderr
    ref = diffusers_fused(lab, lab["files"][fmt], s)
    # diffusers 0.42 under transformers 5 drops a kohya file's text-encoder part (its legacy
    # "to_q_lora.down" keys reach CLIPTextModel unconverted); the same LoRA in PEFT layout is the reference there
    te_ref = ref if fmt == "peft" else diffusers_fused(lab, lab["files"]["peft"], s)
    for part, theirs in (("unet", ref.unet.state_dict()), ("text-encoder", te_ref.text_encoder.state_dict())):
        path = info(f"{name}-{part}").weights_path()
        ours = load_tensors(path)
        changed = 0
        for key, want in theirs.items():
            key = key if key in ours else f"text_model.{key}"
            if key.endswith("position_ids"):
                continue
            assert rel_err(ours[key], want) < 1e-6, key
            changed += not torch.equal(ours[key], want) or key.endswith(".weight")
        recipe = json.loads(read_metadata(path)["recipe"])
        assert recipe["operation"] == "fuse" and recipe["adapters"][0]["model_strength"] == s
    base = load_tensors(lab["unet_w"])
    fused = load_tensors(info(f"{name}-unet").weights_path())
    assert not torch.equal(base[f"{UNET_TARGETS[4]}.weight"], fused[f"{UNET_TARGETS[4]}.weight"])  # the 3x3 conv moved
    assert torch.equal(base["conv_in.weight"], fused["conv_in.weight"])  # an untargeted weight did not
    assert info(name).data["prior"] == f"{name}-unet" and info(name).data["decoder"] == "tiny-sd1-vae"


def test_sample_with_lora_is_the_fused_pipeline_and_strength_zero_is_the_base(lab, registered, cli, tmp_path):
    from latentzoo.core.contract.weights import sha256_file

    ensure_fused(cli)
    before = sha256_file(lab["unet_w"]), sha256_file(lab["te_w"])
    args = ["-n", "2", "--steps", "2", "--prompt", "a red cube", "--no-progress", "--seed", "3"]
    runs = {
        "lora": ["tiny-sd1", "--lora", "lr:0.7"],
        "fused": ["fused-kohya"],
        "zero": ["tiny-sd1", "--lora", f"{lab['files']['kohya']}:0"],
        "base": ["tiny-sd1"],
    }
    for key, target in runs.items():
        r = cli("sample", *target, *args, "-o", str(tmp_path / f"{key}.png"))
        assert r.returncode == 0, r.stderr
    png = {k: (tmp_path / f"{k}.png").read_bytes() for k in runs}
    assert png["lora"] == png["fused"] and png["zero"] == png["base"] and png["lora"] != png["base"]
    side = json.loads((tmp_path / "lora.json").read_text())
    assert side["adapters"] == [
        {"name": "lr", "sha256": sha256_file(lab["files"]["kohya"]), "format": "kohya", "model_strength": 0.7, "text_strength": 0.7}
    ]
    assert json.loads((tmp_path / "zero.json").read_text())["adapters"][0]["name"] == "kohya.safetensors"
    assert (sha256_file(lab["unet_w"]), sha256_file(lab["te_w"])) == before  # applying never writes the weights
    # the Python API builds the same request and applies the LoRA through the same declared adapter
    import latentzoo

    latentzoo.sample("tiny-sd1", 2, steps=2, prompt="a red cube", seed=3, loras=["lr:0.7"], output=str(tmp_path / "api.png"))
    assert (tmp_path / "api.png").read_bytes() == png["lora"]
    # the text strength alone moves the text encoder only: model 0, text 1 differs from the base
    r = cli("sample", "tiny-sd1", "--lora", "lr:0:1", *args, "-o", str(tmp_path / "text.png"))
    assert r.returncode == 0 and (tmp_path / "text.png").read_bytes() not in (png["base"], png["lora"])


def test_bad_loras_are_one_line_and_write_nothing(lab, registered, cli, tmp_path):
    from safetensors.torch import load_file, save_file

    good = load_file(str(lab["files"]["kohya"]))
    key = "lora_unet_" + UNET_TARGETS[0].replace(".", "_")
    cases = {}
    # made for another base: every module path is foreign
    cases["foreign"] = (
        {k.replace("lora_unet_", "lora_unet_input_blocks_").replace("lora_te_", "lora_te_model_"): v for k, v in good.items()},
        "0 module(s) matched",
    )
    # partly foreign: refused (counts + first unmatched key) unless --allow-partial
    cases["partial"] = ({**good, "lora_unet_foo_bar.lora_down.weight": good[f"{key}.lora_down.weight"].clone(),
                         "lora_unet_foo_bar.lora_up.weight": good[f"{key}.lora_up.weight"].clone()}, "first unmatched key lora_unet_foo_bar")  # fmt: skip
    cases["shape"] = ({**good, f"{key}.lora_up.weight": torch.zeros(7, RANK)}, "rank or shape mismatch")
    cases["rank"] = (
        {**good, f"{key}.lora_up.weight": torch.zeros(good[f"{key}.lora_up.weight"].shape[0], RANK + 1)},
        "rank or shape mismatch",
    )
    nan = good[f"{key}.lora_down.weight"].clone()
    nan[0, 0] = float("nan")
    cases["nan"] = ({**good, f"{key}.lora_down.weight": nan}, "NaN")
    cases["sdxl"] = ({**good, "lora_te1_x.lora_down.weight": torch.zeros(1)}, "SDXL")
    for label, (tensors, fragment) in cases.items():
        path = tmp_path / f"{label}.safetensors"
        save_file(tensors, str(path))
        before = registry_text(lab)
        one_line(cli("lora", "add", str(path), "--base", "tiny-sd1", "--name", f"bad-{label}"), fragment)
        one_line(cli("sample", "tiny-sd1", "--lora", str(path), "-n", "1", "--steps", "1", "-o", str(tmp_path / f"{label}.png")), fragment)
        one_line(cli("fuse", "tiny-sd1", "--lora", str(path), "--name", f"bad-fuse-{label}"), fragment)
        assert registry_text(lab) == before and not (tmp_path / f"{label}.png").exists(), label
        assert not (lab["base"] / "cfg" / "latentzoo" / "fused" / f"bad-fuse-{label}").exists()
    r = cli("lora", "add", str(tmp_path / "partial.safetensors"), "--base", "tiny-sd1", "--name", "lr-partial", "--allow-partial")
    assert r.returncode == 0 and "1 module(s) not applied" in r.stderr, r.stderr
    # a LoRA of the text encoder only does not fit a UNet alone
    one_line(cli("lora", "add", str(lab["files"]["kohya"]), "--base", "tiny-sd1-vae", "--name", "x"), "adapts a prior or a conditioner")
    for spec in ("lr:21", "lr:nan", "lr:inf", "lr:1:-20.5", "lr:-1e9"):
        one_line(cli("sample", "tiny-sd1", "--lora", spec, "-n", "1", "-o", str(tmp_path / "s.png")), "outside [-20, 20]")
        one_line(cli("fuse", "tiny-sd1", "--lora", spec, "--name", "bad-strength"), "outside [-20, 20]")
    assert not (tmp_path / "s.png").exists()
    one_line(cli("img2img", "tiny-sd1", str(tmp_path / "in.png"), "--lora", "lr:25", "-o", str(tmp_path / "e.png")), "outside [-20, 20]")
    one_line(cli("sample", "tiny-sd1", "--lora", "tiny-sd1-unet", "-n", "1", "-o", str(tmp_path / "s.png")), "not a LoRA")
    one_line(cli("fuse", "tiny-sd1", "--lora", "lr", "--name", "tiny-sd1"), "already names tiny-sd1")


def test_merge_weighted_sum_and_add_difference(lab, registered, cli):
    from latentzoo.core.contract.weights import load_tensors, read_metadata, sha256_file
    from latentzoo.core.runtime.api import info

    ensure_fused(cli)
    r = cli("merge", "weighted-sum", "tiny-sd1", "fused-kohya", "--alpha", "0.25", "--name", "ws")
    assert r.returncode == 0, r.stderr
    a, b = load_tensors(lab["unet_w"]), load_tensors(info("fused-kohya-unet").weights_path())
    path = info("ws-unet").weights_path()
    ws = load_tensors(path)
    for k in a:
        assert torch.allclose(ws[k], 0.75 * a[k] + 0.25 * b[k], atol=1e-6, rtol=1e-6), k
    recipe = json.loads(read_metadata(path)["recipe"])
    assert recipe["operation"] == "weighted-sum" and recipe["alpha"] == 0.25
    assert [i["sha256"] for i in recipe["inputs"]] == [sha256_file(lab["unet_w"]), sha256_file(info("fused-kohya-unet").weights_path())]
    assert info("ws-unet").data["training"]["recipe"] == recipe and info("ws").data["decoder"] == "tiny-sd1-vae"
    # A + 1 * (B - A) = B; fp16 output on request
    r = cli(
        "merge", "add-difference", "tiny-sd1-unet", "fused-kohya-unet", "tiny-sd1-unet", "--alpha", "1", "--name", "ad", "--dtype", "fp16"
    )
    assert r.returncode == 0, r.stderr
    ad = load_tensors(info("ad").weights_path())
    assert all(ad[k].dtype == torch.float16 and torch.allclose(ad[k].float(), b[k].half().float(), atol=1e-3) for k in b)
    r = cli("sample", "ws", "-n", "1", "--steps", "1", "--prompt", "x", "--no-progress", "-o", str(lab["base"] / "ws.png"))
    assert r.returncode == 0, r.stderr


def test_bad_merges_are_one_line_and_write_nothing(lab, registered, cli, tmp_path):
    ensure_fused(cli)
    from safetensors.torch import save_file

    from latentzoo.core.runtime.merge import check_same_tensors

    before = registry_text(lab)
    merged = lab["base"] / "cfg" / "latentzoo" / "merged"
    had = sorted(merged.iterdir()) if merged.exists() else []
    one_line(cli("merge", "weighted-sum", "tiny-sd1", "other-sd1", "--alpha", "0.5", "--name", "x1"), "different latent spaces")
    one_line(cli("merge", "weighted-sum", "tiny-sd1-unet", "other-sd1-unet", "--alpha", "0.5", "--name", "x2"), "different latent spaces")
    one_line(cli("merge", "weighted-sum", "tiny-sd1", "fused-kohya", "--alpha", "0.5", "--name", "tiny-sd1"), "one of its inputs")
    one_line(cli("merge", "add-difference", "tiny-sd1-unet", "fused-kohya-unet", "tiny-sd1-unet", "--alpha", "1", "--name", "fused-kohya-unet"), "one of its inputs")  # fmt: skip
    one_line(cli("merge", "weighted-sum", "tiny-sd1-unet", "tiny-sd1-text-encoder", "--alpha", "0.5", "--name", "x3"), "different classes")
    one_line(
        cli("merge", "weighted-sum", "tiny-sd1-vae", "other-sd1-vae", "--alpha", "0.5", "--name", "x4"), "merge priors or conditioners"
    )
    for alpha in ("nan", "inf", "21"):
        one_line(cli("merge", "weighted-sum", "tiny-sd1", "fused-kohya", "--alpha", alpha, "--name", "x5"), "--alpha")
    assert registry_text(lab) == before and (sorted(merged.iterdir()) if merged.exists() else []) == had
    # tensors' names and shapes must agree; the first differing one is named
    save_file({"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(4)}, str(tmp_path / "a.safetensors"))
    save_file({"a.weight": torch.zeros(2, 3), "b.weight": torch.zeros(5)}, str(tmp_path / "b.safetensors"))
    save_file({"a.weight": torch.zeros(2, 3)}, str(tmp_path / "c.safetensors"))
    from latentzoo.core.contract.errors import LatentzooError

    with pytest.raises(LatentzooError, match=r"tensor 'b.weight' is \[4\] vs \[5\]"):
        check_same_tensors(["A", "B"], [tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    with pytest.raises(LatentzooError, match=r"tensor .b.weight. is missing from C"):
        check_same_tensors(["A", "C"], [tmp_path / "a.safetensors", tmp_path / "c.safetensors"])


def test_export_kohya_and_peft_round_trip(lab, registered, cli, tmp_path):
    """Out: the PEFT export of a kohya LoRA loads in diffusers to the same fused weights; the kohya export reads back equal."""
    from latentzoo.core.contract.weights import load_tensors
    from latentzoo.core.runtime.api import info
    from latentzoo.interop.lora import read

    assert cli("export", "lr-peft", "--to", "kohya-lora", "-o", str(tmp_path / "k")).returncode == 0
    assert cli("export", "lr", "--to", "peft-lora", "-o", str(tmp_path / "p")).returncode == 0
    back, orig = read(tmp_path / "k" / "lr-peft.safetensors"), read(lab["files"]["kohya"])
    assert [(m.key, m.alpha) for m in back.modules] == [(m.key, float(RANK)) for m in orig.modules]  # the PEFT file states no alpha: rank
    assert all(torch.equal(a.down, b.down) for a, b in zip(back.modules, orig.modules, strict=True))
    ensure_fused(cli)
    ref = diffusers_fused(lab, tmp_path / "p" / "pytorch_lora_weights.safetensors", 0.7)
    ours = load_tensors(info("fused-kohya-unet").weights_path())
    assert max(rel_err(ours[k], v) for k, v in ref.unet.state_dict().items()) < 1e-6
    # a fused pipeline exports like any other: diffusers loads it with the fused weights
    assert cli("export", "fused-kohya", "--to", "diffusers", "-o", str(tmp_path / "d")).returncode == 0
    loaded = diffusers.StableDiffusionPipeline.from_pretrained(str(tmp_path / "d"), safety_checker=None)
    assert all(torch.equal(ours[k], v) for k, v in loaded.unet.state_dict().items())
    one_line(cli("export", "tiny-sd1-unet", "--to", "peft-lora", "-o", str(tmp_path / "x")), "not a LoRA")
    assert not (tmp_path / "x").exists()


def test_a_component_base_takes_its_part_of_the_lora(lab, registered, cli):
    from latentzoo.core.contract.weights import load_tensors
    from latentzoo.core.runtime.api import info

    ensure_fused(cli)
    r = cli("lora", "add", str(lab["files"]["kohya"]), "--base", "tiny-sd1-unet", "--name", "lr-unet")
    assert r.returncode == 0 and "conditioner part is not applied" in r.stderr, r.stderr
    assert list(info("lr-unet").data["config"]["parts"]) == ["prior"]
    assert cli("fuse", "tiny-sd1-unet", "--lora", "lr-unet:0.7", "--name", "unet-fused").returncode == 0
    got, want = load_tensors(info("unet-fused").weights_path()), load_tensors(info("fused-kohya-unet").weights_path())
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
