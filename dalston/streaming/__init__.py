"""Streaming policies shared by realtime engine families (model-agnostic)."""
