"""Declared options: what a prior, sampler or scheduler accepts at sample time (no torch).

A plugin declares its options as plain data in its component declaration::

    "options": [
        {"name": "temperature", "type": "float", "default": 1.0, "min": 0.0, "min_exclusive": True,
         "help": "Divide the logits by this before sampling"},
        {"name": "top_k", "type": "int", "default": None, "min": 1, "help": "Keep the k most likely codes"},
    ]

``type`` is float, int, bool or str. ``min`` / ``max`` bound numbers (inclusive, unless
``min_exclusive`` / ``max_exclusive``); ``choices`` lists the accepted strings. ``null``
is accepted when the default is ``None`` (or ``nullable: true``): "unset, use the
instance's own value". Non-finite numbers are always refused. ``conditioning: class``
says the option exists only on instances conditioned on that kind (a registry entry's
``conditioning.kind``): a class that may be built with or without classes declares
``class_label`` so, and an unconditional instance neither lists nor accepts it.

``latentzoo sample --set KEY=VALUE`` and a pipeline's ``defaults`` reach these options;
``resolve`` checks every key and value against what the pipeline's prior, sampler and
scheduler declare and returns one dict per role. ``steps`` belongs to the pipeline itself
and is always accepted.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from .errors import LatentzooError

TYPES = ("float", "int", "bool", "str")
OPTION_KEYS = {"name", "type", "default", "min", "max", "min_exclusive", "max_exclusive", "choices", "help", "nullable", "conditioning"}
# Roles whose declared options reach sampling, in the order they are listed.
OPTION_ROLES = ("prior", "sampler", "scheduler")
# Options the pipeline owns: a component may not declare them.
RESERVED = ("steps",)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


MAX_MAGNITUDE = 1e12  # a float option without a declared maximum stays below this (no overflow downstream)


class OptionError(LatentzooError):
    """An option declaration, key or value is not acceptable."""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Option:
    """One declared option: name, type, default, range or choices, one-line help."""

    name: str
    type: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    choices: tuple[str, ...] | None = None
    help: str = ""
    nullable: bool = False
    conditioning: str | None = None  # the option applies only to instances conditioned on this kind

    # -- declarations -------------------------------------------------------------------
    @classmethod
    def from_declaration(cls, decl: Any, owner: str) -> Option:
        """Parse one declared option, refusing a malformed one in a line naming ``owner``."""

        def bad(message: str) -> OptionError:
            name = decl.get("name", "?") if isinstance(decl, dict) else "?"
            return OptionError(f"{owner}: option {name!r}: {message}")

        if not isinstance(decl, dict):
            raise OptionError(f"{owner}: an option declaration must be a dict, not {type(decl).__name__}")
        unknown = sorted(set(decl) - OPTION_KEYS)
        if unknown:
            raise bad(f"unknown key(s) {', '.join(map(str, unknown))}; keys are {', '.join(sorted(OPTION_KEYS))}")
        name = decl.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise bad("name must be an identifier (letters, digits, _)")
        if name in RESERVED:
            raise bad(f"{name} belongs to the pipeline; do not declare it")
        kind = decl.get("type")
        if kind not in TYPES:
            raise bad(f"type must be one of {', '.join(TYPES)}, not {kind!r}")
        for key in ("min", "max"):
            value = decl.get(key)
            if value is not None:
                if kind not in ("int", "float"):
                    raise bad(f"{key} is only for int and float options")
                if not _is_number(value) or not math.isfinite(value):
                    raise bad(f"{key} must be a finite number, not {value!r}")
        for key in ("min_exclusive", "max_exclusive", "nullable"):
            if not isinstance(decl.get(key, False), bool):
                raise bad(f"{key} must be true or false")
        if decl.get("min") is not None and decl.get("max") is not None and decl["min"] > decl["max"]:
            raise bad(f"min {decl['min']} is above max {decl['max']}")
        choices = decl.get("choices")
        if choices is not None:
            if kind != "str" or not isinstance(choices, (list, tuple)) or not choices or not all(isinstance(c, str) for c in choices):
                raise bad("choices must be a non-empty list of strings on a str option")
            choices = tuple(choices)
        help_text = decl.get("help", "")
        if not isinstance(help_text, str):
            raise bad("help must be a string")
        conditioning = decl.get("conditioning")
        if conditioning is not None and (not isinstance(conditioning, str) or not conditioning):
            raise bad("conditioning must be the name of a conditioning kind (e.g. class)")
        option = cls(
            name=name,
            type=kind,
            default=decl.get("default"),
            min=decl.get("min"),
            max=decl.get("max"),
            min_exclusive=decl.get("min_exclusive", False),
            max_exclusive=decl.get("max_exclusive", False),
            choices=choices,
            help=help_text.strip(),
            nullable=decl.get("nullable", False) or decl.get("default") is None,
            conditioning=conditioning,
        )
        try:
            option.check(option.default)
        except OptionError as exc:
            raise bad(f"default {option.default!r} is not accepted ({exc})") from None
        return option

    # -- describing ---------------------------------------------------------------------
    def range_text(self) -> str:
        """``(0, inf)``, ``[1, 10]``, ``{a,b}`` or empty, plus `` or null`` when null is accepted."""
        text = ""
        if self.choices:
            text = "{" + ",".join(self.choices) + "}"
        elif self.type in ("int", "float") and (self.min is not None or self.max is not None):
            lo = "-inf" if self.min is None else f"{self.min:g}"
            hi = "inf" if self.max is None else f"{self.max:g}"
            left = "(" if self.min is None or self.min_exclusive else "["
            right = ")" if self.max is None or self.max_exclusive else "]"
            text = f"{left}{lo}, {hi}{right}"
        return text + (" or null" if self.nullable else "")

    def signature(self, key: str | None = None) -> str:
        """``name=type[range]``, as the lists of accepted options show it."""
        if self is STEPS:
            return "steps=int[1, inf)"
        return f"{key or self.name}={self.type}{self.range_text()}"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "range": self.range_text(), "default": self.default, "help": self.help}

    # -- values -------------------------------------------------------------------------
    def check(self, value: Any) -> Any:
        """The value in this option's type, or OptionError saying what is wrong (no option name)."""
        if value is None:
            if self.nullable:
                return None
            raise OptionError("needs a value (null is not accepted)")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise OptionError(f"must be true or false, not {value!r}")
            return value
        if self.type == "str":
            if not isinstance(value, str):
                raise OptionError(f"must be a string, not {value!r}")
            if self.choices and value not in self.choices:
                raise OptionError(f"must be one of {', '.join(self.choices)}, not {value!r}")
            return value
        if self.type == "int":
            if isinstance(value, float) and math.isfinite(value) and value.is_integer():
                raise OptionError(f"must be an integer, not {value!r} (write {int(value)})")
            if not isinstance(value, int) or isinstance(value, bool):
                raise OptionError(f"must be an integer, not {value!r}")
        else:
            if not _is_number(value):
                raise OptionError(f"must be a number, not {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise OptionError(f"must be a finite number, not {value!r}")
            if abs(value) > MAX_MAGNITUDE and self.max is None:  # 1e308 would overflow the first square a sampler takes
                raise OptionError(f"must be within -{MAX_MAGNITUDE:g} .. {MAX_MAGNITUDE:g}, not {value!r}")
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            raise OptionError(f"must be {'>' if self.min_exclusive else '>='} {self.min:g}, not {value!r}")
        if self.max is not None and (value >= self.max if self.max_exclusive else value > self.max):
            raise OptionError(f"must be {'<' if self.max_exclusive else '<='} {self.max:g}, not {value!r}")
        return value

    def coerce(self, value: Any, *, key: str | None = None, text: bool = False) -> Any:
        """Check ``value`` (a YAML value, or with ``text`` a command-line string) and return it typed.

        A command-line string is read as one YAML scalar (``0.8``, ``true``, ``null``); a
        float also takes what ``float()`` reads (``1e-3``). Refusals are one line naming
        the option and the accepted range.
        """
        raw = value
        if text and isinstance(value, str):
            value = parse_text(value, self.type)
        try:
            return self.check(value)
        except OptionError as exc:
            raise OptionError(f"option {key or self.name} {exc} (given {raw!s}); accepted: {self.signature(key)}") from None


def parse_text(text: str, kind: str) -> Any:
    """A command-line string as the value of an option of ``kind`` (one YAML scalar)."""
    stripped = text.strip()
    if stripped in ("null", "~", "Null", "NULL"):
        return None
    if kind == "str":
        return text
    try:
        value = yaml.safe_load(stripped) if stripped else None
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        if kind == "float":
            try:
                return float(value)  # 1e-3, nan, inf: YAML 1.1 reads them as strings
            except ValueError:
                return value
        if kind == "int":
            try:
                return int(value)
            except ValueError:
                return value
    return value


def parse_assignments(items: Any) -> dict[str, str]:
    """``KEY=VALUE`` strings (``--set``) as a dict of command-line strings; a key given twice is refused."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise OptionError(f"--set {item!r}: use KEY=VALUE (e.g. --set temperature=0.8)")
        if any(not part.strip() for part in key.split(".")):  # ".eta" or "sampler..eta": never read as another key
            raise OptionError(f"--set {item!r}: {key!r} has an empty part; write KEY=VALUE or PART.KEY=VALUE (e.g. --set eta=0.5)")
        if key in out and out[key] != value:
            raise OptionError(f"option {key} is given twice ({out[key]} and {value}); give it once")
        out[key] = value
    return out


def parse_options(decls: Any, owner: str) -> list[Option]:
    """A component's declared ``options`` list (None means none); refuses duplicates."""
    if decls is None:
        return []
    if not isinstance(decls, (list, tuple)):
        raise OptionError(f"{owner}: options must be a list of option declarations, not {type(decls).__name__}")
    options = [Option.from_declaration(d, owner) for d in decls]
    names = [o.name for o in options]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OptionError(f"{owner}: option(s) {', '.join(dupes)} declared twice")
    return options


# The options of ``latentzoo.core.contract.denoising.Denoiser``'s x0 post-processing, as a sampler that builds
# one declares them (one list, so every denoiser sampler offers the same five).
DENOISER_OPTIONS: list[dict[str, Any]] = [
    {"name": "clip_sample", "type": "bool", "default": False, "help": "Clip the predicted x0 to +-clip_sample_range"},
    {"name": "clip_sample_range", "type": "float", "default": 1.0, "min": 0.0, "help": "Bound for clip_sample"},
    {
        "name": "thresholding",
        "type": "bool",
        "default": False,
        "help": "Dynamic thresholding of x0 (Saharia et al. 2022); overrides clip_sample",
    },
    {
        "name": "dynamic_thresholding_ratio",
        "type": "float",
        "default": 0.995,
        "min": 0.0,
        "max": 1.0,
        "help": "Quantile of |x0| used by thresholding",
    },
    {"name": "sample_max_value", "type": "float", "default": 1.0, "min": 1.0, "help": "Largest threshold of dynamic thresholding"},
]


# --------------------------------------------------------------------------------------
# resolving user values against a pipeline's declared options

STEPS = Option("steps", "int", default=None, help="Sampling steps (levels the scheduler picks), at least 1", nullable=True)


def check_steps(value: Any, *, where: str, text: bool = False) -> int | None:
    """The one rule for sampling steps (a pipeline's default, ``--steps``, ``steps=``): an integer >= 1,
    or None for "the pipeline's". Schedulers receive it checked; each adds only its own upper bound."""
    steps = STEPS.coerce(value, text=text)
    if steps is not None and steps < 1:
        raise OptionError(f"--steps must be at least 1, not {steps} ({where})")
    return steps


def _accepted(declared: Mapping[str, list[Option]]) -> list[tuple[str, Option]]:
    """(key, option) pairs users may write: steps, each name, and role.name for every name."""
    counts: dict[str, set[str]] = {}
    for role, options in declared.items():
        for option in options:
            counts.setdefault(option.name, set()).add(role)
    keys: list[tuple[str, Option]] = [("steps", STEPS)]
    for role, options in declared.items():
        for option in options:
            if _ambiguous(counts[option.name]):
                keys.append((f"{role}.{option.name}", option))
            elif not any(k == option.name for k, _ in keys):
                keys.append((option.name, option))
    return keys


def _ambiguous(roles: set[str]) -> bool:
    """A name declared by the prior and the sampler is one keyword of ``sampler.sample``; with the scheduler it must be qualified."""
    return len(roles) > 1 and "scheduler" in roles


def accepted_text(declared: Mapping[str, list[Option]]) -> str:
    return ", ".join(option.signature(key) for key, option in _accepted(declared))


def resolve(
    declared: Mapping[str, list[Option]], values: Mapping[str, Any], *, where: str, text: bool = False
) -> tuple[int | None, dict[str, dict[str, Any]]]:
    """Check ``values`` against the options ``declared`` per role; return (steps, {role: {name: value}}).

    Keys are option names, or ``role.name`` (``sampler.eta``) where a name is declared by
    the scheduler and another role. With ``text`` the values are command-line strings.
    An unknown key is refused in one line listing every accepted option.
    """
    by_role = {role: {o.name: o for o in options} for role, options in declared.items()}
    out: dict[str, dict[str, Any]] = {role: {} for role in declared}
    steps: int | None = None
    for key, value in values.items():
        key = str(key).strip()
        if key == "steps":
            steps = check_steps(value, where=where, text=text)
            continue
        role, _, name = key.rpartition(".")
        roles = [role] if role else [r for r, opts in by_role.items() if name in opts]
        if role and (role not in by_role or name not in by_role[role]):
            roles = []
        if not roles:
            names = [k for k, _ in _accepted(declared)]
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}? " if close else ""
            raise OptionError(f"unknown option {key!r} for {where}; {hint}accepted: {accepted_text(declared)}")
        if len(roles) > 1 and _ambiguous(set(roles)):
            qualified = ", ".join(f"{r}.{name}" for r in roles)
            raise OptionError(f"option {key!r} is declared by several parts of {where}; write one of {qualified}")
        for r in roles:
            out[r][name] = by_role[r][name].coerce(value, key=key, text=text)
    return steps, out


def canonical(declared: Mapping[str, list[Option]], per_role: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Per-role values as one flat dict of the keys a user would write (``role.name`` only where needed)."""
    roles_of: dict[str, set[str]] = {}
    for role, options in declared.items():
        for option in options:
            roles_of.setdefault(option.name, set()).add(role)
    flat: dict[str, Any] = {}
    for role, values in per_role.items():
        for name, value in values.items():
            flat[f"{role}.{name}" if _ambiguous(roles_of.get(name, set())) else name] = value
    return flat
