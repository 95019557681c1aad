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

import importlib as _importlib
import importlib.abc as _abc
import importlib.machinery as _machinery
import importlib.util as _util
import sys as _sys
import types as _types
import warnings as _warnings

# The flat core/ of releases before the wings (issue 28): `latentzoo.core.registry` is now
# `latentzoo.core.contract.registry`, and so on. A third-party plugin written against an old
# path still imports, with a DeprecationWarning naming the new one; the old names are not
# kept anywhere else and go away in a later release.
_MOVED = {
    **dict.fromkeys(
        "compose conditioning configbounds denoising errors hookspecs interfaces latent options plugins registry"
        " userfiles userregistry weights".split(),
        "contract",
    ),
    **dict.fromkeys("kernels layers".split(), "nn"),
    **dict.fromkeys(
        "adapters api build captions codec conformance data distributed editing images manifest merge metrics"
        " pipeline record refine request rerank rundir scoring seeding signals sources text variations".split(),
        "runtime",
    ),
}


class _MovedModules(_abc.MetaPathFinder, _abc.Loader):
    def find_spec(self, fullname: str, path: object = None, target: object = None) -> _machinery.ModuleSpec | None:
        prefix, _, leaf = fullname.rpartition(".")
        if prefix == __name__ and leaf in _MOVED:
            return _util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec: _machinery.ModuleSpec) -> _types.ModuleType:
        new = f"{__name__}.{_MOVED[spec.name.rpartition('.')[2]]}.{spec.name.rpartition('.')[2]}"
        _warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=3)
        module = _importlib.import_module(new)
        _sys.modules[spec.name] = module
        return module

    def exec_module(self, module: _types.ModuleType) -> None:
        return None


if not any(isinstance(f, _MovedModules) for f in _sys.meta_path):
    _sys.meta_path.append(_MovedModules())
