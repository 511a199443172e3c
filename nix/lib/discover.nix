# Discover every engine variant from the files alone: engines/<stage>/<family>/variants/*.yaml, or
# engines/<stage>/<family>/engine.yaml for a single-size engine (the rule dalston/catalog.py uses).
#
# WHY plain builtins: the flake derives every output from this set, so adding a variant file adds
# its outputs with no Nix edit, and it must evaluate on old (2.8) and current Nix without nixpkgs.
#
# Returns { <id> = { spec; family; stage; dir; file; }; } where dir/file are relative to the repo
# root (strings, so that printing them copies nothing into the store). nix/variants.nix applies it
# to this repository's engines/; tests and the benchmark apply it to other trees.
{ engines }:
let
  b = builtins;
  yaml = import ./yaml.nix;

  entriesOf = dir: let d = b.readDir dir; in d;
  namesOfType = types: d: b.filter (name: b.elem d.${name} types) (b.attrNames d);
  isYaml = name: b.match ".*\\.yaml" name != null;

  stages = namesOfType [ "directory" ] (entriesOf engines);

  variantFiles = stage: family:
    let
      rel = "engines/${stage}/${family}";
      fdir = engines + "/${stage}/${family}";
      d = entriesOf fdir;
      single = b.filter (f: f == "engine.yaml") (namesOfType [ "regular" "symlink" ] d);
      variants =
        if (d.variants or null) == "directory"
        then b.filter isYaml (namesOfType [ "regular" "symlink" ] (entriesOf (fdir + "/variants")))
        else [ ];
    in
    map (f: { path = fdir + "/${f}"; file = "${rel}/${f}"; dir = rel; inherit stage family; }) single
    ++ map (f: { path = fdir + "/variants/${f}"; file = "${rel}/variants/${f}"; dir = rel; inherit stage family; }) variants;

  files = b.concatMap
    (stage: b.concatMap (variantFiles stage) (namesOfType [ "directory" ] (entriesOf (engines + "/${stage}"))))
    stages;

  load = f:
    let spec = yaml.parse f.file (b.readFile f.path); in
    if !(spec ? id) || !(b.isString spec.id) then throw "${f.file}:1: id: missing (every variant file names its engine id)"
    else { name = spec.id; value = { inherit spec; inherit (f) family stage dir file; }; };

  loaded = map load files;

  # Two files claiming one id would silently shadow each other in an attrset: refuse instead.
  byId = b.groupBy (e: e.name) loaded;
  duplicates = b.filter (id: b.length byId.${id} > 1) (b.attrNames byId);
in
if duplicates != [ ] then
  let id = b.head duplicates; in
  throw "duplicate engine id '${id}' in ${b.concatStringsSep " and " (map (e: e.value.file) byId.${id})}"
else b.listToAttrs loaded
