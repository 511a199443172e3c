# STAND-IN for poetry2nix's mkPoetryApplication / mkPoetryEnv (tests only; see ../README.md).
#
# Checked against nix-community/poetry2nix at ce2369db77f45688172384bbeb962bc6c2ea6f94:
#   default.nix        formals of mkPoetryApplication / mkPoetryEnv / mkPoetryPackages; the lock
#                      partition (`supportsPythonVersion`: a package's `marker` (SINGULAR) if it has
#                      one, else its `python-versions` against the interpreter; Poetry 2 writes
#                      `markers`, which is never read); baseOverlay (`listToAttrs` over
#                      `reverseList compatible`: for a name locked twice, the LAST entry wins) and
#                      `lockPkgs // buildSystems`: nixpkgs' own build systems (known-build-
#                      systems.json minus poetry/poetry-core) replace the locked ones; overlays
#                      = [... baseOverlay] ++ overrides, `getFunctorFn`; mkInputAttrs (project
#                      dependencies: tool.poetry.dependencies, extras via `lib.getAttrs`)
#   lib.nix            checkPythonVersions (`||` of `,`-joined PEP 440 conditions)
#   mk-poetry-dep.nix  a locked package's propagatedBuildInputs = its lock `dependencies` whose
#                      `markers` hold for this interpreter with ALL the package's extras on
#   overrides/default.nix
#                      mkDefaultPoetryOverrides ({ __functor; extend; }); the bootstrapping set
#                      (installer, build, flit-core, packaging, tomli, pyproject-hooks, wheel,
#                      cython) taken from nixpkgs; the torch CUDA wheels overlay: `lib.genAttrs`
#                      over `nvidia-<lib>-cu11` / `nvidia-<lib>-cu12` ONLY, whose postFixup
#                      symlinks `nvidia/*/lib/lib*.so*` into $out/lib
#   nixpkgs auto-patchelf (25.05): a wheel's NEEDED libraries must be in its own outputs, in the
#                      `lib` directory of a (propagated) build input, or match a pattern of
#                      autoPatchelfIgnoreMissingDeps (fnmatch globs; `true` ignores all)
#
# What it models: which lock entry (version) each name gets, the package set as overlays compose
# it, overridePythonAttrs, and the autoPatchelf verdict for the CUDA wheels from a table of the
# libraries they ship and need (below). What it does not: building, wheel selection by platform
# tag, sdists/build systems.
{ pkgs }:
let
  b = builtins;
  fail = msg: throw "stand-in poetry2nix: ${msg}";
  isDrv = v: b.isAttrs v && (v.type or null) == "derivation";
  lower = s: b.replaceStrings [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ] s;
  # PEP 503 name normalization, as pyproject.nix's normalizePackageName.
  normalize = s: lower (b.concatStringsSep "-" (b.filter (p: b.isString p && p != "") (b.split "[-_.]+" s)));
  strings = l: b.filter b.isString l;
  trim = s: b.head (b.match "[ \t]*(.*[^ \t]|)[ \t]*" s);
  unique = l: b.attrNames (b.listToAttrs (map (n: { name = n; value = null; }) l));

  mk = name: attrs: derivation ({ inherit name; system = pkgs.system; builder = "/bin/sh"; args = [ "-c" "exit 1" ]; standin = "poetry2nix"; } // attrs);

  # --- PEP 440 conditions on the interpreter version (lib.nix checkPythonVersions) -------------
  cmp = a: c: b.compareVersions a c;
  prefixOf = v: n: b.concatStringsSep "." (b.genList (i: b.elemAt (b.splitVersion v) i) n);
  wildcard = v: pat: let p = b.substring 0 (b.stringLength pat - 2) pat; in prefixOf v (b.length (b.splitVersion p)) == p;
  condHolds = v: cond:
    let m = b.match "(~=|===|==|!=|<=|>=|<|>)?[ ]*([0-9a-z.*]+)" (trim cond); op = b.elemAt m 0; x = b.elemAt m 1; in
    if trim cond == "*" || trim cond == "" then true
    else if m == null then fail "cannot read the python-versions condition '${cond}'"
    else if op == "==" || op == null then (if b.match ".*\\.\\*" x != null then wildcard v x else cmp v x == 0)
    else if op == "!=" then (if b.match ".*\\.\\*" x != null then !(wildcard v x) else cmp v x != 0)
    else if op == ">=" then cmp v x >= 0
    else if op == "<=" then cmp v x <= 0
    else if op == ">" then cmp v x > 0
    else if op == "<" then cmp v x < 0
    else if op == "~=" then cmp v x >= 0 && wildcard v (prefixOf x (b.length (b.splitVersion x) - 1) + ".*")
    else fail "python-versions operator ${op} is not modelled";
  checkPythonVersions = v: constraint:
    b.any (alt: b.all (condHolds v) (strings (b.split "," alt))) (strings (b.split " *\\|\\| *" constraint));

  # --- PEP 508 markers (mk-poetry-dep.nix evaluates a dependency's `markers`) ------------------
  # Linux, the flake's systems; `extra` = every extra of the depending package ("All extras are
  # always enabled").
  tokenize = s: map b.head (b.filter b.isList (b.split "(\\(|\\)|\"[^\"]*\"|'[^']*'|[A-Za-z_.]+|===|==|!=|<=|>=|~=|<|>)" s));
  markerEnv = python: {
    python_version = python.pythonVersion;
    python_full_version = python.version;
    sys_platform = "linux";
    platform_system = "Linux";
    os_name = "posix";
    platform_machine = if pkgs.system == "aarch64-linux" then "aarch64" else "x86_64";
    implementation_name = "cpython";
    platform_python_implementation = "CPython";
  };
  evalMarker = env: extras: text:
    let
      value = t: if b.match "[\"'].*" t != null then { str = b.substring 1 (b.stringLength t - 2) t; }
        else if t == "extra" then { extras = extras; }
        else if env ? ${t} then { str = env.${t}; }
        else fail "marker variable '${t}' is not modelled";
      isVersionVar = t: b.elem t [ "python_version" "python_full_version" ];
      compare = l: op: r:
        let lv = value l; rv = value r; in
        if lv ? extras then (if op == "==" then b.elem rv.str lv.extras else if op == "!=" then !(b.elem rv.str lv.extras) else fail "extra ${op}")
        else if op == "in" then b.match ".*${lv.str}.*" rv.str != null
        else if op == "not in" then b.match ".*${lv.str}.*" rv.str == null
        else if isVersionVar l || isVersionVar r then
          (let c = b.compareVersions lv.str rv.str; in
          if op == "==" then c == 0 else if op == "!=" then c != 0 else if op == "<" then c < 0
          else if op == "<=" then c <= 0 else if op == ">" then c > 0 else if op == ">=" then c >= 0 else fail "op ${op}")
        else if op == "==" then lv.str == rv.str else if op == "!=" then lv.str != rv.str
        else fail "marker comparison ${l} ${op} ${r} is not modelled";
      # Recursive descent over the token list: or := and ("or" and)*; and := atom ("and" atom)*.
      atom = ts:
        if b.head ts == "(" then
          let r = orE (b.tail ts); in { v = r.v; ts = b.tail r.ts; }
        else
          let
            l = b.elemAt ts 0;
            notIn = b.elemAt ts 1 == "not" && b.elemAt ts 2 == "in";
            op = if notIn then "not in" else b.elemAt ts 1;
            rest = b.genList (i: b.elemAt ts (i + (if notIn then 3 else 2))) (b.length ts - (if notIn then 3 else 2));
          in
          { v = compare l op (b.head rest); ts = b.tail rest; };
      andE = ts: let a = atom ts; in andMore a;
      andMore = a: if a.ts != [ ] && b.head a.ts == "and" then (let n = atom (b.tail a.ts); in andMore { v = a.v && n.v; ts = n.ts; }) else a;
      orE = ts: let a = andE ts; in orMore a;
      orMore = a: if a.ts != [ ] && b.head a.ts == "or" then (let n = andE (b.tail a.ts); in orMore { v = a.v || n.v; ts = n.ts; }) else a;
    in
    (orE (tokenize text)).v;

  # --- what CUDA wheels ship and need (the stand-in's autoPatchelf data) -----------------------
  # Sonames of the CUDA 13 wheels poetry.lock pins (site-packages/nvidia/<x>/lib/), and the
  # cross-wheel / system / driver links the issue lists (cusolver -> cublas, cublasLt, cusparse,
  # nvJitLink; cudnn -> cublas; cufile -> rdma-core, numactl; nvshmem -> MPI, PMIx, UCX,
  # libfabric; the driver libcuda.so.1 everywhere). Not read from the wheels (GBs, not fetched).
  ships = {
    nvidia-cublas = [ "libcublas.so.13" "libcublasLt.so.13" ];
    nvidia-cuda-runtime = [ "libcudart.so.13" ];
    nvidia-cuda-nvrtc = [ "libnvrtc.so.13" ];
    nvidia-cuda-cupti = [ "libcupti.so.13" ];
    nvidia-cudnn-cu13 = [ "libcudnn.so.9" ];
    nvidia-cufft = [ "libcufft.so.12" ];
    nvidia-cufile = [ "libcufile.so.0" ];
    nvidia-curand = [ "libcurand.so.10" ];
    nvidia-cusolver = [ "libcusolver.so.12" ];
    nvidia-cusparse = [ "libcusparse.so.12" ];
    nvidia-cusparselt-cu13 = [ "libcusparseLt.so.0" ];
    nvidia-nccl-cu13 = [ "libnccl.so.2" ];
    nvidia-nvjitlink = [ "libnvJitLink.so.13" ];
    nvidia-nvshmem-cu13 = [ "libnvshmem_host.so.3" ];
  };
  needs = {
    nvidia-cublas = [ "libcuda.so.1" ];
    nvidia-cusolver = [ "libcublas.so.13" "libcublasLt.so.13" "libcusparse.so.12" "libnvJitLink.so.13" ];
    nvidia-cusparse = [ "libnvJitLink.so.13" ];
    nvidia-cufft = [ "libnvJitLink.so.13" ];
    nvidia-cudnn-cu13 = [ "libcublas.so.13" "libcublasLt.so.13" "libcuda.so.1" ];
    nvidia-cufile = [ "libcuda.so.1" "libibverbs.so.1" "librdmacm.so.1" "libnuma.so.1" ];
    nvidia-nvshmem-cu13 = [ "libcuda.so.1" "libmpi.so.40" "libpmix.so.2" "libucp.so.0" "libucs.so.0" "libfabric.so.1" ];
    nvidia-nccl-cu13 = [ "libcuda.so.1" ];
    torch = [ "libcudart.so.13" "libcublas.so.13" "libcublasLt.so.13" "libcudnn.so.9" "libcufft.so.12" "libcurand.so.10"
      "libcusparse.so.12" "libcusolver.so.12" "libcusparseLt.so.0" "libnccl.so.2" "libnvshmem_host.so.3" "libcupti.so.13"
      "libcufile.so.0" "libcuda.so.1" ];
  };
  globMatches = pat: s: b.match (b.replaceStrings [ "." "*" "?" "+" ] [ "\\." ".*" "." "\\+" ] pat) s != null;

  # --- the package objects ---------------------------------------------------------------------
  # A Python package: a derivation whose identity follows its attributes, with
  # overridePythonAttrs (attrs -> attrs) as buildPythonPackage's.
  mkPackage = python: attrs:
    let
      known = b.removeAttrs attrs [ "passthru" ];
      inputs = b.filter (d: d != null) ((attrs.propagatedBuildInputs or [ ]) ++ (attrs.buildInputs or [ ]));
      drv = mk "python${python.pythonVersion}-${attrs.pname}-${attrs.version}" {
        standinAttrs = b.toJSON {
          inherit (attrs) pname version;
          postFixup = attrs.postFixup or "";
          ignore = attrs.autoPatchelfIgnoreMissingDeps or [ ];
          inputs = map (d: d.name or "?") inputs;
        };
      };
    in
    drv // known // {
      standinRefs = [ python ] ++ b.filter (d: d != null) (attrs.propagatedBuildInputs or [ ]);
      overridePythonAttrs = f: mkPackage python (attrs // (if b.isFunction f then f attrs else f));
      override = _: fail "override (callPackage arguments) is not modelled; use overridePythonAttrs";
    };

  # The libraries a package offers dependents through $out/lib: nixpkgs packages their own; a
  # wheel only what a postFixup symlinks from nvidia/*/lib into $out/lib.
  linksNvidiaLibs = p: let f = p.postFixup or ""; has = re: b.match ".*${re}.*" f != null; in
    has "/nvidia/\\*/lib/lib\\*\\.so\\*" && has "ln -s" && has "\\$out/lib";
  libDirOf = p: if p ? standinSystemLibs then p.standinSystemLibs else if linksNvidiaLibs p then ships.${p.pname} or [ ] else [ ];
  # autoPatchelf of one package: NEEDED sonames not in its own files, in the lib dir of any
  # (transitively propagated) input, or ignored.
  missingLibs = p:
    let
      inputsOf = d: b.filter (x: x != null && b.isAttrs x) ((d.propagatedBuildInputs or [ ]) ++ (d.buildInputs or [ ]));
      closure = map (i: i.obj) (b.genericClosure {
        startSet = map (d: { key = d.name or "?"; obj = d; }) (inputsOf p);
        operator = i: map (d: { key = d.name or "?"; obj = d; }) (inputsOf i.obj);
      });
      found = (ships.${p.pname or ""} or [ ]) ++ b.concatMap libDirOf closure;
      ignore = p.autoPatchelfIgnoreMissingDeps or [ ];
      ignored = so: ignore == true || b.any (pat: globMatches pat so) (if b.isList ignore then ignore else [ ]);
    in
    b.filter (so: !(b.elem so found) && !(ignored so)) (needs.${p.pname or ""} or [ ]);

  # --- mkPoetryPackages --------------------------------------------------------------------------
  knownBuildSystems = [ "cython" "cython_0" "flit" "flit-core" "hatch-vcs" "hatchling" "pbr" "pdm-backend" "poetry-core" "setuptools" "setuptools-scm" ];
  nixpkgsBuildSystems = b.filter (n: !(b.elem n [ "poetry" "poetry-core" ])) knownBuildSystems;
  getFunctorFn = fn: if b.typeOf fn == "set" then fn.__functor else fn;
  composeExtensions = f: g: final: prev: let fApplied = f final prev; prev' = prev // fApplied; in fApplied // g final prev';
  wrapNixpkgs = python: p: mkPackage python { inherit (p) pname version; standinNixpkgs = true; };

  packageSet = { python, poetryLock, pwd, preferWheels, overrides }:
    let
      pyVersion = python.version;
      # default.nix: `if pkgMeta ? marker then evalMarkers pep508Env marker else true && checkPythonVersions ...`
      # (pep508Env has no `extra`: here an `extra == ...` comparison is false).
      supportsPythonVersion = pkgMeta:
        if pkgMeta ? marker then evalMarker env [ ] pkgMeta.marker
        else true && checkPythonVersions pyVersion pkgMeta.python-versions;
      compatible = b.filter supportsPythonVersion poetryLock.package;
      incompatible = b.filter (p: !(supportsPythonVersion p)) poetryLock.package;
      env = markerEnv python;

      mkPoetryDep =
        { name, version, files, source, pythonPackages, python-versions, pwd, sourceSpec
        , pos ? null, extras ? { }, dependencies ? { }, supportedExtensions ? [ ], preferWheels ? false, ... }:
        let
          deps = b.filter
            (n:
              let v = dependencies.${n}; vs = if b.isList v then v else [ v ]; in
              b.any (e: checkPythonVersions pyVersion (e.python or "*") && (if (e.markers or "") == "" then true else evalMarker env (b.attrNames extras) e.markers))
                (map (e: if b.isString e then { version = e; } else e) vs))
            (b.attrNames dependencies);
        in
        if files == [ ] then fail "Missing suitable source/wheel file entry for ${name}"
        else mkPackage python {
          pname = normalize name;
          inherit version;
          format = if preferWheels then "wheel" else "pyproject";
          src = { isWheel = preferWheels; };
          propagatedBuildInputs = map (n: pythonPackages.${normalize n}) deps;
        };

      baseOverlay = final: prev:
        let
          lockPkgs = b.listToAttrs (map
            (pkgMeta: {
              name = normalize pkgMeta.name;
              value = final.mkPoetryDep (pkgMeta // {
                inherit pwd preferWheels;
                source = pkgMeta.source or null;
                files = pkgMeta.files or (fail "lock-version 1.1 files are not modelled");
                pythonPackages = final;
                sourceSpec = { };
              });
            })
            (b.foldl' (acc: x: [ x ] ++ acc) [ ] compatible)); # lib.reverseList: the last entry wins
          buildSystems = b.listToAttrs (map (x: { name = x; value = prev.${x}; }) (b.filter (x: prev ? ${x}) nixpkgsBuildSystems));
        in
        lockPkgs // buildSystems;

      nixpkgsSet = b.mapAttrs (_: wrapNixpkgs python) python.pkgs // {
        inherit python;
        pkgs = pkgs;
      };
      overlays = map getFunctorFn (
        [
          (_final: _prev: b.listToAttrs (map (x: { name = normalize x.name; value = null; }) incompatible))
          (_final: _prev: { inherit mkPoetryDep; })
          baseOverlay
        ] ++ (if b.typeOf overrides == "list" then overrides else [ overrides ])
      );
      composed = b.foldl' composeExtensions (_: _: { }) overlays;
      fix = f: let x = f x; in x;
    in
    fix (final: nixpkgsSet // composed final nixpkgsSet);

  # The project's own dependencies, as mkInputAttrs selects them (tool.poetry.*).
  projectDeps = { pyProject, py, extras, groups }:
    let
      poetry = pyProject.tool.poetry or (fail "pyproject has no [tool.poetry] (poetry2nix reads only tool.poetry.*)");
      rawDeps = poetry.dependencies or { };
      required = b.filter (n: !(rawDeps.${n}.optional or false)) (b.attrNames rawDeps);
      desired = unique (b.concatMap (e: (poetry.extras or { }).${e} or (fail "extra '${e}' is not in tool.poetry.extras (${b.concatStringsSep ", " (b.attrNames (poetry.extras or { }))})")) extras);
      selected = if extras == [ "*" ] then b.attrNames rawDeps
        else required ++ map (n: if rawDeps ? ${n} then n else fail "extra names '${n}', which is not in tool.poetry.dependencies") desired;
      pkg = n: let k = normalize n; in
        if py.pkgs ? ${k} then py.pkgs.${k} else fail "dependency '${n}' is not locked in poetry.lock";
      names = b.filter (n: lower n != "python") selected;
    in
    if !(b.all (g: g == "main" || (poetry.group or { }) ? ${g}) groups) then fail "unknown dependency group in ${b.toJSON groups}"
    else { inherit poetry; packages = b.filter (d: d != null) (map pkg names); };

  mkPoetryPackages =
    { projectDir ? null
    , pyproject ? projectDir + "/pyproject.toml"
    , poetrylock ? projectDir + "/poetry.lock"
    , poetrylockPos ? null
    , overrides ? defaultPoetryOverrides
    , python ? pkgs.python3
    , pwd ? projectDir
    , preferWheels ? false
    , editablePackageSources ? { }
    , pyProject ? b.fromTOML (b.readFile pyproject)
    , groups ? [ "main" ]
    , checkGroups ? [ "dev" ]
    , extras ? [ "*" ]
    }:
    let
      poetryLock = b.fromTOML (b.readFile poetrylock);
      set = packageSet { inherit python poetryLock pwd preferWheels overrides; };
      py = python // { pkgs = set; };
      project = projectDeps { inherit pyProject py extras groups; };
      # Every package of the closure, for the checks the tests make.
      closure = map (i: i.obj) (b.genericClosure {
        startSet = map (d: { key = d.name; obj = d; }) project.packages;
        operator = i: map (d: { key = d.name; obj = d; }) (b.filter (d: d != null && isDrv d && d ? pname && !(d ? pythonVersion)) (i.obj.propagatedBuildInputs or [ ]));
      });
      lockNames = unique (map (p: normalize p.name) poetryLock.package);
    in
    if !(isDrv python && python ? pythonVersion) then fail "python must be a Python interpreter derivation"
    else {
      python = py;
      poetryPackages = project.packages;
      inherit pyProject poetryLock project closure;
      standin = {
        # name -> the version poetry2nix gives that name (every locked name it would build).
        versions = b.listToAttrs (map (n: { name = n; value = set.${n}.version; }) (b.filter (n: set ? ${n} && set.${n} != null) lockNames));
        closure = map (p: p.pname) closure;
        # package -> sonames autoPatchelf would not find (the build would fail).
        autoPatchelfMissing = b.listToAttrs (b.filter (x: x.value != [ ]) (map (p: { name = p.pname; value = missingLibs p; }) closure));
      };
    };

  defaultOverlay = final: prev:
    let
      bootstrapping = [ "installer" "build" "flit-core" "packaging" "tomli" "pyproject-hooks" "wheel" "cython" ];
      fromNixpkgs = b.listToAttrs (map (n: { name = n; value = wrapNixpkgs prev.python prev.python.pkgs.${n}; }) (b.filter (n: prev.python.pkgs ? ${n}) bootstrapping));
      nvidia = b.concatMap (p: [ "nvidia-${p}-cu11" "nvidia-${p}-cu12" ])
        [ "cublas" "cuda-cupti" "cuda-curand" "cuda-nvrtc" "cuda-runtime" "cudnn" "cufft" "curand" "cusolver" "cusparse" "nccl" "nvjitlink" "nvtx" ];
    in
    fromNixpkgs // b.listToAttrs (map
      (name: {
        inherit name;
        value = prev.${name}.overridePythonAttrs (_: {
          postFixup = ''
            rm -rf $out/${final.python.sitePackages}/nvidia/{__pycache__,__init__.py}
            ln -sfn $out/${final.python.sitePackages}/nvidia/*/lib/lib*.so* $out/lib
          '';
        });
      })
      (b.filter (n: prev ? ${n}) nvidia));

  mkDefaultPoetryOverrides = defaults: {
    __functor = defaults; # as the real one: getFunctorFn takes it out, an overlay (final: prev:)
    extend = overlay: mkDefaultPoetryOverrides (composeExtensions defaults overlay);
    overrideOverlay = fn: mkDefaultPoetryOverrides (final: prev: defaults final prev // fn final prev);
  };
  defaultPoetryOverrides = mkDefaultPoetryOverrides defaultOverlay;

  mkPoetryApplication =
    { projectDir ? null
    , src ? projectDir
    , pyproject ? projectDir + "/pyproject.toml"
    , poetrylock ? projectDir + "/poetry.lock"
    , overrides ? defaultPoetryOverrides
    , meta ? { }
    , python ? pkgs.python3
    , pwd ? projectDir
    , preferWheels ? false
    , groups ? [ "main" ]
    , checkGroups ? [ "dev" ]
    , extras ? [ "*" ]
    , ...
    }@attrs:
    let
      poetryPython = mkPoetryPackages { inherit pyproject poetrylock overrides python pwd preferWheels groups checkGroups extras; };
      packages = poetryPython.poetryPackages;
      pname = normalize poetryPython.project.poetry.name;
      app = mk "${pname}-${poetryPython.project.poetry.version}" { inherit src; propagated = packages; };
      dependencyEnv = mk "python${python.pythonVersion}-${pname}-env" { paths = [ app ] ++ packages ++ [ python ]; }
        // { standinRefs = [ app python ] ++ packages; };
    in
    app // {
      inherit pname python dependencyEnv;
      inherit (poetryPython.project.poetry) version;
      propagatedBuildInputs = packages;
      standinRefs = [ python ] ++ packages;
      meta = meta;
      standin = poetryPython.standin // { inherit extras preferWheels; dependencies = map (d: d.name) packages; };
    };

  mkPoetryEnv =
    { projectDir ? null
    , pyproject ? projectDir + "/pyproject.toml"
    , poetrylock ? projectDir + "/poetry.lock"
    , overrides ? defaultPoetryOverrides
    , pwd ? projectDir
    , python ? pkgs.python3
    , preferWheels ? false
    , editablePackageSources ? { }
    , extraPackages ? _ps: [ ]
    , groups ? [ "main" "dev" ]
    , checkGroups ? [ "dev" ]
    , extras ? [ "*" ]
    }:
    let poetryPython = mkPoetryPackages { inherit pyproject poetrylock overrides python pwd preferWheels groups checkGroups extras; }; in
    mk "python${python.pythonVersion}-env" { paths = poetryPython.poetryPackages ++ [ python ]; } // {
      standinRefs = [ python ] ++ poetryPython.poetryPackages;
      standin = poetryPython.standin // { inherit extras; dependencies = map (d: d.name) poetryPython.poetryPackages; };
    };
in
{
  inherit mkPoetryApplication mkPoetryEnv mkPoetryPackages defaultPoetryOverrides mkDefaultPoetryOverrides;
  overrides = {
    withDefaults = overlay: [ overlay defaultPoetryOverrides ];
    withoutDefaults = overlay: [ overlay ];
  };
}
