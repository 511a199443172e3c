# STAND-IN package set (tests only; see ../README.md): the few attributes dalston's nix/ uses, as
# derivations that instantiate (so `nix flake check --no-build` sees real .drv files) but refuse to
# build. Every function checks its arguments the way the real one would fail on them.
#
# Checked against NixOS/nixpkgs nixos-25.05 (ac62194c3917d5f474c1a844b6fd6da2db95077d) by name:
#   pkgs/stdenv/generic/check-meta.nix  allowUnfreePredicate is called with the package's attrs
#       (pname, version, meta.license) and only for packages whose license is unfree; a refused
#       package fails evaluation naming it
#   pkgs/top-level/all-packages.nix     cudaPackages = cudaPackages_12 (CUDA 12.x in 25.05),
#       addDriverRunpath (driverLink = "/run/opengl-driver"), rdma-core, numactl, python312
#   pkgs/development/cuda-modules       libcublas / cuda_cudart / cudnn with a `lib` output,
#       cudaMajorVersion
# The versions of nixpkgs' own Python build tools (setuptools, packaging, ...) are what
# poetry2nix substitutes for the lock's (see ../poetry2nix); they are taken from the issue's
# reading of 25.05 (packaging >= 25, which `lightning` refuses) and were not re-read here: the
# 4.4 GB nixpkgs tree cannot be fetched offline. What matters for the tests is that they are
# not the locked versions.
{ system, config }:
let
  b = builtins;

  storeRe = "(${b.storeDir}/[0-9a-z]{32}-[-+._?=0-9A-Za-z]+)";
  # The store paths a text names: a script's runtime references (what Nix's reference scan finds).
  pathsIn = s: map b.head (b.filter b.isList (b.split storeRe (b.unsafeDiscardStringContext s)));

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
    drv // { standinRefs = [ ]; } // passthru // { meta = passthru.meta or { }; };

  leaf = name: mk name { } { pname = b.head (b.match "([a-zA-Z_-]+[a-zA-Z_]).*" name); };

  unfreeAllowed = pkg:
    (config.allowUnfree or false) || (config.allowUnfreePredicate or (_: false)) pkg;
  unfree = pname: version:
    let pkg = { inherit pname version; meta.license = { free = false; shortName = "nvidia"; }; }; in
    if unfreeAllowed pkg then
      let out = mk "${pname}-${version}" { outputs = [ "out" "lib" ]; } { inherit pname version; }; in
      out // { lib = out.lib // { inherit pname version; standinRefs = [ ]; }; }
    else throw "stand-in nixpkgs: Package '${pname}-${version}' has an unfree license, refusing to evaluate (allowUnfreePredicate)";

  # nixpkgs' own Python packages that poetry2nix takes instead of the lock's (its build systems
  # and bootstrapping set): name -> version.
  nixpkgsPythonPackages = {
    setuptools = "80.9.0";
    packaging = "25.0";
    wheel = "0.45.1";
    installer = "0.7.0";
    build = "1.2.2";
    flit-core = "3.12.0";
    tomli = "2.2.1";
    pyproject-hooks = "1.2.0";
    hatchling = "1.27.0";
    setuptools-scm = "8.3.1";
    cython = "3.0.12";
  };

  python312 =
    let
      self = mk "python3-3.12.10" { } {
        pname = "python3";
        version = "3.12.10";
        pythonVersion = "3.12";
        pythonAttr = "python312";
        sitePackages = "lib/python3.12/site-packages";
        isPy3k = true;
        executable = "python3.12";
        pkgs = b.mapAttrs (n: v: mk "python3.12-${n}-${v}" { } { pname = n; version = v; standinRefs = [ self ]; }) nixpkgsPythonPackages;
      };
    in
    self;

  cudaPackagesFor = major: versions: {
    cudaMajorVersion = major;
    cudaVersion = versions.cuda;
    cuda_cudart = unfree "cuda_cudart" versions.cudart;
    libcublas = unfree "libcublas" versions.cublas;
    cudnn = unfree "cudnn" versions.cudnn;
  };
  cudaPackages_12 = cudaPackagesFor "12" { cuda = "12.8"; cudart = "12.8.90"; cublas = "12.8.4.1"; cudnn = "9.8.0.87"; };
in
{
  inherit system python312 cudaPackages_12;
  python3 = python312;
  cudaPackages = cudaPackages_12;
  # pkgs/by-name/ad/addDriverRunpath: where NixOS puts the driver (libcuda.so.1); other distros'
  # container toolkits mount it elsewhere (see nix/lib/runtime-family.nix).
  addDriverRunpath = leaf "add-driver-runpath" // { driverLink = "/run/opengl-driver"; };
  # With the sonames they put in their `lib` directory (for the poetry2nix stand-in's autoPatchelf).
  rdma-core = leaf "rdma-core-57.0" // { standinSystemLibs = [ "libibverbs.so.1" "librdmacm.so.1" ]; };
  numactl = leaf "numactl-2.0.18" // { standinSystemLibs = [ "libnuma.so.1" ]; };

  runCommand = name: env: script:
    let
      passthru = env.passthru or { };
      meta = env.meta or { };
      drvEnv = b.removeAttrs env [ "passthru" "meta" ];
    in
    if !(b.isString script) then throw "stand-in nixpkgs: runCommand ${name}: the build script must be a string"
    else b.seq (assertDrvs "runCommand ${name}: nativeBuildInputs" (drvEnv.nativeBuildInputs or [ ]))
      (mk name (drvEnv // { buildCommand = script; }) (passthru // { inherit meta; standinRefs = pathsIn script; }));

  writeShellScriptBin = name: text:
    if !(b.isString text) then throw "stand-in nixpkgs: writeShellScriptBin ${name}: text must be a string"
    else mk name { inherit text; } { meta.mainProgram = name; standinRefs = pathsIn text; };

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
}
