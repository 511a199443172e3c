"""G.711 µ-law / A-law (ITU-T G.711) to float32: the `audio/pcmu` and `audio/pcma` telephony formats.

Lookup tables of the 256 code words, built once; decoding a frame is one numpy indexing step.
"""

from __future__ import annotations

import numpy as np


def _ulaw(code: int) -> int:
    u = ~code & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return -(magnitude - 0x84) if u & 0x80 else magnitude - 0x84


def _alaw(code: int) -> int:
    a = code ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    magnitude = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return magnitude if a & 0x80 else -magnitude


ULAW = np.array([_ulaw(c) for c in range(256)], dtype=np.float32) / 32768.0
ALAW = np.array([_alaw(c) for c in range(256)], dtype=np.float32) / 32768.0


def decode(data: bytes, encoding: str) -> np.ndarray:
    """`encoding` "pcmu" or "pcma": one byte per sample -> float32 in [-1, 1)."""
    table = ULAW if encoding == "pcmu" else ALAW
    return table[np.frombuffer(data, dtype=np.uint8)]
