"""The Kubernetes backend: the same features against a real cluster with Istio (and Flagger, Prometheus).

`contexts` decides which cluster a run may touch (an explicit allowlist: a release check must never reach
production by accident); `cluster` is the one module that talks to the Kubernetes API, through the official
client; `backend` speaks the step library's `Backend` protocol in domain terms on top of it, with `curl` (a batch of
requests as one exec), `accesslogs` (which pod served a request), `counters` (the sidecars' own request counters),
`prometheus` (the cluster's Prometheus), `canary` (a Canary's history from its watched status) and `pods` (pods as
the API returns them).
"""
