"""Deployments, clusters, instance types and organization secrets: the client's v2 API."""
