"""Load variant YAML in the small subset that both readers (this one and `nix/lib/yaml.nix`) accept.

Variant files are read twice: by pydantic here and by a pure-builtins parser at Nix evaluation time.
To keep the two readers equal, this loader rejects every construct the Nix parser does not implement,
and every plain scalar whose meaning differs between YAML 1.1 (PyYAML) and YAML 1.2 core (Nix parser):
a file that validates is a file that evaluates, with the same value.

It also records the line of every node, so validation errors can name `file:line: field`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml
from yaml import events as ev

Path_ = tuple[str | int, ...]

_CORE_NULL = re.compile(r"^(~|null|Null|NULL|)$")
_CORE_BOOL = re.compile(r"^(true|True|TRUE|false|False|FALSE)$")
_CORE_INT = re.compile(r"^[-+]?[0-9]+$")
_CORE_INT_OTHER = re.compile(r"^(0o[0-7]+|0x[0-9a-fA-F]+)$")
_CORE_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")
_CORE_SPECIAL_FLOAT = re.compile(r"^([-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN))$")
_BLOCK_HEADER = re.compile(r"^[|>]-?$")
_INT64 = 2**63


class YamlSubsetError(ValueError):
    """A document is not valid YAML, or uses YAML outside the subset; carries the 1-based line."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass
class LoadedYaml:
    """The plain data of a document plus the line on which each node (by path) starts."""

    data: dict[str, Any]
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """The line of `path`, or of its closest ancestor that exists (a missing field's parent)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


def _core_value(text: str) -> Any:
    """The YAML 1.2 core-schema value of a plain scalar (what the Nix parser computes)."""
    if _CORE_NULL.match(text):
        return None
    if _CORE_BOOL.match(text):
        return text.lower() == "true"
    if _CORE_INT.match(text):
        return int(text, 10)
    if _CORE_INT_OTHER.match(text):
        return int(text, 0)
    if _CORE_FLOAT.match(text):
        return float(text)
    return text


def _pyyaml_value(text: str) -> Any:
    """The value PyYAML (YAML 1.1 resolver) gives the same plain scalar."""
    loader = yaml.SafeLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))  # type: ignore[no-untyped-call]  # types-pyyaml leaves Resolver.resolve untyped
        return loader.construct_object(yaml.ScalarNode(tag, text))
    except yaml.YAMLError:  # e.g. '<<' (merge) or '=' (value): tags with no safe constructor
        return _UNREPRESENTABLE
    finally:
        loader.dispose()


_UNREPRESENTABLE = object()
_HEX_OCT = re.compile(r"^(0o[0-7]+|0x[0-9a-fA-F]+)$")
_ESCAPE = re.compile(r"\\(.)")


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b



class _Mark(Protocol):
    """A position in the text (PyYAML has a pure-Python and a C `Mark` class)."""

    line: int
    column: int


def _at(event: ev.Event) -> _Mark:
    """Where `event` starts: PyYAML's parser always sets it (the stubs allow None for hand-made events)."""
    assert event.start_mark is not None
    return event.start_mark


class _Builder:
    """Turns a PyYAML event stream into data, enforcing the subset and recording node lines."""

    def __init__(self, text: str, source: str) -> None:
        self.text_lines = text.splitlines()
        self.source = source
        self.lines: dict[Path_, int] = {}

    def fail(self, mark: _Mark | None, message: str) -> YamlSubsetError:
        return YamlSubsetError(self.source, mark.line + 1 if mark else 1, message)

    def load(self, text: str) -> LoadedYaml:
        try:
            events = list(yaml.parse(text, Loader=yaml.SafeLoader))
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            raise YamlSubsetError(self.source, line, f"invalid YAML: {exc.problem or exc}") from None
        except yaml.YAMLError as exc:  # pragma: no cover - PyYAML raises marked errors for text input
            raise YamlSubsetError(self.source, 1, f"invalid YAML: {exc}") from None
        docs = [e for e in events if isinstance(e, ev.DocumentStartEvent)]
        if not docs:
            raise YamlSubsetError(self.source, 1, "empty file: expected a mapping of engine fields")
        if len(docs) > 1:
            raise self.fail(docs[1].start_mark, "unsupported: more than one document")
        if docs[0].explicit or getattr(docs[0], "version", None) or getattr(docs[0], "tags", None):
            raise self.fail(docs[0].start_mark, "unsupported: document markers and directives (---, %YAML)")
        end = next(e for e in events if isinstance(e, ev.DocumentEndEvent))
        if end.explicit:
            raise self.fail(end.start_mark, "unsupported: document end marker (...)")
        body = events[2:-2]  # strip StreamStart, DocumentStart ... DocumentEnd, StreamEnd
        if len(body) == 1 and isinstance(body[0], ev.ScalarEvent) and body[0].value == "" and body[0].style is None:
            raise YamlSubsetError(self.source, 1, "empty file: expected a mapping of engine fields")
        if not isinstance(body[0], ev.MappingStartEvent):
            raise self.fail(body[0].start_mark, "the document must be a mapping of engine fields")
        self.pos = 0
        self.events = body
        data = self.node(())
        return LoadedYaml(data=data, lines=self.lines)

    def next(self) -> ev.Event:
        event = self.events[self.pos]
        self.pos += 1
        return event

    def node(self, path: Path_) -> Any:
        event = self.next()
        if isinstance(event, ev.AliasEvent):
            raise self.fail(event.start_mark, "unsupported: aliases (*name)")
        if getattr(event, "anchor", None):
            raise self.fail(event.start_mark, "unsupported: anchors (&name)")
        self.lines[path] = _at(event).line + 1
        if isinstance(event, ev.ScalarEvent):
            return self.scalar(event)
        if isinstance(event, ev.CollectionStartEvent) and not event.implicit:
            raise self.fail(event.start_mark, f"unsupported: tags ({event.tag})")
        if isinstance(event, ev.MappingStartEvent):
            if event.flow_style:
                raise self.fail(event.start_mark, "unsupported: flow mappings ({...}); use a block mapping")
            return self.mapping(path)
        if isinstance(event, ev.SequenceStartEvent):
            return self.sequence(path, event)
        raise self.fail(event.start_mark, f"unsupported: {type(event).__name__}")  # pragma: no cover

    def mapping(self, path: Path_) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while not isinstance(self.events[self.pos], ev.MappingEndEvent):
            key_event = self.events[self.pos]
            if not isinstance(key_event, ev.ScalarEvent):
                raise self.fail(key_event.start_mark, "unsupported: complex mapping keys")
            key = self.node(path + ("<key>",))
            self.lines.pop(path + ("<key>",), None)
            if not isinstance(key, str):
                raise self.fail(key_event.start_mark, f"mapping keys must be strings, got {key!r}; quote it")
            if key in out:
                raise self.fail(key_event.start_mark, f"duplicate key '{key}'")
            value_line = _at(key_event).line + 1
            out[key] = self.node(path + (key,))
            self.lines[path + (key,)] = value_line
        self.next()
        return out

    def sequence(self, path: Path_, start: ev.SequenceStartEvent) -> list[Any]:
        flow = bool(start.flow_style)
        out: list[Any] = []
        while not isinstance(self.events[self.pos], ev.SequenceEndEvent):
            item = self.events[self.pos]
            if flow and not isinstance(item, ev.ScalarEvent):
                raise self.fail(item.start_mark, "unsupported: flow sequences may hold only scalars")
            out.append(self.node(path + (len(out),)))
        end = self.next()
        if flow and _at(end).line != _at(start).line:
            raise self.fail(start.start_mark, "unsupported: flow sequences spanning several lines")
        return out

    def scalar(self, event: ev.ScalarEvent) -> Any:
        start, end = _at(event), event.end_mark or _at(event)
        if event.tag is not None and not (event.implicit[0] or event.implicit[1]):
            raise self.fail(start, f"unsupported: tags ({event.tag})")
        style = event.style
        before = self.text_lines[start.line][: start.column].rstrip() if start.line < len(self.text_lines) else ""
        if before.endswith("?"):
            raise self.fail(start, "unsupported: complex mapping keys (?)")
        if style in ("|", ">"):
            if not (before.endswith(":") or before.endswith("-")):
                raise self.fail(start, "unsupported: block scalar here (put | or > right after `key:` or `- `)")
            header = self.text_lines[start.line][start.column :].split("#", 1)[0].strip()
            if not _BLOCK_HEADER.match(header):
                raise self.fail(start, f"unsupported: block scalar header '{header}' (use |, |-, > or >-)")
            return event.value
        if start.line != end.line:
            raise self.fail(start, "unsupported: scalars spanning several lines (use | or >)")
        if style == '"':
            raw = self.text_lines[start.line][start.column : end.column]
            bad = next((m for m in _ESCAPE.finditer(raw) if m.group(1) not in '\\"/nt'), None)
            if bad:
                raise self.fail(start, f"unsupported: escape '\\{bad.group(1)}' (only \\\\ \\\" \\/ \\n \\t)")
            return event.value
        if style == "'":
            return event.value
        return self.plain(event)

    def plain(self, event: ev.ScalarEvent) -> Any:
        text = event.value
        if text[:1] in ("?", ":"):
            raise self.fail(event.start_mark, f"invalid: a plain scalar cannot start with '{text[0]}'; quote it")
        if _HEX_OCT.match(text):
            raise self.fail(event.start_mark, f"unsupported: octal/hex integer '{text}'; write it in decimal")
        if _CORE_SPECIAL_FLOAT.match(text):
            raise self.fail(event.start_mark, f"unsupported: '{text}' (infinity and NaN)")
        core = _core_value(text)
        pyyaml = _pyyaml_value(text)
        if not _same(core, pyyaml):
            raise self.fail(event.start_mark, f"ambiguous plain scalar '{text}' (YAML 1.1 and 1.2 differ); quote it")
        if isinstance(core, int) and not isinstance(core, bool) and not -_INT64 <= core < _INT64:
            raise self.fail(event.start_mark, f"unsupported: integer '{text}' outside 64 bits")
        if isinstance(core, float) and not math.isfinite(core):
            raise self.fail(event.start_mark, f"unsupported: float '{text}' out of range")
        return core


def load_yaml(text: str, source: str) -> LoadedYaml:
    """Parse `text` (named `source` in errors) in the variant-file YAML subset."""
    if "\r" in text:
        line = text[: text.index("\r")].count("\n") + 1
        raise YamlSubsetError(source, line, "unsupported: carriage returns (use \\n line ends)")
    if "\t" in "".join(line[: len(line) - len(line.lstrip())] for line in text.splitlines()):
        line = next(i for i, l in enumerate(text.splitlines(), 1) if "\t" in l[: len(l) - len(l.lstrip())])
        raise YamlSubsetError(source, line, "tabs are not allowed for indentation")
    return _Builder(text, source).load(text)
