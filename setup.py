"""Lists the packages under the one ``latentzoo`` namespace (metadata lives in pyproject.toml).

The repository root is the ``latentzoo`` package, so this file sits inside it: build_py
leaves it out of the wheel. A new family folder under plugins/ is picked up without edits.
"""

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPy(build_py):
    def find_package_modules(self, package: str, package_dir: str) -> list[tuple[str, str, str]]:
        modules = super().find_package_modules(package, package_dir)
        return [m for m in modules if not (package == "latentzoo" and m[1] == "setup")]


setup(
    cmdclass={"build_py": BuildPy},
    packages=["latentzoo"] + [f"latentzoo.{p}" for p in find_packages(".", include=["core", "core.*", "plugins", "plugins.*"])],
)
