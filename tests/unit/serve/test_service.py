"""flawmap.serve.service: defect regions, configuration checks, token files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flawmap.errors import ConfigError
from flawmap.serve.service import ServeConfig, defect_regions, read_token


def test_regions_are_connected_components_at_the_original_size() -> None:
    amap = np.zeros((8, 8), dtype=np.float32)
    amap[1:3, 1:3] = 1.0  # a 2x2 blob
    amap[5:8, 4:8] = 1.0  # a 3x4 blob touching the border
    regions = defect_regions(amap, 0.5, (8, 8))
    assert regions == [
        {"x": 4, "y": 5, "width": 4, "height": 3, "area": 12},
        {"x": 1, "y": 1, "width": 2, "height": 2, "area": 4},
    ]
    scaled = defect_regions(amap, 0.5, (80, 40))  # (H, W): boxes in original pixels
    assert len(scaled) == 2 and scaled[0]["y"] >= 40 and scaled[0]["x"] + scaled[0]["width"] == 40
    assert defect_regions(amap, 2.0, (8, 8)) == []
    assert defect_regions(amap, None, (8, 8)) == []


def test_config_and_token_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one model"):
        ServeConfig(model_dirs=[], data_dir=tmp_path)
    with pytest.raises(ConfigError, match="queue_size"):
        ServeConfig(model_dirs=[tmp_path], data_dir=tmp_path, queue_size=0)
    with pytest.raises(ConfigError, match="printable ASCII"):
        ServeConfig(model_dirs=[tmp_path], data_dir=tmp_path, token="päss")
    token = tmp_path / "token"
    token.write_text("  s3cret-token \n")
    assert read_token(token) == "s3cret-token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        read_token(token)
    token.write_text("two words")
    with pytest.raises(ConfigError, match="whitespace"):
        read_token(token)
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(tmp_path / "absent")
