"""Built-in datasets: scikit-learn's handwritten digits, bundled."""

from __future__ import annotations

from latentzoo.core.contract.hookspecs import hookimpl

LATENTZOO_PLUGIN_API = 1


@hookimpl
def latentzoo_datasets() -> list[dict]:
    return [
        {
            "name": "digits",
            "target": "latentzoo.plugins.datasets.digits:load",
            "description": "1,797 handwritten digits (8x8, upscaled), fixed 360-image held-out split",
        },
        {
            "name": "digits-captions",
            "target": "latentzoo.plugins.datasets.captions:load",
            "description": "digits with captions from the label and measured thickness, slant and width ('a thick, slanted seven'); same split",
        },
    ]
