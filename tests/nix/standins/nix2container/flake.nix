# STAND-IN for nix2container (tests only; see ../README.md). Not nix2container: builds nothing.
{
  description = "stand-in for nix2container: checks how dalston's flake builds images, builds nothing";
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05"; # always overridden: follows the caller's
  outputs = { self, nixpkgs }: {
    packages = builtins.listToAttrs (map
      (system: {
        name = system;
        value.nix2container = import ./nix2container.nix { pkgs = nixpkgs.legacyPackages.${system}; };
      })
      [ "x86_64-linux" "aarch64-linux" ]);
  };
}
