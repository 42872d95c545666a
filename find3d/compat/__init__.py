"""Compatibility shims for third-party packages (each active only where it is needed)."""
