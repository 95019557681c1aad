"""The kernel's import direction (issue 28): contract <- runtime <- training, nn uses none of
them, and core never imports plugins, commands, interop or studio.

Every import counts, module-level, lazy (inside a function) and type-only alike: a lazy
import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core"
WINGS = ("contract", "nn", "runtime", "training")
# what each wing may import, besides itself
ALLOWED = {"contract": {"nn"}, "nn": set(), "runtime": {"contract", "nn"}, "training": {"contract", "nn", "runtime"}}
OUTSIDE = ("plugins", "commands", "interop", "studio", "cli")


def imports(path: Path) -> list[tuple[int, list[str]]]:
    """(line, target as parts below ``latentzoo``) of every latentzoo import in ``path``."""
    return imports_in(path.read_text(encoding="utf-8"), list(path.relative_to(ROOT).parent.parts))


def imports_in(source: str, package: list[str]) -> list[tuple[int, list[str]]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
                names = [] if node.module else [a.name for a in node.names]
            elif node.module and node.module.split(".")[0] == "latentzoo":
                target, names = node.module.split(".")[1:], []
            else:
                continue
            found += [(node.lineno, [*target, n]) for n in names] or [(node.lineno, target)]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "latentzoo"]
    return found


def core_files() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def test_every_core_module_lives_in_a_wing():
    loose = [p.name for p in CORE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"core/ modules outside a wing: {loose}"
    assert sorted(p.name for p in CORE.iterdir() if p.is_dir() and (p / "__init__.py").exists()) == sorted(WINGS)


@pytest.mark.parametrize("path", core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_imports_follow_the_wing_direction(path: Path):
    rel = path.relative_to(CORE).parts
    wing = rel[0] if len(rel) > 1 else None
    bad = []
    for line, target in imports(path):
        if not target:
            continue
        if target[0] in OUTSIDE:
            bad.append(f"line {line}: latentzoo.{'.'.join(target)} (core never imports {target[0]})")
        elif target[0] == "core" and wing and len(target) > 1 and target[1] in WINGS:
            other = target[1]
            if other != wing and other not in ALLOWED[wing]:
                bad.append(f"line {line}: core.{wing} imports core.{'.'.join(target[1:])}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation():
    """The scanner resolves relative, lazy and absolute imports (so the test above can fail)."""
    source = "import latentzoo.studio\ndef f():\n    from ..training import run\n    from latentzoo.plugins.flow import prior\n    from . import seeding\n"
    found = [t for _, t in imports_in(source, ["core", "runtime"])]
    assert ["core", "training"] in found and ["plugins", "flow"] in found
    assert ["studio"] in found and ["core", "runtime", "seeding"] in found


def test_an_old_flat_path_still_imports_with_a_deprecation_warning():
    """A third-party plugin written before the wings keeps working for a release, told where to go."""
    import importlib
    import sys
    import warnings

    from latentzoo.core.contract import interfaces

    sys.modules.pop("latentzoo.core.interfaces", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("latentzoo.core.interfaces")
    assert old is interfaces
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == [
        "latentzoo.core.interfaces moved to latentzoo.core.contract.interfaces; import it from there"
    ]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("latentzoo.core.no_such_module")
