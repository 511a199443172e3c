"""Pinned weight files on local disk: where they live, whether they are intact, and how to fetch them.

Engines load from a local directory only (`$DALSTON_MODEL_DIR/<variant id>/<pinned file names>`), so
a start-up check against the variant's pins turns a missing or truncated file into one clear message
instead of a CTranslate2/NeMo traceback minutes later. `pull` is the only code that touches the
network: it fetches each file at the pinned revision, resumes a `.part` with an HTTP Range request,
hashes while streaming and renames into place only after size and sha256 match, so a directory never
holds a file that has not been verified.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dalston.spec import HF_BASE_URL, EngineSpec, WeightFile

if TYPE_CHECKING:
    import httpx

MODEL_DIR_ENV = "DALSTON_MODEL_DIR"
MIRROR_ENV = "DALSTON_WEIGHTS_MIRROR"
_CHUNK = 1 << 20


class WeightsError(RuntimeError):
    """Weights are missing, damaged, or could not be fetched; the message names each file and the fix."""


def weights_dir(spec: EngineSpec, model_dir: str | Path | None = None) -> Path:
    """`<model_dir>/<id>`, where model_dir defaults to `$DALSTON_MODEL_DIR`, then `container.model_cache`."""
    root = model_dir or os.environ.get(MODEL_DIR_ENV) or spec.container.model_cache
    return Path(root).expanduser() / spec.id


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _pin(wf: WeightFile) -> str:
    return f"{wf.size} bytes, sha256 {wf.sha256 or 'unpinned'}"


def _fix(spec: EngineSpec, directory: Path) -> str:
    where = f" --model-dir {directory.parent}" if directory.name == spec.id else ""
    return f"fix: dalston models pull {spec.id}{where}"


def file_problem(wf: WeightFile, path: Path, verify: bool) -> str | None:
    """Why `path` is not the pinned file (None when it is). sha256 only with `verify` and a pin."""
    if not path.is_file():
        return f"{path}: missing (expected {_pin(wf)})"
    size = path.stat().st_size
    if size != wf.size:
        return f"{path}: wrong size: expected {_pin(wf)}, found {size} bytes"
    if verify and wf.sha256 is not None:
        found = sha256_of(path)
        if found != wf.sha256:
            return f"{path}: wrong content: expected sha256 {wf.sha256}, found sha256 {found} ({size} bytes)"
    return None


def check_weights(spec: EngineSpec, directory: str | Path, verify: bool = False) -> None:
    """Raise WeightsError listing every pinned file that is absent, the wrong size or (verify) the wrong hash.

    Sizes are cheap and catch the usual failures (interrupted copy, wrong variant); `verify` re-hashes
    every byte, for start-up in environments that cannot be trusted. A file pinned with sha256 null
    (only loadable with allow_unpinned) is checked by size alone.
    """
    if spec.weights is None:
        return
    directory = Path(directory)
    problems = [] if directory.is_dir() else [f"{directory}: weights directory does not exist"]
    found = (file_problem(wf, directory / wf.name, verify) for wf in spec.weights.files)
    problems += [p for p in found if p]
    if problems:
        raise WeightsError(
            f"weights for {spec.id} ({spec.weights.repo}@{spec.weights.revision}) are not usable, "
            f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems) + f"\n{_fix(spec, directory)}")


def default_mirrors() -> list[str]:
    """`$DALSTON_WEIGHTS_MIRROR` (whitespace-separated base URLs, tried in order), else the upstream hub."""
    return os.environ.get(MIRROR_ENV, "").split() or [HF_BASE_URL]


class _Progress:
    """One file's progress on stderr: a redrawn bar on a terminal, a key=value line per attempt otherwise."""

    def __init__(self, name: str, total: int, enabled: bool, stream: TextIO | None = None) -> None:
        self.name, self.total, self.enabled, self.stream = name, total, enabled, stream or sys.stderr
        self.tty = enabled and self.stream.isatty()
        self.start = self.last = time.monotonic()
        self.done = 0

    def begin(self, url: str, offset: int) -> None:
        self.done, self.start = offset, time.monotonic()
        if self.enabled and not self.tty:
            print(f"weights_download file={self.name} bytes={self.total} resume_from={offset} url={url}",
                  file=self.stream, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.tty and (now - self.last >= 0.2 or self.done >= self.total):
            self.last = now
            frac = self.done / self.total
            rate = self.done / max(now - self.start, 1e-6) / 1e6
            self.stream.write(f"\r{self.name:<20.20} [{'#' * int(frac * 30):<30}] {frac:6.1%} "
                              f"{self.done / 1e6:8.1f}/{self.total / 1e6:.1f} MB {rate:6.1f} MB/s")
            self.stream.flush()

    def end(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")
            self.stream.flush()


class _Retry(Exception):
    """A transient failure (connection cut, 5xx): try again, resuming from the `.part`."""


def _fetch(client: httpx.Client, url: str, part: Path, wf: WeightFile, progress: _Progress) -> str:
    """Bring `part` to the full file from `url`, resuming when it exists; return its sha256."""
    import httpx

    digest = hashlib.sha256()
    offset = part.stat().st_size if part.exists() else 0
    if offset > wf.size:
        part.unlink()
        offset = 0
    if offset:  # the bytes already on disk are part of the hash
        with part.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
    if offset == wf.size:
        return digest.hexdigest()
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with client.stream("GET", url, headers=headers) as response:
            status = response.status_code
            if offset and status == 206 and response.headers.get("content-range", "").startswith(f"bytes {offset}-"):
                mode = "ab"
            elif status == 200:  # a fresh download, or a server that ignores Range: start over
                digest, offset, mode = hashlib.sha256(), 0, "wb"
            elif status == 416:  # the .part does not fit the remote file: discard it
                part.unlink(missing_ok=True)
                raise _Retry("HTTP 416 for the partial download; restarting")
            elif status >= 500 or status == 429:
                raise _Retry(f"HTTP {status}")
            else:
                raise WeightsError(f"{url}: HTTP {status}")
            progress.begin(url, offset)
            with part.open(mode) as out:
                for chunk in response.iter_bytes(_CHUNK):
                    offset += len(chunk)
                    if offset > wf.size:
                        break
                    digest.update(chunk)
                    out.write(chunk)
                    progress.update(len(chunk))
    except httpx.TransportError as exc:  # includes a body cut short: the .part keeps what arrived
        raise _Retry(f"{type(exc).__name__}: {exc}") from None
    finally:
        progress.end()
    if offset > wf.size:
        part.unlink(missing_ok=True)
        raise WeightsError(f"{url}: the server sent more than the pinned {wf.size} bytes; the download was deleted")
    if offset < wf.size:  # a clean close before the end (no Content-Length): resume from what arrived
        raise _Retry(f"connection closed after {offset} of {wf.size} bytes")
    return digest.hexdigest()


def _download(client: httpx.Client, url: str, part: Path, wf: WeightFile, progress: bool, retries: int) -> str:
    """`_fetch` with retries on transient failures, then the sha256 check; the verified hash or WeightsError."""
    reason = ""
    for attempt in range(1, retries + 2):
        try:
            found = _fetch(client, url, part, wf, _Progress(wf.name, wf.size, progress))
        except _Retry as exc:
            reason = f"{exc} (attempt {attempt}/{retries + 1})"
            if attempt <= retries:
                time.sleep(min(attempt, 5))  # back off a little: a restarting mirror, a flaky link
            continue
        if wf.sha256 is not None and found != wf.sha256:
            part.unlink(missing_ok=True)
            raise WeightsError(f"{url}: sha256 mismatch: expected {wf.sha256}, got {found} ({wf.size} bytes); "
                               f"the download was deleted")
        return found
    raise WeightsError(f"{url}: {reason}")


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One pull per directory at a time: two writers appending to one `.part` would corrupt it."""
    with (directory / ".dalston-pull.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def pull(spec: EngineSpec, dest_dir: str | Path | None = None, *, mirrors: Sequence[str] | None = None,
         progress: bool = True, timeout: float = 60.0, retries: int = 3) -> Path:
    """Download every pinned file of `spec` into `dest_dir` (default `weights_dir(spec)`) and verify it.

    Each base URL in `mirrors` (default `default_mirrors()`) serves `<repo>/resolve/<revision>/<file>`;
    they are tried in order per file. A transient failure is retried `retries` times, resuming the
    `.part` with HTTP Range. Files already present with the pinned size and sha256 are kept. A file
    whose hash does not match is deleted and reported; nothing unverified is ever renamed into place.
    """
    try:
        import httpx
    except ImportError:
        raise WeightsError("downloading weights needs httpx: pip install 'dalston[server]'") from None

    directory = Path(dest_dir) if dest_dir is not None else weights_dir(spec)
    if spec.weights is None:
        return directory
    weights = spec.weights
    bases = list(mirrors) if mirrors else default_mirrors()
    directory.mkdir(parents=True, exist_ok=True)
    limits = httpx.Timeout(timeout, connect=min(timeout, 30.0))
    with _locked(directory), httpx.Client(follow_redirects=True, timeout=limits) as client:
        for wf in weights.files:
            target = directory / wf.name
            if target.exists() and file_problem(wf, target, verify=True) is None:
                if progress:
                    print(f"weights_present file={target}", file=sys.stderr)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            failures: list[str] = []
            for base in bases:
                try:
                    found = _download(client, weights.url_for(wf, base), part, wf, progress, retries)
                except WeightsError as exc:
                    failures.append(str(exc))
                    continue
                if target.is_symlink():
                    target.unlink()
                os.replace(part, target)
                if progress or wf.sha256 is None:
                    note = "" if wf.sha256 else " unpinned=true (pin this sha256 in the variant file)"
                    print(f"weights_ok file={target} bytes={wf.size} sha256={found}{note}", file=sys.stderr)
                break
            else:
                raise WeightsError(
                    f"could not fetch {spec.id} weight file {target} (expected {_pin(wf)}) from "
                    f"{weights.repo}@{weights.revision}:\n" + "\n".join(f"  {f}" for f in failures) +
                    f"\nfix: check the network, or give a mirror (--mirror URL or ${MIRROR_ENV}) serving "
                    f"<repo>/resolve/<revision>/<file>; a partial download is kept and resumed next time")
    return directory
