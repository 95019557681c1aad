"""Images with captions: a dataset a plugin declares with captions, or a folder of images
captioned in the conventions people already use.

In a folder, an image's caption comes from, first, a ``metadata.jsonl`` in its folder or an
ancestor (Hugging Face imagefolder: one JSON object per line with ``file_name``, relative to
the metadata file's folder, and ``text``), else a ``.txt`` file beside it with the same stem
(``cat.png`` + ``cat.txt``, as kohya / diffusers' training scripts read them). Images without
a caption are an error naming how many and the first few, or, with ``skip_uncaptioned``, are
left out with a warning.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..contract.errors import LatentzooError
from .data import ImageFolder


class CaptionedFolder(ImageFolder):
    """An ImageFolder whose images all have a caption (``captions[i]`` for ``files[i]``)."""

    def __init__(self, path: Path, *, size: int, channels: int, skip_uncaptioned: bool = False) -> None:
        super().__init__(path, size=size, channels=channels)
        found = read_captions(path)
        captions = [found.get(f.resolve()) for f in self.files]
        missing = [f for f, c in zip(self.files, captions, strict=True) if c is None]
        if missing:
            names = ", ".join(str(f.relative_to(path)) for f in missing[:3])
            if not skip_uncaptioned:
                raise LatentzooError(
                    f"{len(missing)} of {len(self.files)} image(s) in {path} have no caption ({names}{', ...' if len(missing) > 3 else ''}): "
                    "add a .txt beside each image or a metadata.jsonl with file_name and text, or pass --skip-uncaptioned"
                )
            warnings.warn(f"skipping {len(missing)} uncaptioned image(s) in {path} ({names})", stacklevel=2)
            keep = [i for i, c in enumerate(captions) if c is not None]
            if not keep:
                raise LatentzooError(f"no image in {path} has a caption; add .txt files or a metadata.jsonl")
            self.files = [self.files[i] for i in keep]
            captions = [captions[i] for i in keep]
        self.captions: list[str] = [c for c in captions if c is not None]


def read_captions(root: Path) -> dict[Path, str]:
    """Resolved image path -> caption, from every metadata.jsonl under ``root`` and .txt files beside images."""
    out: dict[Path, str] = {}
    for txt in sorted(root.rglob("*.txt")):
        try:
            text = txt.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise LatentzooError(f"cannot read caption {txt}: {exc}; save it as UTF-8 text") from exc
        for image in txt.parent.glob(f"{_glob_escape(txt.stem)}.*"):
            if image.suffix.lower() != ".txt":
                out[image.resolve()] = text
    for meta in sorted(root.rglob("metadata.jsonl"), key=lambda p: len(p.parts)):  # deeper files win
        for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row: Any = json.loads(line)
            except ValueError as exc:
                raise LatentzooError(f"{meta}:{n}: not a JSON object ({exc}); one object per line") from exc
            if not isinstance(row, dict) or not isinstance(row.get("file_name"), str) or not isinstance(row.get("text"), str):
                raise LatentzooError(f'{meta}:{n}: each line needs "file_name" and "text" strings')
            out[(meta.parent / row["file_name"]).resolve()] = row["text"].strip()
    return out


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in name)


def load_captioned(source: str, *, split: str = "train", size: int = 32, channels: int = 1, skip_uncaptioned: bool = False) -> Any:
    """A dataset with ``captions`` (a declared one such as ``digits-captions``), or a captioned folder."""
    from ..contract.plugins import get_manager
    from .data import load_dataset

    if source in get_manager().datasets():
        data = load_dataset(source, split=split, size=size, channels=channels)
        if not getattr(data, "captions", None):
            raise LatentzooError(f"dataset {source!r} has no captions; use a captioned one (digits-captions) or a folder with captions")
        return data
    path = Path(source)
    if path.is_dir():
        return CaptionedFolder(path, size=size, channels=channels, skip_uncaptioned=skip_uncaptioned)
    known = ", ".join(sorted(get_manager().datasets())) or "none"
    raise LatentzooError(f"no dataset or folder named {source!r}; use a folder of captioned images or one of: {known}")
