"""The gateway: identity, audit, the public HTTP API, and event fan-out.

It listens to every event; it keeps an event log that the API, the dashboard and
server-sent-event subscribers read.
"""
