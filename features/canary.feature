@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Canary release of catalog v2 by traffic shifting (5.3)
  A canary gives v2 a small, known share of real traffic before it gets more. Shares are random per
  request, so each claim is an exact statistical test at the run's confidence (alpha 0.01 unless
  -D alpha=… says otherwise), not a tolerance. Each scenario sends enough requests to notice a
  10-point misroute 99% of the time also at alpha 0.001 (docs/statistics.md has the figures).

  Background:
    Given the catalog service runs v1 and v2
    And catalog subsets are defined for v1 and v2
    And the webapp is exposed through the ingress gateway
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway
    And requests are sent 16 at a time

  @critical
  Scenario: 10% of traffic goes to the canary
    Given the manifest "ch5/catalog-vs-v2-10-90-mesh.yaml" is applied
    When 400 requests are sent
    Then every response has status 200
    And about 10% of responses come from catalog v2
    And every request to catalog went where the routes predicted

  @critical
  Scenario: half of the traffic goes to the canary
    Given the manifest "ch5/catalog-vs-v2-50-50-mesh.yaml" is applied
    When 800 requests are sent
    Then every response has status 200
    And responses split between catalog versions as:
      | version | share |
      | v1      | 50%   |
      | v2      | 50%   |
