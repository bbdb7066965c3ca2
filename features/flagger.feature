@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Automated canary release of catalog with Flagger (5.3.1)
  Flagger shifts webapp's traffic to a new catalog version step by step and decides from Prometheus at every
  step. The catalog-release Canary checks every 45 s that the new version answers at least 99% of its requests
  without a 5xx and keeps its p99 latency under 500 ms; while both hold it adds 10% of the traffic, up to 50%,
  then promotes the new version. Five failed checks roll it back: the canary never gets more than one step
  (10%) of the traffic while it fails, so clients see at most that share of errors — with Istio's default
  retry policy a 500 is not retried.

  The analysis runs on a scaled clock (time_scale 0.05: 45 s take 2.25 s), metric windows scaled alike
  (1m becomes 3s); the phases and weights are Flagger's for the same Canary.

  Background:
    Given the catalog service runs v1
    And the webapp is exposed through the ingress gateway
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    And background traffic of 50 requests per second
    And the manifest "ch5/flagger/catalog-release.yaml" is applied
    When the canary catalog-release reaches Initialized

  @critical
  Scenario: a healthy new version is promoted step by step
    When the new catalog version is deployed
    And the canary catalog-release reaches Succeeded
    Then the canary catalog-release went through the phases Initialized, Progressing, Promoting, Finalising, Succeeded
    And the canary weight of catalog-release climbed 10, 20, 30, 40, 50
    And the canary catalog-release has weight 0
    And at most 0% of the background requests failed
    When 20 requests are sent
    Then every response has status 200
    And every response contains "$[*].imageUrl"

  @critical
  Scenario: a failing new version is rolled back after five failed checks
    When a catalog version that fails half of its requests is deployed
    And the canary catalog-release reaches Failed
    Then the canary catalog-release went through the phases Initialized, Progressing, Failed
    And the canary weight of catalog-release climbed 10
    And the canary catalog-release has weight 0
    And the Flagger log of catalog-release shows "Rolling back catalog-release.istioinaction failed checks threshold reached 5"
    When the background traffic stops
    Then at most 10% of the background requests failed
    When 20 requests are sent
    Then every response has status 200
    And no client sees imageUrl
