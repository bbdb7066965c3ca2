@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Dark launch of catalog v2 for internal users (5.2.5, 5.2.6)
  Requests that carry "x-istio-cohort: internal" see v2; everyone else keeps seeing v1. This holds at
  the edge and deep in the call graph, where webapp forwards the header to the catalog.

  Background:
    Given the catalog service runs v1 and v2
    And catalog subsets are defined for v1 and v2

  @critical
  Scenario: the internal cohort reaches v2 at the gateway
    Given the manifest "ch5/catalog-gateway.yaml" is applied
    And the manifest "ch5/catalog-vs-v2-request.yaml" is applied
    Then the ingress gateway's route for catalog.istioinaction.io with header "x-istio-cohort: internal" goes to subset version-v2
    And the ingress gateway's route for catalog.istioinaction.io goes to subset version-v1
    Given requests carry the header "x-istio-cohort: internal"
    When 20 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response comes from catalog v2
    And every response contains "$[*].imageUrl"

  @critical
  Scenario: everyone else stays on v1 at the gateway
    Given the manifest "ch5/catalog-gateway.yaml" is applied
    And the manifest "ch5/catalog-vs-v2-request.yaml" is applied
    When 50 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then no client sees imageUrl

  @critical
  Scenario: the header routes to v2 deep in the call graph
    Given the webapp is exposed through the ingress gateway
    And the manifest "ch5/catalog-vs-v2-request-mesh.yaml" is applied
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    Then a request for http://catalog.istioinaction/items at the webapp sidecar would reach catalog v1
    Given requests carry the header "x-istio-cohort: internal"
    Then a request for http://catalog.istioinaction/items at the webapp sidecar would reach catalog v2
    When 30 requests are sent
    Then every response has status 200
    And every response comes from catalog v2
    And every request to catalog went where the routes predicted
