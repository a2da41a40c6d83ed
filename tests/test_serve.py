"""`rekit serve`: the real server in a subprocess on a loopback port, plus the batcher and validation."""

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import free_port
from rekit.cli import main
from rekit.data.readers import read_records, write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import RekitError
from rekit.serve.batching import Batcher
from rekit.serve.validation import Limits, RequestProblems, parse_examples

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SRC = str(Path(__file__).resolve().parents[1] / "src")
KEY = "s3cret-key"
TINY = ["--model", "scratch", "--scratch-size", "tiny", "--scratch-vocab-size", "1500", "--max-length", "64",
        "--epochs", "1", "--batch-size", "32", "--no-progress"]
LIMITS = ["--max-items", "50", "--max-body-bytes", "20000", "--max-sentence-chars", "300"]


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}


class Server:
    """`rekit serve` in a subprocess; its output goes to a file (a full pipe would stall it)."""

    def __init__(self, run: Path, log: Path, *flags: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cmd = [sys.executable, "-m", "rekit.cli", "serve", str(run), "--port", str(self.port), *flags]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env())
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited: {log.read_text()}"
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"server not ready in 90 s: {log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("serve")
    train, test = make_splits(seed=3, n_train=120, n_test=40)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    assert main(["train", "--train", str(d / "train.csv"), "--output", str(d / "run"), "--folds", "2", *TINY]) == 0
    (d / "key.txt").write_text(KEY + "\n")
    return d


@pytest.fixture(scope="module")
def server(work):
    s = Server(work / "run", work / "server.log", "--api-key-file", str(work / "key.txt"), "--device", "cpu", *LIMITS)
    yield s
    assert s.stop() == 0, s.log.read_text()


@pytest.fixture(scope="module")
def examples(work):
    records, _ = read_records(work / "test.csv")
    items = [{k: v for k, v in r.to_dict().items() if k not in ("label", "source")} for r in records]
    return records, items


def post(server, body, params=None, key=KEY, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(server.url + "/v1/predict", json=body, params=params, headers=headers, timeout=30, **kw)


def cli_predictions(work) -> tuple[list[str], np.ndarray]:
    out = work / "submission.csv"
    if not out.is_file():
        subprocess.run([sys.executable, "-m", "rekit.cli", "predict", str(work / "run"), "--input",
                        str(work / "test.csv"), "--output", str(out), "--device", "cpu"],
                       check=True, env=child_env(), capture_output=True, timeout=180)
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r["pred_label"] for r in rows], np.array([json.loads(r["probs"]) for r in rows])


def test_predictions_equal_rekit_predict(server, work, examples):
    records, items = examples
    labels, probs = cli_predictions(work)
    r = post(server, items)
    assert r.status_code == 200, r.text
    body = r.json()
    names = httpx.get(server.url + "/v1/labels", headers={"X-API-Key": KEY}).json()
    assert body["label_version"] == names["label_version"] and len(names["labels"]) == probs.shape[1]
    got = body["predictions"]
    assert [p["id"] for p in got] == [rec.id for rec in records]
    assert [p["label"] for p in got] == labels
    served = np.array([[p["probabilities"][lab] for lab in names["labels"]] for p in got])
    np.testing.assert_allclose(served, probs, atol=1e-5)


def test_concurrent_requests_are_batched_and_answered_each_their_own(server, work, examples):
    _, items = examples
    labels, probs = cli_predictions(work)
    before = _metric(server, "rekit_batch_size_count")
    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(lambda it: post(server, [it]), items))
    assert all(r.status_code == 200 for r in responses)
    preds = [r.json()["predictions"][0] for r in responses]
    assert [p["id"] for p in preds] == [it["id"] for it in items]
    assert [p["label"] for p in preds] == labels
    names = httpx.get(server.url + "/v1/labels", headers={"X-API-Key": KEY}).json()["labels"]
    np.testing.assert_allclose([[p["probabilities"][lab] for lab in names] for p in preds], probs, atol=1e-5)
    batches = _metric(server, "rekit_batch_size_count") - before
    assert batches < len(items)  # some requests shared a model batch


def test_top_k(server, examples):
    _, items = examples
    got = post(server, items[:3], params={"top_k": 2}).json()["predictions"]
    for p in got:
        probs = list(p["probabilities"].items())
        assert len(probs) == 2 and probs[0][0] == p["label"] and probs[0][1] >= probs[1][1]
    r = post(server, items[:1], params={"top_k": 0})
    assert r.status_code == 422 and r.json()["problems"][0]["field"] == "query.top_k"


def _bad_requests(items):
    one = items[0]
    sent = one["sentence"]

    def edit(path, value=None, drop=False):
        item = json.loads(json.dumps(one))
        *head, last = path
        target = item
        for k in head:
            target = target[k]
        if drop:
            del target[last]
        else:
            target[last] = value
        return [items[1], item]  # the bad one is item 1

    return [
        ("span outside", edit(("subject", "end"), len(sent) + 5), 422, 1, "subject.end"),
        ("negative start", edit(("object", "start"), -1), 422, 1, "object.start"),
        ("text not at span", edit(("object", "text"), "zzz"), 422, 1, "object.text"),
        ("missing key", edit(("subject", "start"), drop=True), 422, 1, "subject.start"),
        ("missing sentence", edit(("sentence",), drop=True), 422, 1, "sentence"),
        ("wrong type", edit(("subject", "start"), "3"), 422, 1, "subject.start"),
        ("bool offset", edit(("object", "end"), True), 422, 1, "object.end"),
        ("type not a string", edit(("subject", "type"), 7), 422, 1, "subject.type"),
        ("sentence too long", edit(("sentence",), "x" * 301), 422, 1, "sentence"),
        ("item not an object", [one, "text"], 422, 1, "item"),
        ("not a list", {"sentence": sent}, 422, None, "body"),
        ("too many items", [one] * 51, 413, None, "body"),
    ]


def test_bad_requests_get_4xx_naming_item_and_field_and_the_server_keeps_serving(server, examples):
    _, items = examples
    for name, body, status, item, field in _bad_requests(items):
        r = post(server, body)
        assert r.status_code == status, (name, r.status_code, r.text)
        problem = r.json()["problems"][0]
        assert (problem["item"], problem["field"]) == (item, field), (name, problem)
        assert r.json()["error"], name
    assert post(server, items[:2]).status_code == 200


def test_body_limits_and_bad_json(server, examples):
    _, items = examples
    big = json.dumps(items[:2]).encode() + b" " * 20000  # valid JSON, but past --max-body-bytes 20000
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    r = httpx.post(server.url + "/v1/predict", content=big, headers=headers, timeout=30)
    assert r.status_code == 413 and r.json()["problems"][0]["field"] == "body" and "20,000" in r.json()["error"]

    def chunks():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(big), 4096):
            yield big[i : i + 4096]

    r = httpx.post(server.url + "/v1/predict", content=chunks(), headers=headers, timeout=30)
    assert r.status_code == 413
    r = httpx.post(server.url + "/v1/predict", content=b"[{not json", headers=headers, timeout=30)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    assert post(server, items[:1]).status_code == 200
    metrics = httpx.get(server.url + "/metrics", headers={"X-API-Key": KEY}).text
    assert 'rekit_errors_total{kind="body_too_large"}' in metrics
    assert 'rekit_requests_total{path="/v1/predict",status="413"}' in metrics


def test_api_key(server, examples):
    _, items = examples
    assert post(server, items[:1], key=None).status_code == 401
    assert post(server, items[:1], key="wrong").status_code == 401
    assert httpx.get(server.url + "/metrics").status_code == 401
    assert httpx.get(server.url + "/v1/labels", headers={"X-API-Key": KEY}).status_code == 200
    assert post(server, items[:1]).status_code == 200
    for open_path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert httpx.get(server.url + open_path).status_code == 200, open_path
    assert "/v1/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_metrics_are_prometheus_text(server, examples):
    post(server, examples[1][:2])
    r = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = [ln for ln in r.text.splitlines() if ln and not ln.startswith("#")]
    assert all(len(ln.rsplit(" ", 1)) == 2 and float(ln.rsplit(" ", 1)[1]) >= 0 for ln in lines)
    for name in ("rekit_requests_total", "rekit_request_duration_seconds_bucket", "rekit_batch_size_bucket",
                 "rekit_examples_total", "rekit_errors_total"):
        assert any(ln.startswith(name) for ln in lines), name


def _metric(server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", headers={"X-API-Key": KEY}).text
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(work, examples):
    _, items = examples
    # The first request of a batch waits 2 s for company: SIGTERM arrives while it is in flight.
    s = Server(work / "run", work / "shutdown.log", "--max-wait-ms", "2000", "--device", "cpu")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=httpx.post(s.url + "/v1/predict", json=items[:3], timeout=30)))
    t.start()
    time.sleep(0.7)
    s.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert s.proc.wait(30) == 0, s.log.read_text()
    assert result["r"].status_code == 200 and len(result["r"].json()["predictions"]) == 3
    assert "stopped (SIGTERM)" in s.log.read_text()


def test_serve_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path)]) == 2
    assert "holds no trained models" in capsys.readouterr().err


def test_missing_serve_extra_says_what_to_install(monkeypatch):
    from rekit.serve import require_deps

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(RekitError, match=r'pip install "rekit\[serve\]"'):
        require_deps()


# -- the batcher and the validation, without a server ----------------------------------------
def test_batcher_gathers_concurrent_requests_and_splits_the_results():
    seen = []

    def predict(records):
        seen.append(len(records))
        return np.array([[float(r)] for r in records])

    async def go():
        b = Batcher(predict, max_batch_size=10, max_wait_ms=50)
        b.start()
        out = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(4)), b.submit(list(range(9))))
        await b.close()
        return out

    out = asyncio.run(go())
    assert [o[:, 0].tolist() for o in out[:4]] == [[i, i + 100] for i in range(4)]
    assert out[4][:, 0].tolist() == list(range(9))
    assert seen == [8, 9]  # four 2-example requests in one batch; the 9 did not fit, so it ran next


def test_batcher_waits_only_for_requests_it_expects():
    seen = []

    def predict(records):
        seen.append(list(records))
        return np.zeros((len(records), 1))

    async def go():
        b = Batcher(predict, max_batch_size=10, max_wait_ms=2000)
        b.start()
        t0 = time.perf_counter()
        await b.submit(["alone"])  # nobody else is coming: no 2 s wait
        alone = time.perf_counter() - t0

        async def late():
            with b.arriving():  # being read and validated: the batch waits for it
                await asyncio.sleep(0.05)
            return await b.submit(["late"])

        latecomer = asyncio.ensure_future(late())
        await asyncio.sleep(0)  # `late` announces itself first
        await asyncio.gather(b.submit(["first"]), latecomer)
        await b.close()
        return alone

    alone = asyncio.run(go())
    assert alone < 1.0 and seen == [["alone"], ["first", "late"]]


def test_batcher_runs_the_model_off_the_event_loop_and_survives_model_errors():
    def predict(records):
        time.sleep(0.5)
        if records[0] == "boom":
            raise ValueError("model failed")
        return np.zeros((len(records), 1))

    async def go():
        b = Batcher(predict, max_batch_size=1, max_wait_ms=0)
        b.start()
        slow = asyncio.ensure_future(b.submit(["a"]))
        ticks = 0
        while not slow.done():  # the loop keeps running while the model works
            await asyncio.sleep(0.01)
            ticks += 1
        with pytest.raises(ValueError, match="model failed"):
            await b.submit(["boom"])
        ok = await b.submit(["b"])
        await b.close()
        return ticks, ok

    ticks, ok = asyncio.run(go())
    assert ticks > 10 and ok.shape == (1, 1)


def test_validation_accepts_the_record_schema_and_names_every_bad_item():
    good = {"sentence": "Alice met Bob.", "subject": {"text": "Alice", "start": 0, "end": 5, "type": "PER"},
            "object": {"text": "Bob", "start": 10, "end": 13}}
    recs = parse_examples([good, {**good, "id": 7}], Limits())
    assert [r.id for r in recs] == ["0", "7"] and recs[0].object.type == "UNK"
    assert recs[0].sentence[recs[0].object.start : recs[0].object.end] == "Bob"
    inclusive = {**good, "object": {"text": "Bob", "start": 10, "end": 12}}  # an inclusive end is refused
    with pytest.raises(RequestProblems) as e:
        parse_examples([good, inclusive, {**good, "id": ""}], Limits())
    assert e.value.status == 422
    assert [(p.item, p.field) for p in e.value.problems] == [(1, "object.text"), (2, "id")]
    assert "'Bo'" in e.value.problems[0].message
