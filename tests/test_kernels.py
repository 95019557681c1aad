"""core.nn.kernels: oneDNN linear and prepacked convolutions for CPU inference.

They must agree with PyTorch's eager kernels to float rounding, give the same bytes for the
same input, repack when the weight or the input shape changes, stay out of training, autocast
and anything they cannot run, and pack weights adopted from a file from the file.
"""

from __future__ import annotations

import copy
import os
import pickle
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from latentzoo.core.nn import kernels  # noqa: E402

pytestmark = pytest.mark.skipif(not kernels.available(), reason="this torch build has no oneDNN pointwise ops")

RTOL = 1e-5


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def twins(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(eager, accelerated) copies with the same weights."""
    torch.manual_seed(0)
    eager = module.eval()
    return eager, kernels.accelerate(copy.deepcopy(eager))


LAYERS = {
    "linear": (lambda: nn.Linear(48, 80), (5, 48)),
    "linear-tokens": (lambda: nn.Linear(48, 80), (2, 7, 48)),
    "linear-no-bias": (lambda: nn.Linear(48, 80, bias=False), (2, 7, 48)),
    "conv3x3": (lambda: nn.Conv2d(24, 32, 3, padding=1), (2, 24, 9, 7)),
    "conv1x1": (lambda: nn.Conv2d(24, 32, 1), (1, 24, 4, 4)),
    "conv-stride2": (lambda: nn.Conv2d(32, 32, 3, stride=2, padding=0), (2, 32, 9, 9)),
    "conv-no-bias": (lambda: nn.Conv2d(16, 48, 3, padding=1, bias=False), (1, 16, 4, 4)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_inference_matches_eager_and_is_deterministic(name):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    eager, fast = twins(make())
    assert type(fast) in (kernels.OneDNNLinear, kernels.PackedConv2d)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want, got, again = eager(x), fast(x), fast(x.clone())
    assert rel(got, want) < RTOL
    assert torch.equal(got, again)  # the same input, the same bytes
    with torch.no_grad():  # no_grad takes the fast path too
        assert torch.equal(fast(x), got)


def test_non_contiguous_input_and_changing_shapes_repack():
    torch.manual_seed(0)
    eager, fast = twins(nn.Conv2d(16, 32, 3, padding=1))
    with torch.inference_mode():
        for shape in [(2, 16, 8, 8), (1, 16, 5, 11), (2, 16, 8, 8)]:
            x = torch.randn(*shape)
            assert rel(fast(x), eager(x)) < RTOL
        x = torch.randn(2, 8, 8, 16).permute(0, 3, 1, 2)  # a channels-last view
        assert rel(fast(x), eager(x)) < RTOL
        eager_l, fast_l = twins(nn.Linear(16, 24))
        t = torch.randn(2, 16, 9).transpose(1, 2)
        assert rel(fast_l(t), eager_l(t)) < RTOL


def test_changed_weights_are_repacked():
    torch.manual_seed(0)
    eager, fast = twins(nn.Conv2d(16, 32, 3, padding=1))
    x = torch.randn(2, 16, 8, 8)
    with torch.inference_mode():
        before = fast(x)
    new = {k: torch.randn_like(v) for k, v in eager.state_dict().items()}
    eager.load_state_dict(new)
    fast.load_state_dict(new)  # an in-place copy: same tensor, new version
    with torch.inference_mode():
        assert rel(fast(x), eager(x)) < RTOL
        assert rel(fast(x), before) > 0.1
    with torch.no_grad():
        fast.weight.mul_(2.0)  # an in-place update
        eager.weight.mul_(2.0)
    with torch.inference_mode():
        assert rel(fast(x), eager(x)) < RTOL
    fast.weight = nn.Parameter(eager.weight.detach().clone() * -1)  # a new tensor
    with torch.inference_mode():
        assert rel(fast(x), -eager(x) + 2 * eager.bias[None, :, None, None]) < RTOL


def test_training_autocast_and_unsupported_layers_take_the_eager_path():
    torch.manual_seed(0)
    eager, fast = twins(nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 16, 10)))
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    out = fast(x)  # grad enabled: exactly eager, and differentiable
    assert torch.equal(out, eager(x))
    out.sum().backward()
    assert x.grad is not None and fast[0].weight.grad is not None
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fast(x.detach()), eager(x.detach()))  # autocast's casting policy is kept
    # Grouped, 'same'-padded, reflect-padded and narrow-output convolutions, and subclasses, stay as they are.
    for conv in (
        nn.Conv2d(8, 16, 3, groups=2),
        nn.Conv2d(8, 16, 3, padding="same"),
        nn.Conv2d(8, 16, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(32, 4, 3, padding=1),
        type("MyConv", (nn.Conv2d,), {})(8, 16, 3),
    ):
        kind = type(conv)
        assert type(kernels.accelerate(conv)) is kind
    with kernels.eager(), torch.inference_mode():
        assert torch.equal(fast(x.detach()), eager(x.detach()))


def test_weights_made_under_inference_mode_run_eager():
    """Inference tensors have no version counter: an in-place change could not be detected, so they are not packed."""
    with torch.inference_mode():
        torch.manual_seed(0)
        eager = nn.Conv2d(16, 32, 3, padding=1).eval()
        fast = kernels.accelerate(copy.deepcopy(eager))
        x = torch.randn(1, 16, 4, 4)
        assert torch.equal(fast(x), eager(x))
        fast.weight.mul_(2)
        eager.weight.mul_(2)
        assert torch.equal(fast(x), eager(x))
    assert fast._packed is None


def test_a_cast_drops_the_stale_packed_copy():
    """After --precision bf16-weights casts a packed layer, its fp32 packed copy is not kept alive."""
    from latentzoo.core.contract.weights import cast_parameters

    torch.manual_seed(0)
    eager, fast = twins(nn.Conv2d(16, 32, 3, padding=1))
    x = torch.randn(1, 16, 4, 4)
    with torch.inference_mode():
        fast(x)
    assert fast._packed is not None and fast._packed[1] is not None
    cast_parameters(fast, torch.bfloat16)
    cast_parameters(eager, torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(fast(x.bfloat16()), eager(x.bfloat16()))
    assert fast._packed is None


def test_bf16_runs_eager():
    """bf16 is left to PyTorch (its linears already use oneDNN; packed bf16 convolutions ran slower at full size)."""
    torch.manual_seed(0)
    eager, fast = twins(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.Flatten(), nn.Linear(32 * 16, 8)).to(torch.bfloat16))
    x = torch.randn(2, 32, 4, 4).to(torch.bfloat16)
    with torch.inference_mode():
        assert torch.equal(fast(x), eager(x))
    assert fast[0]._packed is None


def test_activations_larger_than_the_weight_keep_the_eager_convolution():
    """At high resolution packing does not pay (and some packed layouts run slower): those calls run eager."""
    torch.manual_seed(0)
    eager, fast = twins(nn.Conv2d(16, 32, 3, padding=1))
    x = torch.randn(1, 16, 32, 32)
    assert x.numel() > fast.weight.numel()
    with torch.inference_mode():
        assert torch.equal(fast(x), eager(x))
    assert fast._packed is None


def test_large_in_memory_weights_are_not_doubled():
    """A weight above MAX_IN_MEMORY_PACK with no file to pack from keeps the eager convolution (no packed copy)."""
    torch.manual_seed(0)
    eager, fast = twins(nn.Conv2d(512, 512, 3, padding=1))  # 9.4 MB
    assert fast.weight.numel() * 4 > kernels.MAX_IN_MEMORY_PACK
    x = torch.randn(1, 512, 4, 4)
    with torch.inference_mode():
        assert torch.equal(fast(x), eager(x))
    assert fast._packed is not None and fast._packed[1] is None  # the decision is remembered, not retried per call


def test_copies_and_pickles_repack_on_first_call():
    torch.manual_seed(0)
    eager, fast = twins(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 32, 1)))
    x = torch.randn(1, 16, 6, 6)
    with torch.inference_mode():
        got = fast(x)
    for other in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        assert other[0]._packed is None
        with torch.inference_mode():
            assert torch.equal(other(x), got)
    assert set(fast.state_dict()) == set(eager.state_dict())


def test_weights_adopted_from_a_file_are_packed_from_the_file(tmp_path):
    """A shipped cross-attention UNet loads by assignment: its convolutions know their file bytes, and run as eager does."""
    from latentzoo.core.runtime.build import Builder

    prior = Builder.from_registry().component("digits-t2i-prior", "prior")
    convs = [m for m in prior.modules() if isinstance(m, kernels.PackedConv2d)]
    linears = [m for m in prior.modules() if isinstance(m, kernels.OneDNNLinear)]
    assert convs and linears
    for conv in convs:
        with kernels.file_source(conv.weight) as from_file:
            assert from_file is not None and torch.equal(from_file, conv.weight)
            assert from_file.data_ptr() != conv.weight.data_ptr()  # its own mapping, not the model's
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *prior.latent_shape, generator=g)
    tokens = torch.randn(2, 16, prior.cross_attention_dim, generator=g)
    with torch.inference_mode():
        got = prior(x, torch.tensor(500), encoder_hidden_states=tokens)
        with kernels.eager():
            want = prior(x, torch.tensor(500), encoder_hidden_states=tokens)
    assert rel(got, want) < RTOL
    # A weight changed in place no longer matches its file: it is packed from memory instead.
    with torch.no_grad():
        convs[0].weight.add_(0.0)
    with kernels.file_source(convs[0].weight) as from_file:
        assert from_file is None


def test_a_replaced_weights_file_is_not_read(tmp_path):
    """An atomic rewrite of the file after the load (a new inode) must not leak into a loaded model's packed weights."""
    from safetensors.torch import load_file, save_file

    path = tmp_path / "w.safetensors"
    conv = nn.Conv2d(16, 32, 3, padding=1)
    save_file(conv.state_dict(), path)
    with torch.device("meta"):
        loaded = nn.Conv2d(16, 32, 3, padding=1)
    loaded.load_state_dict(load_file(path), assign=True)
    from latentzoo.core.contract.weights import record_file_sources

    record_file_sources(loaded, path)
    with kernels.file_source(loaded.weight) as from_file:
        assert torch.equal(from_file, conv.weight.detach())
    fresh = tmp_path / "new.safetensors"
    save_file({k: v * 2 for k, v in conv.state_dict().items()}, fresh)
    fresh.replace(path)
    with kernels.file_source(loaded.weight) as from_file:
        assert from_file is None
    kernels.accelerate(loaded)
    x = torch.randn(1, 16, 5, 5)
    with torch.inference_mode():
        assert rel(loaded(x), conv(x)) < RTOL  # packed from the mapping: the weights it loaded


def test_latentzoo_kernels_eager_turns_it_off():
    code = "from latentzoo.core.nn import kernels; from torch import nn; print(kernels.available(), type(kernels.accelerate(nn.Linear(2, 2))).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "LATENTZOO_KERNELS": "eager"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "Linear"]
