"""A web app served by uvicorn: in a daemon thread (a test, a notebook, a host
application) or as the main program. The review page and the scoring service run so."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from typing import Any, Literal, Self

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable from this machine only."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class ServerThread:
    """Serves ``app`` on ``host:port`` (port 0 picks a free one) with uvicorn.

    Subclasses say what they serve (``what``), which error a failed start raises, and
    what to warn about when serving (``_warn``: by default, an address other machines
    reach). ``uvicorn_options`` go to ``uvicorn.Config`` (``ssl_certfile``, ...).
    """

    what = "the server"
    error: type[Exception] = RuntimeError

    def __init__(self, app: Any, host: str, port: int, *, access_log: bool,
                 lifespan: Literal["auto", "on", "off"] = "off",
                 thread_name: str = "semgrad-server", **uvicorn_options: Any) -> None:
        import uvicorn

        self.host = host
        self._requested_port = port
        self._thread_name = thread_name
        # log_config=None leaves the host application's logging set-up alone.
        self._uvicorn = uvicorn.Server(uvicorn.Config(
            app, host=host, port=port, log_config=None, lifespan=lifespan,
            access_log=access_log, server_header=False, **uvicorn_options))
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        servers = getattr(self._uvicorn, "servers", [])
        if servers and servers[0].sockets:
            return int(servers[0].sockets[0].getsockname()[1])
        return self._requested_port

    @property
    def root_url(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}"

    def _warn(self) -> None:
        if not is_loopback(self.host):
            logger.warning("%s bound to %s: reachable from other machines; put it behind TLS",
                           self.what, self.host)

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving in a daemon thread; returns once the port is open."""
        self._warn()
        self._thread = threading.Thread(target=self._uvicorn.run, name=self._thread_name,
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._uvicorn.started:
            if not self._thread.is_alive():
                raise self.error(f"{self.what} could not listen on "
                                 f"{self.host}:{self._requested_port}")
            if time.monotonic() > deadline:
                self.stop()
                raise self.error(f"{self.what} did not start in time")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and wait for the thread to end."""
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (Ctrl-C or SIGTERM)."""
        self._warn()
        self._uvicorn.run()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
