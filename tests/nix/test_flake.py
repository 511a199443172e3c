"""The flake, evaluated for real by Nix with STAND-IN inputs (tests/nix/standins/).

nixpkgs, nix2container and poetry2nix cannot be fetched here, so every flake command below runs with
`--override-input` pointing at small local stand-in flakes that have the real attribute names and
function arguments, check how the flake wires them (unknown arguments, OCI config shape, extras
present in the lock, CUDA allowed as unfree) and record what they were given. What this proves:
the flake evaluates, `nix flake check --no-build` passes, outputs track the variant files with no
Nix edit, and images are wired as specified (layer order, env, labels). What it cannot prove: that
the real nixpkgs/poetry2nix/nix2container build succeeds (docs/NIX.md: the networked build).

Each test works in a temporary git copy of the repository (flakes see only tracked files).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dalston.catalog import Catalog
from tests.nix.nixutil import SYSTEMS, flake, flake_json, git, git_copy, run

pytestmark = pytest.mark.nix

SYSTEM = "x86_64-linux"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return git_copy(tmp_path_factory.mktemp("flake") / "repo")


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    """A copy this test may change (adding and removing variant files)."""
    return git_copy(tmp_path / "repo")


def package_names(repo: Path, system: str = SYSTEM) -> set[str]:
    return set(flake_json(repo, "eval", f".#packages.{system}", "--apply", "builtins.attrNames"))


def catalog_of(repo: Path) -> Catalog:
    return Catalog.load(repo / "engines")


def standin(repo: Path, attr: str) -> Any:
    return flake_json(repo, "eval", f".#packages.{SYSTEM}.{attr}.standin")


# --- outputs follow the variant files -------------------------------------------------------------

def test_every_variant_has_three_packages_per_system(repo: Path) -> None:
    ids = set(catalog_of(repo).engines)
    assert len(ids) >= 9
    expected = {f"{i}{suffix}" for i in ids for suffix in ("", "-image", "-weights")} | {"default"}
    for system in SYSTEMS:
        assert package_names(repo, system) == expected


def test_adding_and_removing_a_variant_file_adds_and_removes_its_outputs(scratch: Path) -> None:
    """Copy a variant under a new id, commit, and its three outputs appear; delete it, they go."""
    before = package_names(scratch)
    source = scratch / "engines" / "transcribe" / "whisper" / "variants" / "base.yaml"
    added = source.with_name("tiny.yaml")
    added.write_text(source.read_text().replace("id: whisper-base", "id: whisper-tiny"))
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "add whisper-tiny")
    assert "whisper-tiny" in catalog_of(scratch).engines  # the Python catalog accepts the file as is
    assert package_names(scratch) - before == {"whisper-tiny", "whisper-tiny-image", "whisper-tiny-weights"}
    assert flake(scratch, "flake", "check", "--no-build").returncode == 0

    added.unlink()
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "remove whisper-tiny")
    assert package_names(scratch) == before
    assert not (scratch / "flake.nix").read_text().count("whisper-tiny")


def test_scaffolded_family_appears_with_no_nix_edit(scratch: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "dalston.tools.scaffold_engine", "--root", str(scratch / "engines"),
         "--stage", "transcribe", "--variants", "small,large", "my-asr"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "scaffold my-asr")
    names = package_names(scratch)
    for engine_id in ("my-asr-small", "my-asr-large"):
        assert {engine_id, f"{engine_id}-image", f"{engine_id}-weights"} <= names
    shown = flake_json(scratch, "flake", "show")
    assert shown["packages"][SYSTEM]["my-asr-small-image"]["type"] == "derivation"
    assert "my-asr-small" in shown["apps"][SYSTEM]


def test_an_id_that_would_shadow_another_output_is_refused(scratch: Path) -> None:
    family = scratch / "engines" / "prepare" / "whisper-base-image"
    family.mkdir()
    text = (scratch / "engines" / "prepare" / "audio-prepare" / "engine.yaml").read_text()
    (family / "engine.yaml").write_text(text.replace("id: audio-prepare", "id: whisper-base-image"))
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "clash")
    proc = flake(scratch, "eval", f".#packages.{SYSTEM}", "--apply", "builtins.attrNames")
    assert proc.returncode != 0
    assert "flake output 'whisper-base-image' is claimed by" in proc.stderr, proc.stderr
    assert "engines/prepare/whisper-base-image/engine.yaml" in proc.stderr


# --- the whole flake evaluates ------------------------------------------------------------------------

def test_flake_show_and_check_no_build_pass(repo: Path) -> None:
    shown = flake_json(repo, "flake", "show")
    for system in SYSTEMS:
        assert set(shown["checks"][system]) == {"pytest", "validate-engines", "catalog", "yaml-differential"}
        assert {"default", "nemo"} <= set(shown["devShells"][system])
        assert shown["formatter"][system]["type"] == "derivation"
        assert shown["apps"][system]["whisper-base-copy-to-docker-daemon"]["type"] == "app"
        assert shown["apps"][system]["whisper-base-copy-to-registry"]["type"] == "app"
        assert shown["packages"][system]["default"]["name"] == "dalston-0.1.0"
    proc = flake(repo, "flake", "check", "--no-build")
    assert proc.returncode == 0, proc.stderr
    # What a user sees: no warning from the flake itself (Nix 2.8 warns about unknown outputs such
    # as `lib`; newer Nix also about apps without meta.description, checked below).
    warnings = [line for line in proc.stderr.splitlines()
                if line.startswith("warning:") and "not writing modified lock file" not in line]
    assert warnings == [], warnings
    descriptions = flake_json(repo, "eval", f".#apps.{SYSTEM}", "--apply",
                              "apps: builtins.mapAttrs (_: a: [ (builtins.attrNames a) (a.meta.description or \"\") ]) apps")
    for name, (keys, description) in descriptions.items():
        assert keys == ["meta", "program", "type"] and description, name


def test_lock_pins_real_revisions_and_follows(repo: Path) -> None:
    """flake.lock is the hand-written one (no network here): full revs + narHashes, nixpkgs followed."""
    lock = json.loads((repo / "flake.lock").read_text())
    nodes = lock["nodes"]
    assert nodes["root"]["inputs"] == {"nix2container": "nix2container", "nixpkgs": "nixpkgs", "poetry2nix": "poetry2nix"}
    for name in ("nixpkgs", "nix2container", "poetry2nix", "flake-utils", "systems", "treefmt-nix", "nix-github-actions"):
        locked = nodes[name]["locked"]
        assert locked["type"] == "github" and len(locked["rev"]) == 40 and locked["narHash"].startswith("sha256-")
    assert nodes["nixpkgs"]["original"]["ref"].startswith("nixos-")
    assert nodes["nix2container"]["inputs"] == {"nixpkgs": ["nixpkgs"]}
    assert nodes["poetry2nix"]["inputs"]["nixpkgs"] == ["nixpkgs"]
    # Nix reads the lock: overriding the three inputs updates exactly those three (the stand-in
    # poetry2nix has none of the real one's own inputs, so those are reported removed).
    proc = flake(repo, "flake", "metadata")
    assert proc.returncode == 0, proc.stderr
    changed = [line for line in proc.stderr.splitlines() if line.startswith("• Updated input")]
    assert sorted(changed) == sorted(f"• Updated input '{n}':" for n in ("nixpkgs", "nix2container", "poetry2nix"))


# --- images and packages are wired as specified ----------------------------------------------------------

def test_images_layers_env_and_labels(repo: Path) -> None:
    catalog = catalog_of(repo)
    images = flake_json(
        repo, "eval", f".#packages.{SYSTEM}", "--apply",
        "ps: builtins.mapAttrs (_: p: p.standin) (builtins.removeAttrs ps "
        "(builtins.filter (n: builtins.match \".*-image\" n == null) (builtins.attrNames ps)))",
    )
    paths = flake_json(
        repo, "eval", f".#packages.{SYSTEM}", "--apply",
        "ps: builtins.mapAttrs (_: p: { weights = p.weights.outPath; engines = p.engines.outPath; }) "
        "(builtins.removeAttrs ps ([ \"default\" ] ++ builtins.filter (n: builtins.match \".*-(image|weights)\" n != null) (builtins.attrNames ps)))",
    )
    deps_digest: dict[str, str] = {}
    for engine_id, entry in catalog.engines.items():
        image = images[f"{engine_id}-image"]
        spec = entry.spec
        family = "nemo" if spec.runtime is not None and spec.runtime.kind == "nemo" else "whisper"
        assert image["imageName"] == f"dalston-{engine_id}" and image["imageTag"] == spec.version

        # nix2container (as the stand-in models it: direct-layer dedupe, config-closure layer):
        # every store path in exactly one layer, and no extra layer for what the config names.
        layers = image["layers"]
        gpu = spec.container.gpu != "none" and family == "whisper"
        assert not any(layer["customization"] for layer in layers), f"{engine_id}: the config names a path no layer holds"
        assert len(layers) == (4 if gpu else 3), engine_id
        everywhere = [path for layer in layers for path in layer["paths"]]
        assert len(everywhere) == len(set(everywhere)), f"{engine_id}: a store path is in two layers"
        deps, app, weights = layers[0], layers[-2], layers[-1]
        assert deps["deps"][0].startswith("python3-3.12") and "python3-3.12.10" in deps["names"]
        assert deps_digest.setdefault(family, deps["digest"]) == deps["digest"], f"{engine_id}: deps layer differs within the {family} family"
        if gpu:  # cuBLAS of CUDA 12, what CTranslate2 4.8.5 dlopens (tests/nix/test_gpu_runtime.py)
            assert layers[1]["names"] == ["libcublas-12.8.4.1-lib"]
        assert app["deps"] == ["dalston-0.1.0", "python3.12-dalston-env", "dalston-entrypoint", f"{engine_id}-engines"]
        assert app["copyToRoot"] == ["dalston-rootfs"] and [p["mode"] for p in app["perms"]] == ["1777", "1777"]
        assert {"dalston-0.1.0", "dalston-rootfs", f"{engine_id}-engines"} <= set(app["names"])
        assert (weights["deps"], weights["copyToRoot"], weights["perms"]) == ([f"{engine_id}-weights"], [], [])
        assert f"{engine_id}-weights" in weights["names"]
        if family == "whisper":
            assert not any("torch" in d or "nemo" in d for d in deps["names"]), "Whisper images never carry torch or NeMo"
        else:
            assert any("torch" in d for d in deps["names"]) and any("nemo-toolkit" in d for d in deps["names"])

        config = image["config"]
        env = dict(item.split("=", 1) for item in config["Env"])
        assert env["ENGINE_ID"] == engine_id
        assert env["DALSTON_MODEL_DIR"] == paths[engine_id]["weights"]
        assert env["DALSTON_ENGINES_DIR"] == paths[engine_id]["engines"] + "/engines"
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
        # GPU images (both families) find the driver's libcuda.so.1 where NixOS and the NVIDIA
        # container toolkit put it; whisper's also find cuBLAS.
        uses_gpu = spec.container.gpu != "none"
        assert ("LD_LIBRARY_PATH" in env) == uses_gpu and ("NVIDIA_VISIBLE_DEVICES" in env) == uses_gpu
        if uses_gpu:
            path = env["LD_LIBRARY_PATH"].split(":")
            assert path[-3:] == ["/run/opengl-driver/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu"]
            assert [p.endswith("-libcublas-12.8.4.1-lib/lib") for p in path[:-3]] == ([True] if gpu else [])
            assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"
        assert config["ExposedPorts"] == {"8000/tcp": {}}
        assert config["Entrypoint"][0].endswith("/bin/dalston-entrypoint")
        assert config["Cmd"] == ["--host", "0.0.0.0", "--port", "8000"]

        labels = config["Labels"]
        assert labels["ai.dalston.engine.id"] == engine_id
        assert labels["org.opencontainers.image.version"] == spec.version
        assert labels["ai.dalston.hardware.min_vram_gb"] == f"{spec.hardware.min_vram_gb:g}"
        assert labels["ai.dalston.hardware.recommended_gpu"] == ",".join(spec.hardware.recommended_gpu)
        assert labels["ai.dalston.hardware.supports_cpu"] == str(spec.hardware.supports_cpu).lower()
        if spec.hf_compat is not None:
            assert labels["ai.dalston.model.source"] == spec.hf_compat.source_model
            assert labels["ai.dalston.model.license"] == spec.hf_compat.license
        else:
            assert "ai.dalston.model.source" not in labels
    assert set(deps_digest) == {"whisper", "nemo"}


def test_variant_package_bakes_in_its_weights_and_engines(repo: Path) -> None:
    got = flake_json(
        repo, "eval", f".#packages.{SYSTEM}.whisper-base", "--apply",
        "p: { script = p.buildCommand; weights = p.weights.outPath; engines = p.engines.outPath; "
        "main = p.meta.mainProgram; app = p.app.standin; }",
    )
    script = got["script"]
    assert 'makeWrapper ' in script and '--add-flags "serve whisper-base"' in script
    assert f"--set-default DALSTON_MODEL_DIR {got['weights']}" in script
    assert f"--set-default DALSTON_ENGINES_DIR {got['engines']}/engines" in script
    assert got["main"] == "dalston-whisper-base"
    # gpu: optional -> `nix run` also finds the host's driver (NixOS location) and cuBLAS.
    suffix = script.split("--suffix LD_LIBRARY_PATH : ")[1].split()[0].split(":")
    assert suffix[-1] == "/run/opengl-driver/lib" and suffix[0].endswith("-libcublas-12.8.4.1-lib/lib")
    assert got["app"]["extras"] == ["server", "whisper"] and got["app"]["preferWheels"] is True


def test_mirrors_change_urls_not_store_paths(repo: Path) -> None:
    got = flake_json(
        repo, "eval", f".#legacyPackages.{SYSTEM}", "--apply",
        "lp: let m = (lp.withMirrors [ \"file:///srv/models\" ]).whisper-base-weights; in "
        "{ out = m.outPath; urls = map (t: t.url) m.targets; }",
    )
    upstream = flake_json(repo, "eval", f".#packages.{SYSTEM}.whisper-base-weights", "--apply",
                          "w: { out = w.outPath; urls = map (t: t.url) w.targets; }")
    assert got["out"] == upstream["out"]
    spec = catalog_of(repo).get("whisper-base").spec
    base = f"{spec.weights.repo}/resolve/{spec.weights.revision}"
    assert sorted(got["urls"]) == sorted(f"file:///srv/models/{base}/{f.name}" for f in spec.weights.files)
    assert sorted(upstream["urls"]) == sorted(f"https://huggingface.co/{base}/{f.name}" for f in spec.weights.files)


# --- what builds offline, builds: the engines tree the wrapper and image point at ----------------------

def test_engines_tree_builds_and_is_a_one_engine_catalog(repo: Path) -> None:
    proc = flake(repo, "build", "--no-link", "--json", f".#packages.{SYSTEM}.whisper-base.engines")
    assert proc.returncode == 0, proc.stderr
    out = Path(json.loads(proc.stdout)[0]["outputs"]["out"])
    catalog = Catalog.load(out / "engines")
    assert list(catalog.engines) == ["whisper-base"]
    assert catalog.aliases == {"fast": "whisper-base"}
    entry = catalog.get("whisper-base")
    assert entry.engine_py.resolve().read_bytes() == (repo / "engines/transcribe/whisper/engine.py").read_bytes()
    assert entry.spec == catalog_of(repo).get("whisper-base").spec
    validate = subprocess.run(
        [sys.executable, "-m", "dalston.tools.validate_engine", "--all", "--root", str(out / "engines")],
        capture_output=True, text=True, timeout=120,
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr


def test_weights_of_a_variant_without_weights_is_an_empty_directory(repo: Path) -> None:
    proc = flake(repo, "build", "--no-link", "--json", f".#packages.{SYSTEM}.audio-prepare-weights")
    assert proc.returncode == 0, proc.stderr
    out = Path(json.loads(proc.stdout)[0]["outputs"]["out"])
    assert [p.name for p in out.iterdir()] == ["audio-prepare"]
    assert list((out / "audio-prepare").iterdir()) == []


def test_pyproject_view_for_poetry2nix_is_current_and_complete(repo: Path) -> None:
    """nix/pyproject.poetry2nix.toml == what nix/lib/pep621.nix derives, and says what packaging reads."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    def same_spec(poetry_version: str, req: Requirement) -> bool:
        return poetry_version == "*" if not req.specifier else SpecifierSet(poetry_version) == req.specifier

    rendered = run(["nix", "eval", "--raw", "-f", "nix/pyproject.poetry2nix.nix"], cwd=repo)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout == (repo / "nix" / "pyproject.poetry2nix.toml").read_text()

    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    poetry = tomllib.loads(rendered.stdout)["tool"]["poetry"]
    assert (poetry["name"], poetry["version"]) == (project["name"], project["version"])
    deps = poetry["dependencies"]
    assert deps.pop("python") == project["requires-python"]
    for text in project["dependencies"]:
        req = Requirement(text)
        assert same_spec(deps[req.name]["version"], req) and "optional" not in deps[req.name]
    for extra, texts in project["optional-dependencies"].items():
        reqs = [Requirement(t) for t in texts]
        assert poetry["extras"][extra] == [r.name for r in reqs]
        for r in reqs:
            assert deps[r.name]["optional"] is True
            assert sorted(deps[r.name].get("extras", [])) == sorted(r.extras)
            assert same_spec(deps[r.name]["version"], r)


def test_stale_pyproject_view_fails_evaluation(scratch: Path) -> None:
    pyproject = scratch / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('"pyyaml (>=6.0,<7)",', '"pyyaml (>=6.0,<7)",\n    "rich (>=13)",'))
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "-m", "new dependency")
    proc = flake(scratch, "eval", f".#packages.{SYSTEM}.default.name")
    assert proc.returncode != 0
    assert "nix/pyproject.poetry2nix.toml is missing or stale" in proc.stderr, proc.stderr
