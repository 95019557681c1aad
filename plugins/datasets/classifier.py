"""A small CNN digit classifier: the feature extractor behind the Fréchet distance on digits.

It takes 32x32 one-channel images in [-1, 1] (``load_dataset('digits')``); ``features(x)``
returns its 64-d penultimate activations and ``forward(x)`` its 10 logits. The shipped
weights, ``digits-classifier.safetensors``, come from ``train_classifier(seed=0)`` on the
training split only (the 360 held-out digits are never seen), and are sha256-checked on load.

Retrain (about a minute on one CPU thread) and re-record ``SHA256`` with::

    python -m latentzoo.plugins.datasets.classifier
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).with_name("digits-classifier.safetensors")
SHA256 = "c9ab6083aea642a276133e8de64960a2c64f58c5f950aeb55d49748392b56bd6"
FEATURE_DIM = 64
NUM_CLASSES = 10


class DigitClassifier(nn.Module):
    """conv 1->16->32->64 (3x3, ReLU, 2x2 max-pool each: 32 -> 4 px), linear 1024 -> 64 + SiLU (features), linear 64 -> 10.

    The feature layer uses SiLU rather than ReLU: its inputs are all positive, so under ReLU
    about half of the 64 units start (and stay) dead, and the Fréchet distance would see ~33 dims.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 4 * 4, FEATURE_DIM)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, 64) of images (B, 1, 32, 32) in [-1, 1]."""
        if x.shape[1:] != (1, 32, 32):
            raise ValueError(f"the digit classifier takes (B, 1, 32, 32) images, not {tuple(x.shape)}")
        for conv in (self.conv1, self.conv2, self.conv3):
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return F.silu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, 10)."""
        return self.head(self.features(x))


def random_shift(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by an independent integer offset in [-max_shift, max_shift] px on each axis, filling with -1."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h))[:, :, None]  # (n, h, 1)
    cols = (dx[:, None] + torch.arange(w))[:, None, :]  # (n, 1, w)
    return padded[torch.arange(n)[:, None, None], :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (n, h, w, c) -> (n, c, h, w)


@torch.inference_mode()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    model.eval()
    preds = torch.cat([model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)])
    return float((preds == labels).float().mean())


def train_classifier(
    seed: int = 0,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 2,
    log_every: int = 0,
) -> tuple[DigitClassifier, dict[str, float]]:
    """Train on the digits training split with random +-``max_shift`` px shifts (AdamW, cosine-decayed lr).

    Returns the model (eval mode) and metrics: train and held-out accuracy.
    """
    from latentzoo.core.runtime.data import load_dataset

    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    torch.manual_seed(seed)
    model = DigitClassifier()
    generator = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    images, labels = train.images, train.labels.long()
    model.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        x = random_shift(images[idx], generator, max_shift) if max_shift else images[idx]
        loss = F.cross_entropy(model(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log_every and step % log_every == 0:
            print(f"step {step}/{steps} loss {loss.item():.4f} held-out acc {accuracy(model, test.images, test.labels):.4f}", flush=True)
            model.train()
    metrics = {
        "train_accuracy": accuracy(model, images, labels),
        "test_accuracy": accuracy(model, test.images, test.labels),
    }
    return model.eval().requires_grad_(False), metrics


def save_classifier(model: DigitClassifier, path: str | Path = WEIGHTS, metadata: dict[str, str] | None = None) -> str:
    """Write the weights (safetensors, atomically); return their sha256."""
    from latentzoo.core.contract.weights import save_tensors

    return save_tensors(path, model.state_dict(), metadata=metadata)


def load_classifier(path: str | Path = WEIGHTS, sha256: str | None = SHA256) -> DigitClassifier:
    """The classifier with weights from ``path`` (the shipped file by default), sha256-verified; eval mode, no grad.

    Raises ``WeightsError`` when the file is missing, modified, or does not fit the model.
    """
    from latentzoo.core.contract.errors import WeightsError
    from latentzoo.core.contract.weights import load_tensors

    state = load_tensors(path, sha256)
    model = DigitClassifier()
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise WeightsError(f"weights file {path} does not fit the digit classifier: {str(exc).splitlines()[0]}") from exc
    return model.eval().requires_grad_(False)


def main() -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Train the digit classifier and write its weights.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("-o", "--output", default=str(WEIGHTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, metrics = train_classifier(seed=args.seed, steps=args.steps, log_every=250)
    meta = {"seed": str(args.seed), "steps": str(args.steps), **{k: f"{v:.4f}" for k, v in metrics.items()}}
    sha = save_classifier(model, args.output, meta)
    print(f"{metrics} in {time.perf_counter() - start:.0f} s; wrote {args.output}; SHA256 = {sha!r}")


if __name__ == "__main__":
    main()
