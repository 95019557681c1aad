"""Data-parallel training: 2 gloo processes on 127.0.0.1 launched by torchrun, as a user runs it.

Each launch trains tiny models for a few steps. Checked: both ranks end with identical
weights (the trainer compares replica fingerprints and records it), the weights match a
single process with the same global batch, only rank 0 writes, and a stopped and resumed
run equals an uninterrupted one bit for bit. Plus the single-process pieces the loop adds:
gradient accumulation, clipping, bf16 autocast and DataLoader workers.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from torch import nn

from latentzoo.core.runtime.data import ImageSet, folder_dataset
from latentzoo.core.training import MicroBatch, Phase, Run, TrainOptions, cosine_lr, latest_checkpoint

TINY = {
    "vae": ["--set", "block_out_channels=[8,8]", "--set", "norm_num_groups=4"],
    "vqgan": [
        *("--set", "block_out_channels=[8,8]", "--set", "norm_num_groups=4", "--set", "num_vq_embeddings=16"),
        *("--set", "disc_start=2", "--set", "disc_width=8"),
    ],
    "diffusion": [
        *("--set", "block_out_channels=[8,16]", "--set", "norm_num_groups=4", "--set", "num_class_embeds=11"),
        *("--set", "down_block_types=[DownBlock2D,AttnDownBlock2D]", "--set", "up_block_types=[AttnUpBlock2D,UpBlock2D]"),
    ],
}
# The attention key bias gets an exactly zero gradient (softmax is shift-invariant), so Adam
# turns its rounding noise into full-size steps; it is not compared.
NO_GRADIENT = ("to_k.bias",)
ENV = {"OMP_NUM_THREADS": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(cli, family: str, out: Path, *extra: str, procs: int = 1, steps: int = 4):
    args = ["train", family, "-o", str(out), "--steps", str(steps), "--batch-size", "16", "--lr", "1e-3", "--seed", "3"]
    args += ["--checkpoint-every", "2", "--no-progress", "--name", f"tiny-{family}", *TINY[family], *extra]
    return cli(*args, env=ENV, timeout=300) if procs == 1 else torchrun(cli, *args, procs=procs)


def torchrun(cli, *args: str, procs: int = 2):
    """The installed CLI on ``procs`` gloo processes, rendezvous on 127.0.0.1."""
    launch = ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(procs)]
    launch += ["--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "latentzoo"]
    return cli.python(*launch, *args, env=ENV, timeout=300)


def checkpoint(run: Path) -> dict[str, torch.Tensor]:
    directory, _ = latest_checkpoint(run)
    return load_file(str(directory / "checkpoint.safetensors"))


def run_state(run: Path) -> dict:
    """state.json of the run's newest verified checkpoint."""
    return latest_checkpoint(run)[1]


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point() and not key.endswith(NO_GRADIENT):
            assert torch.allclose(a[key], b[key], rtol=1e-3, atol=atol), (key, float((a[key] - b[key]).abs().max()))


@pytest.fixture(scope="module")
def autoencoder_runs(tmp_path_factory, helpers):
    """VQ-GAN (codebook, discriminator from step 2) on 1 and on 2 processes, same global batch."""
    root = tmp_path_factory.mktemp("ddp")
    (root / "cwd").mkdir()
    (root / "config").mkdir()
    cli = helpers.Cli(root / "cwd", root / "config")
    one = train(cli, "vqgan", root / "one").assert_ok()
    two = train(cli, "vqgan", root / "two", procs=2).assert_ok()
    return cli, root, one, two


def test_two_processes_hold_identical_weights_equal_to_one_process(autoencoder_runs):
    _, root, one, two = autoencoder_runs
    state = run_state(root / "two")
    assert state["world_size"] == 2 and state["replicas_identical"] is True and state["step"] == 4
    # Generator, discriminator and both optimizers' moments, at the same global batch of 16.
    assert_close(checkpoint(root / "one"), checkpoint(root / "two"), atol=1e-5)
    # Rank 0 alone reports and writes: one summary line, one set of files, no temporaries.
    assert one.stderr.count("trained vqgan") == two.stderr.count("trained vqgan") == 1
    files = sorted(p.name for p in (root / "two").iterdir())
    assert files == sorted(p.name for p in (root / "one").iterdir())
    assert not [f for f in files if f.endswith(".tmp")]
    assert json.loads((root / "two" / "metrics.json").read_text())["metrics"]["codebook_usage"] > 0


def test_prior_on_two_processes_matches_one_process(autoencoder_runs):
    """Class-conditional latent diffusion on the VQ-GAN's latents (label dropout, noise and
    timesteps are per-sample draws, so they do not depend on the world size)."""
    cli, root, _, _ = autoencoder_runs
    reg = ["--registry", str(root / "one" / "registry.yaml")]
    args = [*reg, "train", "diffusion", "--encoder", "tiny-vqgan", "--steps", "4", "--batch-size", "16", "--seed", "3", "--lr", "1e-3"]
    args += ["--no-progress", "--name", "tiny-prior", *TINY["diffusion"]]
    cli(*args, "-o", str(root / "p1"), env=ENV, timeout=300).assert_ok()
    torchrun(cli, *args, "-o", str(root / "p2")).assert_ok()
    assert run_state(root / "p2")["replicas_identical"] is True
    a, b = checkpoint(root / "p1"), checkpoint(root / "p2")
    assert_close(a, b, atol=1e-5)
    assert any(k.startswith("ema.") for k in a)
    # Same contract: the measured scaling of the (same) latents.
    space = [yaml.safe_load((root / run / "registry.yaml").read_text())["components"]["tiny-prior"]["latent_space"] for run in ("p1", "p2")]
    assert space[0] == space[1] and space[0]["scaling_factor"] > 0


def test_distributed_resume_is_exact(autoencoder_runs):
    """Stop at step 2 and resume to 4 on 2 processes (with gradient accumulation) = 4 straight."""
    cli, root, _, _ = autoencoder_runs
    train(cli, "vae", root / "straight", "--grad-accum", "2", procs=2).assert_ok()
    train(cli, "vae", root / "split", "--grad-accum", "2", procs=2, steps=2).assert_ok()
    train(cli, "vae", root / "split", "--grad-accum", "2", "--resume", procs=2).assert_ok()
    a, b = checkpoint(root / "straight"), checkpoint(root / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    state = run_state(root / "split")
    assert (state["grad_accum"], state["world_size"], state["precision"]) == (2, 2, "fp32")


def test_batch_that_does_not_divide_over_processes_is_refused(cli, tmp_path):
    r = train(cli, "vae", tmp_path / "r", "--batch-size", "15", "--grad-accum", "2")
    r.assert_one_line_error("--batch-size 15 is the global batch", "use a multiple of 2")
    assert not (tmp_path / "r").exists()  # a run that fails before its first checkpoint leaves no directory


def test_bad_device_and_precision_are_one_line_errors(cli, tmp_path):
    if not torch.cuda.is_available():
        train(cli, "vae", tmp_path / "r", "--device", "cuda").assert_one_line_error("--device cuda", "use --device cpu")
    train(cli, "vae", tmp_path / "r", "--device", "tpu").assert_one_line_error("--device must be auto, cpu, cuda, cuda:N or mps")
    r = train(cli, "vae", tmp_path / "r", "--precision", "fp16")
    assert r.returncode == 2 and "fp16" in r.stderr and "Traceback" not in r.stderr


def test_resume_reuses_the_runs_own_options(cli, tmp_path):
    """--resume without repeating --set continues the same model (the options come from state.json)."""
    train(cli, "vqgan", tmp_path / "r", steps=2).assert_ok()
    args = ["train", "vqgan", "-o", str(tmp_path / "r"), "--steps", "4", "--batch-size", "16", "--lr", "1e-3", "--seed", "3"]
    cli(*args, "--resume", "--no-progress", "--name", "tiny-vqgan", env=ENV, timeout=300).assert_ok()
    train(cli, "vqgan", tmp_path / "straight").assert_ok()
    a, b = checkpoint(tmp_path / "r"), checkpoint(tmp_path / "straight")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------
# the loop's pieces on one process, on a model simple enough to predict


def toy_run(tmp_path: Path, **options) -> tuple[Run, nn.Linear, ImageSet]:
    torch.set_num_threads(1)
    opts = TrainOptions(out=tmp_path, steps=3, batch_size=8, lr=0.1, seed=0, progress=False, checkpoint_every=100, device="cpu")
    for key, value in options.items():
        setattr(opts, key, value)
    run = Run(opts)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    g = torch.Generator().manual_seed(1)
    data = ImageSet(torch.randn(32, 4, generator=g), torch.randn(32, generator=g), "toy")
    return run, model, data


def fit(tmp_path: Path, **options) -> tuple[nn.Linear, list[dict]]:
    run, model, data = toy_run(tmp_path, **options)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss(mb: MicroBatch):
        out = ((model(mb.data).squeeze(1) - mb.labels) ** 2).mean() + 0.0 * mb.randn().sum()
        return out, {"mse": out.item()}

    history = run.loop(
        data,
        [Phase("toy", opt, model, loss, clip=run.clip(None))],
        run.checkpointer({"m": model}, {"o": opt}),
        start=0,
        history=[],
        desc="toy",
        state={},
    )
    return model, history


def test_gradient_accumulation_equals_the_full_batch(tmp_path):
    full, _ = fit(tmp_path / "a")
    accumulated, _ = fit(tmp_path / "b", grad_accum=4)
    assert torch.allclose(full.weight, accumulated.weight, atol=1e-6) and torch.allclose(full.bias, accumulated.bias, atol=1e-6)
    assert run_state(tmp_path / "b")["grad_accum"] == 4


def test_gradient_clipping_bounds_each_update(tmp_path):
    """SGD with max-norm c moves the parameters by at most lr * c per step."""
    torch.manual_seed(0)
    start = [p.detach().clone() for p in nn.Linear(4, 1).parameters()]
    clipped, _ = fit(tmp_path / "c", clip_grad=0.01, steps=1)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(clipped.parameters(), start, strict=True)]).norm()
    assert moved == pytest.approx(cosine_lr(0, 1, 0.1) * 0.01, rel=1e-2)  # max_norm / (norm + 1e-6)
    free, _ = fit(tmp_path / "f", steps=1)
    assert torch.cat([(p.detach() - s).flatten() for p, s in zip(free.parameters(), start, strict=True)]).norm() > 10 * moved
    state = run_state(tmp_path / "c")
    assert state["clip_grad"] == 0.01 and state["max_grad_norm"] == {"toy": 0.01}


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    full, _ = fit(tmp_path / "fp32")
    half, _ = fit(tmp_path / "bf16", precision="bf16")
    assert not torch.equal(full.weight, half.weight)  # autocast really ran the matmuls in bfloat16
    assert torch.allclose(full.weight, half.weight, atol=0.05)
    assert run_state(tmp_path / "bf16")["precision"] == "bf16"


def test_workers_load_the_same_batches_as_the_main_process(tmp_path):
    run, _, data = toy_run(tmp_path / "r", steps=5, grad_accum=2)
    inline = [x for x, _ in run.loader(data, start=0)]
    run.options.workers = 2
    workers = [x for x, _ in run.loader(data, start=0)]
    assert len(inline) == len(workers) == 10
    assert all(torch.equal(a, b) for a, b in zip(inline, workers, strict=True))
    resumed = [x for x, _ in run.loader(data, start=3)]  # resume at step 3: the same last two steps
    assert len(resumed) == 4 and all(torch.equal(a, b) for a, b in zip(inline[6:], resumed, strict=True))


def test_folder_is_decoded_lazily_in_workers(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for k in range(12):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"{k:02d}.png")
    folder = folder_dataset(tmp_path, size=16, channels=3)
    run, _, _ = toy_run(tmp_path / "r", steps=3, batch_size=4, workers=2)
    batches = [x for x, _ in run.loader(folder, start=0)]
    assert [b.shape for b in batches] == [(4, 3, 16, 16)] * 3
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))[:4]
    assert torch.equal(batches[0], folder.images[order])


def test_validation_metrics_land_in_the_history_at_each_checkpoint(tmp_path):
    run, model, data = toy_run(tmp_path, steps=6, checkpoint_every=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    held_x, held_y = data.images[:8], data.labels[:8]

    def loss(mb: MicroBatch):
        out = ((model(mb.data).squeeze(1) - mb.labels) ** 2).mean()
        return out, {"mse": out.item()}

    def validate():
        with torch.no_grad():
            return {"val_mse": float(((model(held_x).squeeze(1) - held_y) ** 2).mean())}

    ckpt = run.checkpointer({"m": model}, {"o": opt})
    history = run.loop(data, [Phase("toy", opt, model, loss)], ckpt, start=0, history=[], desc="toy", state={}, validate=validate)
    assert [row["step"] for row in history] == [2, 4, 6]
    assert history[-1]["val_mse"] == pytest.approx(validate()["val_mse"])
    assert history[0]["val_mse"] > history[-1]["val_mse"]  # least squares on SGD: held-out error falls
    assert run_state(tmp_path)["history"] == history
