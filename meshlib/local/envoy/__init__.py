"""Real Envoy as the embedded mesh's data plane: the binary, one process per proxy, and meshlib's ADS server."""
