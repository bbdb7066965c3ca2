@allure.label.owner:sre-platform @allure.label.epic:release-safety
Feature: Traffic mirroring to catalog v2 (5.4)
  Mirroring copies live requests to v2 and drops v2's answers, so v2 meets production traffic while
  customers only ever see v1. Envoy marks the copies: their Host ends in -shadow (Istio 1.27 and older).

  Background:
    Given the catalog service runs v1 and v2
    And the webapp is exposed through the ingress gateway
    And clients call http://webapp.istioinaction.io/api/catalog through the ingress gateway

  @critical
  Scenario: mirrored traffic never reaches clients
    Given catalog v2 is mirrored
    When 100 requests are sent
    Then every response has status 200
    And no client sees imageUrl
    And every response comes from catalog v1
    And the catalog v2 logs show 100 lines with "/items"

  @normal @istio.version<1.28
  Scenario: up to Istio 1.27 mirrored requests carry the -shadow Host
    Given catalog v2 is mirrored
    When 20 requests are sent
    Then the catalog v2 logs show 20 mirrored requests

  @normal @istio.version=1.28
  Scenario: from Istio 1.28 mirrored requests keep their Host
    Given catalog v2 is mirrored
    When 20 requests are sent
    Then no client sees imageUrl
    And the catalog v2 logs show 20 lines with "GET catalog.istioinaction:80 /items"
    And the catalog v2 logs show no "-shadow"
