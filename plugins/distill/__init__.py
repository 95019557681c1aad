"""Fast sampling by distillation (issue 25): declarations only (model code loads when built).

- ``latentzoo distill progressive``: progressive distillation (Salimans & Ho 2022), each round a
  student that takes one DDIM step where its teacher took two (``rounds.py``, ``algorithm.py``).
- ``latentzoo distill guidance``: guidance distillation (Meng et al. 2023), a student that takes the
  guidance weight w as an input (``student.GuidedStudent``, class ``distill.guided``), optionally
  followed by progressive rounds.

The commands live in ``latentzoo.commands.distill``; a student's registry entry states
``distilled_for`` (checked by every front end's request validation, core.runtime.distilled).
"""

from __future__ import annotations

from typing import Any

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_components() -> list[dict[str, Any]]:
    return [
        {
            "name": "distill.guided",
            "roles": ["prior"],
            "kind": "denoiser",
            "scaled_latents": True,
            "family": "distill",
            "target": "latentzoo.plugins.distill.student:GuidedStudent",
            "description": "Guidance-distilled denoiser (Meng et al. 2023): a teacher's network that takes the guidance weight w as an input, one forward pass per step",
            "options": [
                {
                    "name": "class_label",
                    "type": "int",
                    "default": None,
                    "help": "Class to draw (class-conditional students; the last class is the null class)",
                    "min": 0,
                    "conditioning": "class",
                },
                {
                    "name": "guidance",
                    "type": "float",
                    "default": 1.0,
                    "help": "Guidance weight w, an input of the student (one forward pass per step; no negative prompt)",
                    "min": 0.0,
                },
            ],
        }
    ]
