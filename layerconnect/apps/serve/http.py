"""HTTP JSON service answering many tasks on one frozen encoder (``layerconnect serve``).

    GET  /tasks     the tasks served: name, kind, num_labels, label names
    POST /predict   {"requests": [{"task": "sst2", "text": "...", "text_pair": null}, ...]}
                    -> {"results": [{"task", "label", "label_id", "score", "probs", "logits"} | ...]}
    GET  /stats     batches run, rows answered (to see the batching at work)
    GET  /health

Batching across clients: every /predict call is validated, then put on an asyncio queue as one unit.
A single worker takes the first waiting unit, keeps collecting units for up to ``max_wait_ms`` or
until ``max_batch`` rows are gathered (a unit is never split; one that would overflow the batch
starts the next one), and answers them all with ONE ``MultiTaskModel.predict`` call (one encoder
pass, one connector launch per position) run in a worker thread so the event loop keeps accepting
requests meanwhile.

Limits (each refused with 413 and a message naming the option): a request body over
``max_body_bytes`` (counted as it arrives, before any parsing), a call with more than
``max_request_rows`` rows (at most ``max_batch``: a call is never split). Texts are cut to what
``max_length`` tokens can use before tokenising (:func:`~.predictor.chars_per_token_bound`), so one
hostile request can neither exhaust memory nor hold the worker for long.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import List, Optional, Tuple

from pydantic import BaseModel, ConfigDict

from .options import ServeOptions
from .predictor import Predictor, Request

__all__ = ["Batcher", "create_app", "Item", "PredictBody", "BodyLimit", "serve"]


# The JSON schema of POST /predict (module level: FastAPI resolves the annotations by name).
class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task: str
    text: str
    text_pair: Optional[str] = None


class PredictBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    requests: List[Item]


class RequestError(Exception):
    """A request the client got wrong: answered with ``status`` and ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class Batcher:
    """Collects /predict units from concurrent clients into batches of at most ``max_batch`` rows."""

    def __init__(self, model: Predictor, max_batch: int = 32, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.model = model
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.stats = {"batches": 0, "rows": 0, "requests": 0}
        self._queue: Optional[asyncio.Queue] = None
        self._worker: Optional[asyncio.Task] = None
        self._carry: Optional[Tuple[List[Request], asyncio.Future]] = None
        # one thread: model calls are serialised (the model is not re-entrant), the loop stays free
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="layerconnect-predict")

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=True)

    async def submit(self, reqs: List[Request]) -> List[dict]:
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((reqs, fut))
        return await fut

    async def _collect(self) -> List[Tuple[List[Request], asyncio.Future]]:
        loop = asyncio.get_running_loop()
        if self._carry is not None:
            first, self._carry = self._carry, None
        else:
            first = await self._queue.get()
        units, rows = [first], len(first[0])
        deadline = loop.time() + self.max_wait
        while rows < self.max_batch:
            left = deadline - loop.time()
            try:
                unit = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if rows + len(unit[0]) > self.max_batch:
                self._carry = unit
                break
            units.append(unit)
            rows += len(unit[0])
        return units

    def _predict(self, reqs: List[Request]) -> List[dict]:
        return self.model.predict(reqs)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._serve_one_batch(loop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any one batch
                import logging

                logging.getLogger("layerconnect.serve").exception("batch worker error: %s", exc)

    async def _serve_one_batch(self, loop) -> None:
        units = await self._collect()
        live = [(r, f) for r, f in units if not f.done()]  # a client may have gone away
        if not live:
            return
        flat = [req for r, _ in live for req in r]
        try:
            results = await loop.run_in_executor(self._pool, self._predict, flat)
        except Exception:
            # Something in the batch failed (e.g. a task removed meanwhile): answer each unit on its
            # own so one bad unit does not fail the others.
            for r, f in live:
                try:
                    res = await loop.run_in_executor(self._pool, self._predict, r)
                    self._count(1, len(r), 1)
                    if not f.done():
                        f.set_result(res)
                except Exception as exc:  # noqa: BLE001 - becomes the HTTP answer
                    if not f.done():
                        f.set_exception(exc)
            return
        self._count(1, len(flat), len(live))
        k = 0
        for r, f in live:
            if not f.done():
                f.set_result(results[k : k + len(r)])
            k += len(r)

    def _count(self, batches: int, rows: int, requests: int) -> None:
        self.stats["batches"] += batches
        self.stats["rows"] += rows
        self.stats["requests"] += requests


class BodyLimit:
    """ASGI middleware answering 413 as soon as a request body grows past ``limit`` bytes."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        state = {"seen": 0, "over": False}

        async def counted():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.limit:  # stop reading; the app sees a disconnect
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not state["over"]:  # once over the limit, only our 413 goes out
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"]:
            await self._refuse(send)

    async def _refuse(self, send):
        import json

        body = json.dumps(
            {"error": f"request body over {self.limit} bytes (--max-body-bytes); send fewer or shorter texts per call"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _validation_error(request, exc):
    from fastapi.responses import JSONResponse

    msgs = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        msgs.append(f"{loc or 'body'}: {e.get('msg')}")
    return JSONResponse(
        status_code=422,
        content={
            "error": "malformed request: "
            + "; ".join(msgs)
            + ' (expected {"requests": [{"task": ..., "text": ..., "text_pair": ...}, ...]})'
        },
    )


async def _predict(model: Predictor, batcher: "Batcher", row_limit: int, body: PredictBody) -> dict:
    """POST /predict: check the call, queue it for the next batch, answer (4xx with a message on bad input)."""
    n = len(body.requests)
    if n == 0:
        raise RequestError(400, "requests must hold at least one {task, text} item")
    if n > row_limit:
        raise RequestError(
            413, f"{n} requests in one call exceed --max-request-rows {row_limit}; split them over several calls"
        )
    try:
        reqs = model.normalise_requests([i.model_dump() for i in body.requests])
    except KeyError as exc:
        raise RequestError(404, str(exc.args[0]) if exc.args else str(exc)) from None
    except (ValueError, TypeError) as exc:
        raise RequestError(400, str(exc)) from None
    t0 = time.perf_counter()
    try:
        results = await batcher.submit(reqs)
    except KeyError as exc:  # a task removed while the request waited
        raise RequestError(404, str(exc.args[0]) if exc.args else str(exc)) from None
    except ValueError as exc:
        raise RequestError(400, str(exc)) from None
    return {"results": results, "latency_ms": round(1000 * (time.perf_counter() - t0), 3)}


def create_app(
    model: Predictor,
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    max_body_bytes: int = 1 << 20,
    max_request_rows: Optional[int] = None,
):
    """The FastAPI application serving ``model`` (see the module docstring for the endpoints and limits)."""
    from fastapi import FastAPI
    from fastapi import Request as HTTPRequest
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    batcher = Batcher(model, max_batch=max_batch, max_wait_ms=max_wait_ms)
    row_limit = min(int(max_request_rows or max_batch), batcher.max_batch)

    @asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = FastAPI(title="LayerConnect multi-task service", lifespan=lifespan)
    app.state.batcher = batcher
    app.state.model = model
    app.add_middleware(BodyLimit, limit=max_body_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(request: HTTPRequest, exc: RequestError):
        return JSONResponse(status_code=exc.status, content={"error": exc.message})

    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/tasks")
    async def tasks():
        out = []
        for t in model.model.tasks():
            d = t.to_dict()
            d.pop("path", None)  # do not publish server file paths
            out.append(d)
        return {
            "tasks": out,
            "max_batch": batcher.max_batch,
            "max_request_rows": row_limit,
            "max_body_bytes": max_body_bytes,
            "max_length": model.max_length,
        }

    @app.get("/stats")
    async def stats():
        return dict(batcher.stats)

    @app.post("/predict")
    async def predict(body: PredictBody):
        return await _predict(model, batcher, row_limit, body)

    return app


def serve(opts: ServeOptions) -> int:
    """``layerconnect serve``: load the model and tasks, then run the HTTP service until stopped."""
    import torch
    import uvicorn

    predictor = Predictor.from_pretrained(
        opts.model,
        opts.task_paths(),
        backend=opts.backend,
        dtype=getattr(torch, opts.dtype),
        max_length=opts.max_length,
    )
    predictor.model.to(opts.device)
    app = create_app(
        predictor,
        max_batch=opts.max_batch,
        max_wait_ms=opts.max_wait_ms,
        max_body_bytes=opts.max_body_bytes,
        max_request_rows=opts.max_request_rows,
    )
    names = list(opts.task_paths())
    print(
        f"serving {len(names)} task(s) {names} on http://{opts.host}:{opts.port} (max batch {opts.max_batch}, "
        f"max wait {opts.max_wait_ms} ms, max body {opts.max_body_bytes} bytes)",
        flush=True,
    )
    uvicorn.run(app, host=opts.host, port=opts.port, log_level=opts.log_level)
    return 0
