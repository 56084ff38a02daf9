"""The dashboard: a browser UI and nothing persistent, a client of the gateway's API."""
