# pyproject.toml as poetry2nix reads it: PEP 621 `[project]` metadata restated as `[tool.poetry]`.
#
# WHY: poetry2nix (its last release, which the flake pins) reads only `tool.poetry.{name, version,
# dependencies, extras, scripts}`; it predates Poetry 2 and PEP 621, where those live in
# `[project]` and `[project.optional-dependencies]` (this repository's layout). Rather than keep a
# second, hand-written copy of the dependency list, this file derives the Poetry 1 view from the
# real file with builtins only (builtins.fromTOML in, a TOML string out), so it evaluates without
# nixpkgs and a test can hold it equal to what Python's `packaging` reads.
# The application itself is still built by poetry-core 2 from the real pyproject.toml.
#
# Interface:
#   poetryView : attrset (fromTOML of pyproject.toml) -> attrset (with tool.poetry filled in)
#   toToml     : that attrset -> TOML text (build-system and tool.poetry only: what poetry2nix reads)
#   render     : attrset -> the text of nix/pyproject.poetry2nix.toml
#   checkedFile : { pyproject; committed; } -> committed, if it is exactly `render pyproject`
let
  b = builtins;

  trim = s: b.head (b.match "[ \t]*(.*[^ \t]|)[ \t]*" s);

  # One PEP 508 requirement, as Poetry writes them: `name[extra,...] (specifier) ; marker`
  # or `name[extra]>=1,<2 ; marker`. URL requirements (`name @ url`) are not supported here.
  parseRequirement = where: text:
    let
      m = b.match "[ \t]*([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)[ \t]*(\\[([^]]*)])?[ \t]*(\\(([^)]*)\\)|([^;@]*))?[ \t]*(;(.*))?" text;
      at = i: b.elemAt m i;
      extras = if at 3 == null then [ ] else b.filter (e: e != "") (map trim (b.filter b.isString (b.split "," (at 3))));
      spec = trim (if at 5 != null then at 5 else if at 6 != null then at 6 else "");
      marker = if at 8 == null then null else trim (at 8);
    in
    if m == null then throw "${where}: cannot read the requirement '${text}' (expected `name[extras] (specifier) ; marker`)"
    else { name = at 0; inherit extras marker; version = if spec == "" then "*" else spec; };

  # Poetry's table for one dependency.
  poetryDep = optional: r:
    { inherit (r) version; }
    // (if optional then { optional = true; } else { })
    // (if r.extras != [ ] then { inherit (r) extras; } else { })
    // (if r.marker != null then { markers = r.marker; } else { });

  poetryView = pyproject:
    let
      project = pyproject.project;
      tool = pyproject.tool or { };
      required = map (parseRequirement "pyproject.toml: project.dependencies") (project.dependencies or [ ]);
      optionalSets = b.mapAttrs
        (extra: reqs: map (parseRequirement "pyproject.toml: project.optional-dependencies.${extra}") reqs)
        (project.optional-dependencies or { });
      requiredNames = map (r: r.name) required;
      optionalDeps = b.filter (r: !(b.elem r.name requiredNames)) (b.concatLists (b.attrValues optionalSets));
      # One entry per name; an optional dependency named in two extras keeps its first specifier
      # (Poetry's lock resolved one version for it anyway).
      byName = deps: b.listToAttrs (map (r: { inherit (r) name; value = r; }) (b.foldl' (acc: r: if b.any (x: x.name == r.name) acc then acc else acc ++ [ r ]) [ ] deps));
      dependencies =
        (if project ? requires-python then { python = project.requires-python; } else { })
        // b.mapAttrs (_: poetryDep false) (byName required)
        // b.mapAttrs (_: poetryDep true) (byName optionalDeps);
      poetry =
        { inherit (project) name version; inherit dependencies; }
        // (if project ? description then { inherit (project) description; } else { })
        // (if b.isString (project.license or null) then { inherit (project) license; } else { })
        // (if optionalSets != { } then { extras = b.mapAttrs (_: map (r: r.name)) optionalSets; } else { })
        // (if project ? scripts then { inherit (project) scripts; } else { })
        // (tool.poetry or { });
    in
    if !(pyproject ? project) then pyproject
    else pyproject // { tool = tool // { poetry = poetry; }; };

  # --- a TOML writer for the values above (strings, booleans, integers, lists, tables) ---------
  str = s: b.toJSON s; # a JSON string is a TOML basic string
  key = k: b.toJSON k;
  value = v:
    if b.isString v then str v
    else if b.isBool v then (if v then "true" else "false")
    else if b.isInt v then toString v
    else if b.isList v then "[" + b.concatStringsSep ", " (map value v) + "]"
    else if b.isAttrs v then "{ " + b.concatStringsSep ", " (map (k: "${key k} = ${value v.${k}}") (b.attrNames v)) + " }"
    else throw "pep621.nix: cannot write a ${b.typeOf v} as TOML";
  table = header: attrs:
    "[${header}]\n" + b.concatStringsSep "" (map (k: "${key k} = ${value attrs.${k}}\n") (b.attrNames attrs)) + "\n";

  toToml = doc:
    let
      poetry = doc.tool.poetry;
      nested = [ "dependencies" "extras" "scripts" "group" "dev-dependencies" ];
      flat = b.removeAttrs poetry nested;
    in
    (if doc ? build-system then table "build-system" doc.build-system else "")
    + table "tool.poetry" flat
    + b.concatStringsSep "" (map (k: if poetry ? ${k} && b.isAttrs poetry.${k} && k != "group" then table "tool.poetry.${k}" poetry.${k} else "") nested);

  # The file poetry2nix is given: `committed` (nix/pyproject.poetry2nix.toml), which must be exactly
  # what this file derives from `pyproject` now. WHY a committed copy and not builtins.toFile: Nix
  # before 2.13 forbids reading a toFile result in pure (flake) evaluation, and poetry2nix reads the
  # file it is given; the check below makes a stale copy an evaluation error, never a wrong build.
  checkedFile = { pyproject, committed }:
    let
      doc = b.fromTOML (b.readFile pyproject);
      expected = render doc;
    in
    if !(doc ? project) then pyproject
    else if !(b.pathExists committed) || b.readFile committed != expected then
      throw ("nix/pyproject.poetry2nix.toml is missing or stale for pyproject.toml; regenerate it with
"
        + "  nix eval --raw -f nix/pyproject.poetry2nix.nix > nix/pyproject.poetry2nix.toml")
    else committed;

  header = "# Generated from pyproject.toml by nix/lib/pep621.nix: the view poetry2nix reads. Do not edit;
"
    + "# regenerate: nix eval --raw -f nix/pyproject.poetry2nix.nix > nix/pyproject.poetry2nix.toml

";
  render = doc: header + toToml (poetryView doc);
in
{
  inherit parseRequirement poetryView toToml render checkedFile;
}
