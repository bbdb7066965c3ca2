"""A batch of requests from inside the mesh as ONE command in a client pod: `curl --parallel` over a config file.

Every request of the batch is one operation of a curl config (separated by `next`, so each carries its own
x-request-id and headers); curl writes each answer's headers and body to files in a temp dir and one `%{json}`
line per transfer; the script then prints all of it, framed by a random boundary, and exits 0 (what failed is in
the frames: a kubelet reports a non-zero exit, kwok cannot). The config is generated in the pod by a shell loop
from a few arguments, so the command's size does not grow with the request count (exec arguments travel in the
URL of the API server's exec request).

Needs in the container: `sh`, `mktemp`, `head` and curl 7.75 or later (`--parallel`, `%{json}` with `errormsg`;
with a rate, 7.84: `--rate`). The walkthrough's client (`sleep`, image curlimages/curl) has them.

    command = batch_command(url, host, plan, ids, boundary)     # argv for one exec
    responses = parse_batch(stdout, plan, ids, boundary, what)  # one Response per request, in plan order

Pure: no I/O.
"""

from __future__ import annotations

import json
import math
import re
import secrets
import uuid
from dataclasses import dataclass

from meshlib.errors import MeshlibError
from meshlib.traffic import Plan, Response

MAX_REQUESTS = 10_000  # per exec: every answer comes back in the one exec's output
MAX_PARALLEL = 300  # curl's own ceiling for --parallel-max
MAX_OUTPUT = 128 << 20  # bodies are cut so that a batch's output stays under this
MAX_BODY = 1 << 20
MAX_TIME = 60  # per request, seconds (as aiohttp's total timeout on the gateway path)
CONNECT_TIMEOUT = 5
STDERR_LIMIT = 4096

# $1 count, $2 request-id prefix, $3 parallel, $4 body cap, $5 boundary, $6 "rate" option or "", $7… one config
# fragment per header rotation step (request i uses fragment i % k)
SCRIPT = r"""
n=$1; id=$2; par=$3; cap=$4; b=$5; rate=$6; shift 6; k=$#
d=$(mktemp -d 2>/dev/null) || d=/tmp/meshlib-curl-$$
mkdir -p "$d" || { printf '%s fail mktemp\n' "$b"; exit 0; }
trap 'rm -rf "$d"' EXIT
i=0
while [ "$i" -lt "$n" ]; do
  eval "frag=\${$((i % k + 1))}"
  printf '%s\nheader = "x-request-id: %s%08x"\noutput = "%s/%d.b"\ndump-header = "%s/%d.h"\n' \
    "$frag" "$id" "$i" "$d" "$i" "$d" "$i"
  i=$((i + 1))
  [ "$i" -lt "$n" ] && printf 'next\n'
done > "$d/cfg"
if [ -n "$rate" ]; then
  curl -s -S --rate "$rate" --config "$d/cfg" > "$d/w" 2> "$d/e"
else
  curl -s -S --parallel --parallel-max "$par" --config "$d/cfg" > "$d/w" 2> "$d/e"
fi
rc=$?
printf '%s w\n' "$b"; cat "$d/w"
printf '\n%s e\n' "$b"; head -c 4096 "$d/e"
i=0
while [ "$i" -lt "$n" ]; do
  printf '\n%s h %d\n' "$b" "$i"; cat "$d/$i.h" 2>/dev/null
  printf '\n%s b %d\n' "$b" "$i"; head -c "$cap" "$d/$i.b" 2>/dev/null
  i=$((i + 1))
done
printf '\n%s end %d\n' "$b" "$rc"
exit 0
"""


def _quote(value: str) -> str:
    """A curl config parameter in double quotes (curl unescapes \\\\ \\" \\t \\n \\r \\v inside them)."""
    escaped = (value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
               .replace("\t", "\\t").replace("\v", "\\v"))
    return f'"{escaped}"'


def request_ids(count: int) -> list[str]:
    """The batch's x-request-ids: one random UUID whose last 8 hex digits count the requests (the script prints
    the same ones), so each is unique and UUID-shaped."""
    prefix = str(uuid.uuid4())[:-8]
    return [f"{prefix}{i:08x}" for i in range(count)]


def _rate_option(rate: float) -> str:
    """curl's --rate takes whole requests per second, minute or hour."""
    if rate >= 1:
        return f"{round(rate)}/s"
    if rate * 60 >= 1:
        return f"{round(rate * 60)}/m"
    return f"{max(1, round(rate * 3600))}/h"


def check(plan: Plan) -> int:
    """The number of requests of a plan a client pod can send in one exec; MeshlibError (one line) otherwise."""
    if plan.count is None:
        raise MeshlibError("sending for a duration from a client pod: the kubernetes backend sends a batch from "
                           "inside the mesh as one curl in the pod, which needs a request count")
    if plan.count > MAX_REQUESTS:
        raise MeshlibError(f"{plan.count} requests from a client pod: at most {MAX_REQUESTS:,} per batch (every "
                           "answer comes back in the one exec's output); send several batches")
    return plan.count


def body_cap(count: int) -> int:
    return max(4096, min(MAX_BODY, MAX_OUTPUT // max(1, count)))


def batch_command(url: str, host: str | None, plan: Plan, ids: list[str], boundary: str) -> list[str]:
    """argv (sh -c SCRIPT …) sending the plan's requests to `url` with curl from inside a container."""
    count = check(plan)
    assert len(ids) == count and all(i[:-8] == ids[0][:-8] for i in ids)
    common = [f"url = {_quote(url)}", f"write-out = {_quote('%{json}' + chr(10))}", 'noproxy = "*"',
              f"max-time = {MAX_TIME}", f"connect-timeout = {CONNECT_TIMEOUT}"]
    if plan.method.upper() == "HEAD":
        common.append("head")
    elif plan.method.upper() != "GET" or plan.body is not None:
        common.append(f"request = {_quote(plan.method.upper())}")
    if plan.body is not None:
        common.append(f"data-binary = {_quote(plan.body)}")
    if host:
        common.append(f"header = {_quote('Host: ' + host)}")
    steps = len(plan.rotate[1]) if plan.rotate and plan.rotate[1] else 1
    fragments = []
    for step in range(min(steps, count)):
        headers = plan.headers_for(step)
        fragments.append("\n".join([*common, *(f"header = {_quote(f'{k}: {v}')}" for k, v in headers.items())]))
    parallel = min(plan.concurrency, MAX_PARALLEL)
    rate = _rate_option(plan.rate) if plan.rate else ""
    return ["sh", "-c", SCRIPT, "meshlib-batch", str(count), ids[0][:-8], str(parallel), str(body_cap(count)),
            boundary, rate, *fragments]


def new_boundary() -> str:
    return f"--meshlib-{secrets.token_hex(12)}"


def exec_timeout(plan: Plan) -> float:
    """How long the one exec may take: every round of parallel requests at curl's per-request limit, or the rate's
    pace, and a margin; at most 10 minutes."""
    count = plan.count or 1
    if plan.rate:
        spread = count / plan.rate + MAX_TIME
    else:
        spread = math.ceil(count / min(plan.concurrency, MAX_PARALLEL)) * (MAX_TIME + CONNECT_TIMEOUT)
    return min(600.0, spread + 30.0)


@dataclass
class _Frames:
    writeouts: str = ""
    stderr: str = ""
    headers: dict[int, str] | None = None
    bodies: dict[int, str] | None = None
    exit_code: int | None = None
    failed: str = ""


def _frames(stdout: str, boundary: str) -> _Frames:
    frames = _Frames(headers={}, bodies={})
    assert frames.headers is not None and frames.bodies is not None
    marker = re.compile(rf"(?:^|\n){re.escape(boundary)} (\w+)(?: (-?\d+))?\n?")
    matches = list(marker.finditer(stdout))
    for n, m in enumerate(matches):
        end = matches[n + 1].start() if n + 1 < len(matches) else len(stdout)
        content = stdout[m.end():end]
        kind, number = m.group(1), m.group(2)
        if kind == "w":
            frames.writeouts = content
        elif kind == "e":
            frames.stderr = content
        elif kind == "h" and number is not None:
            frames.headers[int(number)] = content
        elif kind == "b" and number is not None:
            frames.bodies[int(number)] = content
        elif kind == "end" and number is not None:
            frames.exit_code = int(number)
        elif kind == "fail":
            frames.failed = stdout[m.start():].strip()
    return frames


def _headers(raw: str) -> dict[str, str]:
    """The last response's headers in a curl --dump-header file (1xx answers come first)."""
    blocks = [b for b in re.split(r"\r?\n\r?\n", raw) if b.strip()]
    if not blocks:
        return {}
    out: dict[str, str] = {}
    for line in blocks[-1].splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip()] = value.strip()
    return out


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 1] + "…"


def parse_batch(stdout: str, plan: Plan, ids: list[str], boundary: str, what: str) -> list[Response]:
    """One Response per request, in plan order, from the script's framed output; MeshlibError (one line) when curl
    did not run at all (not installed, too old, no temp dir)."""
    frames = _frames(stdout, boundary)
    if frames.failed:
        raise MeshlibError(f"{what}: the client could not make a temp dir for the batch ({_one_line(frames.failed)})")
    if frames.exit_code is None:
        raise MeshlibError(f"{what}: the batch's output ended early ({_one_line(stdout[-300:]) or 'no output'})")
    results: dict[int, dict[str, object]] = {}
    for line in frames.writeouts.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            info = json.loads(line)
        except ValueError:
            continue
        name = str(info.get("filename_effective") or "")
        index = name.rpartition("/")[2].removesuffix(".b")
        if index.isdigit():
            results[int(index)] = info
    if not results:
        stderr = _one_line(frames.stderr)
        if frames.exit_code == 127 or "not found" in stderr:
            raise MeshlibError(f"{what}: curl is not in the container ({stderr or 'exit 127'}): sending from a "
                               "workload needs curl in it, as the walkthrough's sleep client (curlimages/curl) has")
        raise MeshlibError(f"{what}: curl sent nothing (exit {frames.exit_code}: {stderr or 'no message'}; "
                           "curl 7.75 or later is needed)")
    cap = body_cap(len(ids))
    responses = []
    for i, request_id in enumerate(ids):
        info = results.get(i)
        sent = plan.headers_for(i)
        if info is None:
            responses.append(Response(request_id, 0, {}, "", 0.0, "curl reported nothing for this request",
                                      sent_headers=sent))
            continue
        status = int(info.get("http_code") or info.get("response_code") or 0)
        error = "" if status else str(info.get("errormsg") or f"curl exit {info.get('exitcode')}")
        body = (frames.bodies or {}).get(i, "")
        size = int(info.get("size_download") or 0)
        if status and size > cap:
            error = f"body cut at {cap:,} of {size:,} bytes (the batch's output is bounded)"
        responses.append(Response(request_id, status, _headers((frames.headers or {}).get(i, "")) if status else {},
                                  body if status else "", float(info.get("time_total") or 0) * 1000, error,
                                  sent_headers=sent))
    return responses
