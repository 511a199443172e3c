"""The engine server: one variant, the OpenAI audio API, realtime WebSocket, health and metrics."""
