"""The Kubernetes backend: the same features against a real cluster with Istio (and Flagger, Prometheus).

`contexts` decides which cluster a run may touch (an explicit allowlist: a release check must never reach
production by accident); `cluster` is the one module that talks to the Kubernetes API, through the official
client; `backend` speaks the step library's `Backend` protocol in domain terms on top of it.
"""
