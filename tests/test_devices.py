"""Devices and precisions (core.runtime.devices): --device on every command that runs models and device= in
the API, through the one check; a device that is not there refused in one line; --precision fp16
CUDA only. This machine has no GPU: the placement code path (OnDevice) is exercised on the CPU,
where it must be transparent, and the CUDA checks against a torch that says it has two GPUs.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from latentzoo.core.contract.errors import LatentzooError  # noqa: E402

from .test_digits_pipeline import save_digits  # noqa: E402

NO_CUDA = not torch.cuda.is_available()


@pytest.fixture(scope="module")
def digit(tmp_path_factory):
    return str(save_digits(tmp_path_factory.mktemp("in"), 1)[0])


@pytest.fixture
def lz(capsys, monkeypatch, tmp_path, helpers):
    config = tmp_path / "lz-config"
    config.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return helpers.in_process_cli(capsys)


def commands(digit: str, out: str) -> dict[str, list[str]]:
    return {
        "sample": ["sample", "digits-vae", "-n", "2", "--no-progress", "-o", out],
        "img2img": ["img2img", "digits", digit, "--steps", "2", "-o", out],
        "inpaint": ["inpaint", "digits", digit, "--mask", digit, "--steps", "2", "-o", out],
        "interpolate": ["interpolate", "digits", digit, digit, "--frames", "2", "--steps", "2", "-o", out],
        "variations": ["variations", "digits-unclip", digit, "-n", "2", "-o", out],
    }


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["sample", "img2img", "inpaint", "interpolate", "variations"])
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "gpu", "cuda:x", ""])
def test_every_command_refuses_a_device_that_is_not_there_in_one_line(lz, tmp_path, digit, command, device):
    out = tmp_path / "out"
    lz(*commands(digit, f"{out}/")[command], "--device", device).assert_one_line_error("--device")
    assert not out.exists()


@pytest.mark.parametrize("command", ["sample", "img2img", "variations"])
def test_fp16_off_cuda_is_refused_naming_bf16(lz, tmp_path, digit, command):
    out = tmp_path / "out"
    line = lz(*commands(digit, f"{out}/")[command], "--precision", "fp16").assert_one_line_error("--precision fp16")
    assert "CUDA only" in line and "bf16" in line
    assert not out.exists()


def test_bf16_runs_on_the_cpu_and_is_recorded(lz, tmp_path, digit):
    """bf16 on the CPU runs (autocast): the decision core/runtime/devices.py documents."""
    out = tmp_path / "e"
    lz(*commands(digit, f"{out}/")["img2img"], "--precision", "bf16", "--threads", "1").assert_ok()
    record = json.loads((out / "samples.json").read_text())
    assert record["precision"] == "bf16" and record["device"] == "cpu" and record["threads"] == 1


def test_serve_and_train_refuse_a_missing_device_in_one_line(lz, tmp_path):
    pytest.importorskip("fastapi")
    if NO_CUDA:
        lz("serve", "--device", "cuda:3", "--port", "0").assert_one_line_error("--device cuda:3")
        lz("train", "vae", "-o", str(tmp_path / "r"), "--device", "cuda:0", "--steps", "1").assert_one_line_error("--device cuda:0")
    lz("serve", "--device", "tpu", "--port", "0").assert_one_line_error("--device must be")
    lz("train", "vae", "-o", str(tmp_path / "r"), "--device", "mps:0", "--steps", "1").assert_one_line_error("--device must be")
    assert not (tmp_path / "r").exists()


def test_the_api_takes_device_and_precision(tmp_path, monkeypatch):
    import latentzoo

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    with pytest.raises(LatentzooError, match="--precision fp16 runs on CUDA only"):
        latentzoo.sample("digits-vae", 2, output=f"{tmp_path / 'a'}/", precision="fp16")
    if NO_CUDA:
        with pytest.raises(LatentzooError, match="no CUDA device"):
            latentzoo.sample("digits-vae", 2, output=f"{tmp_path / 'a'}/", device="cuda")
    assert not (tmp_path / "a").exists()


# -- the CUDA checks, against a torch that says it has two GPUs ----------------------------------


def test_cuda_devices_are_checked_against_the_count(monkeypatch):
    from latentzoo.core.runtime import devices as runtime
    from latentzoo.core.runtime.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.check_device("cuda") == "cuda" and runtime.check_device("cuda:1") == "cuda:1"
    with pytest.raises(LatentzooError, match=r"has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        runtime.check_device("cuda:2")
    runtime.check_precision_on("fp16", "cuda:1")  # fp16 runs on CUDA
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda", 1)  # train: each rank its own GPU
    assert resolve_device("cuda:0", local_rank=3) == torch.device("cuda", 0)


def test_under_torchrun_cuda_is_each_ranks_own_gpu():
    from latentzoo.core.runtime.devices import rank_device
    from latentzoo.core.runtime.distributed import World

    world = World(rank=1, size=2, local_rank=1, device=torch.device("cuda", 1))
    assert rank_device("cuda", world) == "cuda:1"
    assert rank_device("cuda:0", world) == "cuda:0" and rank_device("cpu", None) == "cpu"


# -- placement: OnDevice is transparent on the CPU -----------------------------------------------


def wrapped(pipe, precision: str = "fp32"):
    """The pipeline with every model part wrapped in OnDevice, on the CPU (what place does on a GPU)."""
    from latentzoo.core.runtime.devices import PARTS, OnDevice

    for role in PARTS:
        part = getattr(pipe, role, None)
        if isinstance(part, torch.nn.Module):
            setattr(pipe, role, OnDevice(part, "cpu", precision))
    return pipe


def test_on_device_gives_the_bytes_of_the_unwrapped_pipeline(tmp_path, digit):
    from latentzoo.core.runtime import editing
    from latentzoo.core.runtime.api import load_pipeline

    plain = load_pipeline("digits")
    placed = wrapped(load_pipeline("digits"))
    assert type(placed.prior).__name__ == "OnDevice" and placed.modules()  # modules() still finds the weights
    opts = {"steps": 3, "eta": 1.0}
    assert torch.equal(plain.sample(3, seed=2, **opts), placed.sample(3, seed=2, **opts))
    a = editing.img2img(plain, [digit], 0.7, seed=1, options=opts).images
    assert torch.equal(a, editing.img2img(placed, [digit], 0.7, seed=1, options=opts).images)


def test_on_device_moves_inputs_runs_autocast_and_returns_float32_on_the_cpu():
    from latentzoo.core.runtime.devices import OnDevice

    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 4)
            self.register_buffer("table", torch.arange(3.0))

        def forward(self, x, *, cond):
            seen["dtype"] = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
            seen["cond"] = cond["tokens"].device
            return self.linear(x)

        def embed(self, x):
            return {"pooled": self.linear(x)}

    probe = OnDevice(Probe(), "cpu", "bf16")
    x = torch.randn(2, 4)
    out = probe(x, cond={"tokens": torch.zeros(2, 3)})
    assert seen["dtype"] == torch.bfloat16  # the model ran under the precision's autocast
    assert out.dtype == torch.float32 and out.device.type == "cpu"  # and handed back float32 on the CPU
    assert probe.embed(x)["pooled"].dtype == torch.float32  # methods too, through nested outputs
    assert torch.equal(probe.table, torch.arange(3.0))  # buffers read through it
    fp32 = OnDevice(probe.module, "cpu", "fp32")(x, cond={"tokens": torch.zeros(2, 3)})
    assert seen["dtype"] is None and not torch.equal(fp32, out)  # fp32: no autocast


def test_place_on_the_cpu_leaves_a_pipeline_as_it_was_and_unwraps_one_placed_elsewhere():
    from latentzoo.core.runtime.api import load_pipeline
    from latentzoo.core.runtime.devices import place

    pipe = load_pipeline("digits-vae")
    prior = pipe.prior
    assert place(pipe, "cpu") is pipe and pipe.prior is prior and pipe.device == "cpu"
    wrapped(pipe)
    pipe.device = "cuda"  # as a server's warm pipeline placed on a GPU by an earlier job
    place(pipe, "cpu")
    assert pipe.prior is prior and pipe.device == "cpu"
    with pytest.raises(LatentzooError, match="--precision fp16 runs on CUDA only"):
        place(pipe, "cpu", "fp16")


def test_noise_is_drawn_on_the_cpu_per_index_then_moved():
    """The per-index generators are CPU generators: a draw for another device is the CPU draw, moved."""
    from latentzoo.core.runtime import seeding

    rows = seeding.RowGenerators.for_samples(5, [(0, 0), (1, 0)])
    again = seeding.RowGenerators.for_samples(5, [(0, 0), (1, 0)])
    moved = seeding.randn((2, 3), rows, device=torch.device("cpu"))
    assert torch.equal(moved, seeding.randn((2, 3), again)) and all(g.device.type == "cpu" for g in rows.rows)
