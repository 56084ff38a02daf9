"""Clients of the registry's outside world (the object store)."""
