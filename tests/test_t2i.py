"""digits-t2i (shipped) and the text-conditioned diffusion trainer: prompts through the CLI,
every fitting sampler and scheduler, reproducibility, mixing, and each class of bad input.

The shipped pipeline's *quality* (digit read as prompted, attribute words, FD) is measured by
benchmarks/t2i.py; here the model is used at 2-4 steps, which is enough for paths, bytes and
refusals.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

import latentzoo  # noqa: E402
from latentzoo.core.contract.compose import PipelineSpec, check_spec  # noqa: E402
from latentzoo.core.contract.errors import ContractError, LatentzooError  # noqa: E402
from latentzoo.core.contract.registry import Registry  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = ["--steps", "3", "-n", "2", "--no-progress"]


def _shipped() -> dict:
    return yaml.safe_load((REPO / "registry.yaml").read_text())


def _copy_weights(entry: dict, dest: Path) -> dict:
    """A copy of a shipped entry whose weights sit in ``dest`` (weights paths are relative to their registry file)."""
    entry = json.loads(json.dumps(entry))
    src = REPO / entry["weights"]["path"]
    shutil.copy(src, dest / src.name)
    entry["weights"]["path"] = src.name
    return entry


# -- the CLI on the shipped pipeline ---------------------------------------------------------


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    """``latentzoo ARGS`` run in this process through the CLI's own entry point (errors as one
    line and an exit status, exactly as installed), without a fresh interpreter and torch import per call."""
    config = tmp_path / "lz-config"
    config.mkdir()
    for key in [k for k in __import__("os").environ if k.startswith("LATENTZOO_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return helpers.in_process_cli(capsys)


def test_prompt_negative_guidance_same_seed_same_bytes(cli, tmp_path):
    args = ["sample", "digits-t2i", "--prompt", "a thick seven", "--negative-prompt", "slanted", "--guidance", "4", *FAST]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    cli(*args, "-o", str(a)).assert_ok()
    cli(*args, "-o", str(b)).assert_ok()
    assert a.read_bytes() == b.read_bytes()
    record = json.loads(a.with_suffix(".json").read_text())
    assert record["options"]["prompt"] == "a thick seven" and record["options"]["negative_prompt"] == "slanted"
    assert record["options"]["guidance"] == 4.0 and record["components"]["conditioner"] == "digits-clip"
    c = tmp_path / "c.png"
    cli(*args[:3], "a thin two", *args[4:], "-o", str(c)).assert_ok()
    assert c.read_bytes() != a.read_bytes()


def test_prompts_file_one_output_per_prompt_with_its_prompt(lz, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a thick seven\n\n   \n2, thin\n")
    result = lz("sample", "digits-t2i", "--prompts-file", str(prompts), *FAST, "-o", str(tmp_path / "grid.png")).assert_ok()
    outputs = sorted(p.name for p in tmp_path.glob("grid-*"))
    assert outputs == ["grid-000.json", "grid-000.png", "grid-001.json", "grid-001.png"], result
    recorded = [json.loads((tmp_path / f"grid-00{i}.json").read_text())["options"]["prompt"] for i in range(2)]
    assert recorded == ["a thick seven", "2, thin"]
    # the same prompt alone gives the same bytes as its line of the file (same seed for every prompt)
    lz("sample", "digits-t2i", "--prompt", "2, thin", *FAST, "-o", str(tmp_path / "one.png")).assert_ok()
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "grid-001.png").read_bytes()
    lz("sample", "digits-t2i", "--prompts-file", str(prompts), *FAST, "-o", str(tmp_path / "d") + "/").assert_ok()
    assert json.loads((tmp_path / "d" / "001" / "samples.json").read_text())["options"]["prompt"] == "2, thin"


@pytest.mark.parametrize(
    "content, fragment",
    [(None, "does not exist"), ("", "holds no prompt"), ("\n  \n\n", "holds no prompt"), (b"\xff\xfe\x00bad", "cannot read")],
)
def test_prompts_file_missing_or_empty_is_refused(lz, tmp_path, content, fragment):
    path = tmp_path / "prompts.txt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    lz("sample", "digits-t2i", "--prompts-file", str(path), *FAST, "-o", str(tmp_path / "x.png")).assert_one_line_error(
        "--prompts-file", fragment
    )
    assert not list(tmp_path.glob("x*"))


def test_prompt_and_prompts_file_together_and_on_a_prior_without_text(lz, tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a seven\n")
    out = str(tmp_path / "x.png")
    lz("sample", "digits-t2i", "--prompt", "a two", "--prompts-file", str(path), *FAST, "-o", out).assert_one_line_error("not both")
    lz("sample", "digits", "--prompts-file", str(path), *FAST, "-o", out).assert_one_line_error("takes no text", "--prompt")
    assert not list(tmp_path.glob("x*"))


def test_empty_prompt_is_unconditional_and_said_so(lz, tmp_path):
    empty, none = tmp_path / "empty.png", tmp_path / "none.png"
    result = lz("sample", "digits-t2i", "--prompt", "", *FAST, "-o", str(empty)).assert_ok()
    warnings = [line for line in result.stderr_lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "empty prompt" in warnings[0] and "unconditionally" in warnings[0], result
    lz("sample", "digits-t2i", "--prompt", "   ", *FAST, "-o", str(none)).assert_ok()
    assert empty.read_bytes() == none.read_bytes()  # whitespace is no prompt either


def test_long_prompt_is_truncated_with_a_warning_naming_the_limit(lz, tmp_path):
    long = "a thick slanted wide " * 8 + "seven"
    result = lz("sample", "digits-t2i", "--prompt", long, *FAST, "-o", str(tmp_path / "x.png")).assert_ok()
    warnings = [line for line in result.stderr_lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "16 tokens" in warnings[0] and "truncated" in warnings[0], result


# -- samplers and schedulers (Python API) ----------------------------------------------------


@pytest.fixture(scope="module")
def registry():
    return Registry.load([])


def test_every_fitting_sampler_and_scheduler_drives_the_t2i_prior(registry):
    samplers = [n for n, e in registry.entries.items() if "sampler" in e.data.get("roles", [])]
    schedulers = [n for n, e in registry.entries.items() if "scheduler" in e.data.get("roles", [])]
    fitting = []
    for sampler in samplers:
        for scheduler in [*schedulers, None]:
            spec = PipelineSpec(
                conditioner="digits-clip", prior="digits-t2i-prior", decoder="digits-vqgan", sampler=sampler, scheduler=scheduler
            )
            try:
                check_spec(registry, spec)
            except LatentzooError:
                continue
            fitting.append((sampler, scheduler))
    used_samplers = {s for s, _ in fitting}
    assert {"ddim", "ddpm", "ddpm-large", "euler", "heun", "dpmpp-2m"} <= used_samplers, fitting
    assert {"leading", "trailing", "linspace", "karras", "sigmoid", "exponential"} <= {c for _, c in fitting}, fitting
    assert not used_samplers & {"tokens", "analytic", "flow-euler", "flow-heun"}, fitting
    for sampler in sorted(used_samplers):  # every sampler, each with one fitting scheduler
        scheduler = next(c for s, c in fitting if s == sampler)
        pipe = latentzoo.load_pipeline(
            latentzoo.compose(
                conditioner="digits-clip", prior="digits-t2i-prior", decoder="digits-vqgan", sampler=sampler, scheduler=scheduler
            )
        )
        images = pipe.sample(1, seed=1, steps=2, prompt="a thick seven", guidance=3.0)
        again = pipe.sample(1, seed=1, steps=2, prompt="a thick seven", guidance=3.0)
        assert images.shape == (1, 1, 32, 32) and torch.isfinite(images).all(), sampler
        assert torch.equal(images, again), sampler
    for scheduler in sorted({c for _, c in fitting if c}):  # every scheduler under DDIM
        spec = latentzoo.compose(
            conditioner="digits-clip", prior="digits-t2i-prior", decoder="digits-vqgan", sampler="ddim", scheduler=scheduler
        )
        pipe = latentzoo.load_pipeline(spec)
        assert torch.isfinite(pipe.sample(1, seed=0, steps=2, prompt="a wide zero", guidance=2.0)).all(), scheduler


# -- mixing ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_registry(tmp_path_factory) -> Path:
    """Another decoder declared on digits-vqgan's space, and a text encoder of the same shape but another identity."""
    out = tmp_path_factory.mktemp("mix")
    shipped = _shipped()["components"]
    decoder = _copy_weights(shipped["digits-vqgan"], out)
    decoder["roles"] = ["decoder"]  # e.g. a fine-tuned decoder, declared on the space it was fine-tuned for
    other_clip = _copy_weights(shipped["digits-clip"], out)
    shutil.copy(REPO / "weights" / "digits-clip.tokenizer.json", out / "digits-clip.tokenizer.json")
    other_clip["conditioning_space"]["encoder"] = "sha256:" + "0" * 16
    body = {"components": {"other-decoder": decoder, "other-clip": other_clip}}
    path = out / "mix.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def test_t2i_prior_composes_with_any_decoder_of_its_space(lz, mixed_registry, tmp_path):
    outs = []
    for decoder in ("digits-vqgan", "other-decoder"):
        out = tmp_path / f"{decoder}.png"
        lz(
            "--registry", str(mixed_registry), "sample", "digits-t2i", "--decoder", decoder, "--prompt", "a thin one", *FAST, "-o", str(out)
        ).assert_ok()
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]  # the same weights under another name decode the same latents to the same bytes
    refused = lz("--registry", str(mixed_registry), "sample", "digits-t2i", "--decoder", "digits-klvae", "--prompt", "a one", *FAST)
    refused.assert_one_line_error("digits-klvae")


def test_a_text_encoder_of_another_identity_is_refused_unless_allowed(lz, mixed_registry, tmp_path):
    reg = Registry.load([str(mixed_registry)])
    spec = PipelineSpec(conditioner="other-clip", prior="digits-t2i-prior", decoder="digits-vqgan", sampler="ddim", scheduler="leading")
    with pytest.raises(ContractError, match=r"other-clip.*digits-t2i-prior.*encoder"):
        check_spec(reg, spec)
    args = ["--registry", str(mixed_registry), "sample", "digits-t2i", "--conditioner", "other-clip", "--prompt", "a one", *FAST]
    out = tmp_path / "x.png"
    lz(*args, "-o", str(out)).assert_one_line_error("other-clip", "digits-t2i-prior", "--allow-mismatch")
    assert not out.exists()
    allowed = lz(*args, "--allow-mismatch", "-o", str(out)).assert_ok()
    assert any(line.startswith("warning: --allow-mismatch") for line in allowed.stderr_lines), allowed
    assert out.exists()


def test_a_tokenizer_that_does_not_fit_the_encoder_vocabulary_is_refused(lz, tmp_path):
    from latentzoo.core.runtime.text import train_word_level

    entry = _copy_weights(_shipped()["components"]["digits-clip"], tmp_path)
    small = train_word_level(["a seven", "a thin two"], context_length=16)
    bad = small.save(tmp_path / "bad.tokenizer.json")
    entry["config"]["tokenizer"] = {"file": bad.name, "sha256": hashlib.sha256(bad.read_bytes()).hexdigest()}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"components": {"bad-clip": entry}}))
    out = tmp_path / "x.png"
    result = lz("--registry", str(path), "sample", "digits-t2i", "--conditioner", "bad-clip", "--prompt", "a one", *FAST, "-o", str(out))
    result.assert_one_line_error(f"tokenizer has {small.vocab_size} tokens", "42")
    assert not out.exists()


# -- the trainer -----------------------------------------------------------------------------

TINY = [
    "--set", "block_out_channels=[16, 32]",
    "--set", "norm_num_groups=8",
    "--set", "attention_head_dim=2",
    "--set", "captions_per_image=2",
]  # fmt: skip


def _folder(root: Path, n: int, captions: int) -> Path:
    from PIL import Image

    from latentzoo.core.runtime.data import load_dataset

    root.mkdir()
    data = load_dataset("digits", split="test")
    for i in range(n):
        array = ((data.images[i, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(array).save(root / f"{i}.png")
        if i < captions:
            (root / f"{i}.txt").write_text(f"a handwritten {int(data.labels[i])}")
    return root


def test_train_text_diffusion_on_a_captioned_folder_then_sample(lz, tmp_path):
    data = _folder(tmp_path / "imgs", 8, 8)
    run = tmp_path / "run"
    train = [
        "train", "diffusion", "--encoder", "digits-vqgan", "--data", str(data), "--set", "conditioner=digits-clip",
        *TINY, "-o", str(run), "--steps", "2", "--batch-size", "4", "--no-progress", "--name", "tiny-t2i",
    ]  # fmt: skip
    lz(*train).assert_ok()
    entry = yaml.safe_load((run / "registry.yaml").read_text())["components"]["tiny-t2i"]
    clip = _shipped()["components"]["digits-clip"]["conditioning_space"]
    assert entry["class"] == "diffusion.unet_cond"
    assert entry["conditioning"] == {k: clip[k] for k in ("kind", "width", "sequence_length", "encoder")}
    assert entry["config"]["cross_attention_dim"] == clip["width"] and entry["training"]["caption_dropout"] == 0.1
    out = tmp_path / "x.png"
    lz(
        "--registry", str(run / "registry.yaml"), "sample", "--conditioner", "digits-clip", "--prior", "tiny-t2i",
        "--decoder", "digits-vqgan", "--sampler", "ddim", "--scheduler", "leading", "--prompt", "a handwritten 3", *FAST, "-o", str(out),
    ).assert_ok()  # fmt: skip
    assert out.exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--data", "CAPTIONLESS"], "2 of 6 image(s)"),
        (["--data", "digits"], "has no captions"),
        (["--set", "conditioner=digits-vqgan"], "digits-vqgan"),
        (["--set", "conditioner=digits-clip", "--set", "caption_dropout=1.5"], "caption_dropout"),
    ],
)
def test_train_text_diffusion_bad_input_writes_nothing(lz, tmp_path, extra, fragment):
    data = _folder(tmp_path / "imgs", 6, 4)
    extra = [str(data) if x == "CAPTIONLESS" else x for x in extra]
    args = ["train", "diffusion", "--encoder", "digits-vqgan", *TINY, "--steps", "2", "--no-progress"]
    if not any(x.startswith("conditioner=") for x in extra):
        args += ["--set", "conditioner=digits-clip"]
    if "--data" not in extra:
        args += ["--data", str(data)]
    run = tmp_path / "run"
    lz(*args, *extra, "-o", str(run)).assert_one_line_error(fragment)
    assert not run.exists()
