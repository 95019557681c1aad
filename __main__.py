"""``python -m latentzoo``."""

from latentzoo.cli import main

main()
