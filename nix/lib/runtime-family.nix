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

  # The CUDA runtime libraries a family's Python packages load but do not ship. CTranslate2 (under
  # faster-whisper) dlopens libcudart/libcublas/libcudnn from the library path; PyTorch's Linux
  # wheels (NeMo) depend on the nvidia-* wheels that poetry.lock already pins, so the nemo family
  # needs nothing more from nixpkgs.
  cudaRuntimeFor = cudaPackages: family:
    if family == "whisper"
    then map (p: p.lib or p) [ cudaPackages.cuda_cudart cudaPackages.libcublas cudaPackages.cudnn ]
    else [ ];

  # Names of the unfree packages the CUDA runtime consists of (for nixpkgs' allowUnfreePredicate).
  isCudaRuntime = pkg: b.match "(cuda_.*|libcu.*|cudnn.*|libnv.*)" (pkg.pname or "") != null;
}
