# The pinned weights of every variant that has any, by engine id:
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
  withWeights = builtins.filter (id: weights.hasWeights variants.${id}.spec) (builtins.attrNames variants);
in
builtins.listToAttrs (map (id: { name = id; value = weights.weightsFor variants.${id}.spec; }) withWeights)
