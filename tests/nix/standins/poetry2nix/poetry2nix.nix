# STAND-IN for poetry2nix's mkPoetryApplication / mkPoetryEnv (tests only; see ../README.md).
#
# Same formals as poetry2nix (nix-community/poetry2nix default.nix), and the same reads of the
# project: `tool.poetry.{name,version}`, `tool.poetry.extras.<extra>` for every requested extra,
# each of whose names must be a key of `tool.poetry.dependencies` (poetry2nix does
# `lib.getAttrs desiredExtrasDeps rawDeps`), and every dependency that is selected must be locked in
# poetry.lock (poetry2nix takes it from `py.pkgs.<normalized name>`, which only the lock provides).
# The results are stand-in derivations: one "python package" per selected locked dependency, the
# same for every call with the same selection, so layers built from them are shared.
{ pkgs }:
let
  b = builtins;
  fail = msg: throw "stand-in poetry2nix: ${msg}";
  isDrv = v: b.isAttrs v && (v.type or null) == "derivation";
  lower = s: b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] s;
  # PEP 503 name normalization, as poetry2nix's normalizePackageName.
  normalize = s: lower (b.concatStringsSep "-" (b.filter (p: b.isString p && p != "") (b.split "[-_.]+" s)));

  mk = name: attrs: derivation ({ inherit name; system = pkgs.system; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; standin = "poetry2nix"; } // attrs);

  readProject = { pyproject, poetrylock, python, extras, groups }:
    let
      pyProject = b.fromTOML (b.readFile pyproject);
      poetry = pyProject.tool.poetry or (fail "${toString pyproject} has no [tool.poetry] (poetry2nix reads only tool.poetry.*)");
      lock = b.fromTOML (b.readFile poetrylock);
      locked = b.listToAttrs (map (p: { name = normalize p.name; value = p; }) (lock.package or (fail "poetry.lock has no [[package]]")));
      deps = poetry.dependencies or { };
      required = b.filter (n: n != "python" && !(deps.${n}.optional or false)) (b.attrNames deps);
      fromExtras = b.concatMap
        (e: if e == "*" then b.attrNames deps else (poetry.extras or { }).${e} or (fail "extra '${e}' is not in tool.poetry.extras (${b.concatStringsSep ", " (b.attrNames (poetry.extras or { }))})"))
        extras;
      selected = b.filter (n: n != "python") (required ++ map (n: if deps ? ${n} then n else fail "extra names '${n}', which is not in tool.poetry.dependencies") fromExtras);
      unique = b.attrNames (b.listToAttrs (map (n: { name = normalize n; value = null; }) selected));
      pkg = n: if locked ? ${n} then mk "python${python.pythonVersion}-${n}-${locked.${n}.version}" { } else fail "dependency '${n}' is not locked in poetry.lock";
    in
    if !(isDrv python && python ? pythonVersion) then fail "python must be a Python interpreter derivation"
    else if groups != [ "main" ] && !(b.all (g: g == "main" || (poetry.group or { }) ? ${g}) groups) then fail "unknown dependency group in ${b.toJSON groups}"
    else { inherit poetry; packages = map pkg unique; };

  defaultPoetryOverrides = { __functor = _self: _final: _prev: { }; standin = true; };

  mkPoetryApplication =
    { projectDir ? null
    , src ? projectDir
    , pyproject ? projectDir + "/pyproject.toml"
    , poetrylock ? projectDir + "/poetry.lock"
    , overrides ? defaultPoetryOverrides
    , meta ? { }
    , python ? pkgs.python3
    , pwd ? projectDir
    , preferWheels ? false
    , groups ? [ "main" ]
    , checkGroups ? [ "dev" ]
    , extras ? [ "*" ]
    , ...
    }@attrs:
    let
      project = readProject { inherit pyproject poetrylock python extras groups; };
      pname = normalize project.poetry.name;
      app = mk "${pname}-${project.poetry.version}" { inherit src; propagated = project.packages; };
      dependencyEnv = mk "python${python.pythonVersion}-${pname}-env" { paths = [ app ] ++ project.packages ++ [ python ]; };
    in
    app // {
      inherit pname python dependencyEnv;
      inherit (project.poetry) version;
      propagatedBuildInputs = project.packages;
      meta = meta;
      standin = { inherit extras preferWheels; dependencies = map (d: d.name) project.packages; };
    };

  mkPoetryEnv =
    { projectDir ? null
    , pyproject ? projectDir + "/pyproject.toml"
    , poetrylock ? projectDir + "/poetry.lock"
    , overrides ? defaultPoetryOverrides
    , pwd ? projectDir
    , python ? pkgs.python3
    , preferWheels ? false
    , editablePackageSources ? { }
    , extraPackages ? _ps: [ ]
    , groups ? [ "main" "dev" ]
    , checkGroups ? [ "dev" ]
    , extras ? [ "*" ]
    }:
    let project = readProject { inherit pyproject poetrylock python extras groups; }; in
    mk "python${python.pythonVersion}-env" { paths = project.packages ++ [ python ]; } // {
      standin = { inherit extras; dependencies = map (d: d.name) project.packages; };
    };
in
{
  inherit mkPoetryApplication mkPoetryEnv defaultPoetryOverrides;
  overrides = {
    withDefaults = overlay: [ overlay defaultPoetryOverrides ];
    withoutDefaults = overlay: [ overlay ];
  };
}
