@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Routing at the edge by host name (5.2.2)
  The catalog is reachable from outside only through the Istio ingress gateway, by its public
  host name. Requests for host names the gateway does not serve are not routed anywhere.

  Background:
    Given the catalog service runs v1
    And the manifest "ch5/catalog-gateway.yaml" is applied
    And the manifest "ch5/catalog-vs.yaml" is applied

  @critical
  Scenario: the gateway routes catalog.istioinaction.io to the catalog
    When 20 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response has status 200
    And every response contains "$[*].name"
    And every response comes from catalog v1
    And the manifests have no analysis errors

  @normal
  Scenario: an unknown host name is not routed
    When 5 requests are sent to http://shop.example.com/items through the ingress gateway
    Then every response has status 404
