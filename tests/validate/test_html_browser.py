"""The HTML report in a real headless browser (Debian's chromium): it renders, its script runs,
the differences table and the history chart are on screen. The screenshot is kept in
test-artifacts/ (CI must install chromium: apt-get install -y chromium)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from mlflow_sync.validate import ValidateOptions, validate
from mlflow_sync.validate.html import write_html

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SOURCE_BLUE, TARGET_RED = (0x09, 0x69, 0xDA), (0xD1, 0x24, 0x2F)


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--hide-scrollbars", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def _has_colour(pixels, rgb, tolerance=0.06) -> bool:
    import numpy as np

    target = np.array(rgb) / 255.0
    return bool((np.abs(pixels[..., :3] - target) < tolerance).all(axis=-1).sum() > 20)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_report_renders_in_chromium(copied):
    from matplotlib.image import imread

    source, target, server, ids, run_map = copied
    from tests.validate.test_validate import _history_step_changed, _tag_removed

    _history_step_changed(source, target, server, ids, run_map)
    _tag_removed(source, target, server, ids, run_map)
    report = validate(source, target, ValidateOptions(metric_history=True))
    ARTIFACTS.mkdir(exist_ok=True)
    page = write_html(report, ARTIFACTS / "validate-report.html")
    screenshot = ARTIFACTS / "validate-report.png"
    screenshot.unlink(missing_ok=True)

    dom = _chromium("--virtual-time-budget=3000", "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # the inline script ran (it fills the row counter) and both tables and the chart are in the DOM
    assert "<span id=\"shown\">2</span>" in dom.stdout
    assert 'id="differences"' in dom.stdout and "metric-chart" in dom.stdout
    assert "experiments/exp-a/runs/parent/metrics/loss/history" in dom.stdout

    shot = _chromium("--window-size=1280,2400", f"--screenshot={screenshot}", page.as_uri())
    assert shot.returncode == 0 and screenshot.stat().st_size > 10_000, shot.stderr[-2000:]
    pixels = imread(screenshot)
    # the chart's source (blue) and target (red) lines are painted above the fold
    assert _has_colour(pixels, SOURCE_BLUE) and _has_colour(pixels, TARGET_RED)
