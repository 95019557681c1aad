"""Autoregressive code-transformer family (VQ-GAN stage 2, DALL-E) and its token sampler."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1

# What a class-conditional prior accepts at sample time (the pipeline turns class_label into class_labels).
CONDITIONING_OPTIONS = [
    {"name": "class_label", "type": "int", "default": None, "min": 0, "help": "Class to draw (class-conditional priors only)"},
    {
        "name": "guidance",
        "type": "float",
        "default": 1.0,
        "min": 0.0,
        "help": "Classifier-free guidance scale with class_label: uncond + g * (cond - uncond); 1 = none",
    },
]

# What a DALL-E (text) prior accepts besides its conditioning inputs (--prompt / --negative-prompt go to
# its text-token conditioner: core.contract.compose.TEXT_INPUTS).
TEXT_OPTIONS = [
    {
        "name": "guidance",
        "type": "float",
        "default": 1.0,
        "min": 0.0,
        "help": "Classifier-free guidance on the logits against the negative prompt: uncond + g * (cond - uncond); 1 = none",
    },
    {
        "name": "random_prompt",
        "type": "bool",
        "default": False,
        "help": "Without --prompt, draw each sample's caption from the conditioner's caption set "
        "(ancestral sampling of p(text) p(x|text)) instead of the empty prompt",
    },
    {
        "name": "random_prompt_guidance",
        "type": "float",
        "default": None,
        "min": 0.0,
        "help": "Guidance scale for captions drawn by random_prompt (null: guidance); a user's --prompt keeps guidance",
    },
]

TOKEN_OPTIONS = [
    {
        "name": "temperature",
        "type": "float",
        "default": 1.0,
        "min": 0.0,
        "min_exclusive": True,
        "help": "Divide the logits by this before sampling (< 1 sharper, > 1 more varied)",
    },
    {"name": "top_k", "type": "int", "default": None, "min": 1, "help": "Sample only among the k most likely codes (null: all)"},
    {
        "name": "random_class",
        "type": "bool",
        "default": False,
        "help": "Without --class, draw each sample's class uniformly (ancestral sampling of p(c) p(x|c)) instead of the null token",
    },
    {
        "name": "top_p",
        "type": "float",
        "default": None,
        "min": 0.0,
        "min_exclusive": True,
        "max": 1.0,
        "help": "Nucleus sampling: the smallest set of codes with this much probability (null: all)",
    },
]


@hookimpl
def latentzoo_kinds() -> list[dict]:
    return [
        {
            "name": "autoregressive",
            "description": "Autoregressive prior over a code grid: p(codes) = prod_i p(code_i | codes_<i), teacher-forced logits",
            "convention": {"order": "raster", "predicts": "logits (B, L, K): position i predicts code i", "levels": None},
            "check": "latentzoo.plugins.transformer.kind:check",
        }
    ]


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "transformer.prior",
            "roles": ["prior"],
            "kind": "autoregressive",
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.model:CodeTransformer",
            "trainer": "latentzoo.plugins.transformer.train:train",
            "description": "Causal transformer over raster-ordered code grids, optional class token",
            "options": CONDITIONING_OPTIONS,
        },
        {
            "name": "transformer.text_prior",
            "roles": ["prior"],
            "kind": "autoregressive",
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.model:CodeTransformer",
            "trainer": "latentzoo.plugins.transformer.train:train",
            "description": "DALL-E: causal transformer over [caption tokens, raster-ordered codes] (Ramesh et al. 2021)",
            "options": TEXT_OPTIONS,
        },
        {
            "name": "transformer.text",
            "roles": ["conditioner"],
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.model:TextTokens",
            "description": "DALL-E caption-token embedding with its tokenizer: a prompt -> per-token states for a text code prior",
        },
        {
            "name": "transformer.tokens",
            "roles": ["sampler"],
            "drives": ["autoregressive"],
            "family": "transformer",
            "target": "latentzoo.plugins.transformer.sampler:TokenSampler",
            "description": "Token sampling with temperature, top-k, top-p and classifier-free guidance",
            "options": TOKEN_OPTIONS,
        },
    ]
