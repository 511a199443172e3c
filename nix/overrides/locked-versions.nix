# poetry2nix overlay: the lock's versions, exactly (nix/package.nix composes it onto poetry2nix's
# defaultPoetryOverrides). Read against nix-community/poetry2nix ce2369db (default.nix,
# overrides/default.nix):
#
# 1. One entry per name. poetry2nix partitions the lock by a package's `marker` (singular; Poetry 2
#    writes `markers`, never read) or else its `python-versions`, and of a name locked twice (for
#    another Python or platform) keeps the LAST entry (`listToAttrs (reverseList compatible)`).
#    So a second entry is an evaluation error here rather than a silently different version;
#    pyproject.toml narrows the lock so there is none (docs/NIX.md, "The lock"), and
#    tests/nix/test_lock_versions.py holds poetry2nix's picks equal to scripts/install.py's.
# 2. The lock's build tools, not nixpkgs'. poetry2nix replaces a locked `setuptools` (a "known
#    build system", passed through from nixpkgs) and `packaging` (its bootstrapping set) by
#    nixpkgs' own, whose versions the lock's dependents may refuse (lightning 2.4 needs
#    packaging < 25). Those names are rebuilt from their lock entry with poetry2nix's own
#    mkPoetryDep, as its baseOverlay builds every other locked name.
# lock: poetry.lock as builtins.fromTOML reads it (parsed once by the caller: it takes seconds).
{ lock, pwd }:
let
  b = builtins;
  lower = s: b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] s;
  normalize = s: lower (b.concatStringsSep "-" (b.filter (p: b.isString p && p != "") (b.split "[-_.]+" s)));

  byName = b.groupBy (p: normalize p.name) lock.package;
  names = b.attrNames byName;
  present = b.filter (n: byName ? ${n});

  # WHY names come from the lock alone: the package set is a fixpoint, so deciding which
  # attributes exist by forcing a package (`prev.${n} != null`) would recurse infinitely.
  # poetry2nix nulls a name whose python-versions exclude the interpreter; that stays null.
  override = prev: n: f: { name = n; value = if prev.${n} == null then null else f prev.${n}; };
  twice = b.filter (n: b.length byName.${n} > 1) names;

  # default.nix nixpkgsBuildSystems (known-build-systems.json minus poetry, poetry-core) and
  # overrides/default.nix "bootstrapping pkgs".
  fromNixpkgs = present [ "cython" "flit" "flit-core" "hatch-vcs" "hatchling" "pbr" "pdm-backend" "setuptools" "setuptools-scm"
    "installer" "build" "packaging" "tomli" "pyproject-hooks" "wheel" ];
  locked = final: name:
    let entry = b.head byName.${name}; in
    final.mkPoetryDep (entry // {
      inherit pwd;
      preferWheels = true;
      source = entry.source or null;
      pythonPackages = final;
      sourceSpec = { };
    });
in
if twice != [ ] then
  throw ("poetry.lock has more than one entry for ${b.concatStringsSep ", " (map (n: "${n} (${b.concatStringsSep ", " (map (p: p.version) byName.${n})})") twice)}; "
    + "poetry2nix ignores Poetry 2's `markers` and would take the last one. Narrow the lock (pyproject.toml "
    + "requires-python, see docs/NIX.md) so that every name resolves to one entry.")
else final: prev: b.listToAttrs (map (n: override prev n (_: locked final n)) fromNixpkgs)
