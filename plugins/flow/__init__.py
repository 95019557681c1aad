"""Rectified-flow / flow-matching family: declarations only (model code loads when built).

A ``flow`` prior predicts the velocity v = eps - x0 of the straight path
x_t = (1 - t) x0 + t eps (Liu et al. 2022; Lipman et al. 2023), trained with SD3's
logit-normal timesteps (Esser et al. 2024). Its samplers integrate dx/dt = v from t = 1
(noise) to t = 0 over the ``flow`` levels a ``flow`` scheduler picks. The family uses only
latentzoo's public API (core/), so it is also a worked example of a new prior kind.
"""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_kinds() -> list[dict]:
    return [
        {
            "name": "flow",
            "description": "Rectified flow / flow matching: the prior returns the velocity of the straight path from data to noise",
            "convention": {"x_t": "(1 - t) x0 + t eps", "noise_at": 1, "velocity": "eps - x0", "levels": "flow"},
            "check": "latentzoo.plugins.flow.kind:check",
        }
    ]


@hookimpl
def latentzoo_components() -> list[dict]:
    return [
        {
            "name": "flow.unet",
            "roles": ["prior"],
            "kind": "flow",
            "scaled_latents": True,
            "family": "flow",
            "target": "latentzoo.plugins.flow.model:FlowUNetPrior",
            "trainer": "latentzoo.plugins.flow.train:train",
            "options": [],
            "description": "UNet velocity field v(x_t, t) of a rectified flow (x_t = (1 - t) x0 + t eps), unconditional",
        },
        {
            "name": "flow.euler",
            "roles": ["sampler"],
            "drives": ["flow"],
            "levels": "flow",
            "family": "flow",
            "target": "latentzoo.plugins.flow.samplers:FlowEulerSampler",
            "options": [],
            "description": "Euler on the flow ODE dx/dt = v (1st order, one evaluation per step)",
        },
        {
            "name": "flow.heun",
            "roles": ["sampler"],
            "drives": ["flow"],
            "levels": "flow",
            "family": "flow",
            "target": "latentzoo.plugins.flow.samplers:FlowHeunSampler",
            "options": [],
            "description": "Heun on the flow ODE (2nd order, trapezoid; Euler on the last step to t = 0): 2 steps - 1 evaluations",
        },
        {
            "name": "flow.shift",
            "roles": ["scheduler"],
            "levels": "flow",
            "family": "flow",
            "target": "latentzoo.plugins.flow.schedulers:FlowShiftScheduler",
            "options": [
                {
                    "name": "shift",
                    "type": "float",
                    "default": 1.0,
                    "min": None,
                    "max": None,
                    "help": "timestep shift s > 0: t' = s t / (1 + (s - 1) t) (SD3); s > 1 spends more steps at high noise",
                },
            ],
            "description": "Flow times t = 1 .. 0, uniform in t, then shifted as in SD3 (Esser et al. 2024, eq. 23)",
        },
    ]
