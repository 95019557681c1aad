"""Lists the packages under the one ``latentzoo`` namespace (metadata lives in pyproject.toml).

A new family folder under plugins/ is picked up here without edits.
"""

from setuptools import find_packages, setup

setup(packages=["latentzoo"] + [f"latentzoo.{p}" for p in find_packages(".", include=["core", "core.*", "plugins", "plugins.*"])])
