"""Audio input: any common container/codec to 16 kHz mono float32, with PyAV (FFmpeg's decoders).

This is the prepare stage's job and every engine's input path: the server, `dalston transcribe` and
the audio-prepare engine all call `decode_audio`. Decoding stops as soon as the audio exceeds the
variant's `capabilities.max_audio_duration`, so an over-long upload costs a bounded amount of work
and memory. Every failure is an `AudioError` with a stable `code` the server maps to HTTP 400/413.
"""

from __future__ import annotations

import io
import math
import os
import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

SAMPLE_RATE = 16000


class AudioError(ValueError):
    """Input that cannot become audio.

    `code`: empty_file, invalid_audio, no_audio_stream, truncated_audio, audio_too_long.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    source_sample_rate: int
    source_channels: int
    codec: str
    container: str

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    def report(self) -> dict[str, object]:
        """What the prepare stage reports about an input."""
        return {"duration": round(self.duration, 3), "sample_rate": SAMPLE_RATE, "channels": 1,
                "source_sample_rate": self.source_sample_rate, "source_channels": self.source_channels,
                "codec": self.codec, "container": self.container}


AudioSource = bytes | str | Path | BinaryIO


def decode_audio(source: AudioSource, *, max_seconds: float | None = None) -> DecodedAudio:
    """Decode the first audio stream of `source` (bytes, a path or a binary file object), all of it."""
    reader = AudioReader(source, max_seconds=max_seconds)
    chunks = list(reader.blocks())
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    return DecodedAudio(samples, reader.source_sample_rate, reader.source_channels, reader.codec, reader.container)


class AudioReader:
    """Decode incrementally: `blocks()` yields 16 kHz mono float32 arrays of a few thousand samples.

    WHY: the job prepare stage cuts files of hours; holding a whole decoded file costs 4 bytes per
    sample (a 2 h recording is ~460 MB). Reading block by block lets it keep one chunk and a
    look-ahead in memory (`dalston.jobs.chunking.cut_stream`). The checks and errors are the same
    as `decode_audio`'s (which is this, concatenated); they are raised while iterating, and the
    source facts (`source_sample_rate`, `codec`, `declared_seconds`, ...) are set once the first block is out.
    """

    def __init__(self, source: AudioSource, *, max_seconds: float | None = None) -> None:
        self.source, self.max_seconds = source, max_seconds
        self.source_sample_rate, self.source_channels, self.codec, self.container = 0, 0, "", ""
        self.samples_read = 0
        self.declared_seconds: float | None = None  # what the container says (an estimate for some formats)

    def blocks(self) -> Iterator[np.ndarray]:
        import av  # PyAV: the whisper extra's decoder; imported here so the module loads without it

        handle = _open_handle(self.source)
        _check_wav_complete(handle)
        cap = math.inf if self.max_seconds is None else float(self.max_seconds)  # seconds
        limit = cap * SAMPLE_RATE  # samples (inf: no limit)
        try:
            with av.open(handle, mode="r", metadata_errors="ignore") as container:
                if not container.streams:
                    raise AudioError("invalid_audio", f"the file is not a recognised audio or video container "
                                                      f"(probed as '{container.format.name}' with no streams)")
                if not container.streams.audio:
                    raise AudioError("no_audio_stream", "the file has no audio stream (is it a video without sound?)")
                stream = container.streams.audio[0]
                declared = self.declared_seconds = _declared_seconds(container, stream)
                if declared is not None and declared > cap + 1.0:
                    raise _too_long(declared, cap)
                ctx = stream.codec_context
                self.source_sample_rate = int(ctx.sample_rate or 0)
                self.source_channels = int(getattr(ctx, "channels", 0) or ctx.layout.nb_channels)
                self.codec, self.container = ctx.name, container.format.name
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                for frame in _frames(container, stream):
                    for out in resampler.resample(frame):
                        yield self._counted(out.to_ndarray().reshape(-1), limit, cap)
                for out in resampler.resample(None):
                    yield self._counted(out.to_ndarray().reshape(-1), limit, cap)
        except AudioError:
            raise
        except (av.FFmpegError, ValueError, OSError, EOFError) as exc:  # FFmpegError: InvalidDataError etc.
            raise AudioError("invalid_audio", f"the file is not decodable audio ({_reason(exc)})") from None
        if self.samples_read == 0:
            raise AudioError("invalid_audio", "the file's audio stream holds no decodable samples")

    def _counted(self, block: np.ndarray, limit: float, cap: float) -> np.ndarray:
        self.samples_read += len(block)
        if self.samples_read > limit:
            raise _too_long(self.samples_read / SAMPLE_RATE, cap, at_least=True)
        return block.astype(np.float32, copy=False)


def _open_handle(source: AudioSource) -> str | BinaryIO:
    """A path string or a seekable binary file for PyAV; empty and missing inputs are AudioErrors."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty_file", "the uploaded file is empty")
        return io.BytesIO(bytes(source))
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioError("invalid_audio", f"{path}: no such file")
        if path.stat().st_size == 0:
            raise AudioError("empty_file", f"{path}: the file is empty")
        return str(path)
    source.seek(0, io.SEEK_END)
    if source.tell() == 0:
        raise AudioError("empty_file", "the uploaded file is empty")
    source.seek(0)
    return source


def _check_wav_complete(handle: str | BinaryIO) -> None:
    """A RIFF/WAVE header states its data size exactly; fewer bytes present means the upload was cut short.

    FFmpeg decodes whatever is there without complaint, which would silently transcribe part of a file.
    Streamed WAVs that do not know their size (0 or 0xFFFFFFFF) are accepted as they are.
    """
    if isinstance(handle, str):
        with open(handle, "rb") as f:
            head, total = f.read(4096), os.fstat(f.fileno()).st_size
    else:
        head = handle.read(4096)
        total = handle.seek(0, io.SEEK_END)
        handle.seek(0)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return
    offset = 12
    while offset + 8 <= len(head):
        chunk_id, size = head[offset:offset + 4], struct.unpack("<I", head[offset + 4:offset + 8])[0]
        if chunk_id == b"data":
            if size not in (0, 0xFFFFFFFF) and offset + 8 + size > total:
                present = total - offset - 8
                raise AudioError("truncated_audio", f"the WAV file is truncated: its header declares {size} bytes of "
                                                    f"audio data but only {present} are present; upload the complete file")
            return
        offset += 8 + size + (size & 1)


def _declared_seconds(container: Any, stream: Any) -> float | None:
    """The duration the container declares (exact for WAV, an estimate for some compressed formats)."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def _frames(container: Any, stream: Any) -> Iterator[Any]:  # PyAV objects (the library is untyped)
    """Decoded frames; a corrupt packet mid-file ends decoding only if no audio came before it."""
    import av

    decoded_any = False
    try:
        for packet in container.demux(stream):
            for frame in packet.decode():
                decoded_any = True
                yield frame
    except av.FFmpegError:
        if not decoded_any:
            raise


def _too_long(seconds: float, limit: float, at_least: bool = False) -> AudioError:
    more = "more than " if at_least else ""
    return AudioError("audio_too_long", f"audio is {more}{seconds:.1f} s long; this engine accepts at most {limit:g} s "
                                        f"(capabilities.max_audio_duration): split it or use a variant with a higher limit")


def _reason(exc: Exception) -> str:
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text.split(";")[0][:200]


def pcm16_to_float32(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM -> float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def wav_bytes(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> bytes:
    """16-bit PCM mono WAV of float samples: the prepare stage's `response_format=wav` and stored job
    chunks (half the size of float32, lossless for speech)."""
    buffer = io.BytesIO()
    write_wav(buffer, samples, sample_rate)
    return buffer.getvalue()


def write_wav(out: BinaryIO, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write `samples` as a 16-bit PCM mono WAV to `out`, converting a second at a time (no full-size copies)."""
    step = sample_rate
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.setnframes(len(samples))
        for i in range(0, len(samples), step):
            part = samples[i:i + step]
            wav.writeframesraw((np.clip(part, -1.0, 32767 / 32768) * 32768).astype("<i2").tobytes())
