"""The two readers of a variant file agree: nix/lib/yaml.nix == PyYAML (via dalston.yamlsubset).

Checked on every shipped variant, on freshly scaffolded ones, on hypothesis-generated documents in
the subset, and on a table of out-of-subset documents that both readers must reject naming the line.

Floats: Nix 2.8 prints floats in --json with 6 significant digits, so the JSON printed by Nix is
compared with a relative tolerance, while exact equality is checked inside Nix
(`parsed == builtins.fromJSON <PyYAML's JSON>`), and float-vs-int is kept apart by tagging floats.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dalston.yamlsubset import YamlSubsetError, load_yaml
from tests.nix.nixutil import NIX_DIR, REPO, eval_error, eval_json, nix_literal

pytestmark = pytest.mark.nix

_TAG = """
  tag = v: if builtins.isFloat v then { __float = v; }
    else if builtins.isList v then map tag v
    else if builtins.isAttrs v then builtins.mapAttrs (_: tag) v
    else v;
"""


def _tag(value: Any) -> Any:
    if isinstance(value, float):
        return {"__float": value}
    if isinstance(value, list):
        return [_tag(v) for v in value]
    if isinstance(value, dict):
        return {k: _tag(v) for k, v in value.items()}
    return value


def _same(nix: Any, py: Any) -> bool:
    """Equal up to Nix 2.8's 6-digit float printing (exactness is checked inside Nix)."""
    if isinstance(py, dict) and set(py) == {"__float"} and isinstance(nix, dict) and set(nix) == {"__float"}:
        return math.isclose(float(nix["__float"]), py["__float"], rel_tol=1e-5, abs_tol=1e-300)
    if isinstance(py, dict) and isinstance(nix, dict):
        return py.keys() == nix.keys() and all(_same(nix[k], py[k]) for k in py)
    if isinstance(py, list) and isinstance(nix, list):
        return len(py) == len(nix) and all(_same(a, b) for a, b in zip(nix, py))
    return type(nix) is type(py) and nix == py


def nix_parse_many(docs: list[tuple[str, str]], tmp: Path) -> list[dict[str, Any]]:
    """Parse each (name, text) with yaml.nix in ONE evaluation; compare with PyYAML inside Nix too."""
    entries = []
    for i, (name, text) in enumerate(docs):
        doc = tmp / f"doc{i}.yaml"
        doc.write_text(text, encoding="utf-8")
        expected = tmp / f"doc{i}.json"
        expected.write_text(json.dumps(yaml.safe_load(text), ensure_ascii=False), encoding="utf-8")
        entries.append(
            f"{{ name = {nix_literal(name)}; doc = {nix_literal(doc)}; expected = {nix_literal(expected)}; }}"
        )
    expr = f"""
      let
        y = import {nix_literal(NIX_DIR / 'lib' / 'yaml.nix')[1:-1]};
        {_TAG}
        check = e: let v = y.parse e.name (builtins.readFile e.doc); in
          {{ tagged = tag v; equal = v == builtins.fromJSON (builtins.readFile e.expected); }};
      in map check [ {' '.join(entries)} ]
    """
    return eval_json(expr)


def assert_readers_agree(docs: list[tuple[str, str]], tmp: Path) -> None:
    results = nix_parse_many(docs, tmp)
    for (name, text), got in zip(docs, results):
        py = yaml.safe_load(text)
        assert load_yaml(text, name).data == py, f"{name}: dalston.yamlsubset differs from PyYAML"
        assert _same(got["tagged"], _tag(py)), f"{name}: Nix {got['tagged']!r} != PyYAML {py!r}\n{text}"
        assert got["equal"] is True, f"{name}: Nix value not exactly equal to PyYAML's\n{text}"


def shipped_variant_files() -> list[Path]:
    engines = REPO / "engines"
    return sorted(engines.glob("*/*/engine.yaml")) + sorted(engines.glob("*/*/variants/*.yaml"))


def test_every_shipped_variant_file(tmp_path: Path) -> None:
    files = shipped_variant_files() + [REPO / "engines" / "aliases.yaml"]
    assert len(files) >= 9
    assert_readers_agree([(str(p.relative_to(REPO)), p.read_text()) for p in files], tmp_path)


def test_variants_nix_equals_python_catalog() -> None:
    """nix/variants.nix (discovery + parse) == the Python catalog's files, id by id."""
    nix = eval_json(
        f"let {_TAG} in builtins.mapAttrs (_: e: e // {{ spec = tag e.spec; }}) (import {NIX_DIR / 'variants.nix'})"
    )
    from dalston.catalog import Catalog

    catalog = Catalog.load(REPO / "engines")
    assert sorted(nix) == sorted(catalog.engines)
    for engine_id, entry in catalog.engines.items():
        got = nix[engine_id]
        assert got["family"] == entry.family and got["stage"] == entry.stage
        assert got["dir"] == str(entry.dir.relative_to(REPO))
        assert got["file"] == str(entry.path.relative_to(REPO))
        assert _same(got["spec"], _tag(load_yaml(entry.path.read_text(), str(entry.path)).data))


def test_scaffolded_variants(tmp_path: Path) -> None:
    """Every stage the scaffold offers, as a multi-variant family and as a single engine.yaml."""
    from typing import get_args

    from dalston.spec import Stage

    root = tmp_path / "engines"
    root.mkdir()
    expected = []
    for stage in get_args(Stage):
        family = f"my-{stage.replace('_', '-')}"
        runs = [(["--variants", "small,large"], [f"{family}-large", f"{family}-small"]), ([], [f"{family}-one"])]
        for extra, ids in runs:
            name = family if extra else f"{family}-one"
            proc = subprocess.run(
                [sys.executable, "-m", "dalston.tools.scaffold_engine", "--root", str(root), "--stage", stage, *extra, name],
                cwd=REPO, capture_output=True, text=True, timeout=120,
            )
            assert proc.returncode == 0, proc.stderr
            expected += ids
    files = sorted(root.rglob("*.yaml"))
    assert len(files) == len(expected) == 3 * len(get_args(Stage)), files
    work = tmp_path / "nix"
    work.mkdir()
    assert_readers_agree([(str(p.relative_to(tmp_path)), p.read_text()) for p in files], work)
    # ...and discovery finds them under the ids the Python catalog gives them.
    ids = eval_json(f"builtins.attrNames (import {NIX_DIR / 'lib' / 'discover.nix'} {{ engines = {root}; }})")
    from dalston.catalog import Catalog

    assert ids == sorted(expected) == sorted(Catalog.scan(root, allow_unpinned=True)[0].engines)


# --- hypothesis: documents in the subset --------------------------------------------------------

_WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=8)
_TEXT = st.text(
    alphabet=st.sampled_from(list("abcXYZ019 .,:#-_'\"\\/[]{}!&*?|>%@`~=+é") + ["ü", "中"]), max_size=14
)


def _plain_ok(text: str) -> bool:
    """Whether `text` can be written as a plain scalar that both readers accept (and keep as written)."""
    if not text or text != text.strip() or text[0] in "-!&*[]{}|>'\"%@`#,?:" or ": " in text or " #" in text:
        return False
    try:
        return load_yaml(f"k: {text}\n", "probe").data == {"k": yaml.safe_load(f"k: {text}\n")["k"]}
    except (YamlSubsetError, yaml.YAMLError):
        return False


@st.composite
def scalars(draw: st.DrawFn, flow: bool = False) -> str:
    kind = draw(st.sampled_from(["int", "float", "bool", "null", "text", "dq", "sq"]))
    if kind == "int":
        return draw(st.sampled_from(["", "+", "-"])) + str(draw(st.integers(0, 2**62)))
    if kind == "float":
        value = draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mant, exp = text.split("e")
            text = f"{mant}.0e{'+' if not exp.startswith('-') else ''}{exp.lstrip('+')}"
        elif "e" in text and not (text.split("e")[1][:1] in "+-"):
            text = text.replace("e", "e+")
        return text
    if kind == "bool":
        return draw(st.sampled_from(["true", "false", "True", "FALSE"]))
    if kind == "null":
        return draw(st.sampled_from(["null", "~", "Null"] + ([] if flow else [""])))
    text = draw(_TEXT)
    if kind == "text" and _plain_ok(text) and not (flow and any(c in text for c in ",[]{}?")):
        return text
    if kind == "sq":
        return "'" + text.replace("'", "''") + "'"
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + draw(st.sampled_from([escaped, escaped + "\\n", "\\t" + escaped])) + '"'


def _key(draw: st.DrawFn) -> str:
    key = draw(st.one_of(_WORD, st.from_regex(r"[a-z]{1,4} [a-z]{1,4}", fullmatch=True)))
    if not _plain_ok(key) or not isinstance(yaml.safe_load(f"{key}: 1") , dict) or not isinstance(next(iter(yaml.safe_load(f"{key}: 1"))), str):
        return json.dumps(key)
    return key if draw(st.booleans()) else "'" + key + "'"


def _comment(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["", "", "", "  # note", " #: x"]))


@st.composite
def block_scalar(draw: st.DrawFn, indent: int) -> list[str]:
    header = draw(st.sampled_from(["|", "|-", ">", ">-"]))
    pad = " " * indent
    lines: list[str] = []
    count = draw(st.integers(1, 5))
    for i in range(count):
        kind = draw(st.sampled_from(["text", "text", "empty", "more"])) if i else "text"
        body = draw(st.text(alphabet="ab c#:-'\"", min_size=1, max_size=10)).rstrip() or "x"
        body = body.lstrip() or "x"
        if kind == "empty":
            lines.append("")
        elif kind == "more":
            lines.append(pad + "  " + body)
        else:
            lines.append(pad + body)
    if draw(st.booleans()):
        lines.append("")
    return [header + draw(st.sampled_from(["", "  # c"]))] + lines


@st.composite
def mapping_lines(draw: st.DrawFn, indent: int, depth: int) -> list[str]:
    pad = " " * indent
    out: list[str] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(1, 4))):
        key = _key(draw)
        norm = yaml.safe_load(f"{key}: 1")
        if next(iter(norm)) in used:
            continue
        used.add(next(iter(norm)))
        if draw(st.integers(0, 5)) == 0:
            out.append(pad + draw(st.sampled_from(["# a comment", "", "   # indented comment"])))
        out.extend(value_lines(draw, f"{pad}{key}:", indent, depth))
    return out


def value_lines(draw: st.DrawFn, head: str, indent: int, depth: int) -> list[str]:
    """Lines for `head` (e.g. `  key:` or `  -`) followed by a value."""
    choice = draw(st.sampled_from(["scalar", "scalar", "flow", "block", "map", "seq"] if depth < 3 else ["scalar", "flow", "block"]))
    step = draw(st.sampled_from([2, 4]))
    if choice == "scalar":
        return [f"{head} {draw(scalars())}{_comment(draw)}".rstrip() if True else ""]
    if choice == "flow":
        items = draw(st.lists(scalars(flow=True), max_size=4))
        sep = draw(st.sampled_from([", ", ",", " , "]))
        return [f"{head} [{sep.join(items)}]{_comment(draw)}"]
    if choice == "block":
        block = draw(block_scalar(indent + step))
        return [f"{head} {block[0]}"] + block[1:]
    if choice == "map":
        return [head + _comment(draw)] + draw(mapping_lines(indent + step, depth + 1))
    # sequence, either indented under the key or at the key's own column
    seq_indent = indent if head.rstrip().endswith(":") and draw(st.booleans()) else indent + step
    lines = [head + _comment(draw)]
    pad = " " * seq_indent
    for _ in range(draw(st.integers(1, 3))):
        form = draw(st.sampled_from(["value", "compact-map", "nested"]))
        if form == "compact-map" and depth < 3:
            sub = draw(mapping_lines(seq_indent + 2, depth + 1))
            while not sub[0].strip() or sub[0].strip().startswith("#"):  # only leading comments/blanks
                sub = sub[1:]
            lines.append(pad + "- " + sub[0][seq_indent + 2:])
            lines.extend(sub[1:])
        elif form == "nested" and depth < 3:
            lines.extend(value_lines(draw, pad + "-", seq_indent, depth + 1))
        else:
            lines.extend(value_lines(draw, pad + "-", seq_indent, 3))
    return lines


@st.composite
def documents(draw: st.DrawFn) -> str:
    lines = draw(mapping_lines(0, 0))
    if draw(st.booleans()):
        lines.insert(0, "# generated")
    return "\n".join(lines) + "\n"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(documents(), min_size=12, max_size=12))
def test_generated_documents_agree(tmp_path_factory: pytest.TempPathFactory, docs: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("gen")
    accepted = []
    for i, text in enumerate(docs):
        try:
            load_yaml(text, f"gen{i}.yaml")
        except YamlSubsetError as exc:  # the generator must stay inside the subset
            raise AssertionError(f"generator produced a document outside the subset: {exc}\n{text}") from None
        accepted.append((f"gen{i}.yaml", text))
    assert_readers_agree(accepted, tmp)


# --- out of the subset: both readers refuse, naming file and line --------------------------------

REJECTED = [
    ("", 1),
    ("# only a comment\n", 1),
    ("- a\n- b\n", 1),
    ("just text\n", 1),
    ("---\nid: x\n", 1),
    ("id: x\n...\n", 2),
    ("%YAML 1.2\n---\nid: x\n", 1),
    ("id: &a x\nb: 1\n", 1),
    ("id: x\nb: *a\n", 2),
    ("id: !!str x\n", 1),
    ("a: 1\nb: {c: 1}\n", 2),
    ("a: 1\nb: [c, [d]]\n", 2),
    ("a: 1\nb: [c,\n  d]\n", 2),
    ("a: 1\nb: [x: 1]\n", 2),
    ("a: 1\nb: yes\n", 2),
    ("a: 1\nb: on\n", 2),
    ("a: 1\nb: 010\n", 2),
    ("a: 1\nb: 1e3\n", 2),
    ("a: 1\nb: 1_000\n", 2),
    ("a: 1\nb: 1:20\n", 2),
    ("a: 1\nb: 2024-01-01\n", 2),
    ("a: 1\nb: .inf\n", 2),
    ("a: 1\nb: .nan\n", 2),
    ("a: 1\nb: 0x1F\n", 2),
    ("a: 1\nb: 0o17\n", 2),
    ("a: 1\nb: |2\n  x\n", 2),
    ("a: 1\nb: |+\n  x\n", 2),
    ("a: 1\nb: 'multi\n  line'\n", 2),
    ("a: 1\nb: plain\n  continued\n", 2),
    ("a: 1\na: 2\n", 2),
    ("a: 1\n1: x\n", 2),
    ("a: 1\ntrue: x\n", 2),
    ("a: 1\n? b\n: c\n", 2),
    ("a: 1\nb: ?x\n", 2),
    ("a: 1\nb: \"\\x41\"\n", 2),
    ("a: 1\nb:\n\t- c\n", 3),
    ("a: 1\r\nb: 2\r\n", 1),
    ("a:\n  b: 1\n   c: 2\n", 3),
]


@pytest.mark.parametrize(("text", "line"), REJECTED, ids=[repr(t)[:40] for t, _ in REJECTED])
def test_out_of_subset_rejected_by_both(tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(YamlSubsetError) as info:
        load_yaml(text, "bad.yaml")
    assert info.value.line == line, f"python said {info.value}"
    doc = tmp_path / "bad.yaml"
    doc.write_text(text, encoding="utf-8", newline="")
    err = eval_error(f"(import {NIX_DIR / 'lib' / 'yaml.nix'}).parse \"bad.yaml\" (builtins.readFile {doc})")
    assert f"bad.yaml:{line}:" in err, f"nix said:\n{err}"
