"""audio-prepare: the prepare stage is the shared audio path (`dalston.audio.decode_audio`) as a service.

All behaviour lives in `PrepareEngine`; the variant file sets the duration limit and concurrency.
"""

from dalston.engine_sdk import PrepareEngine

ENGINE = PrepareEngine
