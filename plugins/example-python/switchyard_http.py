"""Outbound HTTP for Switchyard plugins in Python.

A small synchronous client over WASI's `wasi:http/outgoing-handler` (the
bindings componentize-py generates from the plugin's WIT). The standard
library's `urllib` cannot work inside a component: there are no sockets, only
`wasi:http`.

    import switchyard_http as http

    try:
        r = http.request("POST", "https://api.example.com/orders",
                         headers=[("content-type", "application/json")],
                         body=msg.payload)
    except http.HttpError as e:
        ...  # e.kind: "denied", "prohibited", "timeout", ...; e.transient
    if r.ok: ...

The host decides what is reachable (the subscription's `egress.allow`; private
addresses only where the operator allowed them), bounds each request by the
attempt's deadline and `egress.timeout_ms`, cuts bodies at
`egress.max_response_bytes`, and adds `idempotency-key: {subscription}/{message
id}` unless you set one: a request is repeated when its attempt is retried.

The build must name the generated modules: componentize-py ... 
`--import-interface-name wasi:http/types@0.2.12=http_types`
`--import-interface-name wasi:http/outgoing-handler@0.2.12=outgoing_handler`
(build.sh does).
"""

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from componentize_py_types import Err
from wit_world.imports import http_types, outgoing_handler, streams

# Most bytes one blocking write may take, and bytes asked for per read.
_WRITE_CHUNK = 4096
_READ_CHUNK = 65536


@dataclass
class Response:
    """A response, read in full. Header names are lowercase."""

    status: int
    headers: List[Tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return 200 <= self.status < 300

    def header(self, name: str) -> Optional[str]:
        """The first value of header `name` (any case), if present."""
        name = name.lower()
        for k, v in self.headers:
            if k == name:
                return v
        return None


class HttpError(Exception):
    """A request that got no response.

    `kind` is one of: denied (not in the subscription's egress.allow, or too
    many requests), prohibited (a non-public address), invalid-url, timeout,
    body-too-large, dns, connection, tls, other.
    """

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail

    @property
    def transient(self) -> bool:
        """Whether trying again later may help."""
        return self.kind in ("timeout", "dns", "connection", "tls", "other")


_KINDS = {
    "HttpRequestDenied": "denied",
    "DestinationIpProhibited": "prohibited",
    "HttpRequestUriInvalid": "invalid-url",
    "ConnectionTimeout": "timeout",
    "ConnectionReadTimeout": "timeout",
    "ConnectionWriteTimeout": "timeout",
    "HttpResponseTimeout": "timeout",
    "DnsTimeout": "timeout",
    "HttpResponseBodySize": "body-too-large",
    "DnsError": "dns",
    "DestinationNotFound": "dns",
    "ConnectionRefused": "connection",
    "ConnectionTerminated": "connection",
    "ConnectionLimitReached": "connection",
    "DestinationUnavailable": "connection",
    "DestinationIpUnroutable": "connection",
    "HttpResponseIncomplete": "connection",
    "TlsProtocolError": "tls",
    "TlsCertificateError": "tls",
    "TlsAlertReceived": "tls",
}


def _error(code) -> HttpError:
    """The HttpError of a wasi:http error code."""
    name = type(code).__name__.removeprefix("ErrorCode_")
    return HttpError(_KINDS.get(name, "other"), name)


def _stream_error(e) -> HttpError:
    if isinstance(e, streams.StreamError_LastOperationFailed):
        code = http_types.http_error_code(e.value)
        if code is not None:
            return _error(code)
    return HttpError("connection", "the connection closed")


def _split(url: str):
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise HttpError("invalid-url", f"{url!r}: use http(s)://host[:port]/path")
    rest = rest.split("#", 1)[0]
    cuts = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    cut = min(cuts) if cuts else len(rest)
    authority, path = rest[:cut], rest[cut:]
    if not authority or "@" in authority:
        raise HttpError("invalid-url", f"{url!r}: use http(s)://host[:port]/path")
    if not path:
        path = "/"
    elif path.startswith("?"):
        path = "/" + path
    return scheme.lower() == "https", authority, path


_METHODS = {
    "GET": http_types.Method_Get,
    "HEAD": http_types.Method_Head,
    "POST": http_types.Method_Post,
    "PUT": http_types.Method_Put,
    "DELETE": http_types.Method_Delete,
    "OPTIONS": http_types.Method_Options,
    "PATCH": http_types.Method_Patch,
}


def request(
    method: str,
    url: str,
    headers: Sequence[Tuple[str, str]] = (),
    body: bytes = b"",
    timeout_ms: Optional[int] = None,
) -> Response:
    """Send a request and read the whole response; raises HttpError.

    `timeout_ms` bounds each phase — connecting, waiting for the answer, each
    pause in the body — within the host's own limits.
    """
    method = method.upper()
    https, authority, path = _split(url)
    entries = [(k, v.encode()) for k, v in headers]
    has_length = any(k.lower() == "content-length" for k, _ in headers)
    if not has_length and (body or method in ("POST", "PUT", "PATCH")):
        entries.append(("content-length", str(len(body)).encode()))
    try:
        fields = http_types.Fields.from_list(entries)
    except Err as e:
        raise HttpError("other", f"bad header: {e.value}") from None
    req = http_types.OutgoingRequest(fields)
    kind = _METHODS.get(method)
    req.set_method(kind() if kind else http_types.Method_Other(method))
    req.set_scheme(http_types.Scheme_Https() if https else http_types.Scheme_Http())
    req.set_authority(authority)
    req.set_path_with_query(path)
    options = None
    if timeout_ms is not None:
        options = http_types.RequestOptions()
        ns = int(timeout_ms) * 1_000_000
        options.set_connect_timeout(ns)
        options.set_first_byte_timeout(ns)
        options.set_between_bytes_timeout(ns)
    out_body = req.body()
    try:
        future = outgoing_handler.handle(req, options)
    except Err as e:
        raise _error(e.value) from None
    # Write the body while the host sends; if the host refused the request
    # the write fails, and the response below says why.
    written = None
    try:
        with out_body.write() as stream:
            for i in range(0, len(body), _WRITE_CHUNK):
                stream.blocking_write_and_flush(body[i : i + _WRITE_CHUNK])
        http_types.OutgoingBody.finish(out_body, None)
    except Err as e:
        written = e.value
    with future:
        with future.subscribe() as ready:
            ready.block()
        got = future.get()
    if got is None or isinstance(got, Err):
        if written is not None and type(written).__name__.startswith("StreamError"):
            raise _stream_error(written)
        raise HttpError("other", "the response was already taken")
    if isinstance(got.value, Err):
        raise _error(got.value.value)
    # A response came (perhaps early, before the whole body was taken): it is
    # the answer, whatever became of the rest of the body (`written`).
    with got.value.value as incoming:
        status = incoming.status()
        with incoming.headers() as fields:
            headers_out = [(k.lower(), v.decode("latin-1")) for k, v in fields.entries()]
        in_body = incoming.consume()
        data = bytearray()
        with in_body.stream() as stream:
            while True:
                try:
                    data += stream.blocking_read(_READ_CHUNK)
                except Err as e:
                    if isinstance(e.value, streams.StreamError_Closed):
                        break
                    raise _stream_error(e.value) from None
        with http_types.IncomingBody.finish(in_body):
            pass
    return Response(status, headers_out, bytes(data))


def get(url: str, **kwargs) -> Response:
    """A GET request."""
    return request("GET", url, **kwargs)


def post(url: str, body: bytes, **kwargs) -> Response:
    """A POST request."""
    return request("POST", url, body=body, **kwargs)
