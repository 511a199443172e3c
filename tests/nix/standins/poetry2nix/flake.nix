# STAND-IN for poetry2nix (tests only; see ../README.md). Not poetry2nix: builds nothing.
{
  description = "stand-in for poetry2nix: checks what dalston's flake asks of it, builds nothing";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05"; # always overridden: follows the caller's
  outputs = { self, nixpkgs }: {
    lib.mkPoetry2Nix = { pkgs }: import ./poetry2nix.nix { inherit pkgs; };
  };
}
