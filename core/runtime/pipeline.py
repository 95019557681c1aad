"""A composed pipeline: encoder (optional), prior, sampler, scheduler, decoder (imports torch).

Sampling follows the role contract (core/contract/interfaces.py): when the sampler walks levels,
``levels = scheduler.schedule(prior, steps, **scheduler_options)``; then
``sampler.sample(prior, noise, levels=levels, generator=g, progress=p, **options)`` with
the validated sampler and prior options (``class_label`` becomes the ``class_labels``
LongTensor).

Batches and reproducibility (seeding ``per-index/1``, core.runtime.seeding). ``n`` samples are drawn
in batches of ``batch_size`` (default 64), so memory does not grow with ``n``. Sample i's
noise and every later random draw (sampler noise, drawn class or caption, re-ranking
candidates, a stochastic decoder's noise) come from its own generator keyed by (seed, i):
its pixels do not depend on the batch size, on ``n`` (``-n 6`` is the first 6 of ``-n 12``)
or on which process renders it (``indices``: a share of 0..n-1). Bit-identical where the
batch shapes match; otherwise within one grey level (kernels may round another batch shape
differently). ``sample_latents`` is the one exception: one batch from one
``torch.Generator(seed)``, diffusers' convention, kept for parity checks against it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..contract.compose import TEXT_INPUTS, PipelineSpec, check_text
from ..contract.errors import LatentzooError
from ..contract.interfaces import Conditioner, Decoder, Encoder, Prior, Progress, Sampler, Scheduler, Scorer
from ..contract.options import Option, OptionError, canonical, resolve
from . import seeding
from .record import DEFAULT_BATCH_SIZE, MAX_SEED, PRECISIONS, check_precision, check_run

DEFAULT_STEPS = 50


def compute_precision(precision: str, device: str = "cpu") -> contextlib.AbstractContextManager:
    """On another device than the CPU, nothing here: each model part runs under its device's autocast
    (core.runtime.devices.OnDevice). On the CPU: ``bf16``: the models' matmuls and convolutions run in bfloat16 under autocast (weights stay as
    loaded; samplers' arithmetic and the decoded images are float32). Half the memory traffic of
    the large layers, at about 3 significant digits: same seed, same bytes still holds on one machine.
    ``bf16-weights``: the same autocast, with the weights held in bfloat16 (``Pipeline.hold_weights``)."""
    check_precision(precision)
    if precision == "fp32" or device != "cpu":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cpu", dtype=torch.bfloat16)


def decoder_seed(seed: int) -> int:  # still used by core.runtime.variations (one latent, one seed)
    """The seed of a stochastic decoder's own noise for a batch seeded ``seed`` (independent of the prior's draw)."""
    digest = hashlib.sha256(f"latentzoo-decoder:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


@dataclass
class SamplingOptions:
    """Validated options of one call: steps, one dict per role, which keys the caller set, and the
    conditioning inputs (prompt / negative_prompt) for the conditioner."""

    steps: int
    per_role: dict[str, dict[str, Any]]
    flat: dict[str, Any]
    given: set[str] = field(default_factory=set)
    conditioning: dict[str, str] = field(default_factory=dict)

    def recorded(self) -> dict[str, Any]:
        """What a sidecar's ``options`` shows: the option values and the conditioning inputs."""
        return {**self.flat, **self.conditioning}


def _finite(x: torch.Tensor) -> bool:
    return not x.is_floating_point() or bool(torch.isfinite(x).all())


@dataclass
class Pipeline:
    """The built parts of a PipelineSpec, typed by their roles (core.contract.interfaces)."""

    prior: Prior
    decoder: Decoder
    sampler: Sampler
    spec: PipelineSpec
    encoder: Encoder | None = None
    scheduler: Scheduler | None = None
    conditioner: Conditioner | None = None  # when the prior takes its conditioning from one (text)
    scorer: Scorer | None = None  # re-ranks candidates (core.runtime.rerank)
    sha256: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    # What the prior, sampler and scheduler declare (core.contract.options); set by the builder.
    declared: dict[str, list[Option]] = field(default_factory=dict)
    refiner: Any = None  # (Pipeline, switch): a refiner finishing this pipeline's sampling (core.runtime.refine.attach)
    # LoRA adapters applied in memory (interop.lora.apply_to_pipeline): name, sha256, strengths, for the sidecar.
    adapters: list[dict[str, Any]] = field(default_factory=list)
    device: str = "cpu"  # where the model parts run (core.runtime.devices.place); samplers and generators stay on the CPU

    def modules(self) -> list[torch.nn.Module]:
        """The distinct torch modules among the pipeline's components."""
        found: list[torch.nn.Module] = []
        for part in (self.prior, self.decoder, self.encoder, self.conditioner, self.scorer):
            part = getattr(part, "module", part) if type(part).__name__ == "OnDevice" else part  # placed on a device
            if isinstance(part, torch.nn.Module) and all(part is not m for m in found):
                found.append(part)
        return found

    def hold_weights(self, precision: str) -> None:
        """Hold every component's floating-point parameters in the dtype ``precision`` asks for.

        ``bf16-weights`` casts them to bfloat16 (half their memory; from the weights file where
        they were adopted from one, so its fp32 pages are not made resident: core.contract.weights.cast_parameters)
        and samples under autocast. Once cast, the pipeline stays so: fp32 sampling is then refused."""
        check_precision(precision)
        held = {p.dtype for m in self.modules() for p in m.parameters() if p.is_floating_point()}
        if precision == "bf16-weights":
            if held != {torch.bfloat16}:
                from ..contract.weights import cast_parameters

                for m in self.modules():
                    cast_parameters(m, torch.bfloat16)
        elif precision == "fp32" and torch.bfloat16 in held:
            raise LatentzooError(
                f"pipeline {self.spec.name} holds bfloat16 weights (precision bf16-weights); sample it with "
                "--precision bf16-weights or bf16, or load it again for fp32"
            )

    # The prior models (z - shift) * scaling_factor; the decoder takes raw z.
    def scale(self, z: torch.Tensor) -> torch.Tensor:
        space = self.prior.latent_space
        if space.kind == "discrete" or space.scaling_factor is None:
            return z
        return (z - (space.shift or 0.0)) * space.scaling_factor

    def unscale(self, z: torch.Tensor) -> torch.Tensor:
        space = self.prior.latent_space
        if space.kind == "discrete" or space.scaling_factor is None:
            return z
        return z / space.scaling_factor + (space.shift or 0.0)

    # -- options ------------------------------------------------------------------------
    def resolve_options(
        self, options: Mapping[str, Any] | None = None, text_options: Mapping[str, str] | None = None, **overrides: Any
    ) -> SamplingOptions:
        """Pipeline defaults, then ``options`` and keyword ``overrides`` (YAML values; None = unset),
        then ``text_options`` (command-line strings), each checked against the declared options.

        ``steps`` is always accepted; any other key must be declared by the prior, the
        sampler or the scheduler (``role.name`` where a name is ambiguous).
        """
        declared = self.declared or {"prior": [], "sampler": [], **({"scheduler": []} if self.scheduler is not None else {})}
        where = f"pipeline {self.spec.name}"
        values = {**(options or {}), **{k: v for k, v in overrides.items() if v is not None}}
        conditioning = self._conditioning(values, text_options or {})
        text_options = {k: v for k, v in (text_options or {}).items() if k not in TEXT_INPUTS}
        default_steps, merged = resolve(declared, self.spec.defaults, where=f"{where} (its defaults)")
        steps, given = resolve(declared, values, where=where)
        text_steps, given_text = resolve(declared, text_options, where=where, text=True)
        for layer in (given, given_text):
            for role, vals in layer.items():
                merged.setdefault(role, {}).update(vals)
        steps = next((s for s in (text_steps, steps, default_steps) if s is not None), DEFAULT_STEPS)
        keys = {name for layer in (given, given_text) for vals in layer.values() for name in vals}
        return SamplingOptions(steps=steps, per_role=merged, flat=canonical(declared, merged), given=keys, conditioning=conditioning)

    def _conditioning(self, values: dict[str, Any], text_options: Mapping[str, str]) -> dict[str, str]:
        """Take the conditioning inputs (prompt, negative_prompt) out of ``values`` and ``text_options``:
        they go to the conditioner (checked as core.contract.compose.check_options does), not to any part's options."""
        out = {k: values.pop(k) for k in TEXT_INPUTS if k in values}
        out.update({k: text_options[k] for k in TEXT_INPUTS if k in text_options})
        check_text(None, self.spec, [f"--{k.replace('_', '-')}" for k in out])
        for key, value in out.items():
            if not isinstance(value, str):
                raise LatentzooError(f"--{key.replace('_', '-')} must be text, not {value!r}")
        return out

    def options(self, **overrides: Any) -> dict[str, Any]:
        """Pipeline defaults overridden by explicit, non-None arguments, validated (flat keys and steps)."""
        plan = self.resolve_options(**overrides)
        return {"steps": plan.steps, **plan.recorded()}

    def _call_options(self, plan: SamplingOptions, batch: int) -> dict[str, Any]:
        """Keyword arguments of ``sampler.sample``: prior options, then sampler options; class_label -> class_labels."""
        call = {**plan.per_role.get("prior", {}), **plan.per_role.get("sampler", {})}
        if self.conditioner is not None:
            # Text (or any conditioner's input): the prompt's tokens steer the prior; the negative
            # prompt (default: the empty prompt) is the unconditional branch of guidance.
            prompt, negative = plan.conditioning.get("prompt") or "", plan.conditioning.get("negative_prompt") or ""
            if call.get("random_prompt") and not prompt.strip():
                # Ancestral p(text) p(x | text): the sampler draws each sample's caption from the
                # conditioner's caption set (the captions its prior was trained on).
                prompts = list(getattr(self.conditioner, "prompts", None) or [])
                if not prompts:
                    raise LatentzooError(f"conditioner {self.spec.conditioner} has no caption set to draw from; drop random_prompt")
                call["conditioning"] = self.conditioner.condition(prompts)
                call["null_conditioning"] = self.conditioner.condition([negative])
                return self._prior_conditioning(call)
            call.pop("random_prompt", None)
            if not prompt.strip():
                # The empty prompt is the unconditional branch the prior learned by caption dropout.
                warnings.warn(
                    f"empty prompt: pipeline {self.spec.name} samples unconditionally (the prior sees the empty prompt); "
                    "give --prompt TEXT to steer it",
                    stacklevel=2,
                )
            call["conditioning"] = self.conditioner.condition([prompt])
            call["null_conditioning"] = self.conditioner.condition([negative])
            return self._prior_conditioning(call)
        class_label = call.pop("class_label", None)
        if class_label is None and "guidance" in plan.given and call.get("guidance") is not None and not call.get("random_class"):
            raise LatentzooError("--guidance needs --class or random_class (classifier-free guidance towards a class)")
        if class_label is not None:
            num_classes = getattr(self.prior, "num_classes", None)
            if not num_classes:
                raise LatentzooError(f"prior {self.spec.prior} is unconditional; drop --class")
            if not 0 <= class_label < num_classes - 1:
                raise LatentzooError(f"--class must be between 0 and {num_classes - 2} for prior {self.spec.prior}")
            call["class_labels"] = torch.full((batch,), class_label, dtype=torch.long)
        return call

    def _prior_conditioning(self, call: dict[str, Any]) -> dict[str, Any]:
        """Conditioning the prior derives from its own options and the image size (SDXL's size and crop
        ``time_ids``): ``prior.extra_conditioning(options, (height, width))`` -> (cond, null) entries."""
        extra = getattr(self.prior, "extra_conditioning", None)
        if extra is None:
            return call
        space = getattr(self.prior, "latent_space", None)
        factor = int(getattr(space, "factor", 1) or 1)
        size = tuple(int(s) * factor for s in self.prior.latent_shape[-2:])
        cond, null = extra(call, size)
        call["conditioning"] = {**call["conditioning"], **cond}
        call["null_conditioning"] = {**call["null_conditioning"], **null}
        return call

    # -- sampling -----------------------------------------------------------------------
    def levels(self, plan: SamplingOptions) -> list[float] | None:
        """The scheduler's levels for this call, or None when the sampler walks none."""
        if getattr(self.sampler, "levels", None) is None:
            return None
        if self.scheduler is None:
            raise LatentzooError(f"sampler {self.spec.sampler} walks {self.sampler.levels} levels; add a scheduler")
        return list(self.scheduler.schedule(self.prior, plan.steps, **plan.per_role.get("scheduler", {})))

    @torch.inference_mode()
    def _latents(
        self,
        plan: SamplingOptions,
        generator: torch.Generator,
        n: int,
        progress: Progress | None,
        levels: list[float] | None,
        *,
        captions: int | None = None,
        keys: Sequence[tuple[int, int]] | None = None,
        drawn: dict[int, int] | None = None,
    ) -> torch.Tensor:
        """n latents, every draw from ``generator`` (``RowGenerators``: row r from its own). With
        ``captions`` K (re-ranking drawn captions), row r is candidate c of output i (``keys[r]``):
        output i's caption index is drawn from its candidate 0's generator, right after that row's
        noise, into ``drawn[i]``, and every candidate of output i gets that caption (the sampler's
        ``prompt_indices``). Candidate 0 comes first, so it is drawn before any later candidate of
        the output needs it, in this call or an earlier one."""
        noise = seeding.randn((n, *self.prior.latent_shape), generator)
        call = self._call_options(plan, n)
        if captions is not None:
            # The same draw the sampler makes for random_prompt (uniform over the K captions, right
            # after the noise), one per output instead of one per sample: with N = 1 the bytes are
            # those of plain random_prompt sampling.
            assert keys is not None and drawn is not None and len(keys) == n
            firsts = [r for r, (_, c) in enumerate(keys) if c == 0]
            if firsts:
                source = generator.select(firsts) if isinstance(generator, seeding.RowGenerators) else generator
                for r, index in zip(firsts, seeding.randint(captions, len(firsts), source).tolist(), strict=True):
                    drawn[keys[r][0]] = index
            call["prompt_indices"] = torch.tensor([drawn[i] for i, _ in keys], dtype=torch.long)
        if getattr(self.prior, "refiner", False) or self.refiner is not None:
            from . import refine

            if self.refiner is None:
                refine.attach(self, self)  # refuses, naming the refiner: it does not sample from pure noise
            latents = refine.sample(self, plan, noise, levels, generator, progress, call)
        else:
            latents = self.sampler.sample(self.prior, noise, levels=levels, generator=generator, progress=progress, **call)
        if not _finite(latents):
            raise LatentzooError(
                f"sampler {self.spec.sampler} produced non-finite latents from prior {self.spec.prior}; "
                "check the prior's weights and the sampling options"
            )
        return latents

    @torch.inference_mode()
    def sample_latents(
        self, n: int, *, seed: int = 0, progress: Progress | None = None, options: Mapping[str, Any] | None = None, **overrides: Any
    ) -> torch.Tensor:
        """n latents in the prior's (scaled) space, drawn in one batch from one ``torch.Generator(seed)``
        (diffusers' convention: for parity checks; ``sample`` seeds each sample by its index)."""
        check_run(n, seed)
        plan = self.resolve_options(options, **overrides)
        return self._latents(plan, torch.Generator().manual_seed(seed), n, progress, self.levels(plan))

    @torch.inference_mode()
    def iter_batches(
        self,
        n: int,
        *,
        seed: int = 0,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        plan: SamplingOptions | None = None,
        progress: Progress | None = None,
        candidates: int | None = None,
        scores: list[float] | None = None,
        precision: str = "fp32",
        captions: list[int] | None = None,
        indices: Sequence[int] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield image batches in [-1, 1]: samples ``indices`` (default 0..n-1) of the run of n from
        ``seed``, in order, ``batch_size`` at a time; sample i's draws come from (seed, i) alone.

        With ``candidates`` N, each output draws N candidates (output i's candidate c from its
        own generator, keyed (seed, i, c); c = 0 is the draw without re-ranking) and keeps the one the scorer rates best against the
        prompt (DALL-E's CLIP re-ranking, Ramesh et al. 2021, sec. 2.5); the kept scores are
        appended to ``scores``. Without a prompt, under ``random_prompt``, each output's caption
        is drawn from the conditioner's caption set, its N candidates are drawn for it and
        scored against it; the drawn indices (into ``conditioner.prompts``) go to ``captions``.
        """
        from .rerank import candidate_scores, check_candidates

        batch_size = batch_size or DEFAULT_BATCH_SIZE
        check_run(n, seed, batch_size)
        plan = plan or self.resolve_options()
        text = check_candidates(self, candidates, plan) if candidates is not None else None
        caption_set = text if isinstance(text, list) else None
        levels = self.levels(plan)
        self.hold_weights(precision)
        indices = list(range(n)) if indices is None else list(indices)
        if any(not 0 <= i < n for i in indices):
            raise LatentzooError(f"sample indices must lie in 0..{n - 1}")
        drawn: dict[int, int] = {}
        draw = {"plan": plan, "seed": seed, "progress": progress, "levels": levels, "precision": precision}
        for start in range(0, len(indices), batch_size):
            outputs = indices[start : start + batch_size]
            if text is None:
                yield self._draw([(i, 0) for i in outputs], **draw)
                continue
            # Re-ranking: output i's N candidates are drawn batch_size at a time, each kept only while
            # it is the best so far (first maximum on ties, as argmax), so memory is flat in N.
            assert candidates is not None
            best: dict[int, tuple[float, torch.Tensor]] = {}
            keys = [(i, c) for i in outputs for c in range(candidates)]
            for chunk in (keys[k : k + batch_size] for k in range(0, len(keys), batch_size)):
                images = self._draw(chunk, **draw, captions=caption_set, drawn=drawn)
                against = text if caption_set is None else [caption_set[drawn[i]] for i, _ in chunk]
                for (i, _), score, image in zip(chunk, candidate_scores(self.scorer, images, against), images, strict=True):
                    if i not in best or score > best[i][0]:
                        best[i] = (score, image.clone())
            if scores is not None:
                scores.extend(best[i][0] for i in outputs)
            if caption_set is not None:
                kept = [drawn.pop(i) for i in outputs]
                if captions is not None:
                    captions.extend(kept)
            yield torch.stack([best[i][1] for i in outputs])

    def _draw(
        self,
        keys: list[tuple[int, int]],
        *,
        plan: SamplingOptions,
        seed: int,
        progress: Progress | None,
        levels: list[float] | None,
        precision: str,
        captions: list[str] | None = None,
        drawn: dict[int, int] | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1] of the draws ``keys`` ((output, candidate) pairs), each from its own generators."""
        with compute_precision(precision, self.device):
            latents = self._latents(
                plan,
                seeding.RowGenerators.for_samples(seed, keys),
                len(keys),
                progress,
                levels,
                captions=None if captions is None else len(captions),
                keys=keys,
                drawn=drawn,
            )
            if latents.is_floating_point():  # codes (integer latents) pass as they are
                latents = latents.float()
            decoder_rows = seeding.RowGenerators.for_samples(seed, keys, "decoder") if self.stochastic_decoder else None
            return self.decode(self.unscale(latents), generator=decoder_rows).float()

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        *,
        seed: int = 0,
        progress: Progress | None = None,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        options: Mapping[str, Any] | None = None,
        candidates: int | None = None,
        scores: list[float] | None = None,
        precision: str = "fp32",
        captions: list[int] | None = None,
        **overrides: Any,
    ) -> torch.Tensor:
        """n images in [-1, 1]; the same seed, options and batch size give identical output on CPU.

        ``candidates`` N: draw N per output and keep the scorer's best against the prompt
        (the kept scores go to ``scores`` when given); without a prompt, under ``random_prompt``,
        against each output's drawn caption (its index into ``conditioner.prompts`` goes to ``captions``).
        """
        plan = self.resolve_options(options, **overrides)
        batches = self.iter_batches(
            n,
            seed=seed,
            batch_size=batch_size,
            plan=plan,
            progress=progress,
            candidates=candidates,
            scores=scores,
            precision=precision,
            captions=captions,
        )
        return torch.cat(list(batches))

    def sample_to(
        self,
        output: str,
        n: int,
        *,
        seed: int = 0,
        batch_size: int | None = DEFAULT_BATCH_SIZE,
        nrow: int | None = None,
        options: Mapping[str, Any] | None = None,
        text_options: Mapping[str, str] | None = None,
        progress: Progress | None = None,
        candidates: int | None = None,
        precision: str = "fp32",
        resume: bool = False,
        world: Any = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Sample and write ``output`` (a .png grid, or ``DIR/`` for one PNG per sample) with its JSON sidecar.

        With ``candidates`` N, each output is the best of N by the pipeline's scorer; the
        sidecar's ``reranking`` records N, the scorer and every kept score, and for drawn
        captions (no prompt, ``random_prompt``) each output's caption and its index into the
        conditioner's caption set. ``extra``: more sidecar keys (threads, device).

        A grid and its sidecar are one unit: written to temporary files, then renamed; if
        anything fails nothing is left. ``DIR/`` commits each finished batch to a partial folder
        with a manifest line, so a killed run keeps its finished work (``resume`` renders only
        what is missing), and renders only its share under several ranks (``world``, a
        core.runtime.distributed.World); the files and the sidecar are renamed into place when every
        batch is done (core.runtime.rundir). A grid under several ranks: each renders its share, rank 0
        gathers the tiles and writes it. Memory stays flat in ``n``. Returns the sidecar record.
        """
        from .images import to_uint8
        from .record import RECORD_FORMAT, SampleOutput, versions

        batch_size = batch_size or DEFAULT_BATCH_SIZE
        check_run(n, seed, batch_size, nrow)
        plan = self.resolve_options(options, text_options)
        check_precision(precision)
        if candidates is not None:
            from .rerank import check_candidates

            check_candidates(self, candidates, plan)  # before anything is written
        record = {
            "format": RECORD_FORMAT,
            **self.record(),
            "seed": seed,
            "n": n,
            "batch_size": batch_size,
            "steps": plan.steps if getattr(self.sampler, "levels", None) is not None else None,
            "sampler": self.spec.sampler,
            "scheduler": self.spec.scheduler,
            "options": plan.recorded(),  # with prompt / negative_prompt for a text pipeline
            "precision": precision,
            "seeding": seeding.SEEDING,  # sample i's draws from (seed, i) alone (core.runtime.seeding)
            **(extra or {}),
            "versions": versions(),
        }
        if output.endswith(("/", os.sep)):
            from .rundir import sample_dir

            return sample_dir(
                self, output, n, record, seed=seed, batch_size=batch_size, plan=plan, progress=progress,
                candidates=candidates, precision=precision, resume=resume, world=world,
            )  # fmt: skip
        if resume:
            raise LatentzooError(f"--resume continues a -o DIR/ run; -o {output} is a grid, written at once: drop --resume")
        if world is not None and world.distributed:
            from .rundir import sample_grid

            return sample_grid(
                self, output, n, nrow, record, seed=seed, batch_size=batch_size, plan=plan, progress=progress,
                candidates=candidates, precision=precision, world=world,
            )  # fmt: skip
        out = SampleOutput(output, n=n, nrow=nrow)
        scores: list[float] = []
        drawn: list[int] = []
        try:
            batches = self.iter_batches(
                n,
                seed=seed,
                batch_size=batch_size,
                plan=plan,
                progress=progress,
                candidates=candidates,
                scores=scores,
                precision=precision,
                captions=drawn,
            )
            for images in batches:
                out.add(to_uint8(images))
            if candidates is not None:
                record["reranking"] = self.reranking_record(candidates, plan, scores, drawn)
            return out.commit(record)
        except BaseException:
            out.abort()
            raise

    def reranking_record(self, candidates: int, plan: SamplingOptions, scores: list[float], drawn: list[int]) -> dict[str, Any]:
        """The sidecar's ``reranking``: N, the scorer, the kept scores and the text (or each output's drawn caption)."""
        record: dict[str, Any] = {
            "candidates": candidates,
            "scorer": self.spec.scorer,
            "scorer_sha256": self.sha256.get(self.spec.scorer or ""),
            "text": plan.conditioning.get("prompt"),
            "scores": [round(s, 6) for s in scores],
        }
        if drawn:  # no prompt: each output's caption, drawn from the conditioner's caption set
            prompts = getattr(self.conditioner, "prompts", None) or []
            record.update(text=None, caption_set=self.spec.conditioner, caption_indices=drawn, captions=[prompts[i] for i in drawn])
        return record

    @torch.inference_mode()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        if self.encoder is None:
            raise LatentzooError(f"pipeline {self.spec.name} has no encoder; compose one with --encoder")
        return self.encoder.encode(images)

    @property
    def stochastic_decoder(self) -> bool:
        """A decoder that samples images from its latents (unCLIP's) declares ``stochastic = True``
        and takes ``decode(latents, generator=...)``; every other decoder is a deterministic map."""
        return bool(getattr(self.decoder, "stochastic", False))

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor, *, seed: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1]; a stochastic decoder draws its noise from ``generator`` (per-sample
        ``RowGenerators`` when sampling), else from a generator seeded ``seed``."""
        if self.stochastic_decoder:
            images = self.decoder.decode(latents, generator=generator or torch.Generator().manual_seed(seed))
        else:
            images = self.decoder.decode(latents)
        if not _finite(images):
            raise LatentzooError(f"decoder {self.spec.decoder} produced non-finite images; check its weights")
        return images.clamp(-1, 1)

    @torch.inference_mode()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(images))

    def record(self) -> dict[str, Any]:
        """What a sidecar needs to reproduce a draw."""
        out = {
            "pipeline": self.spec.name,
            "components": self.spec.parts(),
            "sha256": dict(self.sha256),
            "defaults": dict(self.spec.defaults),
            **({"adapters": [dict(a) for a in self.adapters]} if self.adapters else {}),
        }
        if self.refiner is not None:
            from .refine import record

            out.update(record(self))
        return out


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "PRECISIONS",
    "OptionError",
    "Pipeline",
    "SamplingOptions",
    "check_precision",
    "check_run",
    "decoder_seed",
]
