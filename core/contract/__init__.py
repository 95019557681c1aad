"""The contract wing: what a plugin implements and what makes parts fit together.

The seven roles and their interfaces, latent and conditioning spaces, the hook
specifications, errors, declared options, the layered registry and its bounded YAML loader
(``yamlsafe``), the user's registry layer and files, plugin loading, ``compose`` (which
parts fit), safetensors weights, and the denoiser's public math (``denoising``).

May import: ``nn`` (lazily, for kernels that repack weights) and nothing else of latentzoo;
never runtime, training, plugins, commands or interop. Nothing here imports torch at module
import except ``denoising``, which a sampler imports when it runs.
"""
