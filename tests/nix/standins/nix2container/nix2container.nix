# STAND-IN for nix2container's buildImage/buildLayer (tests only; see ../README.md).
#
# Checked against nlewo/nix2container at bb6801be998ba857a62c002cb77ece66b0a57298:
#   default.nix        buildLayer, buildImage (formals, nestedLayers, customizationLayer)
#   nix/layers.go      getPaths / isPathInLayers (which store paths a layer skips)
#   cmd/image.go       image() (layers added once per digest, in order)
#   nix/layers.go      newLayers (a layer with no path is not created)
#
# What it models, as the real tool does it:
#   - a layer holds the closure of `deps ++ copyToRoot`, minus `ignore`, minus every path found in
#     a layer passed DIRECTLY in its `layers` argument (not the layers nested below those: the Go
#     tool is given only `map (l: l + "/layers.json") layers`), a path being equal to a parent's
#     only with the same rewrite/perms options (Go compares types.Path with reflect.DeepEqual);
#   - buildImage's layers are `concatMap nestedLayers layers ++ layers`, then a final
#     "customization" layer whose deps are the config file (ignored itself), i.e. the closure of
#     every store path the config (Env, Entrypoint, ...) names, deduplicated against the
#     buildImage `layers` argument only; the image adds each layer once per digest;
#   - the digest of a layer is a function of its path list (the real one hashes the tar of it).
# The closure of a store path is modelled from the stand-in objects themselves: stand-in
# derivations (nixpkgs, poetry2nix stand-ins) carry `standinRefs` (their runtime references,
# as derivations or store-path strings); any other derivation references the store paths its
# attributes name. A path reached only as a string is resolved against the objects given to the
# same layer (or, for the customization layer, to any layer of the image); otherwise it counts as
# a leaf. What it does not model: file contents, sizes, maxLayers > 1 (popularity split),
# reproducible = false, fromImage, the Nix database.
#
# Besides, the checks: config holds only OCI image-config keys with the types the spec gives them,
# layers are buildLayer results, deps are store paths, perms name a path of the layer.
# Everything is recorded in `passthru.standin` for tests/nix/test_flake.py.
{ pkgs }:
let
  b = builtins;
  isDrv = v: b.isAttrs v && (v.type or null) == "derivation";
  fail = msg: throw "stand-in nix2container: ${msg}";
  toList = v: if v == null then [ ] else if b.isList v then v else [ v ];
  all = pred: b.foldl' (ok: v: ok && pred v) true;
  nameOf = d: if isDrv d then d.name else baseNameOf (toString d);

  # --- closures ------------------------------------------------------------------------------
  storeRe = "(${b.storeDir}/[0-9a-z]{32}-[-+._?=0-9A-Za-z]+)";
  pathsIn = s: map b.head (b.filter b.isList (b.split storeRe (b.unsafeDiscardStringContext s)));
  pathOf = o: b.unsafeDiscardStringContext (if b.isString o then o else toString (o.outPath or o));
  refsOf = o:
    if b.isAttrs o && o ? standinRefs then o.standinRefs
    # builtin:unpack-channel (nix/lib/symlink-tree.nix) unpacks `src`: the archive is not kept.
    else if isDrv o && o ? drvAttrs then
      b.filter (p: p != pathOf o) (pathsIn (b.toJSON (if (o.drvAttrs.builder or "") == "builtin:unpack-channel" then b.removeAttrs o.drvAttrs [ "src" ] else o.drvAttrs)))
    else [ ];
  # Every object reachable from `roots` through object references: path -> direct reference paths.
  registryOf = roots:
    let
      items = b.genericClosure {
        startSet = map (o: { key = pathOf o; obj = o; }) (b.filter (o: !b.isString o) roots);
        operator = item: map (o: { key = pathOf o; obj = o; }) (b.filter (o: !b.isString o) (refsOf item.obj));
      };
    in
    b.listToAttrs (map (i: { name = i.key; value = map pathOf (refsOf i.obj); }) items);
  closureOf = registry: paths: map (i: i.key) (b.genericClosure {
    startSet = map (p: { key = p; }) paths;
    operator = item: map (p: { key = p; }) (registry.${item.key} or [ ]);
  });
  strip = p: b.substring 33 (b.stringLength p) (baseNameOf p); # store path -> its name

  # --- OCI config ------------------------------------------------------------------------------
  # https://github.com/opencontainers/image-spec/blob/main/config.md (config object)
  ociKeys = {
    User = b.isString;
    ExposedPorts = v: b.isAttrs v && all (p: b.match "[0-9]+(/(tcp|udp|sctp))?" p != null && v.${p} == { }) (b.attrNames v);
    Env = v: b.isList v && all (e: b.isString e && b.match "[^=]+=.*" e != null) v;
    Entrypoint = v: b.isList v && all b.isString v;
    Cmd = v: b.isList v && all b.isString v;
    Volumes = v: b.isAttrs v;
    WorkingDir = b.isString;
    Labels = v: b.isAttrs v && all (k: b.isString v.${k}) (b.attrNames v);
    StopSignal = b.isString;
    ArgsEscaped = b.isBool;
  };
  checkConfig = config:
    b.foldl'
      (ok: k:
        if !(ociKeys ? ${k}) then fail "config key '${k}' is not an OCI image config key (${b.concatStringsSep ", " (b.attrNames ociKeys)})"
        else if !(ociKeys.${k} config.${k}) then fail "config.${k} has the wrong shape for an OCI image config"
        else ok)
      true
      (b.attrNames config);

  checkLayerArgs = what: { deps, copyToRoot, perms, layers }:
    if !(all (d: isDrv d || b.isPath d || b.isString d || (b.isAttrs d && d ? standinRefs)) deps) then fail "${what}: deps must be store paths"
    else if !(all (l: l ? nestedLayers && isDrv l) layers) then fail "${what}: layers must be buildLayer results"
    else if !(all (p: p ? path && p ? regex && p ? mode && b.elem p.path (deps ++ copyToRoot)) perms) then
      fail "${what}: each perms entry needs path (one of the layer's deps or copyToRoot), regex and mode"
    else true;

  mk = name: attrs: derivation ({ inherit name; system = pkgs.system; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; standin = "nix2container"; } // attrs);

  # The layer itself; `known` = objects whose references resolve string-only references (buildImage
  # passes the objects of all its layers for the customization layer).
  layerOf =
    { deps, roots, perms, layers, ignore, known ? [ ] }:
    let
      registry = registryOf (known ++ deps ++ roots);
      rootPaths = map pathOf (deps ++ roots);
      permsFor = p: map (x: { inherit (x) regex mode; }) (b.filter (x: pathOf x.path == p) perms);
      entryFor = p: {
        path = p;
        options = (if b.elem p (map pathOf roots) then { rewrite = "^${p}"; } else { })
          // (if permsFor p == [ ] then { } else { perms = permsFor p; });
      };
      ignored = map pathOf (toList ignore);
      parentEntries = b.concatMap (l: l.standinEntries) layers; # direct layers only
      entries = b.filter (e: !(b.elem e.path ignored) && !(b.elem e parentEntries))
        (map entryFor (b.sort b.lessThan (closureOf registry rootPaths)));
      digest = "sha256:" + b.hashString "sha256" (b.toJSON entries);
      drv = mk "layers.json" { entries = b.toJSON entries; parents = map (l: l.outPath) layers; };
    in
    drv // {
      nestedLayers = b.concatLists (map (l: l.nestedLayers) layers) ++ layers;
      standinEntries = entries;
      standinObjects = deps ++ roots;
      standin = {
        deps = map nameOf deps;
        copyToRoot = map nameOf roots;
        perms = map (p: { path = nameOf p.path; inherit (p) regex mode; }) perms;
        inherit digest;
        paths = map (e: e.path) entries;
        names = map (e: strip e.path) entries;
      };
    };

  buildLayer =
    { deps ? [ ]
    , copyToRoot ? null
    , ignore ? null
    , layers ? [ ]
    , reproducible ? true
    , perms ? [ ]
    , maxLayers ? 1
    , contents ? null
    , metadata ? { created_by = "nix2container"; }
    }:
    let
      roots = toList copyToRoot;
      ok = checkLayerArgs "buildLayer" { inherit deps perms layers; copyToRoot = roots; };
    in
    if maxLayers != 1 then fail "buildLayer: maxLayers > 1 (popularity split) is not modelled"
    else b.seq ok (layerOf { inherit deps roots perms layers ignore; });

  copyApp = what: image: pkgs.writeShellScriptBin what "skopeo --insecure-policy copy nix:${image} ...";

  buildImage =
    { name
    , tag ? null
    , config ? { }
    , layers ? [ ]
    , copyToRoot ? null
    , fromImage ? ""
    , arch ? "amd64"
    , perms ? [ ]
    , maxLayers ? 1
    , initializeNixDatabase ? false
    , nixUid ? 0
    , nixGid ? 0
    , created ? "0001-01-01T00:00:00Z"
    , contents ? null
    , meta ? { }
    }:
    let
      roots = toList copyToRoot;
      ok = checkConfig config && checkLayerArgs "buildImage" { deps = [ ]; copyToRoot = roots; inherit perms layers; };
      allLayers = b.concatLists (map (l: l.nestedLayers) layers) ++ layers;
      # pkgs.writeText "config.json" (toJSON config): its references are the paths the config names.
      configFile = mk "config.json" { config = b.toJSON config; } // { standinRefs = pathsIn (b.toJSON config); };
      customizationLayer = layerOf {
        deps = [ configFile ];
        inherit roots perms layers;
        ignore = configFile;
        known = b.concatMap (l: l.standinObjects) allLayers;
      };
      # cmd/image.go: a layer is added once (by digest); newLayers makes no layer of no path.
      imageLayers = b.foldl'
        (acc: l: if b.any (x: x.standin.digest == l.standin.digest) acc || l.standinEntries == [ ] then acc else acc ++ [ l ])
        [ ]
        (allLayers ++ [ customizationLayer ]);
      imageName = b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
        [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] name;
      image = mk "image-${baseNameOf name}.json" {
        config = b.toJSON config;
        layers = map (l: l.outPath) (allLayers ++ [ customizationLayer ]);
      };
    in
    if contents != null then fail "buildImage: contents is deprecated; use copyToRoot"
    else b.seq ok (image // {
      inherit meta imageName;
      imageTag = if tag == null then "stand-in" else tag;
      copyToDockerDaemon = copyApp "copy-to-docker-daemon" image;
      copyToRegistry = copyApp "copy-to-registry" image;
      copyToPodman = copyApp "copy-to-podman" image;
      copyTo = copyApp "copy-to" image;
      standin = {
        inherit config imageName;
        imageTag = tag;
        # What the image holds, layer by layer (after the digest dedupe), the last one being the
        # customization layer when the config names a path no layer carries.
        layers = map (l: l.standin // { customization = l.outPath == customizationLayer.outPath; }) imageLayers;
      };
    });
in
{
  inherit buildImage buildLayer;
  pullImage = _: fail "pullImage is not part of the stand-in";
  pullImageFromManifest = _: fail "pullImageFromManifest is not part of the stand-in";
}
