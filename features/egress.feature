@allure.label.owner:sre-security @allure.label.epic:release-safety
Feature: Egress control with REGISTRY_ONLY and ServiceEntry (5.5)
  With the outbound traffic policy REGISTRY_ONLY nothing leaves the mesh unless the service registry
  knows the destination. The forum needs jsonplaceholder.typicode.com, so it gets a ServiceEntry.

  Background:
    Given the forum service runs
    And the webapp is exposed through the ingress gateway
    And the catalog service runs v1
    And access logging is on for forum
    And clients call http://webapp.istioinaction.io/api/users through the ingress gateway

  @normal
  Scenario: by default (ALLOW_ANY) the forum reaches its external API
    When 5 requests are sent
    Then every response has status 200
    And calls from forum to jsonplaceholder.typicode.com get through

  @blocker
  Scenario: REGISTRY_ONLY blocks unknown external hosts
    Given the mesh's outbound traffic policy is REGISTRY_ONLY
    When 5 requests are sent
    Then every response has status 500
    And every response body contains "error calling Forum service"
    And the forum sidecar's access log shows 5 lines with "502 - direct_response"
    And the forum sidecar's access log shows 5 lines with "block_all"
    And calls from forum to jsonplaceholder.typicode.com are blocked with 502

  @critical
  Scenario: a ServiceEntry lets the forum reach jsonplaceholder again
    Given the mesh's outbound traffic policy is REGISTRY_ONLY
    And the manifest "ch5/forum-serviceentry.yaml" is applied
    When 5 requests are sent
    Then every response has status 200
    And calls from forum to jsonplaceholder.typicode.com get through
    And calls from forum to api.example.com are blocked with 502

  @normal
  Scenario: a route timeout on an external service answers 504 UT instead of waiting
    Given these resources are applied:
      """
      apiVersion: networking.istio.io/v1beta1
      kind: ServiceEntry
      metadata: {name: httpbin-ext}
      spec:
        hosts: [httpbin.org]
        ports: [{number: 80, name: http, protocol: HTTP}]
        resolution: DNS
        location: MESH_EXTERNAL
      ---
      apiVersion: networking.istio.io/v1beta1
      kind: VirtualService
      metadata: {name: httpbin-ext}
      spec:
        hosts: [httpbin.org]
        http:
        - timeout: 1s
          route: [{destination: {host: httpbin.org}}]
      """
    When 3 requests are sent from forum to http://httpbin.org/delay/3
    Then every response has status 504
    And the forum sidecar's access log shows 3 lines with "504 UT"
