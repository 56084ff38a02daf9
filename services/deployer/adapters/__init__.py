"""The deployer's adapters: the cluster directory on NATS, Kubernetes access."""
