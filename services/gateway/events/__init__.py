"""The event log: every lifecycle event the gateway has seen, for the API and fan-out."""
