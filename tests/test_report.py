"""`rekit report` on the demo run: a self-contained HTML page whose plots a headless Chromium renders.

The module trains the demo once (`rekit demo`: 2 folds of a tiny scratch model on 1,200 synthetic
rows, 20-30 s on 2 idle CPU cores); the Chromium screenshots take a few seconds each and are
skipped (saying why) where Chromium is not installed.
"""

import base64
import io
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from rekit.cli import main
from rekit.demo import run_demo

IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "demo"
    run_demo(out, progress=False, echo=lambda *_: None)
    return out / "run"


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16).reshape(-1, 3)


def colourful(img: Image.Image, spread: int = 40) -> int:
    """Pixels whose channels differ by more than `spread` (plot colours; text and rules are grey)."""
    px = pixels(img)
    return int(((px.max(1) - px.min(1)) > spread).sum())


def distinct_colours(img: Image.Image) -> int:
    return len(np.unique(pixels(img), axis=0))


def images(page: str) -> list[tuple[str, Image.Image]]:
    out = []
    for alt, data in IMG.findall(page):
        img = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        img.load()  # a truncated or corrupt PNG fails here
        out.append((alt, img))
    return out


def test_run_report_is_self_contained_with_every_section(demo_run, tmp_path):
    out = tmp_path / "report.html"
    assert main(["report", str(demo_run), "--output", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    # self-contained: nothing fetched, nothing run
    assert "<script" not in page and not re.search(r'(src|href)="(https?:)?//', page)
    plots = images(page)
    alts = [alt for alt, _ in plots]
    assert [a.split()[0] for a in alts] == ["learning", "row-normalised", "per-class", "precision-recall"]
    for alt, img in plots:
        assert img.format == "PNG" and img.width >= 400 and img.height >= 200, alt
        assert distinct_colours(img) > 100, f"{alt}: looks blank"
        assert colourful(img) > 0.01 * img.width * img.height, f"{alt}: no coloured marks"
    # fold table and OOF score from summary.json
    summary = json.loads((demo_run / "summary.json").read_text())
    assert "out-of-fold CV" in page and f"{summary['cv']['micro_f1']:.2f}" in page
    # errors: sentences from the training file, both entities highlighted; config at the end
    errors = page.split('id="errors"')[1]
    if summary["cv"]["accuracy"] < 1.0:
        assert errors.count('<mark class="subj"') >= 2 and errors.count('<mark class="obj"') >= 2
        assert "sentences not shown" not in errors
    assert "scratch_size: tiny" in page.split('id="config"')[1]


def test_report_says_so_when_the_training_file_is_gone(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("*.safetensors"))
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["data"]["train"] = str(tmp_path / "moved-away.csv")
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert "moved-away.csv (config.yaml data.train) is not there any more" in page
    assert len(images(page)) == 4  # everything else is still there


def test_report_of_an_unfinished_run_shows_what_exists(demo_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, ignore=shutil.ignore_patterns("*.safetensors", "oof.csv", "summary.json"))
    (run / "state.json").write_text('{"status": "interrupted", "reason": "stopped by the user (Ctrl-C)"}')
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text(encoding="utf-8")
    assert [alt.split()[0] for alt, _ in images(page)] == ["learning"]
    assert "stopped by the user" in page and "no oof.csv" in page


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no headless Chromium (Debian: apt-get install chromium)")


def screenshot(html: Path, png: Path) -> Image.Image:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
                        "--window-size=1200,3000", html.resolve().as_uri()],
                       capture_output=True, timeout=120, check=True)
    return Image.open(png)


def test_chromium_renders_the_plots(demo_run, tmp_path):
    html = tmp_path / "report.html"
    assert main(["report", str(demo_run), "--output", str(html)]) == 0
    shot = screenshot(html, tmp_path / "report.png")
    assert shot.size == (1200, 3000)
    # The same page with every image replaced by nothing: what text, tables and CSS alone paint.
    bare = tmp_path / "bare.html"
    bare.write_text(IMG.sub("", html.read_text(encoding="utf-8")), encoding="utf-8")
    bare_shot = screenshot(bare, tmp_path / "bare.png")
    with_plots, without = colourful(shot), colourful(bare_shot)
    assert with_plots > 50_000, f"only {with_plots} coloured pixels: the plots did not render"
    assert with_plots > 5 * without + 10_000, (with_plots, without)
    assert distinct_colours(shot) > 500  # curves, heatmap and bars, not flat boxes


def test_study_report_with_fewer_than_two_finished_trials(tmp_path):
    import optuna

    from rekit.report.study_report import build_study_report
    from rekit.tuning.study import prepare

    cfg = tmp_path / "tune.yaml"
    train = tmp_path / "train.csv"  # must exist to prepare a study; no trial runs, so it is never read
    train.write_text("id,sentence,subject_entity,object_entity,label\n", encoding="utf-8")
    cfg.write_text(yaml.safe_dump({"data": {"train": str(train)}, "model": {"model": "scratch"},
                                   "tune": {"space": {"lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}}}}))
    study = prepare(str(cfg), {"output": str(tmp_path / "study")}, {}, echo=lambda *_: None)
    page = build_study_report(study.dir)
    assert "no trial has finished yet" in page and "this study has 0" in page and "<img" not in page
    study.load().add_trial(optuna.trial.create_trial(
        params={"lr": 1e-4}, distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1e-3, log=True)},
        value=42.0))
    page = build_study_report(study.dir)
    assert len(images(page)) == 1 and "this study has 1" in page and "42" in page
