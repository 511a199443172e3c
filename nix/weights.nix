# The pinned weights of every variant, by engine id (an empty directory for a variant without any):
#
#   nix-build nix/weights.nix -A whisper-base
#   nix-build nix/weights.nix -A whisper-base --arg mirrors '[ "file:///srv/models" ]'
#
# Result: <out>/<engine id>/<file> for each pinned file, so DALSTON_MODEL_DIR=<out> (or
# DALSTON_WEIGHTS_DIR=<out>/<engine id>). See nix/lib/weights.nix and docs/NIX.md.
{ engines ? ../engines, mirrors ? [ ] }:
let
  variants = import ./lib/discover.nix { inherit engines; };
  weights = import ./lib/weights.nix { inherit mirrors; };
in
builtins.mapAttrs (_: v: weights.weightsFor v.spec) variants
