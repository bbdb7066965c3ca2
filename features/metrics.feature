@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Release metrics from the sidecars (5.3.1)
  Every sidecar counts the requests it serves, as Istio's istio_requests_total and request-duration
  histogram. Release checks read them as Flagger does: the success rate is the share of requests a
  workload answered without a 5xx, counted where the request was served, since the traffic started.
  These checks need nothing but the mesh. PromQL checks run on Prometheus, which scrapes every sidecar;
  where Prometheus is not installed, scenarios that need it are reported as skipped.

  Background:
    Given the catalog service runs v1
    And the webapp is exposed through the ingress gateway
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway

  @critical
  Scenario: a healthy catalog answers every request, and quickly
    When 50 requests are sent
    Then every response has status 200
    And catalog received 50 requests
    And the success rate of catalog is at least 100%
    And the p99 latency of catalog is at most 500 ms

  @critical @needs.prometheus
  Scenario: Prometheus sees what Flagger would see
    Given Prometheus is scraping every proxy
    When requests are sent for 3s at 20 per second
    Then istio_requests_total for destination_version v1 grew by at least 50
    And the PromQL `sum(istio_requests_total{reporter="destination", response_code=~"5.*"}) or vector(0)` is at most 0
    And the PromQL query is at least 99
      """
      sum(rate(istio_requests_total{reporter="destination", destination_workload="catalog", response_code!~"5.*"}[1m]))
        / sum(rate(istio_requests_total{reporter="destination", destination_workload="catalog"}[1m])) * 100
      """

  @critical
  Scenario: a failing version lowers the success rate
    Given these resources are applied:
      """
      apiVersion: apps/v1
      kind: Deployment
      metadata:
        name: catalog-v2
        labels: {app: catalog, version: v2}
      spec:
        replicas: 1
        selector:
          matchLabels: {app: catalog, version: v2}
        template:
          metadata:
            labels: {app: catalog, version: v2}
          spec:
            containers:
            - name: catalog
              image: istioinaction/catalog:latest
              env:
              - {name: BLOWUP_MODE, value: "500"}
              - {name: BLOWUP_PERCENTAGE, value: "50"}
              ports:
              - {containerPort: 3000}
      """
    When 200 requests are sent
    Then the success rate of catalog-v2 is below 99%
    And the success rate of catalog is at least 99%
