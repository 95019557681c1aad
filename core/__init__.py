"""latentzoo core: the five roles, the latent-space contract, registry, plugins and pipeline.

Nothing imported here pulls in torch; model code is imported when a component is built.
"""
