@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Resilience: load balancing, retries, circuit breaking and outlier detection (6.2–6.4)
  simple-web calls simple-backend, which runs as three pods (simple-backend-1 and two of simple-backend-2).
  The release policy: client-side load balancing spreads load as the DestinationRule says, a user keeps their
  pod when the rule hashes on them, a slow pod is retried around, a pool that is full refuses fast instead of
  queueing, and a pod that keeps failing is taken out of rotation. Every check here reads what the callers'
  Envoy proxies did: the pods that served each request, and Envoy's own retry, overflow and ejection counters.

  Background:
    Given the manifest "ch6/simple-backend.yaml" is applied
    And the manifest "ch6/simple-web.yaml" is applied
    And the manifest "ch6/simple-web-gateway.yaml" is applied
    And clients call http://simple-web.istioinaction.io/ through the ingress gateway

  @critical
  Scenario: round robin spreads requests evenly over the backend pods (6.2.1)
    Given the manifest "ch6/simple-backend-dr-rr.yaml" is applied
    When 90 requests are sent
    Then every response has status 200
    And the requests to simple-backend were spread evenly over its 3 pods

  @normal
  Scenario: a consistent hash on a header keeps each user on one pod
    Given the manifest "ch6/simple-web-3-replicas.yaml" is applied
    And the manifest "ch6/simple-web-dr-hash.yaml" is applied
    And requests name one of the users alice, bob, carol and dave in the header "x-user"
    When 80 requests are sent
    Then every response has status 200
    And the requests with the same "x-user" stayed on one simple-web pod

  @critical
  Scenario: a per-try timeout retries a slow pod on a fast one (6.3.3)
    Given the manifest "ch6/simple-backend-1-slow.yaml" is applied
    And the manifest "ch6/simple-backend-vs-retry-per-try-timeout.yaml" is applied
    When 30 requests are sent
    Then every response has status 200
    And the simple-web sidecar retried requests to simple-backend

  @normal
  Scenario: without a retry policy nothing is retried
    When 30 requests are sent
    Then every response has status 200
    And the simple-web sidecar retried no request to simple-backend

  @critical
  Scenario: a full connection pool refuses at once with UO instead of queueing (6.4.1)
    Given the manifest "ch6/simple-backend-1-slow.yaml" is applied
    And the manifest "ch6/simple-backend-dr-tcp-circuit-breaker.yaml" is applied
    And access logging is on for simple-web
    And requests are sent 10 at a time
    When 20 requests are sent
    Then at least 1 responses have status 500
    And the simple-web sidecar's circuit breaker for simple-backend tripped
    And the simple-web sidecar's access log shows "503 UO upstream_reset_before_response_started{overflow}"

  @critical
  Scenario: outlier detection takes a failing pod out of rotation (6.4.2)
    Given the manifest "ch6/simple-backend-2-failing.yaml" is applied
    And the manifest "ch6/simple-backend-dr-outlier.yaml" is applied
    And requests are sent 1 at a time
    When 30 requests are sent
    Then the simple-web sidecar ejected a simple-backend pod
    When 30 requests are sent
    Then every response has status 200
    And every response comes from simple-backend latest

  @critical
  Scenario: when every backend pod fails, all are ejected and the caller answers 503 UH without trying them
    Given the manifest "ch6/simple-backend-dr-outlier.yaml" is applied
    And the manifest "ch6/simple-backend-all-failing.yaml" is applied
    And access logging is on for simple-web
    And requests are sent 1 at a time
    When requests are sent for 2s at 10 per second
    Then the simple-web sidecar has no healthy simple-backend pod left
    When 10 requests are sent
    Then the simple-web sidecar's access log shows 10 lines with "503 UH no_healthy_upstream"

  @normal
  Scenario: an injected delay shows as DI in the caller's access log (6.3)
    Given the manifest "ch6/simple-backend-vs-delay.yaml" is applied
    And access logging is on for simple-web
    When 10 requests are sent
    Then every response has status 200
    And the simple-web sidecar's access log shows 10 lines with "200 DI via_upstream"
