"""`meshlib` command line: analyze, proxy-config and explain over manifests (and, later, a running mesh)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from meshlib.config.analyze import ERROR, analyze
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.explain import explain_json, explain_text, proxy_config
from meshlib.local import control, serve
from meshlib.profile import profile_for
from meshlib.router import Request
from meshlib.xds.dialect import render


def _common(p: argparse.ArgumentParser, files_required: bool = True) -> None:
    p.add_argument("-f", "--filename", action="append", required=files_required, metavar="PATH",
                   help="manifest file or folder (repeatable, like kubectl apply -f)")
    p.add_argument("-n", "--namespace", default="default", help="namespace for manifests without one")
    p.add_argument("--istio-version", default=None, help="Istio behaviour profile (default 1.17)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meshlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="report configuration problems, like istioctl analyze")
    _common(p)

    p = sub.add_parser("proxy-config", help="a proxy's Envoy config, like istioctl proxy-config")
    p.add_argument("what", choices=["routes", "clusters", "listeners", "endpoints", "all"])
    p.add_argument("proxy", help="deploy/NAME.NAMESPACE, e.g. deploy/istio-ingressgateway.istio-system")
    p.add_argument("--name", help="only the route config with this name (routes)")
    p.add_argument("-o", "--output", choices=["short", "json", "config_dump"], default="short")
    _common(p, files_required=False)  # without -f: from the running local mesh

    p = sub.add_parser("explain", help="predict where a request goes, and why")
    p.add_argument("--from", dest="proxy", required=True, help="the proxy the request passes: deploy/NAME.NS")
    p.add_argument("--host", required=True, help="Host (authority) of the request")
    p.add_argument("--path", default="/", help="path with optional query")
    p.add_argument("-X", "--method", default="GET")
    p.add_argument("-H", "--header", action="append", default=[], metavar="'NAME: VALUE'")
    p.add_argument("-o", "--output", choices=["text", "json"], default="text")
    _common(p)

    p = sub.add_parser("up", help="start the embedded mesh on loopback")
    _common(p)
    p.add_argument("--port", type=int, default=30000, help="ingress gateway port on 127.0.0.1 (0: any free)")
    p.add_argument("--detach", action="store_true", help="run in the background; stop with `meshlib down`")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="pace of Flagger's analysis clock: 0.05 runs a 45 s interval in 2.25 s")
    p.add_argument("--mesh-config", default=None,
                   help="a meshlib.yaml mapping user images to local commands; read only when given "
                        "(never from the current directory unasked: it runs commands)")

    sub.add_parser("down", help="stop the running embedded mesh")
    sub.add_parser("proxy-status", help="every proxy of the running mesh and its config sync state")

    for name, text in (("apply", "apply manifests to the running mesh"),
                       ("delete", "delete the manifests' resources from the running mesh")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-f", "--filename", action="append", required=True, metavar="PATH")
        p.add_argument("-n", "--namespace", default=None)

    p = sub.add_parser("get", help="list pods or resources of the running mesh")
    p.add_argument("what", help="pods, svc, deploy, vs, dr, gw, se")
    p.add_argument("-n", "--namespace", default=None)

    p = sub.add_parser("logs", help="container logs of a workload in the running mesh")
    p.add_argument("target", help="deploy/NAME")
    p.add_argument("-c", "--container", default=None, help="e.g. istio-proxy for the sidecar's access log")
    p.add_argument("-n", "--namespace", default=None)
    p.add_argument("--tail", type=int, default=None)
    return parser


def _store(args: argparse.Namespace) -> ConfigStore:
    return ConfigStore.from_paths(args.filename, args.namespace, profile_for(args.istio_version))


def _headers(raw: list[str]) -> list[tuple[str, str]]:
    out = []
    for h in raw:
        name, sep, value = h.partition(":")
        if not sep or not name.strip():
            raise MeshlibError(f"header {h!r} is not 'NAME: VALUE'")
        out.append((name.strip(), value.strip()))
    return out


def run(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        store = _store(args)
        findings = analyze(store)
        for f in findings:
            print(f)
        if not findings:
            print(f"✔ No validation issues found when analyzing {len(store)} resources.")
        return 1 if any(f.level == ERROR for f in findings) else 0
    if args.command == "up":
        return serve.up(args.filename, args.namespace, args.port, args.istio_version, args.detach,
                        args.mesh_config, args.time_scale)
    if args.command == "down":
        return serve.down()
    if args.command in ("apply", "delete"):
        paths = [os.path.abspath(p) for p in args.filename]
        print(control.send(args.command, {"paths": paths, "namespace": args.namespace}))
        return 0
    if args.command == "get":
        print(control.send("get", {"what": args.what, "namespace": args.namespace}))
        return 0
    if args.command == "logs":
        out = control.send("logs", {"target": args.target, "namespace": args.namespace,
                                    "container": args.container, "tail": args.tail})
        if out:
            print(out)
        return 0
    if args.command == "proxy-config" and not args.filename:
        print(control.send("proxy-config", {"what": args.what, "proxy": args.proxy, "output": args.output,
                                            "name": args.name,
                                            "namespace": None if args.namespace == "default" else args.namespace}))
        return 0
    if args.command == "proxy-config":
        print(render(proxy_config(_store(args), args.proxy), args.what, args.output, args.name))
        return 0
    if args.command == "proxy-status":
        print(control.send("proxy-status", {}))
        return 0
    if args.command == "explain":
        store = _store(args)
        request = Request.of(args.host, args.path, args.method, _headers(args.header))
        if args.output == "json":
            print(json.dumps(explain_json(store, args.proxy, request), indent=2))
        else:
            print(explain_text(store, args.proxy, request))
        return 0
    raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MeshlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
