"""Helpers shared by engine families that use the same inference library (loading, result mapping)."""
