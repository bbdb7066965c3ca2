"""The alpha of tests that count Envoy's random choices (weights, mirror and fault percentages).

Envoy's randomness cannot be seeded, so such a test fails a correct mesh at its alpha, run after run; at 0.001 a
test run meets such a failure rarely (docs/statistics.md, "Why make test runs the features at alpha 0.001").
"""

RANDOM_ALPHA = 0.001
