# One OCI image per variant with nix2container, layered for reuse:
#
#   1. deps     the family's Python runtime and dependencies (identical for every variant of a family)
#   2. cuda     GPU variants of the whisper family only: the cuBLAS CTranslate2 loads (CUDA 12)
#   3. app      dalston itself, the family entrypoint, this variant's engines tree, /tmp and /etc/passwd
#   4. weights  this variant's pinned weights, last: the biggest and the most variant-specific
#
# WHY every layer is given ALL the layers below it (and buildImage the flat list): nix2container
# skips a store path only if it is in a layer passed *directly* in `layers` (nix/layers.go
# isPathInLayers over the given layers.json files, not the ones nested below them), and buildImage
# adds a final layer for the closure of its config (PATH, LD_LIBRARY_PATH, DALSTON_MODEL_DIR name
# store paths) deduplicated against its own `layers` argument only. With a nested chain, the
# Python closure landed in deps, app and that final layer, CUDA in cuda and the final layer.
# Now each path is in exactly one layer and the final layer is empty (so it is not created);
# tests/nix/test_flake.py checks it for every variant. The weights path reaches the app only
# through the image Env (DALSTON_MODEL_DIR), never through a store reference, so no model byte
# lands in the app layer. nix2container's tag is the spec version
# (`dalston-<id>:<version>`, as dalston.tools.deployment.image_name names it).
#
# Arguments: pkgs, nix2container (the set with buildImage/buildLayer that nix2container's flake
# exports as packages.<system>.nix2container), package (nix/package.nix applied to the same pkgs),
# projectLicense (SPDX id of dalston itself, for org.opencontainers.image.licenses).
{ pkgs, nix2container, package, projectLicense ? null }:
let
  b = builtins;
  oci = import ./lib/oci.nix;
  families = import ./lib/runtime-family.nix;

  # What a non-root process needs from the root filesystem: a writable /tmp and a passwd entry, and
  # a writable mount point for the batch-job storage (docs/JOBS.md): a fresh volume takes its mode.
  rootfs = pkgs.runCommand "dalston-rootfs" { } ''
    mkdir -p $out/tmp $out/etc $out/var/lib/dalston/jobs
    echo 'root:x:0:0:root:/root:/noshell' > $out/etc/passwd
    echo 'dalston:x:10001:10001:dalston:/tmp:/noshell' >> $out/etc/passwd
    echo 'root:x:0:' > $out/etc/group
    echo 'dalston:x:10001:' >> $out/etc/group
  '';

  # The interpreter and the app's locked dependencies (poetry2nix leaves null where a dependency's
  # markers exclude this Python); their closures hold the transitive ones.
  depsOf = app: [ app.python ] ++ builtins.filter (d: d != null) (app.propagatedBuildInputs or [ ]);

  # Shared by every image of a family: the same derivation, hence the same layer digest.
  depsLayer = family:
    nix2container.buildLayer { deps = depsOf package.apps.${family}; };
  depsLayers = { whisper = depsLayer "whisper"; nemo = depsLayer "nemo"; };

  cudaLayer = family: cudaRuntime:
    nix2container.buildLayer { deps = cudaRuntime; layers = [ depsLayers.${family} ]; };

  # The layers in image order, each built against all of the ones before it.
  stack = builders: b.foldl' (below: build: below ++ [ (build below) ]) [ ] builders;

  imageFor = { entry, variantPackage, cudaPackages }:
    let
      spec = entry.spec;
      family = families.familyOf spec;
      cudaRuntime = if families.usesGpu spec then families.cudaRuntimeFor cudaPackages family else [ ];
      app = package.apps.${family};
      launcher = package.launchers.${family};
      inherit (variantPackage) weights engines;

      layers = stack ([ (_: depsLayers.${family}) ]
        ++ (if cudaRuntime == [ ] then [ ] else [ (_: cudaLayer family cudaRuntime) ])
        ++ [
        (below: nix2container.buildLayer {
          deps = [ app app.dependencyEnv launcher engines ];
          copyToRoot = [ rootfs ];
          perms = [{ path = rootfs; regex = "/tmp$"; mode = "1777"; }
                   { path = rootfs; regex = "/var/lib/dalston/jobs$"; mode = "1777"; }];
          layers = below;
        })
        (below: nix2container.buildLayer { deps = [ weights ]; layers = below; })
      ]);

      env = {
        ENGINE_ID = spec.id;
        DALSTON_MODEL_DIR = "${weights}";
        DALSTON_ENGINES_DIR = "${engines}/engines";
        HF_HUB_OFFLINE = "1";
        TRANSFORMERS_OFFLINE = "1";
        PYTHONUNBUFFERED = "1";
        HOME = "/tmp";
        PATH = "${app.dependencyEnv}/bin:${launcher}/bin";
      } // (if !(families.usesGpu spec) then { } else {
        # The family's CUDA libraries, then where the driver (libcuda.so.1) is mounted.
        LD_LIBRARY_PATH = b.concatStringsSep ":" (map (p: "${p}/lib") cudaRuntime
          ++ families.driverLibraryPath { inherit (pkgs) system; driverLink = pkgs.addDriverRunpath.driverLink; image = true; });
        # What the NVIDIA container toolkit reads to mount the driver into the container.
        NVIDIA_VISIBLE_DEVICES = "all";
        NVIDIA_DRIVER_CAPABILITIES = "compute,utility";
      });
    in
    nix2container.buildImage {
      name = oci.imageName spec;
      tag = oci.imageTag spec;
      config = oci.configFor {
        inherit spec family env projectLicense;
        inherit (entry) stage;
        entrypoint = [ "${launcher}/bin/dalston-entrypoint" ];
      };
      inherit layers;
      meta.description = "OCI image of ${spec.id} (dalston serve ${spec.id}, weights included)";
    };
in
{
  inherit imageFor depsLayers rootfs;
}
