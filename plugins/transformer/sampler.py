"""Token sampling for autoregressive priors: temperature, top-k, top-p (nucleus), guidance."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from latentzoo.core.contract.errors import LatentzooError
from latentzoo.core.contract.interfaces import Progress, Sampler
from latentzoo.core.runtime.seeding import multinomial, randint


def filter_logits(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Mask all but the top-k logits, then all outside the smallest set with mass >= top_p (Holtzman et al. 2020)."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) >= top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class TokenSampler(Sampler):
    """Draws a code grid position by position (raster order) from an autoregressive prior.

    Walks no levels (no scheduler); ``noise`` only gives the batch size. Options:
    temperature, top_k, top_p (declared in the family's plugin module), and the prior's
    class_labels / guidance.
    """

    drives: ClassVar[tuple[str, ...]] = ("autoregressive",)

    def __init__(
        self, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None, random_class: bool = False
    ) -> None:
        self.temperature, self.top_k, self.top_p, self.random_class = temperature, top_k, top_p, random_class

    @torch.inference_mode()
    def sample(
        self,
        prior: Any,
        noise: torch.Tensor,
        *,
        levels: list[float] | None = None,
        generator: torch.Generator,
        progress: Progress | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        random_class: bool | None = None,
        class_labels: torch.Tensor | None = None,
        guidance: float = 1.0,
        random_prompt: bool = False,
        random_prompt_guidance: float | None = None,
        conditioning: dict[str, torch.Tensor] | None = None,
        null_conditioning: dict[str, torch.Tensor] | None = None,
        prompt_indices: torch.Tensor | None = None,
        **_: Any,
    ) -> torch.Tensor:
        temperature = self.temperature if temperature is None else temperature
        top_k = self.top_k if top_k is None else top_k
        top_p = self.top_p if top_p is None else top_p
        if temperature <= 0:
            raise LatentzooError(f"temperature must be > 0, not {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise LatentzooError(f"top_p must be in (0, 1], not {top_p}")
        if top_k is not None and top_k < 1:
            raise LatentzooError(f"top_k must be >= 1, not {top_k}")
        n = noise.shape[0]
        random_class = self.random_class if random_class is None else random_class
        if random_class and class_labels is None and conditioning is None and getattr(prior, "num_classes", None):
            # p(x) = sum_c p(c) p(x | c) with p(c) uniform: the class-conditional branch, trained on
            # every example, samples better than the null token, trained on the dropped ones only.
            class_labels = randint(prior.num_classes - 1, n, generator)  # each sample's class from its own generator
        labels = prior.null_labels(n) if class_labels is None else class_labels
        text = None
        if conditioning is not None:  # DALL-E: the prompt's token states come first (batch 1 or n)
            text = conditioning["tokens"]
            if random_prompt and text.shape[0] > 1:
                # p(x) = sum_t p(t) p(x | t) with p(t) the caption set's empirical distribution: each
                # sample's caption is drawn from the K rows (the conditioner's caption set), here or,
                # when the pipeline drew them (re-ranking: one caption per output, shared by its
                # candidates), given as prompt_indices (n row indices).
                if prompt_indices is None:
                    prompt_indices = randint(text.shape[0], n, generator)
                elif prompt_indices.shape != (n,) or not bool(((prompt_indices >= 0) & (prompt_indices < text.shape[0])).all()):
                    raise LatentzooError(f"prompt_indices must be {n} row indices into the {text.shape[0]} captions")
                text = text[prompt_indices]
                # Drawn captions want milder guidance than a user's prompt (a sharper p(x|t) loses the
                # variety FD measures): random_prompt_guidance, when set, replaces guidance here only.
                guidance = guidance if random_prompt_guidance is None else random_prompt_guidance
            text = text.expand(n, -1, -1)
            null = conditioning["tokens"] if null_conditioning is None else null_conditioning["tokens"]
            guided = guidance != 1.0
            if guided:
                text, labels = torch.cat([text, null.expand(n, -1, -1)]), torch.cat([labels, labels])
        else:
            guided = class_labels is not None and guidance != 1.0
            if guided:  # classifier-free guidance on logits (as in Parti / MUSE): uncond + g * (cond - uncond)
                labels = torch.cat([labels, prior.null_labels(n)])
        length = prior.grid_size * prior.grid_size
        caches: list[dict[str, Any]] = [{} for _ in prior.blocks]
        if text is not None:
            prior.prefill(text, caches)
        codes = torch.empty((n, length), dtype=torch.long)
        previous = None
        for i in range(length):
            logits = prior.next_logits(i, previous, labels, caches)
            if guided:
                cond, uncond = logits.chunk(2)
                logits = uncond + guidance * (cond - uncond)
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(-1)
            codes[:, i] = multinomial(probs, generator)
            previous = torch.cat([codes[:, i], codes[:, i]]) if guided else codes[:, i]
            if progress:
                progress(i + 1, length)
        return codes.view(n, prior.grid_size, prior.grid_size)
