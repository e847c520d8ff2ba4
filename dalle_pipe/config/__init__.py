"""Typed recipe parts: check specs."""
