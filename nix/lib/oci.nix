# The OCI image configuration of one variant, computed from its spec with builtins only.
#
# WHY separate from nix/image.nix: the labels, environment and ports are facts about the variant,
# not about how layers are built; keeping them pure lets tests compare them with the Python catalog
# without nixpkgs, and lets dalston.tools.deployment and the image agree on names
# (`dalston-<id>:<spec version>`, port 8000, ENGINE_ID).
let
  b = builtins;
in
rec {
  port = 8000;

  imageName = spec: "dalston-${spec.id}";
  imageTag = spec: spec.version;

  # Numbers as Python's str() writes them for the values variant files hold (2 -> "2", 1.5 -> "1.5").
  number = v: if b.isInt v then toString v else b.toJSON v;
  boolean = v: if v then "true" else "false";

  labelsFor = { spec, family, stage, projectLicense ? null }:
    let
      hf = spec.hf_compat or null;
      hw = spec.hardware;
      w = spec.weights or null;
      trim = s: b.head (b.match "[[:space:]]*(.*[^[:space:]]|)[[:space:]]*" s);
    in
    {
      "org.opencontainers.image.title" = spec.name or spec.id;
      "org.opencontainers.image.version" = spec.version;
      "org.opencontainers.image.description" = trim (spec.description or "");
      "ai.dalston.engine.id" = spec.id;
      "ai.dalston.engine.version" = spec.version;
      "ai.dalston.engine.stage" = stage;
      "ai.dalston.engine.family" = family;
      "ai.dalston.hardware.min_vram_gb" = number hw.min_vram_gb;
      "ai.dalston.hardware.recommended_gpu" = b.concatStringsSep "," hw.recommended_gpu;
      "ai.dalston.hardware.supports_cpu" = boolean hw.supports_cpu;
      "ai.dalston.container.gpu" = spec.container.gpu;
    }
    // (if projectLicense != null then { "org.opencontainers.image.licenses" = projectLicense; } else { })
    // (if hf != null then {
      "ai.dalston.model.source" = hf.source_model;
      "ai.dalston.model.license" = hf.license;
    } else { })
    // (if w != null then { "ai.dalston.weights" = "${w.repo}@${w.revision}"; } else { });

  # `env` is an attrset of NAME = value; OCI wants a list of NAME=value strings (sorted: stable).
  envList = env: map (k: "${k}=${env.${k}}") (b.attrNames env);

  configFor = { spec, family, stage, entrypoint, env, projectLicense ? null, user ? "10001:10001" }: {
    Entrypoint = entrypoint;
    # No arguments: serve this variant on every interface (docker run IMAGE --port 9000 also works;
    # a command that is not an option, e.g. compose's `dalston serve <id> ...`, is run as given).
    Cmd = [ "--host" "0.0.0.0" "--port" (toString port) ];
    Env = envList env;
    ExposedPorts = { "${toString port}/tcp" = { }; };
    Labels = labelsFor { inherit spec family stage projectLicense; };
    User = user;
    WorkingDir = "/tmp";
  };
}
