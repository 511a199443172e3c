# STAND-IN package set (tests only; see ../README.md): the few attributes dalston's nix/ uses, as
# derivations that instantiate (so `nix flake check --no-build` sees real .drv files) but refuse to
# build. Every function checks its arguments the way the real one would fail on them.
{ system, config }:
let
  b = builtins;

  isDrv = v: b.isAttrs v && (v.type or null) == "derivation";
  assertDrvs = what: vs: b.foldl' (ok: v: if isDrv v then ok else throw "stand-in nixpkgs: ${what} must be derivations, got a ${b.typeOf v}") true vs;
  validName = name: if b.match "[a-zA-Z0-9+._?=-]+" name == null then throw "stand-in nixpkgs: invalid derivation name '${name}'" else name;

  # A derivation that exists only to be instantiated.
  mk = name: attrs: passthru:
    let
      drv = derivation ({
        name = validName name;
        inherit system;
        builder = "/bin/sh";
        args = [ "-c" "echo 'stand-in derivation (tests/nix/standins): not buildable' >&2; exit 1" ];
        standin = "nixpkgs";
      } // attrs);
    in
    drv // passthru // { meta = passthru.meta or { }; };

  leaf = name: mk name { } { pname = b.head (b.match "([a-zA-Z_-]+[a-zA-Z_]).*" name); };

  unfreeAllowed = pkg:
    (config.allowUnfree or false) || (config.allowUnfreePredicate or (_: false)) pkg;
  unfree = pname: version:
    let pkg = { inherit pname version; meta.license = { free = false; shortName = "nvidia"; }; }; in
    if unfreeAllowed pkg then
      let out = mk "${pname}-${version}" { outputs = [ "out" "lib" ]; } { inherit pname version; }; in
      out // { lib = out.lib // { inherit pname version; }; }
    else throw "stand-in nixpkgs: Package '${pname}-${version}' has an unfree license, refusing to evaluate (allowUnfreePredicate)";

  python312 = mk "python3-3.12.10" { } {
    pname = "python3";
    version = "3.12.10";
    pythonVersion = "3.12";
    isPy3k = true;
    executable = "python3.12";
  };
in
{
  inherit system python312;
  python3 = python312;

  runCommand = name: env: script:
    let
      passthru = env.passthru or { };
      meta = env.meta or { };
      drvEnv = b.removeAttrs env [ "passthru" "meta" ];
    in
    if !(b.isString script) then throw "stand-in nixpkgs: runCommand ${name}: the build script must be a string"
    else b.seq (assertDrvs "runCommand ${name}: nativeBuildInputs" (drvEnv.nativeBuildInputs or [ ]))
      (mk name (drvEnv // { buildCommand = script; }) (passthru // { inherit meta; }));

  writeShellScriptBin = name: text:
    if !(b.isString text) then throw "stand-in nixpkgs: writeShellScriptBin ${name}: text must be a string"
    else mk name { inherit text; } { meta.mainProgram = name; };

  mkShell = { packages ? [ ], buildInputs ? [ ], nativeBuildInputs ? [ ], shellHook ? "", ... }@args:
    b.seq (assertDrvs "mkShell packages" (packages ++ buildInputs ++ nativeBuildInputs))
      (mk (args.name or "nix-shell") { inherit packages shellHook; } { });

  makeWrapper = leaf "make-shell-wrapper-hook";
  poetry = leaf "poetry-2.1.3";
  ffmpeg = leaf "ffmpeg-7.1.1";
  nix = leaf "nix-2.28.4";
  git = leaf "git-2.49.0";
  jq = leaf "jq-1.7.1";
  nixfmt-rfc-style = leaf "nixfmt-unstable-2025-04-04";

  cudaPackages = {
    cuda_cudart = unfree "cuda_cudart" "12.8.90";
    libcublas = unfree "libcublas" "12.8.4.1";
    cudnn = unfree "cudnn" "9.8.0.87";
  };
}
