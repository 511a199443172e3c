# The Python application (poetry2nix, from pyproject.toml + poetry.lock) and the per-variant package.
#
#   app family     dalston with the `server` extra and the family's extra (whisper | nemo), built by
#                  poetry2nix's mkPoetryApplication: one derivation per family, shared by its variants
#   launcher app   the image entrypoint of a family (`dalston serve $ENGINE_ID "$@"`, or any command)
#   variant { entry; weights; engines; }
#                  <id>: bin/dalston-<id> = `dalston serve <id>` with the variant's engines tree
#                  (DALSTON_ENGINES_DIR) and its weights (DALSTON_MODEL_DIR) baked in
#
# Arguments: pkgs (nixpkgs for the target system), poetry2nix (the set `poetry2nix.lib.mkPoetry2Nix
# { inherit pkgs; }` returns), src (the repository: flake `self` or ../.), python (interpreter the
# lock resolves for; pyproject allows 3.11-3.12), lock (poetry.lock parsed, shared by the systems:
# parsing it takes seconds).
#
# WHY preferWheels: the lock pins binary packages (ctranslate2, av, torch, nvidia-*) whose sdists
# need toolchains poetry2nix cannot infer; the wheels are what `scripts/install.py` installs too.
{ pkgs, poetry2nix, src, python ? pkgs.python312, lock ? builtins.fromTOML (builtins.readFile (src + "/poetry.lock")) }:
let
  b = builtins;
  pep621 = import ./lib/pep621.nix;
  families = import ./lib/runtime-family.nix;

  # Only what the wheel is built from: a change to tests/ or docs/ does not rebuild the app.
  appSrc = b.path {
    path = src;
    name = "dalston-source";
    filter = path: type:
      let
        rel = b.substring (b.stringLength (toString src) + 1) (b.stringLength path) (toString path);
        name = b.baseNameOf path;
      in
      !(name == "__pycache__" || b.match ".*\\.py[co]" name != null)
      && (b.elem rel [ "pyproject.toml" "poetry.lock" "README.md" "LICENSE" "dalston" ]
        || b.match "dalston/.*" rel != null);
  };

  # poetry2nix reads tool.poetry.*; pyproject.toml is PEP 621 (see nix/lib/pep621.nix).
  pyproject = pep621.checkedFile {
    pyproject = src + "/pyproject.toml";
    committed = src + "/nix/pyproject.poetry2nix.toml";
  };

  app = family: poetry2nix.mkPoetryApplication {
    projectDir = appSrc;
    src = appSrc;
    inherit pyproject python;
    poetrylock = src + "/poetry.lock";
    preferWheels = true;
    groups = [ "main" ];
    checkGroups = [ ];
    extras = families.extrasFor family;
    inherit overrides;
    # The test suite needs the real weights and speech clips; the flake's checks run it.
    doCheck = false;
    pythonImportsCheck = [ "dalston" "dalston.cli" ];
    meta.mainProgram = "dalston";
  };

  # poetry2nix's defaults plus what this lock needs (nix/overrides/*.nix say why).
  overrides = (poetry2nix.defaultPoetryOverrides.extend (import ./overrides/locked-versions.nix {
    inherit lock;
    pwd = appSrc;
  })).extend (import ./overrides/cuda-wheels.nix { inherit lock; });

  apps = { whisper = app "whisper"; nemo = app "nemo"; };

  # The entrypoint of every image of a family. With no argument or options only, it serves the
  # image's variant ($ENGINE_ID from the image Env); any other command runs as given, so compose's
  # `command: [dalston, serve, <id>, ...]` and `python -c ...` health checks work unchanged.
  launcher = family: pkgs.writeShellScriptBin "dalston-entrypoint" ''
    if [ "$#" -eq 0 ] || [ "''${1#-}" != "$1" ]; then
      exec ${apps.${family}}/bin/dalston serve "$ENGINE_ID" "$@"
    fi
    exec "$@"
  '';

  launchers = { whisper = launcher "whisper"; nemo = launcher "nemo"; };

  variant = { entry, weights, engines }:
    let
      spec = entry.spec;
      family = families.familyOf spec;
      dalston = apps.${family};
      # GPU variants: the family's CUDA libraries and the host's driver directory (NixOS; see
      # nix/lib/runtime-family.nix driverLibraryPath), after whatever the caller already set.
      gpuFlags = if !(families.usesGpu spec) then "" else " \\\n          --suffix LD_LIBRARY_PATH : "
        + b.concatStringsSep ":" (map (p: "${p}/lib") (families.cudaRuntimeFor (families.cudaPackagesFor pkgs) family)
          ++ families.driverLibraryPath { inherit (pkgs) system; driverLink = pkgs.addDriverRunpath.driverLink; image = false; });
    in
    pkgs.runCommand "${spec.id}-${spec.version}"
      {
        nativeBuildInputs = [ pkgs.makeWrapper ];
        passthru = {
          inherit spec family weights engines;
          app = dalston;
          launcher = launchers.${family};
          engineId = spec.id;
        };
        meta = {
          description = "dalston serve ${spec.id}: ${spec.name or spec.id} with its pinned weights";
          mainProgram = "dalston-${spec.id}";
        };
      }
      ''
        mkdir -p $out/bin
        makeWrapper ${dalston}/bin/dalston $out/bin/dalston-${spec.id} \
          --add-flags "serve ${spec.id}" \
          --set ENGINE_ID ${spec.id} \
          --set-default DALSTON_ENGINES_DIR ${engines}/engines \
          --set-default DALSTON_MODEL_DIR ${weights} \
          --set-default HF_HUB_OFFLINE 1 \
          --set-default TRANSFORMERS_OFFLINE 1${gpuFlags}
      '';
in
{
  inherit appSrc pyproject apps launchers variant overrides;
  app = app;
}
