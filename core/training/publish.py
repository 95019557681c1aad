"""Publishing a run: the trained component (``model.safetensors`` + ``config.json``), its
metrics, and the registry fragment that names it, written atomically by rank 0.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..contract.weights import save_tensors, write_json
from .options import TrainOptions

if TYPE_CHECKING:
    from .run import Run


def write_fragment(out: Path, name: str, entry: dict[str, Any]) -> Path:
    """A registry fragment naming the trained component (usable with ``--registry``)."""
    import yaml

    from ..contract.weights import write_bytes

    text = yaml.safe_dump({"components": {name: entry}}, sort_keys=False)
    return write_bytes(out / "registry.yaml", text.encode())


def finish_run(
    options: TrainOptions,
    state_dict: dict[str, torch.Tensor],
    *,
    family: str,
    component_class: str,
    roles: list[str],
    config: dict[str, Any],
    latent_space: dict[str, Any] | Callable[[str], dict[str, Any]],
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    description: str,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Write model.safetensors, config.json, metrics.json and registry.yaml; return the entry.

    ``latent_space`` may be a function of the weights' sha256 (an autoencoder's identity).
    """
    sha = save_tensors(options.out / "model.safetensors", state_dict, metadata={"family": family})
    training = {"data": options.data, "steps": options.steps, "batch_size": options.batch_size, "lr": options.lr, "seed": options.seed}
    if encoder:
        training["encoder"] = encoder
    entry = {
        "family": family,
        "class": component_class,
        "roles": roles,
        "config": config,
        "weights": {"path": "model.safetensors", "sha256": sha},
        "latent_space": latent_space(sha) if callable(latent_space) else latent_space,
        "license": "MIT",
        "description": description,
        "metrics": metrics,
        "training": training,
    }
    write_json(options.out / "config.json", config)
    write_json(options.out / "metrics.json", {"metrics": metrics, "history": history})
    write_fragment(options.out, options.name or f"{family}-{Path(options.out).name}", entry)
    return entry


def finish_autoencoder(options: TrainOptions, model: nn.Module, *, identity: Callable[[str], str], **fields: Any) -> dict[str, Any]:
    """finish_run for an autoencoder: it defines its own latent space, named by its weights."""
    return finish_run(
        options,
        model.state_dict(),
        roles=["encoder", "decoder"],
        latent_space=lambda sha: {**model.shape_fields(), "autoencoder": identity(sha)},
        **fields,
    )


def publish_autoencoder(
    run: Run,
    model: nn.Module,
    *,
    family: str,
    config: dict[str, Any],
    history: list[dict[str, Any]],
    evaluate: Callable[[nn.Module, str, dict[str, Any]], dict[str, Any]],
    description: str,
) -> dict[str, Any] | None:
    """The end of an autoencoder run: on rank 0, held-out ``evaluate(model, data, config)`` and
    the run directory's files (class ``<family>.autoencoder``, named by its weights)."""
    from ..contract.weights import space_identity

    def write() -> dict[str, Any]:
        model.eval().cpu()
        return finish_autoencoder(
            run.options,
            model,
            family=family,
            component_class=f"{family}.autoencoder",
            config=config,
            metrics=evaluate(model, run.options.data, config),
            history=history,
            identity=space_identity,
            description=description,
        )

    return run.publish(write)
