"""The deployer: `BentoDeployment` -> Deployments, Services, autoscalers and Ingress.

It owns deployments and revisions, reconciles them against Kubernetes and tells
`deployment.requested`, `build.requested` and `deployment.status_changed`.
"""
