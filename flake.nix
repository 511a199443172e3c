{
  description = "dalston: speech-to-text engines; every engines/**/variants/*.yaml is a package, an OCI image and pinned weights";

  inputs = {
    # A NixOS release: poetry-core 2 (builds this PEP 621 project), Python 3.12, skopeo 1.18.
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    # Pinned in the URL: later revisions patch a newer skopeo than nixos-25.05 carries.
    nix2container = {
      url = "github:nlewo/nix2container/bb6801be998ba857a62c002cb77ece66b0a57298";
      inputs.nixpkgs.follows = "nixpkgs";
    };
    poetry2nix = {
      url = "github:nix-community/poetry2nix";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  # All logic lives in nix/ (see docs/NIX.md).
  outputs = inputs: import ./nix/flake-outputs.nix inputs;
}
