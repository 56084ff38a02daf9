"""Clients of the gateway's outside world."""
