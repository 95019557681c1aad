"""latentzoo core, the kernel: four wings, imported in one direction.

- ``contract``: the roles, latent-space contract, hookspecs, errors, options, registry,
  plugins, compose, weights. What a plugin implements.
- ``nn``: torch layers and kernels for model code.
- ``runtime``: one generation from a typed request to files (build, pipeline, editing, ...).
- ``training``: the trainer contract (options, data streams, checkpoints, runs, publishing).

contract <- runtime <- training, and nn is used by all and uses none of them; core never
imports plugins, commands, interop or studio (tests/test_layering.py enforces both).
Nothing imported here pulls in torch; model code is imported when a component is built.
"""
