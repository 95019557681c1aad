"""Re-ranking candidates by a text-image scorer (DALL-E's CLIP re-ranking, Ramesh et al. 2021, sec. 2.5).

A pipeline with a ``scorer`` (any component with ``similarity(images, texts)``, such as
``digits-clip``; the core knows no family) can draw N candidates per output and keep the
one whose score against the prompt is highest. The candidates of output i are draws
i*N .. i*N+N-1 of its batch, so the same seed, options and N give the same bytes.

Without a prompt, a pipeline that samples unconditionally by drawing each sample's caption
from its conditioner's caption set (the ``random_prompt`` option, ancestral p(text) p(x | text))
re-ranks too, as DALL-E re-ranks every sample: the pipeline draws one caption per *output*,
all N candidates of that output are drawn for that caption, and they are scored against it.
"""

from __future__ import annotations

from typing import Any

from ..contract.errors import LatentzooError

MAX_CANDIDATES = 1024  # drawn batch by batch (memory flat in N); the cap bounds the time


def check_candidates_value(candidates: Any) -> int:
    """A candidate count: a whole number from 1 to MAX_CANDIDATES (no torch)."""
    if isinstance(candidates, bool) or not isinstance(candidates, int) or not 1 <= candidates <= MAX_CANDIDATES:
        raise LatentzooError(
            f"--candidates must be a whole number from 1 to {MAX_CANDIDATES} (candidates drawn per output, the best kept), "
            f"not {candidates!r}"
        )
    return candidates


def parse_candidates(text: str | None) -> int | None:
    """``--candidates`` as given on the command line (a string), checked like ``check_candidates_value``."""
    if text is None:
        return None
    try:
        value = int(text.strip())
    except ValueError:
        value = text  # refused below, naming what was given
    return check_candidates_value(value)


def check_scorer_spec(spec: Any) -> None:
    """Refuse re-ranking on a pipeline that names no scorer (no torch)."""
    if not spec.scorer:
        raise LatentzooError(
            f"pipeline {spec.name} has no scorer to re-rank candidates with; add --scorer digits-clip (or drop --candidates)"
        )


def check_candidates(pipe: Any, candidates: Any, plan: Any) -> str | list[str]:
    """Check a re-ranking request against a built pipeline; return the text candidates are scored
    against: the prompt, or (no prompt, ``random_prompt``) the caption set each output's caption is drawn from."""
    check_candidates_value(candidates)
    check_scorer_spec(pipe.spec)
    prompt = (plan.conditioning.get("prompt") or "").strip()
    if prompt:
        return prompt
    if plan.flat.get("random_prompt"):
        captions = list(getattr(pipe.conditioner, "prompts", None) or [])
        if captions:
            return captions
        raise LatentzooError(
            f"conditioner {pipe.spec.conditioner} has no caption set to draw from; drop random_prompt or give --prompt TEXT"
        )
    raise LatentzooError(
        "--candidates re-ranks against the prompt; give --prompt TEXT, or --set random_prompt=true where the pipeline "
        "declares it (each output's caption drawn from the training captions); the empty prompt scores nothing"
    )


def candidate_scores(scorer: Any, images: Any, text: str | list[str]) -> list[float]:
    """Each image's score by ``scorer.similarity`` against ``text`` (one text for all, or one per image)."""
    import torch

    if isinstance(text, str):
        sims = scorer.similarity(images, [text])[:, 0]
    else:
        # Each distinct text once, then each image's score against its own text.
        distinct = sorted(set(text))
        column = torch.tensor([distinct.index(t) for t in text])
        sims = scorer.similarity(images, distinct)[torch.arange(len(images)), column]
    sims = sims.float()
    if not bool(torch.isfinite(sims).all()):
        raise LatentzooError("the scorer gave non-finite scores; check its weights")
    return [float(v) for v in sims]


def rerank(scorer: Any, images: Any, text: str | list[str], candidates: int) -> tuple[Any, list[float]]:
    """Keep the best of each run of ``candidates`` images by ``scorer.similarity`` with ``text``: (kept, scores).

    ``text`` is one text for every run, or a list of one text per run (output i's candidates
    are scored against ``text[i]``). (Sampling re-ranks batch by batch in ``Pipeline.iter_batches``.)
    """
    import torch

    per_image = text if isinstance(text, str) else [t for t in text for _ in range(candidates)]
    sims = torch.tensor(candidate_scores(scorer, images, per_image)).view(-1, candidates)
    best = sims.argmax(dim=1)  # first maximum on ties: deterministic
    kept = images.view(-1, candidates, *images.shape[1:])[torch.arange(len(best)), best]
    return kept, [float(v) for v in sims.max(dim=1).values]
