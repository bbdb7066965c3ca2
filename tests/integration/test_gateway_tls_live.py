"""HTTPS and TLS passthrough at the running ingress gateway (issue 10): a Gateway server with `tls.mode: SIMPLE`
serves the key pair of the Secret its `credentialName` names, on the gateway pod's own address, chosen by SNI;
a PASSTHROUGH server hands the encrypted stream, untouched, to the destination of the VirtualService's `tls`
route for that SNI."""

from __future__ import annotations

import http.client
import socket
import ssl
import sys
from pathlib import Path

from meshclient import CH5, NS, SERVICES, WEBAPP_HOST, request, wait_until

sys.path.append(str(Path(__file__).resolve().parents[1] / "unit"))  # certs.py: key pairs made at test time
from certs import KeyPair, self_signed, tls_secret  # noqa: E402

TIMEOUT = 10.0
GATEWAY = f"""\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: coolstore-gateway, namespace: {NS}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: ["{WEBAPP_HOST}"]
  - port: {{number: 443, name: https, protocol: HTTPS}}
    tls: {{mode: SIMPLE, credentialName: webapp-credential}}
    hosts: ["{WEBAPP_HOST}"]
"""
PASSTHROUGH = f"""\
apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata: {{name: passthrough-gateway, namespace: {NS}}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: tls-passthrough, protocol: TLS}}
    tls: {{mode: PASSTHROUGH}}
    hosts: ["simple.istioinaction.io"]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: simple-passthrough, namespace: {NS}}}
spec:
  hosts: ["simple.istioinaction.io"]
  gateways: [passthrough-gateway]
  tls:
  - match: [{{sniHosts: ["simple.istioinaction.io"]}}]
    route: [{{destination: {{host: webapp, port: {{number: 80}}}}}}]
"""


def https_get(address: tuple[str, int], sni: str, path: str, pair: KeyPair) -> tuple[int, bytes, bytes]:
    """GET over TLS to `address` with SNI `sni`, trusting only `pair`: (status, body, the served certificate)."""
    context = ssl.create_default_context(cadata=pair.cert_pem)
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(address, timeout=TIMEOUT)
    tls = context.wrap_socket(raw, server_hostname=sni)
    conn = http.client.HTTPConnection(sni, timeout=TIMEOUT)
    conn.sock = tls
    try:
        conn.request("GET", path, headers={"Host": sni})
        reply = conn.getresponse()
        return reply.status, reply.read(), tls.getpeercert(binary_form=True) or b""
    finally:
        conn.close()


def handshake(address: tuple[str, int], sni: str) -> str:
    """A TLS handshake with SNI `sni`, trusting anything: "ok", "refused" (nothing listens yet), or why it failed
    after the gateway took the connection."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    try:
        raw = socket.create_connection(address, timeout=TIMEOUT)
    except ConnectionRefusedError:
        return "refused"
    try:
        with context.wrap_socket(raw, server_hostname=sni):
            return "ok"
    except (ssl.SSLError, OSError) as exc:
        return f"failed: {type(exc).__name__}: {exc}"
    finally:
        raw.close()


def test_an_https_server_serves_the_secrets_certificate_by_sni(start_mesh):
    pair = self_signed(WEBAPP_HOST)
    mesh = start_mesh([SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"])
    mesh.apply(text=tls_secret("webapp-credential", pair) + "---\n" + GATEWAY)
    address = mesh.gateway_address(443)
    assert address[0] == mesh.gateway_pod.ip and address[1] == 8443, address
    assert mesh.gateway_address(8443) == address

    status, body, served = https_get(address, WEBAPP_HOST, "/api/catalog", pair)

    assert status == 200, body[:200]
    assert b"imageUrl" in body or b"color" in body, body[:200]  # the catalog's items, through webapp
    assert served == pair.cert_der, "the gateway served another certificate than the Secret's"
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200  # plain HTTP on 80 still answers
    assert handshake(address, "unknown.istioinaction.io").startswith("failed"), "a host no server names got TLS"
    # Envoy runs what meshlib translated: the listener on the pod's address and the server's own route config
    dump = str(mesh.config_dump("istio-ingressgateway", "istio-system"))
    assert f"https.443.https.coolstore-gateway.{NS}" in dump


def test_a_new_secret_replaces_the_served_certificate_and_a_deleted_one_stays(start_mesh):
    first, second = self_signed(WEBAPP_HOST), self_signed(WEBAPP_HOST)
    mesh = start_mesh([SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"])
    mesh.apply(text=tls_secret("webapp-credential", first) + "---\n" + GATEWAY)
    address = mesh.gateway_address(443)
    assert https_get(address, WEBAPP_HOST, "/api/catalog", first)[2] == first.cert_der

    mesh.apply(text=tls_secret("webapp-credential", second))
    assert https_get(address, WEBAPP_HOST, "/api/catalog", second)[2] == second.cert_der

    # istiod sends nothing for a deleted Secret and Envoy keeps the last key pair SDS gave it (istio/istio#45432)
    assert mesh.delete_kind("Secret", "istio-system") == 1
    assert https_get(address, WEBAPP_HOST, "/api/catalog", second)[2] == second.cert_der


def test_a_server_whose_secret_does_not_exist_presents_no_certificate(start_mesh):
    """istiod keeps the filter chain and serves no key pair for it: once Envoy stops waiting for one, the chain takes
    connections and every handshake fails; `meshlib analyze` says why (IST0101)."""
    mesh = start_mesh([SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"])
    mesh.apply(text=GATEWAY)
    address = mesh.gateway_address(443)
    outcome = wait_until(lambda: handshake(address, WEBAPP_HOST), lambda o: o != "refused", timeout=10)
    assert outcome.startswith("failed"), outcome
    assert request(mesh, "/api/catalog", WEBAPP_HOST).status == 200  # the plain HTTP server is unaffected


def test_a_passthrough_server_forwards_the_encrypted_stream_by_sni(start_mesh):
    """The PASSTHROUGH chain sends the client's ClientHello as it came to webapp's sidecar, which speaks plain
    HTTP: the answer is Envoy's HTTP 400 to bytes that are no HTTP request, in clear text, so the gateway neither
    terminated TLS nor presented a certificate. An SNI no route names gets its connection closed."""
    mesh = start_mesh([SERVICES, CH5 / "webapp-catalog-gw-vs.yaml"])
    mesh.apply(text=PASSTHROUGH)
    address = mesh.gateway_address(443)

    def hello_answer(sni: str) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        with socket.create_connection(address, timeout=TIMEOUT) as raw:
            raw.sendall(outgoing.read())
            answer = b""
            while True:
                try:
                    chunk = raw.recv(4096)
                except ConnectionResetError:  # closed without a word: no filter chain for this SNI
                    return answer
                if not chunk:
                    return answer
                answer += chunk

    assert hello_answer("simple.istioinaction.io").startswith(b"HTTP/1.1 400")
    assert hello_answer("other.istioinaction.io") == b""
