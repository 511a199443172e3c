"""The job prepare stage streams: a 25-minute recording is decoded and cut with memory bounded by the
chunk length, not by the file, and the chunks still cover the audio exactly, cut in the pauses.

The recording is real speech (two_cities, beckett) joined by 1.5 s pauses, written as a 16 kHz
16-bit WAV in the test. Memory is measured in a separate Python process running the real
`dalston.jobs.prepare.prepare_chunks` on a real `DirectoryStorage`: the traced peak of Python/numpy
allocations (tracemalloc) and the growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs
once the libraries are loaded). The same measurement of the whole-file decoder (`decode_audio`, what
prepare did before) is taken as the contrast, so the bound is shown to be one the old way fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from dalston.audio import decode_audio
from dalston.jobs import model as m
from tests.fixtures import assets

JOB = "job_" + "5" * 32
CHUNK_S = 60.0
PAUSE_S = 1.5
MINUTES = 25

_MEASURE = r"""
import json, sys, tracemalloc
from pathlib import Path
import av, numpy  # load the libraries (and their baseline memory) before the measurement
from dalston.audio import decode_audio
from dalston.jobs.prepare import prepare_chunks
from dalston.jobs.storage import DirectoryStorage

def peak_rss_kb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

mode, root, job, chunk_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
storage = DirectoryStorage(root)
Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
before = peak_rss_kb()
tracemalloc.start()
if mode == "stream":
    manifest = prepare_chunks(storage, job, max_audio_seconds=14400, chunk_seconds=chunk_s)
else:
    with storage.local_copy(f"jobs/{job}/input") as path:
        manifest = len(decode_audio(path).samples)
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(json.dumps({"traced_peak": traced, "rss_growth": (peak_rss_kb() - before) * 1024, "manifest": manifest}))
"""


def _measure(mode: str, root: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, mode, str(root), JOB, str(CHUNK_S)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]], int]:
    """storage root with jobs/<JOB>/input = ~25 min of speech and pauses; the pauses (sample ranges); total samples."""
    root = tmp_path_factory.mktemp("storage")
    path = root / m.input_key(JOB)
    path.parent.mkdir(parents=True)
    clips = [decode_audio(assets.speech_clip(f"{n}.wav")).samples for n in ("two_cities", "beckett")]
    pcm = [(np.clip(c, -1.0, 32767 / 32768) * 32768).astype("<i2") for c in clips]
    pause = np.zeros(int(PAUSE_S * 16000), "<i2")
    pauses, total = [], 0
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        while total < MINUTES * 60 * 16000:
            for part in pcm:
                out.writeframes(part.tobytes())
                total += len(part)
                out.writeframes(pause.tobytes())
                pauses.append((total, total + len(pause)))
                total += len(pause)
    return root, pauses, total


def test_prepare_memory_is_bounded_by_the_chunk_not_the_file(long_recording) -> None:
    root, pauses, total = long_recording
    whole_float32 = total * 4  # what holding the decoded file costs: ~96 MB for 25 min
    chunk_float32 = int(CHUNK_S * 16000) * 4  # 3.84 MB

    streamed = _measure("stream", root)
    whole = _measure("whole", root)
    print(f"prepare_memory audio_s={total / 16000:.0f} file_float32_mb={whole_float32 / 1e6:.1f} "
          f"stream_traced_mb={streamed['traced_peak'] / 1e6:.1f} stream_rss_growth_mb={streamed['rss_growth'] / 1e6:.1f} "
          f"whole_traced_mb={whole['traced_peak'] / 1e6:.1f} whole_rss_growth_mb={whole['rss_growth'] / 1e6:.1f}")
    # the old way (decode everything, then cut) holds the file at least once: the measurement sees it
    assert whole["traced_peak"] > whole_float32 and whole["rss_growth"] > whole_float32, whole
    # streaming holds about one chunk (+ look-ahead, frame energies, one second of PCM being written)
    assert streamed["traced_peak"] < 2 * chunk_float32, streamed
    assert streamed["traced_peak"] < whole_float32 / 6, streamed
    assert streamed["rss_growth"] < whole_float32 / 3, streamed

    # the chunks cover the audio exactly: contiguous, nothing lost, each within the limit, cut in pauses
    manifest = streamed["manifest"]
    assert len(manifest) >= MINUTES  # at most 60 s each
    ends = []
    position = 0
    for i, chunk in enumerate(manifest):
        assert chunk["index"] == i
        with wave.open(str(root / m.chunk_key(JOB, i))) as wav:
            frames = wav.getnframes()
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        assert chunk["offset"] == pytest.approx(position / 16000, abs=1e-6)
        assert chunk["duration"] == pytest.approx(frames / 16000, abs=1e-6) and frames <= CHUNK_S * 16000
        position += frames
        ends.append(position)
    assert position == total
    assert sum(c["duration"] for c in manifest) == pytest.approx(total / 16000, abs=1e-3)
    # every cut is in a pause: one of the inserted silences, or one of the speakers' own (+-0.1 s far
    # below the speech level; chunking cuts at the pause nearest the chunk limit)
    with wave.open(str(root / m.input_key(JOB))) as source:
        signal = np.frombuffer(source.readframes(source.getnframes()), "<i2").astype(np.float32) / 32768
    loud = float(np.sqrt(np.mean(signal ** 2)))
    for cut in ends[:-1]:
        inserted = any(lo + 1600 <= cut <= hi - 1600 for lo, hi in pauses)
        around = signal[cut - 1600:cut + 1600]
        assert inserted or float(np.sqrt(np.mean(around ** 2))) < 0.25 * loud, f"cut at {cut / 16000:.2f} s is not in a pause"
    # and the stored PCM is the input's, sample for sample
    with wave.open(str(root / m.input_key(JOB))) as source:
        for i in range(len(manifest)):
            with wave.open(str(root / m.chunk_key(JOB, i))) as wav:
                assert wav.readframes(wav.getnframes()) == source.readframes(wav.getnframes()), f"chunk {i} differs"
    assert json.loads((root / m.manifest_key(JOB)).read_text()) == manifest


def test_an_over_long_or_truncated_input_fails_before_any_chunk(long_recording, tmp_path) -> None:
    from dalston.audio import AudioError
    from dalston.jobs.prepare import prepare_chunks
    from dalston.jobs.storage import DirectoryStorage

    root, _, _ = long_recording
    cases = {"truncated_audio": (root / m.input_key(JOB)).read_bytes()[:44 + 16000 * 2 * 200],  # header: 25 min
             "audio_too_long": None}  # the whole file, over a 600 s limit
    for code, data in cases.items():
        storage = DirectoryStorage(tmp_path / code)
        target = storage.root / m.input_key(JOB)
        target.parent.mkdir(parents=True)
        if data is None:
            target.symlink_to(root / m.input_key(JOB))
        else:
            target.write_bytes(data)
        with pytest.raises(AudioError) as error:
            prepare_chunks(storage, JOB, max_audio_seconds=600, chunk_seconds=CHUNK_S)
        assert error.value.code == code, error.value.message
        assert not (storage.root / "jobs" / JOB / "chunks").exists()  # refused from the header, before decoding
