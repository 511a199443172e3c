# STAND-IN for `import nixpkgs { system; config; overlays; }` (tests only; see ../README.md).
{ system ? builtins.currentSystem, config ? { }, overlays ? [ ], ... }:
import ./pkgs.nix { inherit system config; }
