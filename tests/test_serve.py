"""``layerconnect serve`` over real loopback HTTP: answers equal Predictor.predict, concurrent
clients get batched together, bad requests get a 4xx with a message and the server keeps serving."""

import threading
import time

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_multitask_common import TEXTS, ServeProcess, make_artefact, make_base  # noqa: E402

from layerconnect.apps.serve import Predictor  # noqa: E402
from layerconnect.apps.serve.http import create_app  # noqa: E402

MAX_BATCH = 8


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    base = make_base(str(root / "base"))
    arts = {
        "sent": make_artefact(base, str(root / "sent"), 2, seed=1, label_names=["negative", "positive"]),
        "sts": make_artefact(base, str(root / "sts"), 1, seed=2),
        "nli": make_artefact(base, str(root / "nli"), 3, seed=3),
    }
    return base, arts


class _Server:
    """uvicorn in a thread on a kernel-chosen loopback port; bounded start and stop."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(400):
            if self.server.started:
                break
            time.sleep(0.025)
        else:
            raise RuntimeError("uvicorn did not start within 10 s")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), "server did not stop"


@pytest.fixture(scope="module")
def served(setup):
    base, arts = setup
    model = Predictor.from_pretrained(base, arts, dtype=torch.float64)
    # a generous wait so that the concurrent clients below land in shared batches
    with _Server(create_app(model, max_batch=MAX_BATCH, max_wait_ms=250)) as srv:
        yield model, srv


def _reqs():
    tasks = ["sent", "sts", "nli"]
    return [{"task": tasks[i % 3], "text": t, **({"text_pair": p} if p else {})} for i, (t, p) in enumerate(TEXTS)]


def _close(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], float):
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
        elif isinstance(a[k], list):
            assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k
        else:
            assert a[k] == b[k], k


def test_tasks_and_predict_equal_the_model(served):
    model, srv = served
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        tasks = c.get("/tasks").json()
        assert [t["name"] for t in tasks["tasks"]] == ["sent", "sts", "nli"]
        assert tasks["tasks"][0]["label_names"] == ["negative", "positive"]
        assert [t["kind"] for t in tasks["tasks"]] == ["classification", "regression", "classification"]
        assert all("path" not in t for t in tasks["tasks"])
        reqs = _reqs()
        r = c.post("/predict", json={"requests": reqs})
        assert r.status_code == 200, r.text
        got = r.json()["results"]
    want = model.predict(reqs)
    assert len(got) == len(want) == len(reqs)
    for g, w in zip(got, want):
        _close(g, w)
    assert got[0]["label"] in ("negative", "positive")


def test_concurrent_clients_are_batched_and_each_gets_its_own_answer(served):
    model, srv = served
    reqs = _reqs()
    n_clients = 12
    barrier = threading.Barrier(n_clients)
    answers = [None] * n_clients
    errors = []

    def client(k):
        mine = [reqs[k % len(reqs)], reqs[(k + 1) % len(reqs)]][: 1 + k % 2]
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                barrier.wait(timeout=30)
                r = c.post("/predict", json={"requests": mine})
                answers[k] = (mine, r.status_code, r.json())
        except Exception as exc:  # surfaced below
            errors.append(repr(exc))

    before = httpx.get(srv.url + "/stats").json()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    after = httpx.get(srv.url + "/stats").json()
    rows = 0
    for mine, status, body in answers:
        assert status == 200, body
        want = model.predict(mine)
        for g, w in zip(body["results"], want):
            _close(g, w)
        rows += len(mine)
    assert after["requests"] - before["requests"] == n_clients
    assert after["rows"] - before["rows"] == rows
    # 18 rows from 12 clients in batches of at most 8: batching must have merged calls
    batches = after["batches"] - before["batches"]
    assert -(-rows // MAX_BATCH) <= batches < n_clients, (batches, rows)


@pytest.mark.parametrize(
    "payload,status,needle",
    [
        ({"requests": [{"task": "nope", "text": "hi"}]}, 404, "unknown task 'nope'"),
        ({"requests": [{"task": "sent", "text": "   "}]}, 400, "non-empty"),
        ({"requests": [{"task": "sent", "text": "a", "text_pair": ""}]}, 400, "text_pair"),
        ({"requests": []}, 400, "at least one"),
        ({"requests": [{"task": "sent", "text": "x"}] * (MAX_BATCH + 1)}, 413, "--max-request-rows"),
        ({"requests": [{"task": "sent"}]}, 422, "text"),
        ({"requests": [{"task": "sent", "text": 5}]}, 422, "text"),
        ({"requests": [{"task": "sent", "text": "hi", "label": 1}]}, 422, "label"),
        ({"items": []}, 422, "requests"),
    ],
)
def test_bad_requests_get_4xx_with_a_message(served, payload, status, needle):
    _, srv = served
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/predict", json=payload)
        assert r.status_code == status, r.text
        assert needle in r.json()["error"]
        assert c.get("/health").json() == {"status": "ok"}  # still serving


def test_malformed_json_is_a_4xx(served):
    _, srv = served
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        r = c.post("/predict", content=b'{"requests": [', headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        assert "malformed" in r.json()["error"]
        r = c.post("/predict", content=b"not json at all", headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500
        ok = c.post("/predict", json={"requests": [{"task": "sent", "text": "still fine"}]})
        assert ok.status_code == 200


def test_cli_serve_subprocess(setup, tmp_path):
    """The real command line: start it, ask it, stop it (bounded waits throughout)."""
    base, arts = setup
    args = [
        "--model",
        base,
        "--task",
        f"sent={arts['sent']}",
        "--task",
        f"sts={arts['sts']}",
        "--max-batch",
        "4",
        "--max-wait-ms",
        "2",
        "--log-level",
        "warning",
    ]
    with ServeProcess(args, tmp_path / "serve.log") as srv:
        url = srv.url
        assert [t["name"] for t in httpx.get(url + "/tasks").json()["tasks"]] == ["sent", "sts"]
        r = httpx.post(
            url + "/predict", json={"requests": [{"task": "sts", "text": "a", "text_pair": "b"}]}, timeout=30
        )
        assert r.status_code == 200 and set(r.json()["results"][0]) == {"task", "score", "logits"}
        r = httpx.post(url + "/predict", json={"requests": [{"task": "sent", "text": "x"}] * 5}, timeout=30)
        assert r.status_code == 413


def test_cli_rejects_bad_task_spec(capsys):
    from layerconnect.apps.serve.options import ServeOptions
    from layerconnect.cli import main
    from layerconnect.utils.options import from_namespace

    for argv, message in (
        (["--task", "no-equals-sign"], "expected NAME=PATH"),
        (["--task", "a=/x", "--task", "a=/y"], "must be unique"),
        ([], "at least one --task"),
        (["--task", "a=/x", "--max-batch", "0"], "--max-batch must be >= 1"),
    ):
        with pytest.raises(SystemExit) as e:
            main(["serve", "--model", "m", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err, argv
    from layerconnect.cli import build_parser

    args = build_parser(["serve"]).parse_args(["serve", "--model", "m", "--task", "a=/x", "--task", "b=/y"])
    opts = from_namespace(ServeOptions, args)
    assert opts.task_paths() == {"a": "/x", "b": "/y"} and opts.host == "127.0.0.1"
    assert opts.max_batch == 32 and opts.max_body_bytes == 1 << 20


def test_batcher_isolates_a_failing_unit(setup):
    """A unit that fails inside the model (here: a task that vanished after validation) fails alone;
    the units batched with it still get their answers."""
    import asyncio

    from layerconnect.apps.serve.http import Batcher
    from layerconnect.apps.serve.predictor import Request

    base, arts = setup
    model = Predictor.from_pretrained(base, {"sent": arts["sent"]}, dtype=torch.float64)

    async def go():
        b = Batcher(model, max_batch=8, max_wait_ms=200)
        await b.start()
        try:
            good = [Request("sent", "fine")]
            bad = [Request("gone", "x")]
            return await asyncio.wait_for(
                asyncio.gather(b.submit(good), b.submit(bad), return_exceptions=True), timeout=60
            ), b.stats
        finally:
            await b.stop()

    (ok, err), stats = asyncio.run(go())
    assert isinstance(err, KeyError) and "gone" in str(err)
    _close(ok[0], model.predict([{"task": "sent", "text": "fine"}])[0])
    assert stats["requests"] == 1 and stats["rows"] == 1
