"""Lists the packages under the one ``latentzoo`` namespace (metadata lives in pyproject.toml).

The repository root is the ``latentzoo`` package, so this file sits inside it: build_py
leaves it out of the wheel. Every folder below the root with an ``__init__.py`` is a
subpackage (core, plugins and each family, interop, commands, any added later), found here
without a list to keep up to date; only the folders that are not part of the package
(tests, benchmarks, examples, tools, docs, build output) are excluded.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

NOT_PACKAGED = ["tests", "tests.*", "benchmarks", "benchmarks.*", "examples", "examples.*", "tools", "tools.*", "docs", "docs.*",
                "build", "build.*", "dist", "dist.*", "weights", "runs", "runs.*"]  # fmt: skip


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "latentzoo" and m[1] == "setup")]


setup(
    cmdclass={"build_py": BuildPy},
    packages=["latentzoo"] + [f"latentzoo.{p}" for p in find_packages(".", exclude=NOT_PACKAGED) if not p.startswith(".")],
)
