# STAND-IN for nixpkgs (tests only; see ../README.md). Not nixpkgs: its derivations refuse to build.
{
  description = "stand-in for nixpkgs: checks how dalston's flake wires it, builds nothing";
  outputs = { self }: {
    legacyPackages = builtins.listToAttrs (map
      (system: { name = system; value = import ./default.nix { inherit system; }; })
      [ "x86_64-linux" "aarch64-linux" ]);
  };
}
