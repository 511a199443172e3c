# The engines directory one variant is served from, with builtins only (it builds offline):
#
#   <out>/engines/<stage>/<family>/engine.py ...        the family's code (every entry but variants/)
#   <out>/engines/<stage>/<family>/variants/<size>.yaml this variant's file only (or engine.yaml)
#   <out>/engines/aliases.yaml                          the aliases that name this variant, if any
#
# so DALSTON_ENGINES_DIR=<out>/engines gives a catalog of exactly one engine (the Python catalog
# refuses aliases to unknown ids, hence the filtered aliases file).
#
# WHY per variant and not the whole engines/ tree: an image (and its layer digest) must change when
# its own variant file changes, not when a sibling's does. Family files are added to the store one
# by one (builtins.path), so every variant of a family links the very same store paths.
{ engines }:
let
  b = builtins;
  yaml = import ./yaml.nix;
  symlinkTree = import ./symlink-tree.nix;

  storeName = s:
    let n = b.replaceStrings [ "/" " " ] [ "-" "_" ] s; in
    if b.match "[a-zA-Z0-9+._?=-]+" n == null then throw "engines-tree: '${s}' cannot be part of a store path name" else n;

  keep = path: type:
    let name = b.baseNameOf path; in
    !(name == "__pycache__" || b.match ".*\\.py[co]" name != null || name == ".pytest_cache");

  addToStore = path: name: b.path { inherit path; name = storeName name; filter = keep; };

  aliasesFile = engines + "/aliases.yaml";
  allAliases = if b.pathExists aliasesFile then yaml.parse "engines/aliases.yaml" (b.readFile aliasesFile) else { };

  aliasesFor = id:
    let mine = b.filter (a: allAliases.${a} == id) (b.attrNames allAliases); in
    if mine == [ ] then { }
    else {
      "aliases.yaml" = b.toFile "aliases.yaml"
        ("# The aliases of ${id} (generated from engines/aliases.yaml by nix/lib/engines-tree.nix)\n"
          + b.concatStringsSep "" (map (a: "${b.toJSON a}: ${b.toJSON id}\n") mine));
    };

  # entry: one value of nix/variants.nix ({ spec; family; stage; file; ... }).
  treeFor = entry:
    let
      rel = "${entry.stage}/${entry.family}";
      fdir = engines + "/${rel}";
      contents = b.readDir fdir;
      familyFiles = b.filter (n: n != "variants" && n != "engine.yaml" && keep (fdir + "/${n}") contents.${n}) (b.attrNames contents);
      # entry.file is "engines/<stage>/<family>/(variants/<size>.yaml|engine.yaml)" (nix/lib/discover.nix).
      inner = b.substring (b.stringLength "engines/") (b.stringLength entry.file) entry.file;
      links =
        b.listToAttrs (map (n: { name = "${rel}/${n}"; value = addToStore (fdir + "/${n}") "dalston-${entry.family}-${n}"; }) familyFiles)
        // { ${inner} = addToStore (engines + "/${inner}") "dalston-${entry.spec.id}-${b.baseNameOf inner}"; }
        // aliasesFor entry.spec.id;
    in
    symlinkTree { name = "${entry.spec.id}-engines"; top = "engines"; inherit links; };
in
{
  inherit treeFor aliasesFor;
}
