"""The audit log: who changed what, when, with which token and request id."""
