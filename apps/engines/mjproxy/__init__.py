"""The mjproxy engine: any midjourney-proxy-compatible server as an upstream (SPEC §5)."""
