"""Text tokenizers, through Hugging Face's ``tokenizers`` library (no hand-written BPE).

A ``TextTokenizer`` wraps a ``tokenizers.Tokenizer`` that already adds the start / end
tokens, and gives a text encoder fixed-length id rows:

- ``clip_bpe(vocab.json, merges.txt)``: CLIP's byte-level BPE exactly as transformers'
  ``CLIPTokenizerFast`` builds it (``convert_slow_tokenizer.CLIPConverter``): NFC, runs of
  whitespace to one space, lower case; CLIP's split regex; byte-level alphabet; ``</w>``
  marks the end of a word; ``<|startoftext|>`` ... ``<|endoftext|>`` around the ids.
- ``train_word_level(texts)``: a small word-level vocabulary for a captioned dataset,
  saved as ``tokenizer.json`` next to the weights.
- ``load(path)``: a ``tokenizer.json``, or a folder holding one (or vocab.json + merges.txt).

Rows are ``context_length`` long: longer prompts are cut (the end token kept) with a
warning naming the limit; shorter ones are padded with ``pad_token``. An empty prompt is
``<start><end>``: the unconditional input, what classifier-free guidance drops to.
Nothing here imports torch until ``encode`` is called.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..contract.errors import LatentzooError

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
PAD_WORD, UNK_WORD = "<|pad|>", "<|unk|>"
# CLIP's pre-tokenization pattern (Radford et al. 2021, clip/simple_tokenizer.py), as in CLIPConverter.
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
CLIP_CONTEXT = 77


@dataclass
class TextTokenizer:
    """A ``tokenizers.Tokenizer`` plus what a text encoder needs to know about its rows."""

    tokenizer: Tokenizer
    context_length: int
    pad_token: str = EOS

    def __post_init__(self) -> None:
        # Rows are cut and padded here (with a warning and a mask); a tokenizer.json saved after
        # padded calls carries its own padding / truncation, which would hide both.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        for token in (BOS, EOS, self.pad_token):
            if self.tokenizer.token_to_id(token) is None:
                raise LatentzooError(f"tokenizer has no {token!r} token; it is not a tokenizer for a CLIP-style text encoder")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def bos_token_id(self) -> int:
        return self.tokenizer.token_to_id(BOS)

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.token_to_id(EOS)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.token_to_id(self.pad_token)

    def ids(self, texts: list[str], *, warn: bool = True) -> list[list[int]]:
        """Token ids of each text with start / end tokens, cut to ``context_length`` (end token kept), unpadded."""
        if isinstance(texts, str):
            texts = [texts]
        bad = [t for t in texts if not isinstance(t, str)]
        if bad:
            raise LatentzooError(f"a prompt must be a string, not {type(bad[0]).__name__}")
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as lone surrogates
                raise LatentzooError(
                    f"prompt {text[:40]!r} is not valid UTF-8 (byte 0x{ord(text[exc.start]) & 0xFF:02x} at {exc.start}); "
                    "give the prompt as UTF-8 text"
                ) from exc
        rows, cut = [], []
        for text, enc in zip(texts, self.tokenizer.encode_batch(list(texts)), strict=True):
            ids = enc.ids
            if len(ids) > self.context_length:
                cut.append(text)
                ids = [*ids[: self.context_length - 1], self.eos_token_id]
            rows.append(ids)
        if cut and warn:
            warnings.warn(
                f"{len(cut)} prompt(s) longer than the text encoder's {self.context_length} tokens were truncated "
                f"(first: {cut[0][:60]!r}); shorten them",
                stacklevel=2,
            )
        return rows

    def encode(self, texts: list[str], *, warn: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids (B, context_length) long, attention_mask (B, context_length) bool)."""
        import torch

        rows = self.ids(texts, warn=warn)
        ids = torch.full((len(rows), self.context_length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), self.context_length), dtype=torch.bool)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = True
        return ids, mask

    def check_vocab(self, vocab_size: int, owner: str) -> None:
        """Refuse a tokenizer whose ids do not index ``owner``'s token embedding."""
        if self.vocab_size != vocab_size:
            raise LatentzooError(
                f"tokenizer has {self.vocab_size} tokens but {owner}'s token embedding has {vocab_size}; "
                "use the tokenizer.json shipped with that text encoder"
            )

    def save(self, path: str | Path) -> Path:
        """Write ``tokenizer.json`` (atomically), with context length and pad token in its metadata."""
        from ..contract.weights import write_bytes

        data = json.loads(self.tokenizer.to_str())
        data["latentzoo"] = {"context_length": self.context_length, "pad_token": self.pad_token}
        return write_bytes(path, json.dumps(data, ensure_ascii=False, indent=1).encode())


def clip_bpe_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """CLIP's byte-level BPE, built as transformers' ``CLIPConverter`` builds ``CLIPTokenizerFast``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    for token in (BOS, EOS):
        if token not in vocab:
            raise LatentzooError(f"CLIP vocabulary has no {token!r}; it is not a CLIP vocab.json")
    tok = Tokenizer(
        BPE(
            vocab=vocab, merges=merges, dropout=None, continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False, unk_token=EOS
        )
    )
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(BOS, special=True), AddedToken(EOS, special=True)])  # typed in a prompt, they stay one token
    # RobertaProcessing adds <start> ... <end> and keeps byte-level offsets right (as CLIPConverter does).
    tok.post_processor = processors.RobertaProcessing((EOS, vocab[EOS]), (BOS, vocab[BOS]), trim_offsets=False, add_prefix_space=False)
    return tok


def read_merges(path: Path) -> list[tuple[str, str]]:
    """merges.txt: an optional ``#version`` line, then one ``left right`` pair per line."""
    merges = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise LatentzooError(f"{path}:{n}: a merge is two tokens separated by a space; is this a BPE merges.txt?")
        merges.append((parts[0], parts[1]))
    return merges


def clip_bpe(
    vocab_json: str | Path, merges_txt: str | Path, *, context_length: int = CLIP_CONTEXT, pad_token: str | None = None
) -> TextTokenizer:
    """CLIP's tokenizer from a model folder's vocab.json + merges.txt (pad: the folder's, else ``<|endoftext|>``)."""
    vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
    try:
        vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LatentzooError(f"cannot read CLIP vocabulary {vocab_json}: {exc}") from exc
    if not isinstance(vocab, dict):
        raise LatentzooError(f"{vocab_json} is not a token -> id mapping; is it a CLIP vocab.json?")
    try:
        merges = read_merges(merges_txt)
    except OSError as exc:
        raise LatentzooError(f"cannot read BPE merges {merges_txt}: {exc.strerror or exc}") from exc
    pad = pad_token or _folder_pad_token(vocab_json.parent) or EOS
    return TextTokenizer(clip_bpe_tokenizer(vocab, merges), context_length, pad)


CLIP_MERGES = 49152 - 256 - 2  # OpenAI's tokenizer keeps the first 48,894 merges of bpe_simple_vocab_16e6


def clip_bpe_from_merges(path: str | Path, *, context_length: int = CLIP_CONTEXT, pad_token: str = EOS) -> TextTokenizer:
    """CLIP's tokenizer from OpenAI's merges-only file (``bpe_simple_vocab_16e6.txt[.gz]``, as open_clip
    and OpenAI's clip package ship it), with the vocabulary built as their SimpleTokenizer builds it:
    the 256 byte symbols (in code-point order), the same with ``</w>``, each merge's result, the specials."""
    import gzip

    path = Path(path)
    try:
        raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
        lines = raw.decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise LatentzooError(f"cannot read CLIP merges {path}: {exc}") from exc
    merges = []
    for n, line in enumerate(lines[1 : CLIP_MERGES + 1], 2):  # line 1 is a version header
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise LatentzooError(f"{path}:{n}: a merge is two tokens separated by a space; is this CLIP's bpe_simple_vocab file?")
        merges.append((parts[0], parts[1]))
    from tokenizers import pre_tokenizers

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet(), key=ord)  # = CLIP's bytes_to_unicode() values, in order
    vocab: dict[str, int] = {}
    for token in [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    return TextTokenizer(clip_bpe_tokenizer(vocab, merges), context_length, pad_token)


def _folder_pad_token(folder: Path) -> str | None:
    """The pad token named by a transformers tokenizer folder (special_tokens_map / tokenizer_config)."""
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        try:
            pad = json.loads((folder / name).read_text(encoding="utf-8")).get("pad_token")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(pad, dict):
            pad = pad.get("content")
        if isinstance(pad, str):
            return pad
    return None


def train_word_level(texts: list[str], *, context_length: int) -> TextTokenizer:
    """A word-level tokenizer over ``texts`` (lower-cased; words and punctuation are tokens).

    Ids: 0 pad, 1 unknown word, 2 start, 3 end, then words by frequency (ties alphabetical),
    so the same texts give the same tokenizer.json byte for byte.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer

    tok = Tokenizer(WordLevel(unk_token=UNK_WORD))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # \w+ | [^\w\s]+: "7, thin" -> 7 , thin
    trainer = WordLevelTrainer(special_tokens=[PAD_WORD, UNK_WORD, BOS, EOS], show_progress=False)
    tok.train_from_iterator(sorted(texts), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, tok.token_to_id(BOS)), (EOS, tok.token_to_id(EOS))]
    )
    return TextTokenizer(tok, context_length, PAD_WORD)


def load(path: str | Path, *, context_length: int | None = None) -> TextTokenizer:
    """A ``tokenizer.json`` (or a folder with one, or with CLIP's vocab.json + merges.txt)."""
    from tokenizers import Tokenizer

    path = Path(path)
    folder_pad = None
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            folder_pad = _folder_pad_token(path)  # a transformers folder names its pad token beside tokenizer.json
            path = path / "tokenizer.json"
        elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return clip_bpe(path / "vocab.json", path / "merges.txt", context_length=context_length or CLIP_CONTEXT)
        else:
            raise LatentzooError(f"{path} holds neither tokenizer.json nor vocab.json + merges.txt; give a tokenizer folder or file")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        meta: dict[str, Any] = data.pop("latentzoo", None) or {}
        tok = Tokenizer.from_str(json.dumps(data))
    except (OSError, ValueError, Exception) as exc:  # tokenizers raises its own Exception type on a bad file
        raise LatentzooError(
            f"cannot load tokenizer {path}: {str(exc).splitlines()[0] if str(exc) else exc}; is it a tokenizer.json?"
        ) from exc
    pad = meta.get("pad_token") or folder_pad or _pad_of(tok)
    return TextTokenizer(tok, int(context_length or meta.get("context_length") or CLIP_CONTEXT), pad)


def _pad_of(tok: Tokenizer) -> str:
    padding = tok.padding
    if padding and padding.get("pad_token"):
        return padding["pad_token"]
    return PAD_WORD if tok.token_to_id(PAD_WORD) is not None else EOS


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a text file, one per line (surrounding space stripped, blank lines skipped).

    A missing, unreadable or empty file is an error naming it (``--prompts-file``).
    """
    from ..contract.userfiles import read_lines

    file = Path(path)
    lines = read_lines(file, "--prompts-file")
    prompts = lines
    if not prompts:
        raise LatentzooError(f"--prompts-file {file} holds no prompt (only blank lines); write one prompt per line")
    return prompts
