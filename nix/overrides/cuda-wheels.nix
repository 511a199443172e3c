# poetry2nix overlay: the CUDA 13 wheels poetry.lock pins (nemo family: torch's runtime) link
# (nix/package.nix composes it onto poetry2nix's defaultPoetryOverrides). Read against
# nix-community/poetry2nix ce2369db (overrides/default.nix, mk-poetry-dep.nix) and nixpkgs
# nixos-25.05 (auto-patchelf, cuda-modules' libcufile fixup):
#
# poetry2nix's defaults symlink `nvidia/*/lib/lib*.so*` into `$out/lib` only for the names
# `nvidia-<lib>-cu11` / `-cu12`; autoPatchelf looks for a dependency's libraries in `<dep>/lib`,
# so the CUDA 13 wheels (`nvidia-cublas`, `nvidia-cudnn-cu13`, ...) would not link (cusolver ->
# cublas, cusparse, nvJitLink; cudnn -> cublas; torch -> all of them). Every locked `nvidia-*`
# name the defaults do not cover gets the same symlinks; which wheel links which is the lock's own
# `dependencies` (poetry2nix makes them propagatedBuildInputs). The driver (libcuda.so.1) is
# mounted at run time, never built against: ignored everywhere. nvidia-cufile links rdma-core and
# numactl (as nixpkgs' own libcufile does); nvshmem's MPI / PMIx / UCX / libfabric transports are
# optional plugins it loads only if present.
# lock: poetry.lock as builtins.fromTOML reads it (parsed once by the caller: it takes seconds).
{ lock }:
let
  b = builtins;
  lower = s: b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] s;
  normalize = s: lower (b.concatStringsSep "-" (b.filter (p: b.isString p && p != "") (b.split "[-_.]+" s)));

  byName = b.groupBy (p: normalize p.name) lock.package;
  names = b.attrNames byName;
  present = b.filter (n: byName ? ${n});

  # WHY names come from the lock alone: the package set is a fixpoint, so deciding which
  # attributes exist by forcing a package (`prev.${n} != null`) would recurse infinitely.
  # poetry2nix nulls a name whose python-versions exclude the interpreter; that stays null.
  override = prev: n: f: { name = n; value = if prev.${n} == null then null else f prev.${n}; };
  cudaWheels = b.filter (n: b.match "nvidia-.*" n != null && b.match ".*-cu1[12]" n == null) names;
  driver = [ "libcuda.so.1" ];
  # Per wheel, beyond the lock: system libraries it links, and optional plugins' libraries.
  systemLibs = pkgs: { nvidia-cufile = [ pkgs.rdma-core pkgs.numactl ]; };
  optionalLibs = {
    nvidia-nvshmem-cu13 = [ "libmpi.so.*" "libmpi_cxx.so.*" "libpmix.so.*" "libucp.so.*" "libucs.so.*" "libucm.so.*" "libuct.so.*" "libfabric.so.*" ];
  };
  ignoreMore = extra: old:
    let prev = old.autoPatchelfIgnoreMissingDeps or [ ]; in
    if prev == true then true else prev ++ extra;

  cudaWheel = final: pkg: name: pkg.overridePythonAttrs (old: {
    buildInputs = (old.buildInputs or [ ]) ++ ((systemLibs final.pkgs).${name} or [ ]);
    autoPatchelfIgnoreMissingDeps = ignoreMore (driver ++ optionalLibs.${name} or [ ]) old;
    # As poetry2nix does for the -cu12 names; a wheel with no library (headers only) links nothing.
    postFixup = (old.postFixup or "") + ''
      rm -rf $out/${final.python.sitePackages}/nvidia/{__pycache__,__init__.py}
      libs=( $out/${final.python.sitePackages}/nvidia/*/lib/lib*.so* )
      if [ -e "''${libs[0]}" ]; then mkdir -p $out/lib && ln -sfn "''${libs[@]}" $out/lib; fi
    '';
  });
  # Other wheels that link the driver.
  driverUsers = present [ "torch" "triton" "cuda-bindings" ];
in
final: prev:
b.listToAttrs (map (n: override prev n (p: cudaWheel final p n)) cudaWheels)
// b.listToAttrs (map (n: override prev n (p: p.overridePythonAttrs (old: { autoPatchelfIgnoreMissingDeps = ignoreMore driver old; }))) driverUsers)
