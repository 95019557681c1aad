"""Interop: the edges of latentzoo, outside the kernel (installed as ``latentzoo.interop``).

* ``hub``: push components and pipelines to the Hugging Face Hub, pull them into the user
  registry (names from outside never replace existing ones without ``force``).
* ``formats``: the seam for foreign formats. Plugins declare formats through the
  ``latentzoo_formats`` hook; ``latentzoo convert --from FORMAT`` and ``latentzoo export --to
  FORMAT`` use them. The diffusers format is such a plugin (``latentzoo.plugins.diffusers``),
  and each family keeps its own key mapping for it.
* ``api``: the Python functions behind ``convert``, ``export``, ``push`` and ``pull``.

Nothing here is imported by ``latentzoo.core``; importing this package imports neither torch
nor huggingface_hub.
"""
