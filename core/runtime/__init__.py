"""The runtime wing: one generation from request to files.

``request`` (the one typed ``SampleRequest``, validated once), ``build`` (components from
the registry, weights verified), ``pipeline`` (the sampling loop), ``editing``,
``variations``, ``rerank``, ``refine``, ``adapters`` / ``merge`` (LoRA and checkpoint math),
``record`` (outputs and sidecars), ``seeding`` (per-index noise), ``rundir`` / ``manifest``
(sharded, resumable run folders), ``devices`` (threads, device, ranks), ``distributed``,
``api`` (the Python API), ``codec`` (encode / decode / reconstruct), data and images, text
tokenizers, captions, scoring, metrics and ``conformance`` (``latentzoo check``).

May import: ``contract`` and ``nn``; never ``training``, plugins, commands or interop
(a family's code is reached only through the registry and the plugin hooks).
"""
