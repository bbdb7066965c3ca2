"""Access logs on every HTTP connection manager: Istio's TEXT log (when enabled) and meshlib's request records.

The TEXT log is what istiod configures when `meshConfig.accessLogFile` or a Telemetry resource turns access
logging on (istio-semantics.md §6.2). The record log is meshlib's stand-in for Istio's stats filter (an
`istio.*` extension upstream Envoy does not have): one JSON line per request, always on, from which
`meshlib.local.envoy.records` derives the request ledger and Istio's standard metrics.
"""

from __future__ import annotations

from meshlib.xds.model import Json

FILE_LOG = "envoy.access_loggers.file"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

ISTIO_TEXT_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" '
    '%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" {cluster} '
    '%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% '
    '%ROUTE_NAME%\n')

# One JSON object per request. `direction` is "outbound" (a gateway's or a sidecar's outbound listener: the
# proxy's own workload is the source) or "inbound" (a sidecar's inbound listener: the workload is the destination).
RECORD_FIELDS: dict[str, str] = {
    "start": "%START_TIME(%s.%6f)%",  # epoch seconds, µs: orders hops of one request across proxies
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "attempt": "%REQ(X-ENVOY-ATTEMPT-COUNT)%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",  # tries this proxy made (0: none reached upstream)
    "protocol": "%PROTOCOL%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "wire_bytes_received": "%DOWNSTREAM_WIRE_BYTES_RECEIVED%",  # headers + body: istio_request_bytes
    "wire_bytes_sent": "%DOWNSTREAM_WIRE_BYTES_SENT%",  # headers + body: istio_response_bytes
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "downstream_local": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%",  # the peer itself, not X-Forwarded-For
    "route": "%ROUTE_NAME%",
}


def istio_text_log(profile_minor: int, path: str = "/dev/stdout") -> Json:
    """Istio's default TEXT access log (`%UPSTREAM_CLUSTER%` up to 1.23, `_RAW` from 1.24)."""
    cluster = "%UPSTREAM_CLUSTER_RAW%" if profile_minor >= 24 else "%UPSTREAM_CLUSTER%"
    return {"name": FILE_LOG, "typedConfig": {"@type": FILE_LOG_TYPE, "path": path, "logFormat": {
        "textFormatSource": {"inlineString": ISTIO_TEXT_FORMAT.replace("{cluster}", cluster)}}}}


def record_log(path: str, direction: str) -> Json:
    """meshlib's request records for one listener, as JSON lines in `path`."""
    fields = {**RECORD_FIELDS, "direction": direction}
    return {"name": FILE_LOG, "typedConfig": {"@type": FILE_LOG_TYPE, "path": path,
                                               "logFormat": {"jsonFormat": fields}}}
