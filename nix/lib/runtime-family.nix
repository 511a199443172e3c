# Which Python dependency set (pyproject extra) and which CUDA runtime a variant needs, from its spec.
#
# WHY one small file: the package (poetry2nix extras), the image (shared layers, CUDA layer) and the
# docs must agree on it, and it mirrors dalston/engine_sdk/loader.py's hint (`nemo` for the NeMo
# runtime, `whisper` otherwise: the model-free audio-prepare engine decodes with PyAV, which the
# whisper extra carries) and deploy/docker's choice of Dockerfile.
let
  b = builtins;
in
rec {
  # "whisper" | "nemo": the pyproject extra that carries the variant's model runtime.
  familyOf = spec:
    if (spec.runtime or null) != null && (spec.runtime.kind or null) == "nemo" then "nemo" else "whisper";

  # Every image serves HTTP, so the server extra is always in.
  extrasFor = family: [ "server" family ];

  # A GPU variant (container.gpu: required or optional) can run on a GPU, so its image carries the
  # CUDA runtime; gpu: none (CPU-only) images carry none of it.
  usesGpu = spec: (spec.container.gpu or "none") != "none";

  # The CUDA major version CTranslate2's Linux wheel (poetry.lock: ctranslate2 4.8.5) was built
  # for: its libctranslate2 links cudart statically and dlopens `libcublas.so.12` (and the driver's
  # libcuda.so.1); it names no cuDNN library at all. tests/nix/test_gpu_runtime.py reads the
  # installed wheel and holds this equal to what it names.
  ctranslate2CudaMajor = "12";

  # nixpkgs' CUDA package set of that major (nixos-25.05: cudaPackages_12 = CUDA 12.8), by name
  # rather than `cudaPackages`, which follows nixpkgs' default and may move to another major.
  cudaPackagesFor = pkgs:
    let set = pkgs."cudaPackages_${ctranslate2CudaMajor}"; in
    if set.cudaMajorVersion != ctranslate2CudaMajor
    then throw "cudaPackages_${ctranslate2CudaMajor} is CUDA ${set.cudaMajorVersion}; CTranslate2 needs ${ctranslate2CudaMajor}"
    else set;

  # The CUDA runtime libraries a family's Python packages load but do not ship: for CTranslate2
  # (under faster-whisper) cuBLAS (libcublas + libcublasLt, one `lib` output). PyTorch's Linux
  # wheels (NeMo) depend on the nvidia-* wheels that poetry.lock already pins, so the nemo family
  # needs nothing more from nixpkgs.
  cudaRuntimeFor = cudaPackages: family:
    if family == "whisper" then [ (cudaPackages.libcublas.lib or cudaPackages.libcublas) ] else [ ];

  # Where the NVIDIA driver's libcuda.so.1 is at run time, for LD_LIBRARY_PATH. WHY: Nix's glibc
  # ignores /etc/ld.so.cache and the standard directories, so a Nix-built Python finds the driver
  # only through these. In images (`image = true`): /run/opengl-driver/lib (NixOS, nixpkgs' CUDA
  # convention: addDriverRunpath.driverLink) and the directories the NVIDIA container toolkit
  # mounts the driver into (/usr/lib64, /usr/lib/<multiarch>), which hold nothing else in these
  # images. On a host (`nix run`) only /run/opengl-driver/lib: a host's /usr/lib/<multiarch> also
  # holds its own glibc, which must never shadow Nix's (docs/NIX.md, "GPU at run time").
  driverLibraryPath = { system, driverLink, image }:
    let multiarch = if system == "aarch64-linux" then "aarch64-linux-gnu" else "x86_64-linux-gnu"; in
    [ "${driverLink}/lib" ] ++ (if image then [ "/usr/lib64" "/usr/lib/${multiarch}" ] else [ ]);

  # Names of the unfree packages the CUDA runtime consists of (for nixpkgs' allowUnfreePredicate).
  isCudaRuntime = pkg: b.match "(cuda_.*|libcu.*|cudnn.*|libnv.*)" (pkg.pname or "") != null;
}
