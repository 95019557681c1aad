"""Re-ranking candidates by a text-image scorer (DALL-E's CLIP re-ranking, Ramesh et al. 2021, sec. 2.5).

A pipeline with a ``scorer`` (any component with ``similarity(images, texts)``, such as
``digits-clip``; the core knows no family) can draw N candidates per output and keep the
one whose score against the prompt is highest. The candidates of output i are draws
i*N .. i*N+N-1 of its batch, so the same seed, options and N give the same bytes.
"""

from __future__ import annotations

from typing import Any

from .errors import LatentzooError

MAX_CANDIDATES = 1024


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


def check_candidates(pipe: Any, candidates: Any, plan: Any) -> str:
    """Check a re-ranking request against a built pipeline; return the text candidates are scored against."""
    check_candidates_value(candidates)
    check_scorer_spec(pipe.spec)
    prompt = (plan.flat.get("prompt") or "").strip()
    if not prompt:
        raise LatentzooError("--candidates re-ranks against the prompt; give --prompt TEXT (the empty prompt scores nothing)")
    return prompt


def rerank(scorer: Any, images: Any, text: str, candidates: int) -> tuple[Any, list[float]]:
    """Keep the best of each run of ``candidates`` images by ``scorer.similarity`` with ``text``: (kept, scores)."""
    import torch

    sims = scorer.similarity(images, [text])[:, 0].float().view(-1, candidates)
    if not bool(torch.isfinite(sims).all()):
        raise LatentzooError("the scorer gave non-finite scores; check its weights")
    best = sims.argmax(dim=1)  # first maximum on ties: deterministic
    kept = images.view(-1, candidates, *images.shape[1:])[torch.arange(len(best)), best]
    return kept, [float(v) for v in sims.max(dim=1).values]
