"""The service's own health: the public status of each mode, and alerts for operators (#18)."""
