"""Signing in: passwords, browser sessions, the first admin's setup code (see `service`)."""
