"""midjourney-proxy compatible API (SPEC §6.1)."""
