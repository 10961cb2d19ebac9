"""The aiohttp versions the server's defences (proxy.edge.server) work with, checked at start-up.

proxy.edge.server subclasses aiohttp's connection handler and server and reads their private state
(`_waiter`, `_messages`, `_reading_paused`, …); `proxy.edge.server.Runner` replaces the private
`AppRunner._make_server`. aiohttp does not promise any of that between minor versions. A rename
would not fail loudly: an override aiohttp no longer calls is skipped, so the header deadline,
body rate, connection cap or framing checks would simply stop. So setup.cfg bounds aiohttp to the
versions tested (`SUPPORTED`), `tox -e canary` runs the server's tests against the newest one in
that range, and a `Runner` refuses to start when anything below is missing, naming the range.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

SUPPORTED = ">=3.10,<3.15"  # as in setup.cfg's install_requires (tests/test_aiohttp_support.py checks)

# What proxy.edge.server reads, overrides or relies on aiohttp calling, per class.
INTERNALS = {
    web.RequestHandler: ("_waiter", "_messages", "_close", "_force_close", "_reading_paused", "_parser",
                         "_loop", "transport", "data_received", "connection_made", "connection_lost",
                         "eof_received", "pause_writing", "resume_writing", "pause_reading",
                         "resume_reading", "force_close", "handle_error"),
    web.Server: ("connection_made",),
    web.AppRunner: ("_make_server",),
    web.StreamResponse: ("_req", "write_eof", "force_close"),
}
# Set by `web.Server.__init__`, so looked for on an instance: `GuardedServer` copies them.
SERVER_INSTANCE = ("_loop", "_kwargs", "_connections", "request_handler", "request_factory",
                   "handler_cancellation")


_ABSENT = object()


class UnsupportedAiohttp(RuntimeError):
    """The installed aiohttp lacks internals the server's defences need."""


async def _unused(request):  # the handler of the probe `web.Server`, which never serves
    raise NotImplementedError


def _present(cls: type, name: str) -> bool:
    """`cls.name` exists and is no abstract placeholder: were `AppRunner._make_server` renamed,
    the abstract `BaseRunner._make_server` would still be found."""
    found = getattr(cls, name, _ABSENT)
    return found is not _ABSENT and not getattr(found, "__isabstractmethod__", False)


def problem() -> str | None:
    """Why the installed aiohttp cannot carry the server's defences, or None when it can."""
    missing = [f"{cls.__name__}.{name}" for cls, names in INTERNALS.items() for name in names
               if not _present(cls, name)]
    loop = asyncio.new_event_loop()  # a `web.Server` made only to be looked at, never run
    try:
        probe = web.Server(_unused, loop=loop)
        missing += [f"Server.{name}" for name in SERVER_INSTANCE if not hasattr(probe, name)]
    except TypeError as exc:  # its constructor changed
        missing.append(f"Server() ({exc})")
    finally:
        loop.close()
    if not missing:
        return None
    return (f"aiohttp {aiohttp.__version__} lacks what the server's request limits (header deadline, "
            f"body rate, connection cap, framing checks) rely on: {', '.join(missing)}. This gateway "
            f"supports aiohttp{SUPPORTED}: pip install 'aiohttp{SUPPORTED}'")


def check_aiohttp() -> None:
    """Raise `UnsupportedAiohttp` (its message names the supported range) if `problem()`."""
    found = problem()
    if found is not None:
        raise UnsupportedAiohttp(found)
