"""The review loop end to end: score in the service, review, export, ``flawmap fit --add-good``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flawmap.cli import main as flawmap_main
from flawmap.models import load_model
from tests.serve.conftest import Server
from tests.serve.test_api import predict, sample_image

FIT = ["--model", "patchcore", "--weights", "random", "--image-size", "64"]
PARAMS = ["--param", "coreset_ratio=1.0", "--param", "threshold_holdout=0"]


def test_images_reviewed_good_join_the_training_set(
    server_factory, widget_model: Path, mvtec_category: Path, tmp_path: Path
) -> None:
    server: Server = server_factory([widget_model], tmp_path / "data")
    images = [sample_image(mvtec_category, "good", i) for i in (0, 1)]
    with server.client() as client:
        results = [predict(client, (p.name, p.read_bytes())).json()["results"][0] for p in images]
        client.post(f"/v1/results/{results[0]['id']}/review", json={"verdict": "good"})
        client.post(f"/v1/results/{results[1]['id']}/review", json={"verdict": "defective"})
        export = tmp_path / "reviews.csv"
        export.write_text(client.get("/v1/export.csv").text)

    common = ["fit", "--data", str(mvtec_category), *FIT, *PARAMS, "--quiet"]
    assert flawmap_main([*common, "--out", str(tmp_path / "before")]) == 0
    assert flawmap_main([*common, "--out", str(tmp_path / "after"), "--add-good", str(export)]) == 0
    before, after = load_model(tmp_path / "before"), load_model(tmp_path / "after")
    assert after.n_train_ == before.n_train_ + 1  # only the image reviewed "good"
    config = json.loads((tmp_path / "after" / "config.json").read_text())
    assert config["fit"]["data"].endswith("and 1 reviewed-good images")

    def score(model, path: Path) -> float:
        from flawmap.data import PathsDataset

        return float(model.predict(PathsDataset([path], transform=model.transform)).scores[0])

    # the reviewed image is now normal data: with the full bank its own patches are in it
    assert score(after, images[0]) < 0.1 * score(before, images[0])
    assert score(after, images[1]) == pytest.approx(score(before, images[1]), rel=0.5)


def test_add_good_refuses_an_export_whose_images_are_gone(
    mvtec_category: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "reviews.csv"
    export.write_text(
        "id,time,model,filename,image_sha256,image_path,width,height,score,label,threshold,"
        "review,reviewed_at\n"
        f"r1,t,m,a.png,{'0' * 64},{tmp_path / 'gone.png'},64,64,1.0,good,2.0,good,t\n"
    )
    code = flawmap_main(
        [
            "fit",
            "--data",
            str(mvtec_category),
            *FIT,
            "--out",
            str(tmp_path / "m"),
            "--add-good",
            str(export),
            "--quiet",
        ]
    )
    assert code == 2
    assert "missing" in capsys.readouterr().err
