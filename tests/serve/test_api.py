"""The REST API of ``flawmap serve``, against real uvicorn processes on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from flawmap.cli import main as flawmap_main
from tests.serve.conftest import Server

TOKEN = "test-token-5f2a9c"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def sample_image(mvtec_category: Path, kind: str = "spot", index: int = 0) -> Path:
    return sorted((mvtec_category / "test" / kind).iterdir())[index]


def predict(
    client: httpx.Client, *files: tuple[str, bytes], model: str = "widget"
) -> httpx.Response:
    parts = [("files", (name, data, "application/octet-stream")) for name, data in files]
    return client.post(f"/v1/models/{model}/predict", files=parts)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and len(body["message"]) > 10
    return body


@pytest.fixture
def server(server_factory, widget_model: Path, tmp_path: Path) -> Server:
    return server_factory([widget_model], tmp_path / "data")


def test_predict_gives_the_score_of_flawmap_predict(
    server: Server, widget_model: Path, mvtec_category: Path, tmp_path: Path
) -> None:
    images = [sample_image(mvtec_category, "good"), sample_image(mvtec_category, "spot")]
    assert (
        flawmap_main(
            [
                "predict",
                str(widget_model),
                *map(str, images),
                "--out",
                str(tmp_path / "cli"),
                "--quiet",
            ]
        )
        == 0
    )
    with open(tmp_path / "cli" / "scores.csv") as handle:
        expected = {Path(r["path"]).name + r["path"]: r for r in csv.DictReader(handle)}
    cli_rows = list(expected.values())
    with server.client() as client:
        response = predict(client, *((p.name, p.read_bytes()) for p in images))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["filename"] for r in results] == [p.name for p in images]
        for result, row in zip(results, cli_rows, strict=True):
            assert result["score"] == pytest.approx(float(row["score"]), rel=1e-6, abs=1e-6)
            assert result["label"] == row["label"]
            assert result["threshold"] == pytest.approx(float(row["threshold"]))
            assert result["width"] == result["height"] == 64  # the synthetic images' size
            assert result["latency_ms"] > 0
            for region in result["regions"]:
                assert 0 <= region["x"] < 64 and 0 <= region["y"] < 64
                assert 0 < region["area"] <= region["width"] * region["height"]
        spot = results[1]
        assert spot["label"] == "defective" and spot["regions"], "the planted spot is found"
        overlay = client.get(spot["overlay_url"])
        assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(overlay.content)).size == (64, 64)
        thumb = client.get(spot["thumbnail_url"])
        assert thumb.status_code == 200
        assert client.get(f"/v1/results/{spot['id']}").json()["score"] == spot["score"]


def test_model_card_threshold_save_review_export_and_restart(
    server: Server, mvtec_category: Path
) -> None:
    image = sample_image(mvtec_category, "spot")
    with server.client() as client:
        card = client.get("/v1/models/widget").json()
        assert card["model"] == "patchcore" and card["kind"] == "model"
        assert card["image_size"] == [64, 64] and card["tiles"] == [1, 1]
        assert card["threshold"] == card["model_threshold"] and card["threshold_saved_at"] is None
        assert card["training"]["n_train"] > 0
        assert "train split of" in card["training"]["data"]
        first = predict(client, (image.name, image.read_bytes())).json()["results"][0]
        assert first["label"] == "defective"
        # an explicit save, recorded with old and new value, relabels later predictions
        new = first["score"] + 1.0
        change = client.post("/v1/models/widget/threshold", json={"threshold": new}).json()
        assert change["old"] == pytest.approx(card["threshold"]) and change["new"] == new
        second = predict(client, (image.name, image.read_bytes())).json()["results"][0]
        assert second["score"] == first["score"] and second["label"] == "good"
        assert second["threshold"] == new
        reviewed = client.post(f"/v1/results/{first['id']}/review", json={"verdict": "good"})
        assert reviewed.json()["review"] == "good" and reviewed.json()["reviewed_at"]
    server.restart()
    with server.client() as client:
        assert client.get(f"/v1/results/{first['id']}").json()["review"] == "good"
        listed = client.get("/v1/results", params={"model": "widget"}).json()
        assert listed["total"] == 2 and [r["id"] for r in listed["results"]] == [
            second["id"],
            first["id"],
        ]
        assert client.get("/v1/results", params={"review": "good"}).json()["total"] == 1
        assert client.get("/v1/results", params={"review": "none"}).json()["total"] == 1
        card = client.get("/v1/models/widget").json()
        assert card["threshold"] == new and card["threshold_saved_at"] == change["time"]
        history = client.get("/v1/models/widget/threshold-history").json()["changes"]
        assert [(c["old"], c["new"]) for c in history] == [(change["old"], new)]
        exported = client.get("/v1/export.csv")
        assert exported.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert [r["id"] for r in rows] == [first["id"], second["id"]]
    assert rows[0]["review"] == "good" and rows[1]["review"] == ""
    stored = Path(rows[0]["image_path"])
    assert stored.read_bytes() == image.read_bytes()
    assert stored.is_relative_to(server.data_dir.resolve())


def test_error_paths_answer_json_with_their_status(
    server_factory, widget_model: Path, mvtec_category: Path, tmp_path: Path
) -> None:
    server = server_factory(
        [widget_model], tmp_path / "data", token=TOKEN, extra=["--max-upload-mb", "0.5"]
    )
    good = sample_image(mvtec_category, "good")
    with httpx.Client(base_url=server.url, timeout=60) as anonymous:
        for path in ("/v1/models", "/metrics", "/health", "/v1/export.csv"):
            body = assert_error(anonymous.get(path), 401, "unauthorized")
            assert "Bearer" in body["message"]
        assert (
            anonymous.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
        )
        info = anonymous.get("/v1/info").json()
        assert info["auth"] is True and info["models"] == []
        assert anonymous.get("/").status_code == 200  # the page shell holds no data
    with server.client() as client:
        assert client.get("/v1/info").json()["models"] == ["widget"]
        assert_error(
            predict(client, ("notes.png", b"this is not an image")), 422, "unreadable_image"
        )
        truncated = good.read_bytes()[: len(good.read_bytes()) // 2]
        body = assert_error(predict(client, ("cut.png", truncated)), 422, "unreadable_image")
        assert "cut.png" in body["message"]
        bomb = io.BytesIO()
        Image.new("L", (12000, 12000)).save(bomb, format="PNG")  # 144 Mpx in ~140 kB
        body = assert_error(predict(client, ("bomb.png", bomb.getvalue())), 422, "unreadable_image")
        assert "megapixels" in body["message"]
        assert_error(predict(client, ("huge.png", bytes(600 * 1024))), 413, "too_large")
        # a body of unknown length (chunked) is cut off at the limit too
        head = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n'
        chunks = (head if i == 0 else bytes(64 * 1024) for i in range(17))
        response = client.post(
            "/v1/models/widget/predict",
            content=chunks,
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert_error(response, 413, "too_large")
        assert_error(predict(client, ("empty.png", b"")), 422, "unreadable_image")
        assert_error(
            client.post("/v1/models/widget/predict", json={}), 415, "unsupported_media_type"
        )
        assert_error(
            client.post("/v1/models/widget/predict", files={"other": ("a.png", b"x")}),
            422,
            "no_images",
        )
        assert_error(
            predict(client, ("a.png", good.read_bytes()), model="nope"), 404, "unknown_model"
        )
        assert_error(client.get("/v1/results/0123"), 404, "unknown_result")
        assert_error(client.get("/v1/results/0123/overlay.png"), 404, "unknown_result")
        assert_error(
            client.post("/v1/results/0123/review", json={"verdict": "good"}), 404, "unknown_result"
        )
        assert_error(client.get("/no/such/page"), 404, "not_found")
        result = predict(client, ("ok.png", good.read_bytes())).json()["results"][0]
        assert_error(
            client.post(f"/v1/results/{result['id']}/review", json={"verdict": "meh"}),
            422,
            "invalid_request",
        )
        assert_error(
            client.post("/v1/models/widget/threshold", json={"threshold": "high"}),
            422,
            "invalid_request",
        )
        assert_error(client.get("/v1/results", params={"limit": 0}), 422, "invalid_request")
        assert_error(client.get("/v1/results", params={"label": "maybe"}), 422, "invalid_request")
        metrics = client.get("/metrics").text
    too_large = [
        line for line in metrics.splitlines() if "requests_total" in line and "413" in line
    ]
    assert sum(float(line.split()[-1]) for line in too_large) == 2.0
    assert 'status="422"' in metrics and 'flawmap_decisions_total{label="good",model="widget"}' in (
        metrics
    )
    # nothing but the data folder was written (failed uploads leave no image behind)
    stored = sorted(p.name for p in (server.data_dir / "images").iterdir())
    assert len(stored) == 1 and stored[0].endswith(".png")


def test_client_filenames_never_become_paths(
    server: Server, mvtec_category: Path, tmp_path: Path
) -> None:
    data = sample_image(mvtec_category, "good").read_bytes()
    names = ["../../escape.png", "/etc/passwd", "..\\..\\win.png", "b\u202ec.png", "x" * 300]
    before = set(tmp_path.rglob("*"))
    with server.client() as client:
        response = predict(client, *((name, data) for name in names))
    assert response.status_code == 200, response.text
    shown = [r["filename"] for r in response.json()["results"]]
    assert shown[:3] == names[:3]  # shown as sent (as text), never used as a path
    assert shown[3] == "bc.png" and len(shown[4]) == 200  # format characters dropped, cut
    created = set(tmp_path.rglob("*")) - before
    assert created and all(p.is_relative_to(server.data_dir) or p.suffix == ".log" for p in created)
    assert not (tmp_path.parent / "escape.png").exists()
    images = list((server.data_dir / "images").iterdir())
    assert len(images) == 1  # one content, stored once under its hash


def test_full_queue_answers_503_with_retry_after(
    server_factory, widget_model: Path, tmp_path: Path
) -> None:
    server = server_factory([widget_model], tmp_path / "data", extra=["--queue", "1"])
    rng = np.random.default_rng(0)
    big = png_bytes(rng.integers(0, 255, (1024, 1024, 3), dtype=np.uint8))
    statuses: list[int] = []
    retry_after: list[str] = []

    def client_thread() -> None:
        with server.client() as client:
            response = predict(client, *((f"{i}.png", big) for i in range(4)))
            statuses.append(response.status_code)
            if response.status_code == 503:
                assert response.json()["error"] == "busy"
                retry_after.append(response.headers["retry-after"])

    threads = [threading.Thread(target=client_thread) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) <= {200, 503}
    assert all(int(value) >= 1 for value in retry_after)
    with server.client() as client:  # still serving afterwards
        assert client.get("/ready").status_code == 200
        assert "flawmap_predict_rejected_total" in client.get("/metrics").text


def test_openapi_documents_the_api_and_docs_work_offline(server: Server) -> None:
    with server.client() as client:
        schema = client.get("/openapi.json").json()
        docs = client.get("/docs")
        asset = client.get("/docs-assets/swagger-ui-bundle.js")
    paths = set(schema["paths"])
    assert {
        "/v1/models",
        "/v1/models/{name}",
        "/v1/models/{name}/predict",
        "/v1/models/{name}/threshold",
        "/v1/results",
        "/v1/results/{result_id}/review",
        "/v1/export.csv",
        "/health",
        "/ready",
        "/metrics",
    } <= paths
    body = schema["paths"]["/v1/models/{name}/predict"]["post"]["requestBody"]
    assert "multipart/form-data" in body["content"]
    assert docs.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in docs.text
    assert "cdn" not in docs.text.lower()
    assert asset.status_code == 200 and len(asset.content) > 100_000


def test_served_export_scores_like_its_model(
    server_factory, widget_model: Path, mvtec_category: Path, tmp_path: Path
) -> None:
    export = tmp_path / "widget-onnx"
    assert (
        flawmap_main(
            ["export", str(widget_model), "--format", "onnx", "--out", str(export), "--quiet"]
        )
        == 0
    )
    server = server_factory([widget_model, export], tmp_path / "data")
    image = sample_image(mvtec_category, "spot")
    with server.client() as client:
        cards = {c["name"]: c for c in client.get("/v1/models").json()["models"]}
        assert cards["widget-onnx"]["kind"] == "export" and cards["widget"]["kind"] == "model"
        scores = [
            predict(client, (image.name, image.read_bytes()), model=name).json()["results"][0][
                "score"
            ]
            for name in ("widget", "widget-onnx")
        ]
    assert scores[1] == pytest.approx(scores[0], rel=1e-4)


def test_model_card_shows_the_last_evaluation(
    server_factory, widget_model: Path, mvtec_category: Path, tmp_path: Path
) -> None:
    model = tmp_path / "evaluated"
    model.mkdir()
    for file in widget_model.iterdir():
        (model / file.name).write_bytes(file.read_bytes())
    assert (
        flawmap_main(
            [
                "evaluate",
                str(model),
                "--data",
                str(mvtec_category),
                "--out",
                str(tmp_path / "report"),
                "--quiet",
                "--latency-runs",
                "0",
            ]
        )
        == 0
    )
    recorded = json.loads((model / "evaluation.json").read_text())
    server = server_factory([model], tmp_path / "data")
    with server.client() as client:
        card = client.get("/v1/models/evaluated").json()
    assert card["metrics"] == recorded["metrics"] and "image_auroc" in card["metrics"]
    assert card["metrics_data"] == str(mvtec_category)
