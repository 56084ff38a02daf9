"""Events in the gateway: the event log, and subscriptions for automation outside NATS.

- `handlers`: durable consumers; the event log, and the queue of webhook deliveries;
- `stream`: server-sent events from one JetStream fan-out per process (`api`: the route);
- `service`, `delivery`: webhooks, their deliveries, and the worker that sends them;
- `filters`: who receives what (organization, role and scopes, the subscriber's filters);
- `signing`, `urls`: Standard Webhooks signatures and sealed secrets; where a webhook may
  point.
"""
