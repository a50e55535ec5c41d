"""The one place where httpx's exceptions become ours."""

from __future__ import annotations

import httpx

from .errors import ConnectError, ProtocolError, TransportError, VendorTimeoutError


def map_httpx_error(exc: httpx.HTTPError, vendor: str, timeout_s: float | None = None) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting",
            httpx.ReadTimeout: "waiting for data",
            httpx.WriteTimeout: "sending the request",
            httpx.PoolTimeout: "waiting for a free connection",
        }.get(type(exc), "waiting")
        limit = f" ({timeout_s:g} s)" if timeout_s else ""
        return VendorTimeoutError(
            f"timed out {what}{limit}; the vendor is slow or hanging. Raise the timeout or try "
            f"another vendor", vendor=vendor)
    if isinstance(exc, httpx.ConnectError):
        return ConnectError(f"could not connect ({exc}); check the base URL and that the "
                            f"server is running", vendor=vendor)
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        # A reset before any byte reads as ReadError; a cut body as RemoteProtocolError.
        if "reset" in str(exc).lower() or isinstance(exc, httpx.ReadError | httpx.WriteError):
            return ConnectError(f"the connection was reset ({type(exc).__name__})", vendor=vendor)
        when = "before any response" if "without sending a response" in str(exc) \
            else "mid-response"
        return ProtocolError(f"the connection closed {when} ({exc})", vendor=vendor)
    return TransportError(f"{type(exc).__name__}: {exc}", vendor=vendor)
