"""``latentzoo train lora``: the trainer contract on a LoRA (exact --resume, published adapter entry) and its use.

Eight captioned images, rank 2, two steps on the shipped digits-t2i: a straight run and a run
stopped at step 1 and resumed give the same bytes; the published kohya file applies with
``sample --lora`` through the run's registry fragment; bad options are one line.
"""

from __future__ import annotations

import json

import pytest
import yaml

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from PIL import Image

    from latentzoo.plugins.datasets.digits import load

    out = tmp_path_factory.mktemp("captioned")
    data = load("train", 32, 1)
    for i in range(8):
        array = data.images[i, 0].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        Image.fromarray(array, mode="L").save(out / f"{i}.png")
        (out / f"{i}.txt").write_text(f"a striped {int(data.labels[i])}\n")
    return out


@pytest.fixture
def cli(capsys, helpers):
    return helpers.in_process_cli(capsys)


def train_args(folder, out, steps: int, *extra: str) -> list[str]:
    return ["train", "lora", "--base", "digits-t2i", "--data", str(folder), "--rank", "2", "--alpha", "1", "--targets", "to_q",
            "--targets", "to_v", "--steps", str(steps), "--batch-size", "4", "--checkpoint-every", "1", "--lr", "0.05", "--no-progress",
            "-o", str(out), "--name", "striped", *extra]  # fmt: skip


def test_train_lora_resumes_exactly(folder, cli, tmp_path):
    r = cli(*train_args(folder, tmp_path / "a", 2))
    assert r.returncode == 0, r.stderr
    assert cli(*train_args(folder, tmp_path / "b", 1)).returncode == 0
    r = cli(*train_args(folder, tmp_path / "b", 2, "--resume"))
    assert r.returncode == 0, r.stderr
    a, b = (tmp_path / "a" / "model.safetensors").read_bytes(), (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b  # exact resume
    from safetensors.torch import load_file

    tensors = load_file(str(tmp_path / "a" / "model.safetensors"))
    assert all(k.startswith("lora_unet_") for k in tensors) and any(k.endswith("attn2_to_v.alpha") for k in tensors)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))  # it learnt something
    entry = yaml.safe_load((tmp_path / "a" / "registry.yaml").read_text())["components"]["striped"]
    assert entry["config"]["parts"]["prior"]["base"] == "digits-t2i-prior" and entry["config"]["rank"] == 2


@pytest.mark.slow
def test_trained_lora_applies_with_sample(folder, cli, tmp_path):
    assert cli(*train_args(folder, tmp_path / "a", 2)).returncode == 0
    reg = str(tmp_path / "a" / "registry.yaml")
    args = ["-n", "1", "--steps", "2", "--prompt", "a striped 7", "--no-progress"]
    assert cli("--registry", reg, "sample", "digits-t2i", "--lora", "striped", *args, "-o", str(tmp_path / "l.png")).returncode == 0
    assert cli("--registry", reg, "sample", "digits-t2i", "--lora", "striped:0", *args, "-o", str(tmp_path / "z.png")).returncode == 0
    assert cli("sample", "digits-t2i", *args, "-o", str(tmp_path / "base.png")).returncode == 0
    png = {k: (tmp_path / f"{k}.png").read_bytes() for k in ("l", "z", "base")}
    assert png["z"] == png["base"] and png["l"] != png["base"]
    side = json.loads((tmp_path / "l.json").read_text())
    assert side["adapters"][0]["name"] == "striped" and side["adapters"][0]["model_strength"] == 1.0


def test_train_lora_bad_options_are_one_line(folder, cli, tmp_path):
    cases = [
        (["--rank", "0"], "--rank"),
        (["--targets", "no_such_layer"], "no Linear / Conv2d layer matches"),
        (["--base", "digits"], "needs its encoder and text encoder"),
        (["--base", "digits-vqgan"], "adapts a prior or"),
    ]
    for extra, fragment in cases:
        args = ["train", "lora", "--base", "digits-t2i", "--data", str(folder), "--steps", "2", "--batch-size", "4", "--no-progress",
                "-o", str(tmp_path / "bad")]  # fmt: skip
        for i in range(0, len(extra), 2):
            if extra[i] in args:
                args[args.index(extra[i]) + 1] = extra[i + 1]
            else:
                args += extra[i : i + 2]
        r = cli(*args)
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert r.returncode != 0 and len(lines) == 1 and fragment in lines[0], r.stderr
        assert not (tmp_path / "bad").exists()


def test_shipped_digits_hollow_fits_and_applies(cli, tmp_path):
    """The shipped LoRA: <= 5 % of its base's size, fits digits-t2i, strength 0 gives the base's bytes."""
    from latentzoo.core.runtime.api import info

    lora, base = info("digits-hollow"), info("digits-t2i-prior")
    assert lora.weights_path().stat().st_size <= 0.05 * base.weights_path().stat().st_size
    args = ["-n", "1", "--steps", "2", "--prompt", "a hollow seven", "--no-progress"]
    for key, extra in (("lora", ["--lora", "digits-hollow"]), ("zero", ["--lora", "digits-hollow:0"]), ("base", [])):
        r = cli("sample", "digits-t2i", *extra, *args, "-o", str(tmp_path / f"{key}.png"))
        assert r.returncode == 0, r.stderr
    png = {k: (tmp_path / f"{k}.png").read_bytes() for k in ("lora", "zero", "base")}
    assert png["zero"] == png["base"] != png["lora"]
