"""The nn wing: torch building blocks for model code (``layers``) and the CPU kernels that
repack weights for speed (``kernels``).

May import: nothing of latentzoo beyond this wing. Plugins' model code and the runtime use
it; it knows no role, registry or family.
"""
