"""``flawmap serve``: an HTTP inspection service (REST API, web page, review database).

>>> config = ServeConfig(model_dirs=[Path("models/bottle")], data_dir=Path("serve-data"))
>>> run_server(config, host="127.0.0.1", port=8000)     # blocks until Ctrl-C

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, prometheus-client).
"""

from __future__ import annotations

import ipaddress
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
    app = create_app(config)
    names = ", ".join(app.state.inspector.models)
    print(
        f"serving {names} on http://{host}:{port}/ (API: /docs; data: {config.data_dir})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        app, host=host, port=port, log_level="warning" if quiet else "info", access_log=not quiet
    )
