"""Realtime wire protocols: renderers of the engine SDK's typed events (`dalston.engine_sdk.events`).

`native_protocol` is dalston's own `/v1/realtime` protocol; `openai_protocol` is OpenAI's Realtime
transcription protocol. The server's session loop (`dalston.server.realtime`) and the gateway use
them; engine families never build protocol JSON.
"""
