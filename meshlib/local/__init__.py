"""The embedded mesh: pods, sidecars and gateways on loopback sockets."""
