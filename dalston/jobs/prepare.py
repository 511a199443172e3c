"""The prepare stage of a job: decode the upload and store it as chunks cut at silences, streaming.

WHY streaming: decoding a whole file first holds 4 bytes per sample (a two-hour recording is
~460 MB at 16 kHz float32, and twice that while it is concatenated). Here the decoder
(`dalston.audio.AudioReader`, FFmpeg's libraries through PyAV) hands over small blocks, the
chunker (`dalston.jobs.chunking.cut_stream`) holds one chunk's span plus a 0.2 s look-ahead, and
each chunk is written as 16-bit WAV the moment its cut is decided, a second at a time. Memory is
bounded by the chunk length (`--chunk-seconds`), not by the file. The cuts are exactly those the
whole-file planner makes when the container declares the duration exactly (WAV; an estimate from
other formats only moves where the last chunks are balanced).

An input over the duration limit, or one that stops decoding halfway, raises `AudioError` after
some chunks are stored; the caller fails the job and the `finished` handler deletes them.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dalston.audio import AudioReader, write_wav
from dalston.jobs import model as m
from dalston.jobs.chunking import cut_stream
from dalston.jobs.storage import Storage

log = logging.getLogger("dalston.jobs")


def prepare_chunks(storage: Storage, job_id: str, *, max_audio_seconds: float,
                   chunk_seconds: float) -> list[dict[str, Any]]:
    """Decode `jobs/<id>/input`, store `jobs/<id>/chunks/NNNN.wav` and the manifest; returns the manifest."""
    manifest: list[dict[str, Any]] = []
    with storage.local_copy(m.input_key(job_id)) as path:
        reader = AudioReader(path, max_seconds=max_audio_seconds)
        for chunk, samples in cut_stream(reader.blocks(), chunk_seconds, total_seconds=lambda: reader.declared_seconds):
            with storage.open_writer(m.chunk_key(job_id, chunk.index)) as out:
                write_wav(out, samples)
            manifest.append(chunk.to_json())
    storage.put(m.manifest_key(job_id), json.dumps(manifest).encode())
    log.debug("job_chunks_stored job_id=%s chunks=%d codec=%s source_rate=%d", job_id, len(manifest), reader.codec,
              reader.source_sample_rate)
    return manifest
