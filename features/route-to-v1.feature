@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Deploy v2 without releasing it (5.2.3, 5.2.4)
  Deploying catalog v2 must not release it: until a route says otherwise, all traffic stays on v1,
  which is what customers are used to. v2 answers carry imageUrl, v1 answers do not.

  Background:
    Given the catalog service runs v1 and v2
    And the manifest "ch5/catalog-gateway.yaml" is applied
    And catalog subsets are defined for v1 and v2

  @normal
  Scenario: without a subset route both versions answer
    Requests go out in batches until the share is decided either way, with the run's confidence:
    as many as that takes and no more.

    Given the manifest "ch5/catalog-vs.yaml" is applied
    And clients call http://catalog.istioinaction.io/items through the ingress gateway
    When requests are sent until it is decided whether about 50% of responses come from catalog v2
    Then every response has status 200
    And about 50% of responses come from catalog v2

  @critical
  Scenario: all traffic at the edge goes to v1
    Given the manifest "ch5/catalog-vs-v1.yaml" is applied
    Then the ingress gateway's route for catalog.istioinaction.io goes to subset version-v1
    When 100 requests are sent to http://catalog.istioinaction.io/items through the ingress gateway
    Then every response has status 200
    And no client sees imageUrl
    And every response comes from catalog v1

  @critical
  Scenario: all traffic inside the mesh goes to v1
    Given the webapp is exposed through the ingress gateway
    And the manifest "ch5/catalog-vs-v1-mesh.yaml" is applied
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    When 100 requests are sent
    Then every response has status 200
    And no client sees imageUrl
    And every request to catalog went where the routes predicted

  @normal
  Scenario: new catalog items are written to v1 only
    Given the webapp is exposed through the ingress gateway
    And the manifest "ch5/catalog-vs-v1-mesh.yaml" is applied
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    When 3 POST requests are sent to /api/catalog/items with the body:
      """
      {"id": 100, "color": "teal", "department": "Sports", "name": "Trail Shoes", "price": "89.00"}
      """
    Then every response has status 201
    And every response comes from catalog v1
    And the catalog v1 logs show 3 lines with "POST"
