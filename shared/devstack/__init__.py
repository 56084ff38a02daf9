"""Embedded servers for one-machine runs and for the test harness.

`ekiben up` and the pytest fixtures start the same real servers (NATS with JetStream,
PostgreSQL, SeaweedFS's S3, a Kubernetes control plane) on loopback ports through these
launchers, so what the tests exercise is what a developer runs. Every launcher owns its
child process group and tears it down by PID; nothing is left running after a stop.
"""
