"""TTAPI compatible API (SPEC §6.2)."""
