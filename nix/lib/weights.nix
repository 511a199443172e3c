# Pinned model weights as fixed-output derivations, with builtins only (no nixpkgs):
# one `builtin:fetchurl` derivation per file of `spec.weights.files` (URL at the pinned revision,
# sha256 from the YAML), and a directory laid out as DALSTON_MODEL_DIR expects:
#
#   <out>/<engine id>/<file name>   (symlinks to the per-file store paths)
#
# WHY per-file FODs: the output path depends only on the file's name and hash, so variants that
# pin the same bytes (whisper-base and whisper-streaming-base) share them, a mirror produces the
# very same store paths as the upstream URL, and a wrong byte fails with a hash mismatch.
#
# mirrors: base URLs under which a file is at <mirror>/<repo>/resolve/<revision>/<file> (the
# upstream layout). builtin:fetchurl takes one URL, so the first mirror is used when any is given.
{ mirrors ? [ ] }:
let
  b = builtins;
  symlinkTree = import ./symlink-tree.nix;
  upstream = "https://huggingface.co";

  storeName = s:
    let n = b.replaceStrings [ "/" ] [ "-" ] s; in
    if b.match "[a-zA-Z0-9+._?=-]+" n == null then throw "weights: '${s}' cannot be part of a store path name" else n;

  urlFor = base: w: file: "${base}/${w.repo}/resolve/${w.revision}/${file}";

  fileFor = w: f:
    derivation {
      name = storeName "${b.baseNameOf w.repo}-${f.name}";
      system = "builtin";
      builder = "builtin:fetchurl";
      url = urlFor (if mirrors == [ ] then upstream else b.head mirrors) w f.name;
      outputHashMode = "flat";
      outputHashAlgo = "sha256";
      outputHash = f.sha256;
      # Network access is what this derivation is for; a sandboxed build lets FODs through.
      impureEnvVars = [ "http_proxy" "https_proxy" "ftp_proxy" "all_proxy" "no_proxy" ];
      preferLocalBuild = true;
    };

  hasWeights = spec: spec ? weights && spec.weights != null && (spec.weights.files or [ ]) != [ ];

  # A variant without weights (audio-prepare) gets an empty <out>/<id>: every variant has the same
  # three flake outputs, and DALSTON_MODEL_DIR can always be set.
  weightsFor = spec:
    symlinkTree {
      name = "${spec.id}-weights";
      top = spec.id;
      links =
        if hasWeights spec
        then b.listToAttrs (map (f: { name = f.name; value = fileFor spec.weights f; }) spec.weights.files)
        else { };
    };
in
{
  inherit fileFor weightsFor hasWeights urlFor upstream;
}
