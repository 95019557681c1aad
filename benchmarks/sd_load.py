"""Building and loading Stable Diffusion 1.5's UNet (exact published config, 860M parameters): meta + assign vs init + copy.

latentzoo builds classes that declare ``load_by_assignment`` (UNetCondPrior, CLIPTextEncoder,
KLAutoencoder) with their parameters on the meta device and adopts the memory-mapped
safetensors tensors (``load_state_dict(assign=True)``), at conversion and when sampling. This
script measures what that saves against the ordinary path (random initialisation on CPU, then a
copy of every tensor): build time, reading + verifying the file (sha256, finite check; the same on both paths) and
loading the tensors into the model. Random weights; nothing is downloaded.

    python benchmarks/sd_load.py [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from latentzoo.core.contract.weights import load_tensors, parameters_on_meta, save_tensors
from latentzoo.plugins.diffusion.unet_cond import UNetCondPrior

SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json (the keys UNetCondPrior takes)
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=[320, 640, 1280, 1280],
    layers_per_block=2,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    cross_attention_dim=768,
    attention_head_dim=8,
    training_schedule={"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet.safetensors"
        with parameters_on_meta():
            UNetCondPrior(**SD15_UNET)  # warm-up (imports)
        t = time.perf_counter()
        source = UNetCondPrior(**SD15_UNET)
        out["build_random_init_s"] = time.perf_counter() - t
        out["parameters_M"] = sum(p.numel() for p in source.parameters()) / 1e6
        sha = save_tensors(path, source.state_dict())
        del source

        t = time.perf_counter()
        with parameters_on_meta():
            model = UNetCondPrior(**SD15_UNET)
        out["build_meta_s"] = time.perf_counter() - t
        t = time.perf_counter()
        state = load_tensors(path, sha)  # memory-mapped; sha256 and the finite check read every page once
        out["read_verify_s"] = time.perf_counter() - t
        t = time.perf_counter()
        model.load_state_dict(state, strict=True, assign=True)
        out["load_assign_s"] = time.perf_counter() - t
        del model
        model = UNetCondPrior(**SD15_UNET)
        t = time.perf_counter()
        model.load_state_dict(state, strict=True)
        out["load_copy_s"] = time.perf_counter() - t
        out["ordinary_total_s"] = out["build_random_init_s"] + out["read_verify_s"] + out["load_copy_s"]
        out["latentzoo_total_s"] = out["build_meta_s"] + out["read_verify_s"] + out["load_assign_s"]
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for k, v in out.items():
            print(f"{k:28s} {v:10.3f}")


if __name__ == "__main__":
    main()
