"""``layerconnect serve`` against hostile requests (issue 18): a 2 MB text pair must neither exhaust the
server's memory nor block other clients; oversized bodies and invalid text get a 4xx with a message.

The server runs in a subprocess whose address space is capped (RLIMIT_AS), so a request that makes it
allocate gigabytes kills it and fails the test instead of the machine."""

import resource
import threading
import time

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from test_multitask_common import ServeProcess, make_artefact, make_base  # noqa: E402

CAP_BYTES = 12 << 30  # the server needs about 2-3 GB of address space; the unbounded tokenizer took 24 GB RSS
BIG = 1 << 20  # 1 MB per text: the pair is a 2 MB body


def _rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    base = make_base(str(root / "base"))
    art = make_artefact(base, str(root / "sts"), 1, seed=2)
    args = [
        "--model",
        base,
        "--task",
        f"sts={art}",
        "--max-body-bytes",
        str(3 * BIG),
        "--max-wait-ms",
        "1",
        "--log-level",
        "warning",
    ]
    cap = lambda: resource.setrlimit(resource.RLIMIT_AS, (CAP_BYTES, CAP_BYTES))  # noqa: E731
    with ServeProcess(args, root / "serve.log", preexec_fn=cap, env={"OMP_NUM_THREADS": "1"}) as srv:
        yield srv.url, srv.proc, root


def test_a_huge_text_pair_costs_bounded_memory_and_time_and_others_are_served(server):
    url, proc, root = server
    ok = httpx.post(url + "/predict", json={"requests": [{"task": "sts", "text": "a", "text_pair": "b"}]}, timeout=30)
    assert ok.status_code == 200
    rss0 = _rss_mb(proc.pid)
    other = {}

    def small_client():
        time.sleep(0.3)
        t0 = time.perf_counter()
        r = httpx.post(
            url + "/predict", json={"requests": [{"task": "sts", "text": "hi", "text_pair": "yo"}]}, timeout=60
        )
        other.update(status=r.status_code, seconds=time.perf_counter() - t0)

    th = threading.Thread(target=small_client)
    th.start()
    words = ("lorem ipsum dolor " * (BIG // 18 + 1))[:BIG]
    t0 = time.perf_counter()
    r = httpx.post(
        url + "/predict", json={"requests": [{"task": "sts", "text": words, "text_pair": words}]}, timeout=120
    )
    took = time.perf_counter() - t0
    th.join(timeout=90)
    assert proc.poll() is None, "the server died:\n" + (root / "serve.log").read_text()[-2000:]
    assert r.status_code == 200, r.text[:300]
    assert took < 30, f"the 2 MB pair took {took:.1f} s"
    assert other.get("status") == 200 and other["seconds"] < 30, other
    grew = _rss_mb(proc.pid) - rss0
    assert grew < 800, f"RSS grew by {grew:.0f} MB on one request"


def test_oversized_bodies_and_bad_text_are_4xx_with_a_message(server):
    url, proc, _ = server
    body = b'{"requests": [{"task": "sts", "text": "' + b"x" * (4 * BIG) + b'"}]}'
    r = httpx.post(url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]

    def chunks():  # no content-length: the limit is counted as the body arrives
        yield b'{"requests": [{"task": "sts", "text": "'
        for _ in range(8):
            yield b"y" * BIG
        yield b'"}]}'

    r = httpx.post(url + "/predict", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413
    r = httpx.post(
        url + "/predict",
        content=b'{"requests": [{"task": "sts", "text": "\\ud800 lone"}]}',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert r.status_code == 400 and "not valid Unicode" in r.json()["error"]
    tasks = httpx.get(url + "/tasks", timeout=10).json()
    assert tasks["max_body_bytes"] == 3 * BIG and tasks["max_request_rows"] == 32
    assert proc.poll() is None
