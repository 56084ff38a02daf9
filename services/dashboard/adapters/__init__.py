"""The dashboard's one outside party: the gateway's public HTTP API."""
