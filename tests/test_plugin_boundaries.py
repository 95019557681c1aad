"""No plugin reaches into another plugin's private names (read from the source with ast, nothing imported).

A family talks to another through declarations (formats, kinds) or through public names; a
leading underscore is a name its owner may change without notice.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
PREFIX = "latentzoo.plugins."


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _family_of(module: str) -> str | None:
    return module[len(PREFIX) :].split(".")[0] if module.startswith(PREFIX) else None


def _absolute(node: ast.ImportFrom, family: str, path: Path) -> str:
    """The module an import names, with relative imports resolved against the file's package."""
    if not node.level:
        return node.module or ""
    package = path.relative_to(PLUGINS).with_suffix("").parts[:-1]
    base = ["latentzoo", "plugins", *package][: len(package) + 2 - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def violations(path: Path) -> list[str]:
    family = path.relative_to(PLUGINS).parts[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found, foreign = [], {}  # foreign: local name -> another plugin's module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = _absolute(node, family, path)
            other = _family_of(module)
            if other is None or other == family:
                continue
            if any(_private(part) for part in module.split(".")):
                found.append(f"{path.name}:{node.lineno} imports private module {module}")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{path.name}:{node.lineno} imports {module}.{alias.name}")
                foreign[alias.asname or alias.name] = f"{module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                other = _family_of(alias.name)
                if other is not None and other != family:
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{path.name}:{node.lineno} imports private module {alias.name}")
                    foreign[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):  # module.attribute on another plugin's module: `captions._a`
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in foreign and _private(node.attr):
            found.append(f"{path.name}:{node.lineno} uses {foreign[node.value.id]}.{node.attr}")
    return found


def test_no_plugin_imports_another_plugins_private_names() -> None:
    files = sorted(PLUGINS.rglob("*.py"))
    assert len(files) > 50  # the walk found the plugins
    bad = [f"{p.relative_to(PLUGINS.parent)}: {v}" for p in files for v in violations(p)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_each_way_of_reaching_in(tmp_path: Path, monkeypatch) -> None:
    """The rule's own test: a from-import, a private module, a relative import and an attribute are all caught."""
    root = tmp_path / "plugins"
    (root / "alpha").mkdir(parents=True)
    bad = root / "alpha" / "bad.py"
    bad.write_text(
        "from latentzoo.plugins.beta.folders import _readers\n"
        "from latentzoo.plugins.beta._impl import thing\n"
        "from ..beta.captions import _a\n"
        "from latentzoo.plugins.beta import captions\n"
        "x = captions._a('8')\n"
        "from latentzoo.plugins.alpha.model import _own\n"  # its own family: fine
        "from latentzoo.plugins.beta.captions import article\n",  # public: fine
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "PLUGINS", root)
    assert len(violations(bad)) == 4
