"""The training wing: the public trainer contract, runs, data-parallel loops, crash-consistent
checkpoints, EMA and publishing. It may import the contract and runtime wings and nn; nothing
below it (contract, nn, runtime) imports it. Modules, by concern: options (TrainOptions,
--set groups, the LR schedule), streams (stateless batches and noise, micro-batches,
dataset helpers), checkpoints (atomic checkpoints, EMA, run-folder preparation), run
(the data-parallel Run and train), publish (the component, metrics, registry
fragment). The names below are the trainer contract, importable from here.

The trainer contract (docs/plugins.md, "Trainer contract"): a family's declaration may name
``"trainer": "module:function"``; ``latentzoo train FAMILY`` (and ``latentzoo.train``) calls
``function(options: TrainOptions) -> dict | None`` and the function returns the registry entry
of what it published (None on ranks other than 0). A trainer builds a ``Run(options)``, takes a
``run.checkpointer(...)``, drives ``run.loop(...)`` and ends with ``run.publish(...)`` (or
``run.publish_component(...)``), so every family gets the same run directory:

- ``checkpoints/step-NNNNNNNN/``: one checkpoint, a single atomic unit: ``checkpoint.safetensors``
  (model, EMA and optimizer tensors), ``state.json`` (step, options, loss history, world
  size, ...) and ``manifest.json`` (written last, the sha256 of both). It is written as
  ``checkpoints/.tmp-step-NNNNNNNN/`` and renamed into place; the last two are kept. A resume
  takes the newest checkpoint whose manifest verifies, never a torn one.
- ``model.safetensors`` + ``config.json``: the trained component (EMA weights for priors),
- ``metrics.json``: held-out metrics and the loss history,
- ``registry.yaml``: a registry fragment naming it, usable with ``--registry``.
All writes are atomic and made by rank 0 only. A run that fails before its first checkpoint
removes the run directory it created.

Data parallelism (``torchrun --nproc-per-node N -m latentzoo train ...``): ``--batch-size`` is
the *global* batch of one optimizer step. Every rank draws the same global batch (a pure
function of seed and step) and takes its contiguous share; ``--grad-accum`` splits that
share into micro-batches. Gradients are averaged by DistributedDataParallel, so N
processes take the same steps as one process with the same global batch.

Randomness is stateless: per-sample noise is drawn for the whole global batch from a
generator seeded by (seed, step, draw) and sliced (``MicroBatch.randn``), and torch's
global generator (dropout) is reseeded from (seed, step, rank) every step. So a resumed
run needs no RNG state to continue exactly where it stopped, and per-sample noise does not
depend on the world size or on gradient accumulation.
"""

from .checkpoints import EMA, Checkpointer, latest_checkpoint, prepare_run, verify_checkpoint
from .options import PRECISIONS, TrainOptions, cosine_lr, split_options
from .publish import finish_autoencoder, finish_run, publish_autoencoder, write_fragment
from .run import Run, progress_bar, train
from .streams import MicroBatch, Phase, StepBatches, batches, encode_dataset, held_out_split, normalise_latents, stream_seed

__all__ = [
    "EMA",
    "PRECISIONS",
    "Checkpointer",
    "MicroBatch",
    "Phase",
    "Run",
    "StepBatches",
    "TrainOptions",
    "batches",
    "cosine_lr",
    "encode_dataset",
    "finish_autoencoder",
    "finish_run",
    "held_out_split",
    "latest_checkpoint",
    "normalise_latents",
    "prepare_run",
    "progress_bar",
    "publish_autoencoder",
    "split_options",
    "stream_seed",
    "train",
    "verify_checkpoint",
    "write_fragment",
]
