"""``flawmap serve``: an HTTP inspection service (REST API, web page, review database).

>>> config = ServeConfig(model_dirs=[Path("models/bottle")], data_dir=Path("serve-data"))
>>> run_server(config, host="127.0.0.1", port=8000)     # blocks until Ctrl-C

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client).
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import warnings

from flawmap.errors import ConfigError, FlawmapWarning
from flawmap.serve.service import Inspector, ServeConfig, ServedModel, Upload, read_token

__all__ = ["Inspector", "ServeConfig", "ServedModel", "Upload", "read_token", "run_server"]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False
) -> None:
    """Load the models, then serve them with uvicorn on ``host:port`` until interrupted.

    Raises:
        ConfigError: the serve extra is not installed, or a model/data folder is unusable.
    """
    try:
        import uvicorn

        from flawmap.serve.app import create_app
    except ImportError as exc:
        raise ConfigError(
            f"flawmap serve needs its extra packages ({exc.name} is missing): "
            "pip install 'flawmap[serve]'"
        ) from None
    if not _is_loopback(host) and config.token is None:
        warnings.warn(
            f"serving on {host} without --token-file: anyone who can reach this address can use "
            "the service",
            FlawmapWarning,
            stacklevel=2,
        )
    listener = _bind(host, port)  # before loading models: a taken port fails at once
    try:
        app = create_app(config)
        bound = listener.getsockname()[1]
        names = ", ".join(app.state.inspector.models)
        print(
            f"serving {names} on http://{host}:{bound}/ (API: /docs; data: {config.data_dir})",
            file=sys.stderr,
            flush=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning" if quiet else "info", access_log=not quiet)
        )
        server.run(sockets=[listener])
    finally:
        listener.close()


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port).

    Raises:
        ConfigError: the address cannot be used (taken, or not an address of this machine).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        listener = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}: {exc}") from None
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): is another service using "
            "it? choose another --port"
        ) from None
    listener.set_inheritable(True)
    return listener
