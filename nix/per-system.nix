# Everything the flake exports for one system, derived from the variant files:
#
#   packages  <id> (dalston serve <id>, weights baked in), <id>-image (nix2container), <id>-weights
#             (pinned fixed-output files) for every variant; default (the dalston CLI)
#   apps      <id> (serve), <id>-copy-to-docker-daemon, <id>-copy-to-registry; default (dalston CLI)
#   checks    pytest, validate-engines, catalog, yaml-differential
#   devShells default (whisper + server + dev extras), nemo (+ the nemo extra)
#   formatter nixfmt
#
# WHY a function of (system, inputs, mirrors): `mirrors` changes only where weight files are fetched
# from, so legacyPackages.<system>.withMirrors can rebuild the same set with another source for the
# same hashes.
{ system, nixpkgs, nix2container, poetry2nix, src, variants, lock, mirrors ? [ ] }:
let
  b = builtins;
  families = import ./lib/runtime-family.nix;
  weightsLib = import ./lib/weights.nix { inherit mirrors; };
  enginesTree = import ./lib/engines-tree.nix { engines = src + "/engines"; };

  pkgs = import nixpkgs {
    inherit system;
    # The CUDA runtime in GPU images is unfree; nothing else is allowed to be.
    config.allowUnfreePredicate = families.isCudaRuntime;
  };
  p2n = poetry2nix.lib.mkPoetry2Nix { inherit pkgs; };
  n2c = nix2container.packages.${system}.nix2container;

  project = (b.fromTOML (b.readFile (src + "/pyproject.toml"))).project;
  package = import ./package.nix { inherit pkgs src lock; poetry2nix = p2n; };
  image = import ./image.nix {
    inherit pkgs package;
    nix2container = n2c;
    projectLicense = if b.isString (project.license or null) then project.license else null;
  };

  app = program: description: { type = "app"; inherit program; meta.description = description; };

  perVariant = id: entry:
    let
      weights = weightsLib.weightsFor entry.spec;
      engines = enginesTree.treeFor entry;
      served = package.variant { inherit entry weights engines; };
      img = image.imageFor { inherit entry; variantPackage = served; cudaPackages = families.cudaPackagesFor pkgs; };
    in
    {
      packages = {
        ${id} = served;
        "${id}-image" = img;
        "${id}-weights" = weights;
      };
      # meta.description: `nix flake check` warns about an app without one.
      apps = {
        ${id} = app "${served}/bin/dalston-${id}" "dalston serve ${id} with its pinned weights";
        "${id}-copy-to-docker-daemon" = app "${img.copyToDockerDaemon}/bin/copy-to-docker-daemon" "load the ${id} image into the Docker daemon";
        "${id}-copy-to-registry" = app "${img.copyToRegistry}/bin/copy-to-registry" "push the ${id} image (docker://${img.imageName}:${img.imageTag})";
      };
    };

  all = b.attrValues (b.mapAttrs perVariant variants);
  merge = part: b.foldl' (acc: v: acc // v.${part}) { } all;

  devEnv = extras: p2n.mkPoetryEnv {
    projectDir = package.appSrc;
    inherit (package) pyproject;
    poetrylock = src + "/poetry.lock";
    python = pkgs.python312;
    preferWheels = true;
    groups = [ "main" ];
    checkGroups = [ ];
    inherit extras;
    inherit (package) overrides;
  };
  testEnv = devEnv [ "server" "whisper" "dev" ];

  devShell = env: pkgs.mkShell {
    packages = [ env pkgs.poetry pkgs.ffmpeg pkgs.nix pkgs.git pkgs.jq pkgs.nixfmt-rfc-style ];
    shellHook = ''
      export PYTHONPATH="$PWD''${PYTHONPATH:+:$PYTHONPATH}"
      export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
      export NIX_CONFIG="''${NIX_CONFIG:-experimental-features = nix-command flakes}"
    '';
  };

  # A check runs in the build sandbox on a writable copy of the repository, offline.
  check = name: extraInputs: script: pkgs.runCommand "dalston-check-${name}"
    { nativeBuildInputs = [ testEnv ] ++ extraInputs; }
    ''
      cp -r ${src} repo && chmod -R u+w repo && cd repo
      export HOME=$TMPDIR HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
      ${script}
      touch $out
    '';

  variantIds = b.toFile "nix-variant-ids.json" (b.toJSON (b.attrNames variants));
in
{
  packages = merge "packages" // { default = package.apps.whisper; };

  apps = merge "apps" // {
    default = app "${package.apps.whisper}/bin/dalston" "the dalston CLI (whisper and server extras)";
  };

  checks = {
    # The unit tests (the integration tests need real weights, speech clips and loopback servers).
    pytest = check "pytest" [ ] "python -m pytest -q -p no:cacheprovider tests/unit";
    validate-engines = check "validate-engines" [ ] "python -m dalston.tools.validate_engine --all --root engines";
    # The Python catalog and Nix discovery see the same variants.
    catalog = check "catalog" [ ] ''
      python scripts/generate_catalog.py --root engines --output catalog.json
      python -c 'import json, sys; py = sorted(json.load(open("catalog.json"))["engines"]); nix = json.load(open(sys.argv[1])); sys.exit(0 if py == nix else f"catalog {py} != nix {nix}")' ${variantIds}
    '';
    # nix/lib/yaml.nix == PyYAML; evaluation only, so a dummy store is enough inside the sandbox.
    yaml-differential = check "yaml-differential" [ pkgs.nix ] ''
      export NIX_REMOTE=dummy:// NIX_STATE_DIR=$TMPDIR/nix-state NIX_LOG_DIR=$TMPDIR/nix-log
      python -m pytest -q -p no:cacheprovider tests/nix/test_yaml_differential.py
    '';
  };

  devShells = {
    default = devShell testEnv;
    nemo = devShell (devEnv [ "server" "whisper" "nemo" "dev" ]);
  };

  formatter = pkgs.nixfmt-rfc-style;
}
