"""YAML read safely: the safe loader only, bounded in bytes, nesting depth and alias expansion.

Registry files, pipeline files and ``--set`` values from users, plugins and the Hub all come
through here. A file over a bound (a "billion laughs" or deep-nesting attack, a huge or
special file) is refused in one line naming it; nothing here imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from .errors import LatentzooError, RegistryError

# Bounds on what a registry or pipeline file may cost to read (YAML "billion laughs" and
# deep-nesting attacks): generous for any real registry, refused in one line otherwise.
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 100_000  # nodes that aliases may add to the document when expanded


def read_text(path: str | Path, what: str = "registry file") -> str:
    """A YAML file's text: at most MAX_FILE_BYTES, UTF-8; anything else is one line naming the file."""
    from .userfiles import open_file

    path = Path(path)
    try:
        with open_file(path, what, "config") as f:  # a FIFO or a device is refused, never read
            raw = f.read(MAX_FILE_BYTES + 1)
    except RegistryError:
        raise
    except LatentzooError as exc:
        raise RegistryError(str(exc)) from exc
    except OSError as exc:
        raise RegistryError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise RegistryError(f"{what} {path} is larger than {MAX_FILE_BYTES >> 20} MiB; a registry file is small YAML, split it or fix it")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RegistryError(
            f"{path}:{line}: {what} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from exc


def _compose(text: str, loader_cls: Any, path: Path) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document into nodes from the parser's events, iteratively and bounded.

    PyYAML's own composer recurses (a deeply nested file overflows the stack) and shares
    aliased nodes, so a few hundred bytes of nested aliases expand to billions of nodes in
    anything that walks the data ("billion laughs"). Here depth is capped at MAX_DEPTH,
    aliases may add at most MAX_ALIAS_NODES nodes in total (counted in O(1) per alias from
    each anchored node's expanded size), recursive aliases and duplicate keys are refused,
    and only then is the document constructed (safe constructor).
    """
    loader = loader_cls(text)
    try:
        anchors: dict[str, yaml.Node] = {}
        sizes: dict[int, int] = {}  # id(node) -> expanded size (nodes), for finished nodes
        open_nodes: list[tuple[yaml.Node, list[Any], int]] = []  # (node, children, size so far)
        extra = 0
        root: yaml.Node | None = None
        documents = 0

        def fail(mark: Any, message: str) -> RegistryError:
            return RegistryError(f"{path}:{mark.line + 1 if mark else 1}: {message}")

        def finish(node: yaml.Node, size: int) -> None:
            nonlocal root
            sizes[id(node)] = size
            if open_nodes:
                parent, children, psize = open_nodes[-1]
                children.append(node)
                open_nodes[-1] = (parent, children, psize + size)
            else:
                root = node

        while not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            if isinstance(event, yaml.DocumentStartEvent):
                documents += 1
                if documents > 1:
                    raise fail(event.start_mark, "holds more than one YAML document (---); keep one")
            elif isinstance(event, (yaml.StreamStartEvent, yaml.DocumentEndEvent)):
                continue
            elif isinstance(event, yaml.AliasEvent):
                node = anchors.get(event.anchor)
                if node is None:
                    raise fail(event.start_mark, f"alias *{event.anchor} names no anchor defined before it")
                if id(node) not in sizes:
                    raise fail(event.start_mark, f"alias *{event.anchor} refers to the node that contains it (a recursive alias)")
                extra += sizes[id(node)]
                if extra > MAX_ALIAS_NODES:
                    raise fail(
                        event.start_mark,
                        f"YAML aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?); write the entries out instead",
                    )
                finish(node, sizes[id(node)])
            elif isinstance(event, yaml.ScalarEvent):
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
                node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
                if event.anchor is not None:
                    anchors[event.anchor] = node
                finish(node, 1)
            elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
                if len(open_nodes) >= MAX_DEPTH:
                    raise fail(event.start_mark, f"YAML nested more than {MAX_DEPTH} levels deep; a registry entry needs a few")
                kind = yaml.SequenceNode if isinstance(event, yaml.SequenceStartEvent) else yaml.MappingNode
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(kind, None, event.implicit)
                node = kind(tag, [], event.start_mark, None, flow_style=event.flow_style)
                if event.anchor is not None:
                    anchors[event.anchor] = node
                open_nodes.append((node, [], 1))
            elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
                node, children, size = open_nodes.pop()
                node.end_mark = event.end_mark
                if isinstance(node, yaml.MappingNode):
                    pairs = list(zip(children[::2], children[1::2], strict=True))
                    seen: set[Any] = set()
                    for key_node, _ in pairs:
                        if isinstance(key_node, yaml.ScalarNode):
                            if key_node.value in seen and key_node.value != "<<":
                                raise fail(key_node.start_mark, f"duplicate key {key_node.value!r}")
                            seen.add(key_node.value)
                    node.value = pairs
                else:
                    node.value = children
                finish(node, size)
        if root is None:
            return None, None
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


_ANCHOR = re.compile(r"(?:^|[\s\[{,:-])&[^\s\[\]{},]")  # a YAML anchor (&name) may be present


def _native(text: str, loader_cls: Any) -> tuple[yaml.Node | None, Any]:
    loader = loader_cls(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def _check_depth(root: yaml.Node | None, path: Path) -> None:
    """Refuse nesting deeper than MAX_DEPTH (an iterative walk: no recursion on hostile input)
    and duplicate keys (which YAML loaders otherwise resolve silently, last one wins)."""
    scalar, mapping = yaml.ScalarNode, yaml.MappingNode
    todo = [(root, 0)] if root is not None and root.__class__ is not scalar else []
    while todo:
        node, depth = todo.pop()
        if depth >= MAX_DEPTH:
            raise RegistryError(
                f"{path}:{node.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep; a registry entry needs a few"
            )
        depth += 1
        if node.__class__ is mapping:
            keys: set[str] = set()
            for key, value in node.value:
                if value.__class__ is not scalar:
                    todo.append((value, depth))
                if key.__class__ is not scalar:
                    todo.append((key, depth))
                elif key.value in keys and key.value != "<<":
                    raise RegistryError(f"{path}:{key.start_mark.line + 1}: duplicate key {key.value!r}")
                else:
                    keys.add(key.value)
        else:
            todo.extend((child, depth) for child in node.value if child.__class__ is not scalar)


def load_yaml(path: str | Path, what: str = "registry file") -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data of a bounded, safe-loaded YAML file.

    Every YAML file latentzoo reads from outside (registry layers, pipeline files, pulled
    pipeline.yaml, training --config) goes through here: size, depth and alias expansion are
    bounded, and any failure is one RegistryError line naming the file and line.
    """
    path = Path(path)
    return load_text(read_text(path, what), path)


def load_text(text: str, path: Path) -> tuple[yaml.Node | None, Any]:
    fast = getattr(yaml, "CSafeLoader", None)
    try:
        if fast is not None and not _ANCHOR.search(text):
            # No anchors, so no aliases: libyaml composes natively (it caps nesting at 1000
            # levels itself) and one iterative walk enforces MAX_DEPTH. Linear and fast.
            try:
                node, data = _native(text, fast)
                _check_depth(node, path)
                return node, data
            except yaml.YAMLError:
                pass  # the pure-Python parser below gives the same line and a clearer message
        try:
            return _compose(text, fast or yaml.SafeLoader, path)
        except yaml.YAMLError:
            return _compose(text, yaml.SafeLoader, path)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RegistryError(f"{where}: invalid YAML ({problem}); fix the syntax") from exc
    except RecursionError as exc:  # the constructor on a pathological but bounded document
        raise RegistryError(f"{path}: YAML too deeply nested; simplify it") from exc


def line_map(node: yaml.Node, lines: dict[tuple[Any, ...], int], depth: int = 4) -> None:
    """Line numbers of mapping keys down to ``depth`` levels (section, name, key, sub-key): what
    schema errors cite. Linear in the nodes visited; deeper (and aliased) subtrees are not walked."""
    mapping = yaml.MappingNode
    todo: list[tuple[yaml.Node, tuple[Any, ...]]] = [(node, ())]
    while todo:
        node, path = todo.pop()
        if node.__class__ is not mapping:
            continue
        deeper = len(path) + 1 < depth
        for key_node, value_node in node.value:
            key = (*path, key_node.value)
            if key not in lines:
                lines[key] = key_node.start_mark.line + 1
            if deeper:
                todo.append((value_node, key))
