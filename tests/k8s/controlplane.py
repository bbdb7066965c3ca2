"""A real Kubernetes control plane on loopback for tests: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, whose fake nodes run the pods (kwok's stages move them to Running and Ready).

kwok also serves its nodes' kubelet API (TLS, with a certificate of the test CA, on 127.0.0.1: the nodes' InternalIP
and daemonEndpoints port), so a pod's log, exec and port-forward go through the API server as on a cluster. What they
reach is set by kwok's objects of KWOK_DEBUG_KINDS (kwok.x-k8s.io/v1alpha1; CRDs from kwok's module): a log file in
CRI format, a local process (run by kwok, in its environment), a local address.

The binaries come from `tools/k8s/build-control-plane` (a git-ignored cache, `.cache/k8s`; its manifest.json names
them and the Istio and Flagger CRD files). Everything listens on 127.0.0.1 only, on free ports, with a fresh temp
dir (`meshlib-k8s-…`) for etcd's data, the certificates, tokens, kubeconfigs and the logs.

    with ControlPlane() as cp:                 # or cp = ControlPlane().start(); ...; cp.stop()
        cp.kubeconfig                          # contexts "admin" (current) and "viewer"
        cp.admin_token, cp.viewer_token        # bearer tokens: system:masters, and a user with no RBAC grants

Children are started in their own process groups and die with the thread that started them (prctl PDEATHSIG, as
`meshlib.local.children` does for Envoy, but with SIGKILL: see `_die_with_parent`), so start a control plane from a
thread that outlives it (the main thread, or a pytest fixture's). The temp dir carries its owner's pid, so a later
run removes what a SIGKILLed one left (`meshlib.local.tempdirs`).

Run it by hand: `.venv/bin/python tests/k8s/controlplane.py` prints the kubeconfig and waits for Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from meshlib.local.process import free_port
from meshlib.local.tempdirs import owned_dir

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("MESHLIB_K8S_CACHE") or REPO / ".cache" / "k8s")
BUILD_SCRIPT = "tools/k8s/build-control-plane"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
HOST = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"  # addresses in API objects only: nothing is routed there
POD_CIDR = "10.244.0.0/16"  # kwok hands out pod IPs from it, again only as data
FAKE_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# kwok's own stage files (in its Go module): nodes become Ready and keep their lease; pods become Running and Ready,
# complete, and go away when deleted.
KWOK_STAGES = ("kustomize/stage/node/fast", "kustomize/stage/node/heartbeat-with-lease", "kustomize/stage/pod/fast")
# kwok's kubelet API for its fake nodes, pointed at this machine by objects of these kinds (CRDs from its module,
# kustomize/crd): a pod's log at a file (CRI log format), exec at a local process, port-forward at a local address.
# The Cluster… kinds select pods by namespace and name; the others are named like the one pod they configure.
KWOK_API = "kwok.x-k8s.io/v1alpha1"
KWOK_DEBUG_KINDS = ("ClusterLogs", "Logs", "ClusterExec", "Exec", "ClusterPortForward", "PortForward")


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's: the CRD files parse in ms, not 0.5 s


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message names the component and ends with its last log lines."""


@dataclass(frozen=True)
class Build:
    """What tools/k8s/build-control-plane made: versions and absolute paths, from its manifest.json."""

    versions: dict[str, str]
    bin: dict[str, Path]
    istio_crds: Path  # manifests/charts/base/files/crd-all.gen.yaml of istio.io/istio
    flagger_crds: Path  # artifacts/flagger/crd.yaml of github.com/fluxcd/flagger
    kwok_module: Path

    @classmethod
    def load(cls, cache: Path = CACHE) -> Build:
        """The build in `cache`; ControlPlaneError saying what to run when it is missing or incomplete."""
        manifest = cache / "manifest.json"
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ControlPlaneError(f"the Kubernetes control plane is not built (no {manifest}): run {BUILD_SCRIPT} "
                                    "(about 20 minutes, once per machine)") from None
        except (OSError, ValueError) as exc:
            raise ControlPlaneError(f"cannot read {manifest} ({exc}): run {BUILD_SCRIPT}") from None
        try:
            build = cls(versions=dict(data["versions"]), bin={k: Path(v) for k, v in data["bin"].items()},
                        istio_crds=Path(data["crds"]["istio"]), flagger_crds=Path(data["crds"]["flagger"]),
                        kwok_module=Path(data["kwok_module"]))
        except (KeyError, TypeError) as exc:
            raise ControlPlaneError(f"{manifest} is from an older build script (no {exc}): "
                                    f"run {BUILD_SCRIPT}") from None
        missing = [name for name in COMPONENTS if not os.access(build.bin.get(name, Path("/nonexistent")), os.X_OK)]
        missing += [str(p) for p in (build.istio_crds, build.flagger_crds, build.kwok_module) if not p.exists()]
        if missing:
            raise ControlPlaneError(f"control-plane build at {cache} lacks {', '.join(missing)}: run {BUILD_SCRIPT}")
        return build


def not_built_reason(cache: Path = CACHE) -> str | None:
    """Why the control plane cannot start here (for a pytest skip), or None when it is built."""
    try:
        Build.load(cache)
    except ControlPlaneError as exc:
        return str(exc)
    return None


def _die_with_parent(parent: int) -> Any:
    """`preexec_fn`: SIGKILL the child when the thread that started it exits, and at once if that already happened.

    SIGKILL, not the SIGTERM of `meshlib.local.children.die_with_parent`: when the harness is killed, every component
    gets the signal at the same moment, and an API server told to shut down gracefully while etcd goes away with it
    drains into a store that is gone and lingers; nothing here holds data worth a graceful stop.
    """
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)
    return preexec


CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def install_crds(cp: ControlPlane, path: Path, timeout: float = 60.0) -> None:
    """What an Istio or Flagger install does first: create the CRDs of `path` (a file in the Go module cache; the
    ones that exist are left alone), then wait until each is Established."""
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8"))
            if d and d.get("kind") == "CustomResourceDefinition"]
    create_crds(cp, docs)
    deadline = time.monotonic() + timeout
    while waiting := crds_not_established(cp, [doc["metadata"]["name"] for doc in docs]):
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"CRDs {', '.join(waiting)} not Established after {timeout:g}s")
        time.sleep(0.1)


def create_crds(cp: ControlPlane, docs: list[dict[str, Any]]) -> None:
    """POST each CRD; one that exists already (409) is left alone."""
    for doc in docs:
        try:
            cp.api("POST", CRDS, doc)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise


def crds_not_established(cp: ControlPlane, names: list[str]) -> list[str]:
    """Those of the CRDs `names` the API server does not serve yet (one LIST)."""
    established = {item["metadata"]["name"] for item in cp.api("GET", CRDS).get("items") or []
                   if any(c.get("type") == "Established" and c.get("status") == "True"
                          for c in (item.get("status") or {}).get("conditions") or [])}
    return [name for name in names if name not in established]


class _Certs:
    """A CA, the serving certificates and the service-account key pair, written as PEM files into `d`."""

    def __init__(self, d: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        self.dir = d
        now = datetime.datetime.now(datetime.UTC)
        not_before, not_after = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=2)

        def write_key(name: str, key: Any) -> Path:
            path = d / f"{name}.key"
            path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
            path.chmod(0o600)
            return path

        def write_cert(name: str, cert: Any) -> Path:
            path = d / f"{name}.crt"
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
            return path

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "meshlib-test-kubernetes-ca")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False, data_encipherment=False,
                                           key_agreement=False, encipher_only=False, decipher_only=False),
                             critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.ca_key, self.ca_cert = write_key("ca", ca_key), write_cert("ca", ca)

        def issue(name: str, cn: str, dns: list[str], ips: list[str], client: bool = False) -> tuple[Path, Path]:
            key = ec.generate_private_key(ec.SECP256R1())
            usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
            builder = (x509.CertificateBuilder()
                       .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                       .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                       .not_valid_before(not_before).not_valid_after(not_after)
                       .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                       .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
            if dns or ips:
                san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
                builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
            return write_cert(name, builder.sign(ca_key, hashes.SHA256())), write_key(name, key)

        first_service_ip = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))
        self.apiserver_cert, self.apiserver_key = issue(
            "apiserver", "kube-apiserver",
            ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local"], [HOST, first_service_ip])
        # kwok serves the kubelet API of its fake nodes (logs, exec, port-forward) over TLS on its own port; the API
        # server checks that certificate against the CA (for the node's InternalIP, 127.0.0.1) and shows its own
        # client certificate, as it does to a kubelet (kwok does not ask for one)
        self.kubelet_cert, self.kubelet_key = issue("kwok-kubelet", "kwok-kubelet", ["localhost"], [HOST])
        self.kubelet_client_cert, self.kubelet_client_key = issue(
            "apiserver-kubelet-client", "kube-apiserver-kubelet-client", [], [], client=True)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = write_key("service-account", sa_key)
        self.sa_pub = d / "service-account.pub"
        self.sa_pub.write_bytes(sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                 serialization.PublicFormat.SubjectPublicKeyInfo))


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok on 127.0.0.1, with fake nodes.

    `start()` returns when the API server is ready, the controllers and the scheduler are healthy, every fake node is
    Ready and the `default` namespace has its ServiceAccount. `stop()` (also at interpreter exit, and after a failed
    start) ends every process and removes the temp dir.
    """

    ADMIN_USER = "meshlib-admin"  # in system:masters
    VIEWER_USER = "meshlib-viewer"  # authenticated, granted nothing: forbidden (403) for any resource

    def __init__(self, build: Build | None = None, *, nodes: tuple[str, ...] = ("kwok-node-0",),
                 startup_timeout: float = 120.0, keep_dir: bool | None = None,
                 extra_args: dict[str, list[str]] | None = None) -> None:
        """`nodes`: the fake nodes kwok runs pods on. `keep_dir` (default: $MESHLIB_K8S_KEEP set) keeps the temp dir
        with the logs after stop(). `extra_args`: more flags per component (a later flag wins over ours)."""
        self.build = build or Build.load()
        self.extra_args = {k: list(v) for k, v in (extra_args or {}).items()}
        unknown = set(self.extra_args) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"extra_args for unknown components {sorted(unknown)}; known: {', '.join(COMPONENTS)}")
        self.node_names = nodes
        self.startup_timeout = startup_timeout
        self.keep_dir = bool(os.environ.get("MESHLIB_K8S_KEEP")) if keep_dir is None else keep_dir
        self.dir: Path | None = None
        self.ports: dict[str, int] = {}
        self.admin_token = secrets.token_urlsafe(24)
        self.viewer_token = secrets.token_urlsafe(24)
        self._component_tokens = {c: secrets.token_urlsafe(24) for c in COMPONENTS[2:]}
        self._procs: list[_Proc] = []
        self._ssl: ssl.SSLContext | None = None
        self._started = self._stopped = False
        self.startup_seconds: float | None = None

    # ---- paths and addresses ------------------------------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{HOST}:{self.ports['kube-apiserver']}"

    @property
    def kubeconfig(self) -> Path:
        """Contexts `admin` (current) and `viewer`, bearer tokens; it names the CA file (`ca_file`)."""
        assert self.dir is not None, "not started"
        return self.dir / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "pki" / "ca.crt"

    def log_path(self, component: str) -> Path:
        assert self.dir is not None, "not started"
        return self.dir / "logs" / f"{component}.log"

    def log_tail(self, component: str, lines: int = 25) -> str:
        try:
            text = self.log_path(component).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _failure_excerpt(self, component: str) -> str:
        """The error lines of a component's log (klog E/F, or an error level), then its last lines."""
        try:
            all_lines = self.log_path(component).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [ln for ln in all_lines if ln[:1] in ("E", "F") and ln[1:5].isdigit()
                  or any(f'"level":"{lvl}"' in ln.lower() for lvl in ("error", "fatal", "panic"))]
        parts = (["errors:", *errors[-10:], "last lines:"] if errors else []) + all_lines[-10:]
        return "\n".join(parts) or "(empty log)"

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        if self._started:
            raise ControlPlaneError("this ControlPlane was already started")
        self._started = True
        started = time.monotonic()
        atexit.register(self.stop)
        for attempt in (1, 2):
            self.dir, self._procs, self.ports = owned_dir("k8s"), [], {}
            try:
                self._start(started + self.startup_timeout)
                break
            except BaseException as exc:
                # a free port taken by someone else between our probe and the component's bind: once more, anew
                if not (attempt == 1 and isinstance(exc, ControlPlaneError) and self._lost_a_port_race()):
                    self.stop()
                    raise
                self._teardown(keep=False)
        self.startup_seconds = time.monotonic() - started
        return self

    def _lost_a_port_race(self) -> bool:
        for proc in self._procs:
            with contextlib.suppress(OSError):
                if "address already in use" in proc.log.read_text(encoding="utf-8", errors="replace"):
                    return True
        return False

    def _start(self, deadline: float) -> None:
        assert self.dir is not None
        for sub in ("pki", "logs", "etcd", "home"):
            (self.dir / sub).mkdir(mode=0o700)
        certs = _Certs(self.dir / "pki")
        self._ssl = ssl.create_default_context(cafile=str(certs.ca_cert))
        for name in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"):
            self.ports[name] = free_port()
        self._write_tokens_and_kubeconfigs(certs)

        etcd_url = f"http://{HOST}:{self.ports['etcd']}"
        peer_url = f"http://{HOST}:{self.ports['etcd-peer']}"
        self._spawn("etcd", [
            "--name=meshlib", f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=meshlib={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync",  # a test store: losing it on a crash loses nothing
            "--log-level=warn",
        ])
        self._wait("etcd", deadline, lambda: self._http_ok(f"{etcd_url}/health", tls=False))

        pki = self.dir / "pki"
        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={self.ports['kube-apiserver']}",
            f"--tls-cert-file={certs.apiserver_cert}", f"--tls-private-key-file={certs.apiserver_key}",
            f"--client-ca-file={certs.ca_cert}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={certs.sa_pub}", f"--service-account-signing-key-file={certs.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # with a loopback advertise address the default (lease) reconciler refuses to start: "cannot use public
            # IP 127.0.0.1 with endpoint reconciler: may not be in the loopback range"; so the `kubernetes` Service
            # has no endpoints (nothing runs in a pod that could use them)
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false", f"--cert-dir={pki}",
            # logs, exec and port-forward go from here to the pod's node (kwok) as to a kubelet: at the node's
            # InternalIP (127.0.0.1) and daemonEndpoints port, over TLS checked against the CA
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={certs.ca_cert}",
            f"--kubelet-client-certificate={certs.kubelet_client_cert}",
            f"--kubelet-client-key={certs.kubelet_client_key}",
        ])
        self._wait("kube-apiserver", deadline, lambda: self._http_ok(f"{self.server}/readyz", token=self.admin_token))

        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.dir / 'kube-controller-manager.kubeconfig'}",
            f"--bind-address={HOST}", f"--secure-port={self.ports['kube-controller-manager']}",
            f"--cert-dir={self.dir / 'kube-controller-manager'}", "--leader-elect=false", "--profiling=false",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={certs.sa_key}", f"--root-ca-file={certs.ca_cert}",
            f"--cluster-signing-cert-file={certs.ca_cert}", f"--cluster-signing-key-file={certs.ca_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ])
        scheduler_config = self.dir / "kube-scheduler.yaml"
        scheduler_config.write_text(yaml.safe_dump({
            "apiVersion": "kubescheduler.config.k8s.io/v1", "kind": "KubeSchedulerConfiguration",
            "clientConnection": {"kubeconfig": str(self.dir / "kube-scheduler.kubeconfig")},
            "leaderElection": {"leaderElect": False},
        }))
        self._spawn("kube-scheduler", [
            f"--config={scheduler_config}", f"--bind-address={HOST}",
            f"--secure-port={self.ports['kube-scheduler']}", f"--cert-dir={self.dir / 'kube-scheduler'}",
        ])
        kwok_crds = self._kwok_crds()
        create_crds(self, kwok_crds)  # Established while the controllers start
        kwok_config = self.dir / "kwok.yaml"
        kwok_config.write_text(self._kwok_stages())
        # kwok watches its debugging kinds only if their CRDs are served when it starts
        self._wait("kube-apiserver", deadline, lambda: not crds_not_established(
            self, [doc["metadata"]["name"] for doc in kwok_crds]), what="kwok's CRDs to be Established")
        self._spawn("kwok", [
            f"--kubeconfig={self.dir / 'kwok.kubeconfig'}", f"--config={kwok_config}",
            "--manage-all-nodes=false", "--manage-nodes-with-annotation-selector=" + "=".join(FAKE_NODE_ANNOTATION),
            # the node stage writes these into the node's status: addresses (InternalIP) and daemonEndpoints
            f"--node-ip={HOST}", f"--node-port={self.ports['kwok']}",
            # the kubelet API (and /healthz): TLS and plain HTTP on the one port
            f"--server-address={HOST}:{self.ports['kwok']}",
            f"--tls-cert-file={certs.kubelet_cert}", f"--tls-private-key-file={certs.kubelet_key}",
            "--enable-crds=" + ",".join(KWOK_DEBUG_KINDS),
            "--node-lease-duration-seconds=40", f"--cidr={POD_CIDR}",
        ], env={"HOME": str(self.dir / "home")})  # kwok also reads ~/.kwok/kwok.yaml: keep the user's out

        for component in ("kube-controller-manager", "kube-scheduler"):
            url = f"https://{HOST}:{self.ports[component]}/healthz"
            self._wait(component, deadline, lambda url=url: self._http_ok(url, verify=False))
        self._wait("kwok", deadline, lambda: self._http_ok(f"http://{HOST}:{self.ports['kwok']}/healthz", tls=False))

        for name in self.node_names:
            self.api("POST", "/api/v1/nodes", self._node(name))
        for name in self.node_names:
            self._wait("kwok", deadline, lambda name=name: self._node_ready(name), what=f"node {name} to be Ready")
        self._wait("kube-controller-manager", deadline,
                   lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
                   what="the default ServiceAccount")

    def stop(self) -> None:
        """End every process (SIGTERM to its group, SIGKILL after 10 s) in reverse order; remove the temp dir."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        self._teardown(keep=self.keep_dir)

    def _teardown(self, keep: bool) -> None:
        # the API server's clients first, then the API server (it drains its requests into etcd), then etcd
        for stage in (("kwok", "kube-scheduler", "kube-controller-manager"), ("kube-apiserver",), ("etcd",)):
            procs = [p for p in self._procs if p.name in stage]
            for proc in procs:
                if proc.popen.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.popen.pid, signal.SIGTERM)
            for proc in procs:
                try:
                    proc.popen.wait(10)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.popen.pid, signal.SIGKILL)
                    proc.popen.wait()
                # the group may hold more than the leader (none of these fork, but leave nothing behind)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
        self._procs = []
        if self.dir is not None and self.dir.exists():
            if keep:
                print(f"controlplane: kept {self.dir} (MESHLIB_K8S_KEEP)", file=sys.stderr)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)

    # ---- the API ------------------------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, token: str | None = None,
            content_type: str = "application/json") -> Any:
        """One request to the API server as the admin (or `token`); the decoded JSON answer.
        urllib.error.HTTPError for a non-2xx answer."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.server + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.admin_token}", "Accept": "application/json",
            **({"Content-Type": content_type} if data is not None else {})})
        with urllib.request.urlopen(req, timeout=10, context=self._ssl) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    # ---- internals ----------------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        assert self.dir is not None
        log = self.log_path(name)
        with open(log, "ab") as out:
            popen = subprocess.Popen(
                [str(self.build.bin[name]), *args, *self.extra_args.get(name, ())], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir, env={**os.environ, **(env or {})},
                start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
        self._procs.append(_Proc(name, popen, log))

    def _wait(self, component: str, deadline: float, ready: Any, what: str | None = None) -> None:
        """Poll `ready()` until it is true; ControlPlaneError when any process exits or the deadline passes."""
        delay = 0.05
        while True:
            for proc in self._procs:
                code = proc.popen.poll()
                if code is not None:
                    raise ControlPlaneError(f"{proc.name} exited with code {code} while waiting for "
                                            f"{what or component + ' to be ready'}; from {self._where(proc.log)}:\n"
                                            f"{self._failure_excerpt(proc.name)}")
            if ready():
                return
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {self.startup_timeout:g}s waiting for "
                                        f"{what or component + ' to be ready'}; from "
                                        f"{self._where(self.log_path(component))}:\n{self._failure_excerpt(component)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _where(self, log: Path) -> str:
        return str(log) if self.keep_dir else f"{log} (removed on stop; MESHLIB_K8S_KEEP=1 keeps it)"

    def _http_ok(self, url: str, *, tls: bool = True, verify: bool = True, token: str | None = None) -> bool:
        ctx = None
        if tls:
            ctx = self._ssl if verify else ssl._create_unverified_context()  # self-signed /healthz of a controller
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def _exists(self, path: str) -> bool:
        try:
            self.api("GET", path)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise
        except OSError:
            return False

    def _node_ready(self, name: str) -> bool:
        try:
            node = self.api("GET", f"/api/v1/nodes/{name}")
        except (OSError, urllib.error.URLError):
            return False
        return any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in node.get("status", {}).get("conditions") or [])

    def _node(self, name: str) -> dict[str, Any]:
        capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": {FAKE_NODE_ANNOTATION[0]: FAKE_NODE_ANNOTATION[1],
                                                       "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "kubernetes.io/role": "agent",
                                    "node-role.kubernetes.io/agent": "", "type": "kwok"}},
            "spec": {},
            "status": {"allocatable": capacity, "capacity": capacity,
                       "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                                    "kubeletVersion": self.build.versions.get("kubernetes", ""),
                                    "kubeProxyVersion": "", "containerRuntimeVersion": "kwok", "osImage": "kwok",
                                    "kernelVersion": "", "bootID": "", "machineID": "", "systemUUID": ""}},
        }

    def _kwok_stages(self) -> str:
        """kwok's own Stage documents, read from its module (the kustomization.yaml of each stage dir lists them)."""
        docs: list[str] = []
        for rel in KWOK_STAGES:
            d = self.build.kwok_module / rel
            kustomization = yaml.safe_load((d / "kustomization.yaml").read_text(encoding="utf-8"))
            for resource in kustomization["resources"]:
                docs.append((d / resource).read_text(encoding="utf-8"))
        return "\n---\n".join(docs)

    def _kwok_crds(self) -> list[dict[str, Any]]:
        """The CRDs of KWOK_DEBUG_KINDS, read from kwok's module (kustomize/crd lists its CRD files)."""
        d = self.build.kwok_module / "kustomize" / "crd"
        kustomization = yaml.safe_load((d / "kustomization.yaml").read_text(encoding="utf-8"))
        docs = [doc for resource in kustomization["resources"]
                for doc in yaml.load_all((d / resource).read_text(encoding="utf-8"), Loader=_YAML_LOADER)
                if doc and doc.get("kind") == "CustomResourceDefinition"
                and doc["spec"]["names"]["kind"] in KWOK_DEBUG_KINDS]
        missing = set(KWOK_DEBUG_KINDS) - {doc["spec"]["names"]["kind"] for doc in docs}
        if missing:
            raise ControlPlaneError(f"kwok's module {self.build.kwok_module} has no CRD for "
                                    f"{', '.join(sorted(missing))}")
        return docs

    def _write_tokens_and_kubeconfigs(self, certs: _Certs) -> None:
        assert self.dir is not None
        users = {  # token, user, uid, groups (the apiserver's static token file)
            self.admin_token: (self.ADMIN_USER, "system:masters"),
            self.viewer_token: (self.VIEWER_USER, ""),
            # the built-in RBAC grants these two users what their components need (as kubeadm sets them up)
            self._component_tokens["kube-controller-manager"]: ("system:kube-controller-manager", ""),
            self._component_tokens["kube-scheduler"]: ("system:kube-scheduler", ""),
            # kwok writes node and pod status, leases and events for every fake node
            self._component_tokens["kwok"]: ("meshlib-kwok", "system:masters"),
        }
        tokens = self.dir / "pki" / "tokens.csv"
        tokens.write_text("".join(f'{tok},{user},{user},"{groups}"\n' for tok, (user, groups) in users.items()))
        tokens.chmod(0o600)

        def kubeconfig(path: Path, contexts: dict[str, str]) -> None:
            cfg = {
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "meshlib", "cluster": {"server": self.server,
                                                             "certificate-authority": str(certs.ca_cert)}}],
                "users": [{"name": name, "user": {"token": tok}} for name, tok in contexts.items()],
                "contexts": [{"name": name, "context": {"cluster": "meshlib", "user": name, "namespace": "default"}}
                             for name in contexts],
                "current-context": next(iter(contexts)),
            }
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            path.chmod(0o600)

        kubeconfig(self.dir / "kubeconfig", {"admin": self.admin_token, "viewer": self.viewer_token})
        for component, tok in self._component_tokens.items():
            kubeconfig(self.dir / f"{component}.kubeconfig", {component: tok})


def main() -> int:
    """Start a control plane, print how to reach it, and wait for Ctrl-C (or SIGTERM)."""
    try:
        build = Build.load()
    except ControlPlaneError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    cp = ControlPlane(build)
    try:
        cp.start()
        print(f"Kubernetes {build.versions['kubernetes']} (etcd {build.versions['etcd']}, kwok "
              f"{build.versions['kwok']}) ready in {cp.startup_seconds:.1f}s at {cp.server}")
        print(f"  export KUBECONFIG={cp.kubeconfig}    # contexts: admin (current), viewer (no RBAC grants)")
        print(f"  logs: {cp.dir / 'logs'}")
        print(f"  Istio CRDs: {build.istio_crds}\n  Flagger CRDs: {build.flagger_crds}")
        print("Ctrl-C stops it and removes the temp dir.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    except ControlPlaneError as exc:
        print(f"controlplane: {exc}", file=sys.stderr)
        return 1
    finally:
        cp.stop()


if __name__ == "__main__":
    raise SystemExit(main())
