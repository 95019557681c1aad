"""Fit the latent-preview decoder to a trained autoencoder and write this plugin's registry fragment.

    python fit_preview.py                       # fit to digits-vqgan on the digits training split
    python fit_preview.py --autoencoder NAME --registry my.yaml

Least squares (with a small ridge term) from each 5x5 latent neighbourhood to the
factor x factor pixels the real decoder draws there. The latent space the preview accepts
is copied from the autoencoder's registry entry (never typed by hand), without scaling:
the preview, like the autoencoder's decoder, takes raw latents.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

import latentzoo
from latentzoo.core.contract.weights import save_tensors
from latentzoo.core.runtime.data import load_dataset
from latentzoo.core.runtime.metrics import psnr

PACKAGE = Path(__file__).resolve().parent / "src" / "latentzoo_example"
WEIGHTS = "digits-preview.safetensors"

FRAGMENT = """\
# Registry fragment of latentzoo-example-plugin; written by fit_preview.py (re-run it after
# retraining the autoencoder). Paths are relative to this file.
components:
  plms:
    family: example
    class: example.plms
    roles: [sampler]
    config: {{order: 4}}
    description: PLMS (Liu et al. 2022), 4th-order pseudo linear multi-step, from latentzoo-example-plugin
  digits-preview:
    family: example
    class: example.preview
    roles: [decoder]
    config: {config}
    weights: {{path: {weights}, sha256: {sha256}}}
    latent_space: {latent_space}
    license: MIT
    description: Approximate previewer of {autoencoder} latents ({params} weights; {psnr:.1f} dB PSNR to its decoder)
"""


def flow(data: dict) -> str:
    return yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=1000).strip()


@torch.no_grad()
def fit(autoencoder: str, registry: list[str], kernel: int, ridge: float) -> dict:
    entry = latentzoo.info(autoencoder, extra=registry)
    space = entry.latent_space
    if space is None or space.kind != "continuous":
        raise SystemExit(f"{autoencoder} has no continuous latent_space to preview")
    ae = latentzoo.build(autoencoder, "decoder", extra=registry)
    size = int(getattr(ae, "sample_size", 32))

    def pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = load_dataset("digits", split=split, size=size, channels=ae.image_channels).images
        z = torch.cat([ae.encode(images[i : i + 256]) for i in range(0, len(images), 256)])
        return z, torch.cat([ae.decode(z[i : i + 256]).clamp(-1, 1) for i in range(0, len(z), 256)])

    z, target = pairs("train")
    f, c, out = space.factor, space.channels, ae.image_channels * space.factor**2
    x = F.unfold(z, kernel, padding=kernel // 2).transpose(1, 2).reshape(-1, c * kernel * kernel)
    x = torch.cat([x, torch.ones(len(x), 1)], 1).double()
    y = F.pixel_unshuffle(target, f).flatten(2).transpose(1, 2).reshape(-1, out).double()
    w = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    tensors = {"proj.weight": w[:-1].T.reshape(out, c, kernel, kernel).float(), "proj.bias": w[-1].float()}
    sha256 = save_tensors(PACKAGE / WEIGHTS, tensors, metadata={"fitted_to": autoencoder, "autoencoder": space.autoencoder})

    from latentzoo_example.preview import LatentPreviewDecoder

    config = {"latent_channels": c, "factor": f, "image_channels": ae.image_channels, "kernel_size": kernel}
    preview = LatentPreviewDecoder(**config)
    preview.load_state_dict(tensors)
    z_test, target_test = pairs("test")
    score = psnr(preview.decode(z_test), target_test)
    raw = {k: v for k, v in space.to_dict().items() if k not in ("scaling_factor", "shift")}
    text = FRAGMENT.format(
        config=flow(config),
        weights=WEIGHTS,
        sha256=sha256,
        latent_space=flow(raw),
        autoencoder=autoencoder,
        params=sum(t.numel() for t in tensors.values()),
        psnr=score,
    )
    (PACKAGE / "registry.yaml").write_text(text, encoding="utf-8")
    return {"sha256": sha256, "psnr_db": round(score, 2), "latent_space": raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autoencoder", default="digits-vqgan", help="registry name of the autoencoder to preview")
    parser.add_argument("--registry", action="append", default=[], help="extra registry file (repeatable)")
    parser.add_argument("--kernel", type=int, default=5, help="latent neighbourhood (odd)")
    parser.add_argument("--ridge", type=float, default=1e-4, help="ridge term, relative to the number of rows")
    args = parser.parse_args()
    print(fit(args.autoencoder, args.registry, args.kernel, args.ridge))


if __name__ == "__main__":
    main()
