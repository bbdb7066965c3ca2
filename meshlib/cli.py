"""`meshlib` command line: analyze, proxy-config and explain over manifests (and, later, a running mesh)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import yaml

import meshlib
from meshlib import cliargs
from meshlib.config.analyze import CODES, ERROR, Finding, analyze
from meshlib.config.loader import STDIN, expand_paths, read_stdin
from meshlib.config.store import ConfigStore
from meshlib.errors import MeshlibError
from meshlib.explain import explain_json, explain_text, proxy_config
from meshlib.profile import profile_for
from meshlib.router import Request
from meshlib.xds.dialect import render


def _common(p: argparse.ArgumentParser, files_required: bool = True) -> None:
    p.add_argument("-f", "--filename", action="append", required=files_required, metavar="PATH",
                   help="manifest file or folder (repeatable, like kubectl apply -f); - reads standard input")
    p.add_argument("-n", "--namespace", default="default", type=cliargs.namespace,
                   help="namespace for manifests without one")
    p.add_argument("--istio-version", default=None, help="Istio behaviour profile (default 1.17)")


def build_parser() -> argparse.ArgumentParser:
    parser = cliargs.OneLineParser(prog="meshlib", description=__doc__)
    parser.add_argument("--version", action="version", version=f"meshlib {meshlib.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="report configuration problems, like istioctl analyze")
    _common(p)
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table",
                   help="findings as lines (default) or as JSON/YAML for tools")

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
    p.add_argument("--port", type=cliargs.port, default=30000,
                   help="ingress gateway port on 127.0.0.1 (0: any free)")
    p.add_argument("--detach", action="store_true", help="run in the background; stop with `meshlib down`")
    p.add_argument("--time-scale", type=cliargs.time_scale, default=1.0,
                   help="pace of Flagger's analysis clock: 0.05 runs a 45 s interval in 2.25 s")
    p.add_argument("--mesh-config", default=None,
                   help="a meshlib.yaml mapping user images to local commands; read only when given "
                        "(never from the current directory unasked: it runs commands)")

    sub.add_parser("down", help="stop the running embedded mesh")
    sub.add_parser("proxy-status", help="every proxy of the running mesh and its config sync state")

    for name, text in (("apply", "apply manifests to the running mesh"),
                       ("delete", "delete the manifests' resources from the running mesh")):
        p = sub.add_parser(name, help=text)
        p.add_argument("-f", "--filename", action="append", required=True, metavar="PATH",
                       help="manifest file or folder (repeatable); - reads standard input")
        p.add_argument("-n", "--namespace", default=None, type=cliargs.namespace)

    p = sub.add_parser("get", help="list pods or resources of the running mesh")
    p.add_argument("what", help="pods, all, svc, deploy, vs, dr, gw, se, canary, or any applied kind (hpa, roles)")
    p.add_argument("-n", "--namespace", default=None, type=cliargs.namespace)
    p.add_argument("-o", "--output", choices=["table", "json", "yaml"], default="table")

    p = sub.add_parser("logs", help="container logs of a workload in the running mesh")
    p.add_argument("target", help="deploy/NAME")
    p.add_argument("-c", "--container", default=None, help="e.g. istio-proxy for the sidecar's access log")
    p.add_argument("-n", "--namespace", default=None, type=cliargs.namespace)
    p.add_argument("--tail", type=cliargs.line_count, default=None)
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


def _dump(data: Any, output: str) -> str:
    if output == "yaml":
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000).rstrip("\n")
    return json.dumps(data, indent=2, ensure_ascii=False)


def _finding_data(f: Finding) -> dict[str, Any]:
    return {"level": f.level, "code": f.code, "name": CODES.get(f.code, ""), "resource": f.resource,
            "file": f.source.file, "line": f.source.line, "message": f.message}


def _analyze(args: argparse.Namespace) -> int:
    store = _store(args)
    findings = analyze(store)
    if args.output != "table":
        print(_dump([_finding_data(f) for f in findings], args.output))
    else:
        for f in findings:
            print(f)
        if not findings:
            print(f"✔ No validation issues found when analyzing {len(store)} resources.")
    return 1 if any(f.level == ERROR for f in findings) else 0


def _manifests_body(filenames: list[str], stdin: Any = None) -> dict[str, Any]:
    """What `apply`/`delete` send the running mesh: absolute paths, and standard input's text for `-f -`."""
    if filenames.count("-") > 1:
        raise MeshlibError("-f - is given more than once: standard input can be read only once")
    paths = [os.path.abspath(p) for p in filenames if p != "-"]
    for _ in expand_paths(paths):  # a missing file is named here, before asking the mesh
        pass
    body: dict[str, Any] = {"paths": paths}
    if "-" in filenames:
        body["text"] = read_stdin(stdin)
    return body


def _send(command: str, body: dict[str, Any]) -> Any:
    from meshlib.local import control, serve

    serve.checked_state()  # a damaged state file is one line, not a KeyError
    return control.send(command, body)


def run(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "up":
        if args.detach and "-" in (args.filename or []):
            raise MeshlibError(f"-f - cannot be used with --detach: the background mesh has no {STDIN}; "
                               "save the manifests to a file and pass it with -f")
        from meshlib.local import serve  # the embedded mesh: only for the commands that run it

        return serve.up(args.filename, args.namespace, args.port, args.istio_version, args.detach,
                        args.mesh_config, args.time_scale)
    if args.command == "down":
        from meshlib.local import serve

        return serve.down()
    if args.command in ("apply", "delete"):
        print(_send(args.command, {**_manifests_body(args.filename), "namespace": args.namespace}))
        return 0
    if args.command == "get":
        out = _send("get", {"what": args.what, "namespace": args.namespace, "output": args.output})
        print(out if isinstance(out, str) else _dump(out, args.output))
        return 0
    if args.command == "logs":
        out = _send("logs", {"target": args.target, "namespace": args.namespace,
                             "container": args.container, "tail": args.tail})
        if out:
            print(out)
        return 0
    if args.command == "proxy-config" and not args.filename:
        print(_send("proxy-config", {"what": args.what, "proxy": args.proxy, "output": args.output,
                                     "name": args.name,
                                     "namespace": None if args.namespace == "default" else args.namespace}))
        return 0
    if args.command == "proxy-config":
        print(render(proxy_config(_store(args), args.proxy), args.what, args.output, args.name))
        return 0
    if args.command == "proxy-status":
        print(_send("proxy-status", {}))
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
    """Exit 0, 1 (analyze found errors), 2 (bad input: one `error:` line), 70 (a meshlib bug: one line too;
    MESHLIB_DEBUG=1 shows its traceback)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (one line, see OneLineParser) and --help
        return exc.code if isinstance(exc.code, int) else cliargs.USAGE_ERROR
    try:
        return run(args)
    except MeshlibError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return cliargs.USAGE_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("MESHLIB_DEBUG"):
            raise
        print(f"error: internal error ({type(exc).__name__}: {' '.join(str(exc).split())}); this is a meshlib bug: "
              "please report it with the command line and manifests (MESHLIB_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
