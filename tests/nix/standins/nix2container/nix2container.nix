# STAND-IN for nix2container's buildImage/buildLayer (tests only; see ../README.md).
#
# Same formals as nix2container (nlewo/nix2container default.nix), so a misspelled or unknown
# argument fails here as it would there; same layer bookkeeping (`nestedLayers`, and an image's
# layers = nested layers ++ layers), recorded in `passthru.standin` for the tests. The checks:
# config holds only OCI image-config keys with the types the spec gives them, layers are
# buildLayer results, deps are store paths, perms name a path of the layer.
{ pkgs }:
let
  b = builtins;
  isDrv = v: b.isAttrs v && (v.type or null) == "derivation";
  fail = msg: throw "stand-in nix2container: ${msg}";
  toList = v: if v == null then [ ] else if b.isList v then v else [ v ];
  all = pred: b.foldl' (ok: v: ok && pred v) true;
  nameOf = d: if isDrv d then d.name else baseNameOf (toString d);

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
    if !(all (d: isDrv d || b.isPath d || b.isString d) deps) then fail "${what}: deps must be store paths"
    else if !(all (l: l ? nestedLayers && isDrv l) layers) then fail "${what}: layers must be buildLayer results"
    else if !(all (p: p ? path && p ? regex && p ? mode && b.elem p.path (deps ++ copyToRoot)) perms) then
      fail "${what}: each perms entry needs path (one of the layer's deps or copyToRoot), regex and mode"
    else true;

  mk = name: attrs: derivation ({ inherit name; system = pkgs.system; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; standin = "nix2container"; } // attrs);

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
      drv = mk "layers.json" { deps = deps ++ roots; excluded = map (l: l.outPath) layers; };
    in
    b.seq ok (drv // {
      nestedLayers = b.concatLists (map (l: l.nestedLayers) layers) ++ layers;
      standin = { deps = map nameOf deps; copyToRoot = map nameOf roots; inherit perms; };
    });

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
      ok = checkConfig config && checkLayerArgs "buildImage" { deps = [ ]; copyToRoot = toList copyToRoot; inherit perms layers; };
      allLayers = b.concatLists (map (l: l.nestedLayers) layers) ++ layers;
      imageName = b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
        [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] name;
      image = mk "image-${baseNameOf name}.json" {
        config = b.toJSON config;
        layers = allLayers;
      };
    in
    b.seq ok (image // {
      inherit meta imageName;
      imageTag = if tag == null then "stand-in" else tag;
      copyToDockerDaemon = copyApp "copy-to-docker-daemon" image;
      copyToRegistry = copyApp "copy-to-registry" image;
      copyToPodman = copyApp "copy-to-podman" image;
      copyTo = copyApp "copy-to" image;
      standin = {
        inherit config imageName;
        imageTag = tag;
        layers = map (l: l.standin) allLayers;
      };
    });
in
{
  inherit buildImage buildLayer;
  pullImage = _: fail "pullImage is not part of the stand-in";
  pullImageFromManifest = _: fail "pullImageFromManifest is not part of the stand-in";
}
