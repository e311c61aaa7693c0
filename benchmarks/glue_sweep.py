"""GLUE sweep, protocol v3: LayerConnect against Houlsby adapters and the other baselines, resumable.

    python benchmarks/glue_sweep.py run    --data-dir ../shared/glue [--jobs 2 --threads 1] [--stop-at 18:30]
    python benchmarks/glue_sweep.py plan   --data-dir ../shared/glue          (what would run next, in order)
    python benchmarks/glue_sweep.py report --data-dir ../shared/glue          (writes GLUE_RESULTS.md)

Protocol (written down before any v3 run; SPEC §7):

* Model: the offline all-MiniLM-L6-v2 (6 layers, d = 384). Data: the GLUE TSVs (``--data-dir``); full
  train sets except SST-2 (a fixed 4,000-row subsample); full dev sets.
* Every run holds out a fixed slice of its train set (10 %, at most 800 rows, seed 0, never trained
  on). That slice alone chooses the epoch, the learning rate, the readout and the LayerConnect variant;
  dev is scored once per run, on the checkpoint the slice chose, and only reported.
* Budget: epochs CoLA 6, SST-2 8, MRPC 8, STS-B 6, RTE 8; batch 32, max length 128, AdamW, 6 % warm-up
  then linear decay, clip 1.0, no weight decay.
* Stage 1, readout screen (seed 42, CoLA and MRPC): LayerConnect (positions ``all``, lr 1e-2) and Houlsby
  (lr 1e-3) with each readout (mean, cls, trainable pooler). The readout with the best mean held-out
  score over these runs becomes every method's readout.
* Stage 2, LayerConnect variant screen (same runs and readout): positions ``inner`` (SPEC default),
  ``all``, ``0..L`` (a connector on the embeddings too), ``all`` with trained LayerNorms. Best mean
  held-out score wins.
* Stage 3, LR grid (seed 42, five tasks): LayerConnect {3e-3, 1e-2, 3e-2}, Houlsby {3e-4, 1e-3, 3e-3};
  per task and method the LR with the best held-out score among runs that did not collapse (a tie goes
  to the run with the lower final training loss; written before any run, in ``_best``).
* Collapse rule, for every method alike: a run whose final training loss (mean over its last epoch) is at
  least 0.95 x the constant predictor's (label entropy; label variance for STS-B) learned nothing and
  cannot be chosen; when every LR of a task's grid collapsed, the next lower LR (a third of the lowest)
  is added to the grid, once.
* Edge rule, for every method alike (added 2026-11-30 during stage 3, after 25 finished runs, when LayerConnect's
  lowest LR led its CoLA grid on held-out data; no grid had yet been decided by it): when a grid's best
  non-collapsed LR is its lowest (highest), the next LR beyond it (a third of it; three times it) is
  added, once, and the best held-out score over the extended grid is chosen.
* Stage 4: seeds 43 and 44 of LayerConnect and Houlsby at their chosen LRs.
* Stage 5: head-only, BitFit, Pfeiffer, LoRA (r = 8) and full fine-tuning, each with its LR grid at seed 42.
* Ablations (added 2026-11-30 after the readout screen, before any grid run; they choose nothing, they
  explain the gap), seed 42, CoLA and MRPC, run after stage 4 and before stage 5: LayerConnect at its
  chosen variant and LR with (a) seed grids as wide as the hidden size (q = d: no interpolation across
  channels), (b) one anchor per position (K = |P|: no sharing across depth), (c) twice the rank
  (r = d/4); and Houlsby at LayerConnect's budget (bottleneck 2, about 23k parameters) with its LR grid.
  Added 2026-12-01, after every seed-42 ablation had finished (stage 5 had begun): seeds 43 and 44 of that
  small adapter at the LR its grid chose, because the reading rests on its comparison with
  LayerConnect and one seed of each is within about two standard deviations of seed noise.
* Report: per task mean +- standard error over seeds, the GLUE average, LayerConnect's average gap to
  Houlsby with a 95 % bootstrap interval over seeds, trainable parameters without and with the head.

Each run is one ``layerconnect train`` subprocess writing ``<run-root>/<run id>/``; the results JSON is
rewritten atomically after every run (commit it after every run: the sweep spans sessions). Finished runs
are never repeated; an interrupted one continues with ``--resume`` where its run folder survived (a fresh
checkout has none: it starts over). With ``--stop-at`` a run starts only if it is expected to finish before
the stop (the median time of finished runs of its task and method, plus 10 %; a method's first run on a
task: the task's median scaled by how much longer that method took on other tasks), so that no work is left in
a checkpoint a new machine will not have; ``--no-fit`` starts runs regardless. Runs start in stage order, except that
Houlsby's LR grid (which needs only the readout) fills the cores the variant screen leaves idle, and that near
a ``--stop-at`` a later run that fits (e.g. an ablation) may start before an earlier one that does not (order
changes no choice: each stage chooses from its own runs only).
``--source`` runs the code from a frozen copy (see ``snapshot``) so that edits in the working tree cannot
change a sweep halfway.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULTS_JSON = os.path.join("benchmarks", "glue_results.json")
RESULTS_MD = os.path.join("benchmarks", "GLUE_RESULTS.md")
RESULTS_PNG = os.path.join("benchmarks", "glue_v3.png")
RUN_ROOT = os.path.join("runs", "glue_v3")

PROTOCOL = "v3"
TASKS = ["sst2", "cola", "stsb", "rte", "mrpc"]  # cheapest first
EPOCHS = {"cola": 6, "sst2": 8, "mrpc": 8, "stsb": 6, "rte": 8}
SUBSAMPLE = {"sst2": 4000}
BATCH, MAX_LENGTH = 32, 128
SEEDS = [42, 43, 44]
LR_GRID = {
    "layerconnect": [3e-3, 1e-2, 3e-2],
    "houlsby": [3e-4, 1e-3, 3e-3],
    "pfeiffer": [3e-4, 1e-3, 3e-3],
    "lora": [3e-4, 1e-3, 3e-3],
    "bitfit": [1e-3, 3e-3, 1e-2],
    "head": [1e-3, 3e-3, 1e-2],
    "full": [1e-5, 3e-5, 1e-4],
}
BASELINES = ["head", "bitfit", "pfeiffer", "lora", "full"]
SCREEN_TASKS = ["cola", "mrpc"]
SCREEN_LR = {"layerconnect": 1e-2, "houlsby": 1e-3}
READOUTS = ["mean", "cls", "pooler"]
LC_VARIANTS = {  # name -> LayerConnect options (MiniLM: L = 6)
    "all": {"positions": "all"},
    "inner": {"positions": "inner"},
    "0..L": {"positions": "0,1,2,3,4,5,6"},
    "all+LN": {"positions": "all", "train_layernorm": True},
}
SCREEN_VARIANT = "all"  # the variant the readout screen uses
N_LAYERS, HIDDEN = 6, 384  # MiniLM
LC_ABLATIONS = {  # name -> LayerConnect options added to the chosen variant's
    "q=d": {"seed_cols": HIDDEN},
    "K=|P|": {"num_anchors": None},  # filled in from the variant's positions
    "r=d/4": {"down_factor": 4},
}
SMALL_HOULSBY = {"reduction_factor": HIDDEN // 2}  # bottleneck 2: 12 x 1,922 = 23,064 parameters
CLI_OPTIONS = {"positions", "down_factor", "num_anchors", "alpha", "train_layernorm"}  # the rest: --method-option
COLLAPSE = 0.95


# --- plan ---------------------------------------------------------------------------------------------------


def spec(
    stage: str, task: str, method: str, lr: float, seed: int = 42, pooling: str = "mean", options: Optional[dict] = None
) -> dict:
    s = {
        "stage": stage,
        "task": task,
        "method": method,
        "lr": lr,
        "seed": seed,
        "pooling": pooling,
        "options": dict(options or {}),
        "epochs": EPOCHS[task],
        "train_subsample": SUBSAMPLE.get(task),
    }
    opt = "".join(f"-{k}={v}" for k, v in sorted(s["options"].items()))
    s["id"] = f"{task}-{method}-lr{lr:g}-{pooling}{opt}-s{seed}".replace(",", ".")
    return s


def _done(results: dict, s: dict) -> Optional[dict]:
    r = results["runs"].get(s["id"])
    return r if r and r.get("status") == "done" else None


def _mean_selection(results: dict, specs: List[dict]) -> Optional[float]:
    """Mean held-out selection score of ``specs``; None until all are done."""
    recs = [_done(results, s) for s in specs]
    if any(r is None for r in recs):
        return None
    return statistics.mean(r["selection_score"] for r in recs)


def readout_screen(results: dict):
    """(specs, chosen readout or None while unfinished)."""
    specs = {
        p: [
            spec(
                "screen",
                t,
                m,
                SCREEN_LR[m],
                pooling=p,
                options=LC_VARIANTS[SCREEN_VARIANT] if m == "layerconnect" else None,
            )
            for m in ("layerconnect", "houlsby")
            for t in SCREEN_TASKS
        ]
        for p in READOUTS
    }
    scores = {p: _mean_selection(results, ss) for p, ss in specs.items()}
    chosen = None if any(v is None for v in scores.values()) else max(READOUTS, key=lambda p: scores[p])
    return [s for p in READOUTS for s in specs[p]], chosen, scores


def variant_screen(results: dict, readout: str):
    specs = {
        v: [
            spec("screen", t, "layerconnect", SCREEN_LR["layerconnect"], pooling=readout, options=o)
            for t in SCREEN_TASKS
        ]
        for v, o in LC_VARIANTS.items()
    }
    scores = {v: _mean_selection(results, ss) for v, ss in specs.items()}
    chosen = None if any(v is None for v in scores.values()) else max(LC_VARIANTS, key=lambda v: scores[v])
    return [s for v in LC_VARIANTS for s in specs[v]], chosen, scores


def _step(lr: float, factor: float) -> float:
    return float(f"{lr * factor:.3g}")  # 3e-3 / 3 -> 1e-3, not 0.0009999...


def _best(recs: List[dict]) -> dict:
    ok = [r for r in recs if not r["collapsed"]] or recs
    return max(ok, key=lambda r: (r["selection_score"], -(r.get("final_train_loss") or 0.0)))


def grid(results: dict, stage: str, task: str, method: str, readout: str, options: Optional[dict]):
    """(specs, chosen lr or None): the LR grid of one task and method at seed 42, extended once downwards
    when every LR collapsed (collapse rule), and once beyond whichever edge of the grid wins (edge rule)."""
    lrs = list(LR_GRID[method])
    specs = [spec(stage, task, method, lr, pooling=readout, options=options) for lr in lrs]
    recs = [_done(results, s) for s in specs]

    def extend(lr: float) -> None:
        if all(s["lr"] != lr for s in specs):
            specs.append(spec(stage, task, method, lr, pooling=readout, options=options))
            recs.append(_done(results, specs[-1]))

    if all(r is not None and r["collapsed"] for r in recs):
        extend(_step(lrs[0], 1 / 3))
    if any(r is None for r in recs):
        return specs, None
    best = _best(recs)["spec"]["lr"]
    if not all(r["collapsed"] for r in recs):
        if best == lrs[0]:
            extend(_step(lrs[0], 1 / 3))
        elif best == lrs[-1]:
            extend(_step(lrs[-1], 3))
    if any(r is None for r in recs):
        return specs, None
    return specs, _best(recs)["spec"]["lr"]


def _n_positions(positions: str) -> int:
    return {"inner": N_LAYERS - 1, "all": N_LAYERS}.get(positions) or len(positions.split(","))


def ablations(results: dict, ch: dict) -> List[dict]:
    """The ablation runs whose inputs (variant, LayerConnect's LR on the task) are chosen."""
    out = []
    base = LC_VARIANTS[ch["variant"]]
    for t in SCREEN_TASKS:
        lr = ch["lr"].get((t, "layerconnect"))
        if lr is None:
            continue
        for extra in LC_ABLATIONS.values():
            o = dict(base, **extra)
            if "num_anchors" in extra:
                o["num_anchors"] = _n_positions(base["positions"])
            out.append(spec("ablations", t, "layerconnect", lr, pooling=ch["readout"], options=o))
    for t in SCREEN_TASKS:
        ss, lr = grid(results, "ablations", t, "houlsby", ch["readout"], SMALL_HOULSBY)
        out += ss
        if lr is not None:  # its other seeds at the LR its grid chose, to set against LayerConnect's three
            out += [
                spec("ablations", t, "houlsby", lr, seed=seed, pooling=ch["readout"], options=SMALL_HOULSBY)
                for seed in SEEDS[1:]
            ]
    return out


def plan(results: dict):
    """Runs in order, and the choices made so far. A stage whose inputs are not finished yet adds nothing."""
    out, ch = [], {"readout": None, "variant": None, "lr": {}}
    ss, ch["readout"], ch["readout_scores"] = readout_screen(results)
    out += ss
    if ch["readout"] is None:
        return out, ch
    ss, ch["variant"], ch["variant_scores"] = variant_screen(results, ch["readout"])
    out += ss
    if ch["variant"] is None:  # Houlsby's grid needs only the readout: it fills the cores the screen leaves idle
        for t in TASKS:
            ss, ch["lr"][(t, "houlsby")] = grid(results, "grid", t, "houlsby", ch["readout"], None)
            out += ss
        return _unique(out), ch
    lc = LC_VARIANTS[ch["variant"]]
    main = [("layerconnect", lc), ("houlsby", None)]
    for t in TASKS:
        for m, o in main:
            ss, ch["lr"][(t, m)] = grid(results, "grid", t, m, ch["readout"], o)
            out += ss
    for seed in SEEDS[1:]:
        for t in TASKS:
            for m, o in main:
                if ch["lr"].get((t, m)) is not None:
                    out.append(spec("seeds", t, m, ch["lr"][(t, m)], seed=seed, pooling=ch["readout"], options=o))
    out += ablations(results, ch)
    for m in BASELINES:
        for t in TASKS:
            ss, ch["lr"][(t, m)] = grid(results, "baselines", t, m, ch["readout"], None)
            out += ss
    return _unique(out), ch


def _unique(specs: List[dict]) -> List[dict]:
    """A screen run can be a grid run too (same id): run it once, at its first place."""
    seen, uniq = set(), []
    for s in specs:
        if s["id"] not in seen:
            seen.add(s["id"])
            uniq.append(s)
    return uniq


# --- running ------------------------------------------------------------------------------------------------


def load_results(path: str) -> dict:
    if os.path.isfile(path):
        with open(path) as fh:
            return json.load(fh)
    return {"protocol": PROTOCOL, "runs": {}, "sweep_commands": []}


def save_results(path: str, results: dict) -> None:
    sys.path.insert(0, REPO)
    from layerconnect.utils.io import atomic_write_json

    atomic_write_json(path, results)


def train_argv(s: dict, data_dir: str, out_dir: str, threads: Optional[int]) -> List[str]:
    a = [
        "layerconnect",
        "train",
        "--task",
        s["task"],
        "--method",
        s["method"],
        "--data-dir",
        data_dir,
        "--output-dir",
        out_dir,
        "--epochs",
        str(s["epochs"]),
        "--lr",
        repr(s["lr"]),
        "--pooling",
        s["pooling"],
        "--batch-size",
        str(BATCH),
        "--max-length",
        str(MAX_LENGTH),
        "--seed",
        str(s["seed"]),
        "--no-progress",
        "--logging-steps",
        "20",
    ]
    if s["train_subsample"]:
        a += ["--train-subsample", str(s["train_subsample"])]
    for k, v in sorted(s["options"].items()):
        if k not in CLI_OPTIONS:
            a += ["--method-option", f"{k}={v}"]
        else:
            a += [f"--{k.replace('_', '-')}"] if v is True else [f"--{k.replace('_', '-')}", str(v)]
    if threads:
        a += ["--threads", str(threads)]
    return a


def _record(rec: dict, out_dir: str) -> dict:
    with open(os.path.join(out_dir, "metrics.json")) as fh:
        m = json.load(fh)
    collapsed = m.get("final_train_loss") is not None and m["final_train_loss"] >= COLLAPSE * m["constant_train_loss"]
    keys = (
        "score",
        "scores",
        "majority_dev_score",
        "final_train_loss",
        "constant_train_loss",
        "trainable_params",
        "head_params",
        "trainable_params_with_head",
        "train_size",
        "global_steps",
        "train_runtime_s",
        "wall_time_s",
        "versions",
    )
    rec.update({k: m.get(k) for k in keys})
    rec.update(
        status="done",
        selection_score=m["selection"]["score"],
        best_step=m["selection"]["best_step"],
        selection_history=m["selection"]["history"],
        collapsed=bool(collapsed),
        finished_utc=m["time_utc"],
    )
    return rec


class Job:
    def __init__(self, s: dict, args, env: dict):
        self.s, self.t0 = s, time.time()
        self.out = os.path.join(args.run_root, s["id"])
        argv = train_argv(s, os.path.abspath(args.data_dir), os.path.abspath(self.out), args.threads)
        if os.path.isdir(self.out) and any(n.startswith("checkpoint-") for n in os.listdir(self.out)):
            argv.append("--resume")
        self.shown = " ".join(train_argv(s, args.data_dir, self.out, args.threads)[:]) + (
            " --resume" if argv[-1] == "--resume" else ""
        )
        self.log = open(self.out + ".log", "a")
        cmd = [sys.executable, "-m", "layerconnect.cli", *argv[1:]]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=args.source or REPO)


def _stop(job: Job, grace_s: float = 180.0) -> None:
    """Wait for a run told to stop (SIGINT: it saves a checkpoint after this step). A run still loading can
    miss the signal (seen once, two minutes in); after ``grace_s`` it is killed and counts as interrupted
    (it resumes from its last checkpoint, or restarts if it had none)."""
    try:
        job.proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        job.proc.kill()
        job.proc.wait()
        job.killed = True


def _finish(job: Job, results: dict, args) -> None:
    job.log.close()
    rc = 130 if getattr(job, "killed", False) else job.proc.returncode
    s = job.s
    rec = results["runs"].get(s["id"], {"attempts": 0})
    rec.update(spec=s, out_dir=job.out, command=job.shown, attempts=rec.get("attempts", 0) + (rc != 130))
    rec["source_commit"] = results.get("source_commit")
    if rc == 0 and os.path.isfile(os.path.join(job.out, "metrics.json")):
        _record(rec, job.out)
    else:
        rec.update(status="interrupted" if rc == 130 else "failed", returncode=rc)
    rec["last_attempt_s"] = round(time.time() - job.t0, 1)
    results["runs"][s["id"]] = rec
    save_results(args.results, results)
    print(
        f"[{time.strftime('%H:%M:%S', time.gmtime())}] {rec['status']} {s['id']} sel={rec.get('selection_score')} "
        f"dev={rec.get('score')} collapsed={rec.get('collapsed')} ({rec['last_attempt_s']:.0f}s)",
        flush=True,
    )


def _deadline(stop_at: Optional[str]) -> Optional[float]:
    if not stop_at:
        return None
    h, m = map(int, stop_at.split(":"))
    now = dt.datetime.now(dt.timezone.utc)
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    return (t + dt.timedelta(days=1) if t < now else t).timestamp()


def _whole_runs(results: dict) -> List[dict]:
    """Finished runs whose recorded times cover the whole run: a resumed run's ``last_attempt_s`` and
    ``wall_time_s`` cover only its last attempt, so it would make every estimate too short."""
    return [
        r
        for r in results["runs"].values()
        if r.get("status") == "done" and not str(r.get("command", "")).endswith("--resume")
    ]


def _estimate(per: Dict[Tuple[str, str], List[float]], task: str, method: str) -> Optional[float]:
    """One run's value (seconds, or seconds per example) from finished runs' values ``per`` (keyed by task
    and method): the median of its task and method; without one, the median of its task's runs times the
    method's factor, the median over the other tasks of (its median) / (that task's median over every
    method), 1.0 where it has none (full fine-tuning takes longer than an adapter on every task); None with
    no finished run of the task."""
    if (task, method) in per:
        return statistics.median(per[task, method])
    by_task: Dict[str, List[float]] = {}
    for (t, _), xs in per.items():
        by_task.setdefault(t, []).extend(xs)
    if task not in by_task:
        return None
    task_median = {t: statistics.median(xs) for t, xs in by_task.items()}
    ratios = [
        statistics.median(xs) / task_median[t] for (t, m), xs in per.items() if m == method and task_median[t] > 0
    ]
    return task_median[task] * (statistics.median(ratios) if ratios else 1.0)


def expected_s(results: dict, s: dict) -> Optional[float]:
    """Expected wall time of run ``s``: ``_estimate`` over whole finished runs' times, plus 10 %."""
    per: Dict[Tuple[str, str], List[float]] = {}
    for r in _whole_runs(results):
        if r.get("last_attempt_s"):
            per.setdefault((r["spec"]["task"], r["spec"]["method"]), []).append(r["last_attempt_s"])
    est = _estimate(per, s["task"], s["method"])
    return None if est is None else 1.1 * est


def fits(results: dict, s: dict, now: float, deadline: Optional[float]) -> bool:
    """Whether run ``s`` started at ``now`` is expected to finish before ``deadline`` (unknown: it fits)."""
    if deadline is None:
        return True
    need = expected_s(results, s)
    return need is None or now + need <= deadline


def check_same_code(results: dict, code: str) -> None:
    """A sweep runs on one version of the code: refuse to continue finished runs' sweep on another."""
    seen = {r.get("source_commit") for r in results["runs"].values() if r.get("status") == "done"} - {None}
    other = sorted(seen - {code})
    if other:
        raise SystemExit(
            f"the sweep's finished runs ran code {', '.join(other)}, this run would use {code}: make a frozen copy "
            f"of that commit with `python benchmarks/glue_sweep.py snapshot --commit {other[0].split()[0]} "
            "--source DIR` and pass --source DIR (or start a new results file with --results)"
        )


def cmd_run(args) -> int:
    os.makedirs(args.run_root, exist_ok=True)
    results = load_results(args.results)
    results["sweep_commands"].append("python benchmarks/glue_sweep.py " + " ".join(sys.argv[1:]))
    if args.source and os.path.isfile(os.path.join(args.source, "SOURCE_COMMIT")):
        with open(os.path.join(args.source, "SOURCE_COMMIT")) as fh:
            code = fh.read().strip()
    else:
        code = "working tree"
    check_same_code(results, code)
    results["source_commit"] = code
    save_results(args.results, results)
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.path.abspath(args.source or REPO),
    )
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    deadline, running = _deadline(args.stop_at), []
    while True:
        for job in [j for j in running if j.proc.poll() is not None]:
            running.remove(job)
            _finish(job, results, args)
        if deadline and time.time() > deadline:
            for job in running:
                job.proc.send_signal(signal.SIGINT)  # the run saves a checkpoint and stops; resumed later
            for job in running:
                _stop(job)
                _finish(job, results, args)
            print("sweep: past --stop-at; stopped", flush=True)
            return 0
        busy = {j.s["id"] for j in running}
        todo = [
            s
            for s in plan(results)[0]
            if _done(results, s) is None
            and s["id"] not in busy
            and results["runs"].get(s["id"], {}).get("attempts", 0) < args.max_attempts
            and (args.no_fit or fits(results, s, time.time(), deadline))
        ]
        while todo and len(running) < args.jobs:
            s = todo.pop(0)
            print(f"[{time.strftime('%H:%M:%S', time.gmtime())}] start {s['id']}", flush=True)
            running.append(Job(s, args, env))
        if not running:
            why = " before --stop-at" if deadline and not args.no_fit else ""
            print(f"sweep: nothing left that fits{why} (or waiting on failed runs: see the JSON)", flush=True)
            return 0
        time.sleep(5)


def cmd_snapshot(args) -> int:
    """Copy the code (lc_kernels, layerconnect, the built extension) to ``--source`` and record the commit.

    Without ``--commit`` the working tree is copied (its extension must be built, e.g. by the editable
    install). With ``--commit REV`` that commit is exported with ``git archive`` and its extension built in
    place (CPU only), so a new machine can continue a sweep on the exact code it started with."""
    dst = args.source
    if not dst:
        raise SystemExit("snapshot needs --source DIR (where the frozen copy goes, e.g. runs/sweep-src-v3)")
    src, tmp = REPO, None
    try:
        if args.commit:
            rev = subprocess.run(
                ["git", "rev-parse", "--verify", args.commit + "^{commit}"], cwd=REPO, capture_output=True, text=True
            )
            if rev.returncode != 0:
                raise SystemExit(f"--commit {args.commit}: not a commit of this repository ({rev.stderr.strip()})")
            commit, dirty = rev.stdout.strip(), ""
            tmp = tempfile.mkdtemp(prefix="lc-snapshot-")
            src = os.path.join(tmp, "tree")
            os.makedirs(src)
            archive = subprocess.run(
                ["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", src], input=archive.stdout, check=True)
            print(f"building the extension of {commit[:12]} (CPU only) ...", flush=True)
            build = subprocess.run(
                [sys.executable, "setup.py", "build_ext", "--inplace"],
                cwd=src,
                env=dict(os.environ, LC_SKIP_CUDA="1"),
                capture_output=True,
                text=True,
            )
            if build.returncode != 0:
                raise SystemExit(
                    f"building the extension of {commit} failed:\n{build.stdout[-3000:]}{build.stderr[-3000:]}"
                )
        else:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
            commit = commit.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "lc_kernels", "layerconnect"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip()
        # only now, with the new copy ready, does the old one go
        if os.path.exists(dst):
            shutil.rmtree(dst)
        for pkg in ("lc_kernels", "layerconnect"):
            shutil.copytree(
                os.path.join(src, pkg), os.path.join(dst, pkg), ignore=shutil.ignore_patterns("__pycache__")
            )
    finally:
        if tmp:
            shutil.rmtree(tmp)
    with open(os.path.join(dst, "SOURCE_COMMIT"), "w") as fh:
        fh.write(commit + (" (with uncommitted changes)" if dirty else "") + "\n")
    print(f"snapshot of {commit} in {dst}")
    return 0


def cmd_plan(args) -> int:
    results = load_results(args.results)
    specs, ch = plan(results)
    todo = [s for s in specs if _done(results, s) is None]
    print(
        f"choices so far: readout={ch['readout']} variant={ch['variant']}; {len(specs) - len(todo)} of "
        f"{len(specs)} planned runs done "
        + ("(the sweep is complete)" if not todo else "(later stages appear once their inputs finish)")
    )
    for s in todo[: args.limit]:
        print("  ", s["stage"], s["id"])
    return 0


# --- report -------------------------------------------------------------------------------------------------


def _se(xs: List[float]) -> Optional[float]:
    return statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else None


def _fmt(xs: List[float]) -> str:
    if not xs:
        return "—"
    se = _se(xs)
    return (
        f"{statistics.mean(xs):.1f}"
        + (f" ± {se:.1f}" if se is not None else "")
        + (f" (n={len(xs)})" if len(xs) > 1 else "")
    )


def bootstrap_gap(a: Dict[str, List[float]], b: Dict[str, List[float]], reps: int = 10000, seed: int = 0):
    """Mean over tasks of mean(a[t]) - mean(b[t]) and its 95 % percentile interval, resampling each task's
    seeds with replacement (None when a task has a single seed)."""
    tasks = sorted(set(a) & set(b))
    gap = statistics.mean(statistics.mean(a[t]) - statistics.mean(b[t]) for t in tasks)
    if any(len(a[t]) < 2 or len(b[t]) < 2 for t in tasks):
        return gap, None
    rng = random.Random(seed)
    draws = []
    for _ in range(reps):
        draws.append(
            statistics.mean(
                statistics.mean(rng.choices(a[t], k=len(a[t]))) - statistics.mean(rng.choices(b[t], k=len(b[t])))
                for t in tasks
            )
        )
    draws.sort()
    return gap, (draws[int(0.025 * reps)], draws[int(0.975 * reps) - 1])


PAPER_GAP, OUR_GAP = -2.5, -1.0  # the paper's claim (within 2.5 GLUE points of Adapter) and our own goal


def verdict(a: Dict[str, List[float]], b: Dict[str, List[float]], ci) -> str:
    """The gap in plain words: where its 95 % interval lies against the paper's claim and our goal, which
    tasks make it up, and whether every task has its seeds yet (else the sentence says "so far")."""
    tasks = sorted(set(a) & set(b))
    per = sorted(((statistics.mean(a[t]) - statistics.mean(b[t]), t) for t in tasks))
    where = ", ".join(f"{t} {d:+.1f}" for d, t in per)
    full = len(tasks) == len(TASKS) and all(len(a[t]) >= len(SEEDS) and len(b[t]) >= len(SEEDS) for t in tasks)
    so_far = "" if full else " so far (not every task has its seeds yet)"
    if ci is None:
        head = f"No verdict yet{so_far}: the gap has no interval."
    elif ci[0] >= OUR_GAP:
        head = f"Our goal is met{so_far}: the whole interval lies within {-OUR_GAP:g} point of Houlsby."
    elif ci[0] >= PAPER_GAP:
        head = f"The paper's claim holds{so_far}: the whole interval lies within {-PAPER_GAP:g} points of Houlsby."
    elif ci[1] < PAPER_GAP:
        head = (
            f"The paper's claim does not hold here{so_far}: the whole interval lies more than {-PAPER_GAP:g} points"
            " below Houlsby."
        )
    else:
        head = f"Undecided{so_far}: the interval contains {PAPER_GAP:+g}, the paper's claim."
    return f"{head} Per task (LayerConnect − Houlsby, dev means, largest loss first): {where}."


def _chosen_runs(results: dict, ch: dict, method: str, options: Optional[dict] = None) -> List[dict]:
    """Finished runs of ``method`` with the chosen readout and ``options`` (default: the chosen LayerConnect
    variant, else none), matched exactly (an ablation's extra option keeps it out)."""
    if options is None:
        options = LC_VARIANTS[ch["variant"]] if method == "layerconnect" else {}
    return [
        r
        for r in results["runs"].values()
        if r.get("status") == "done"
        and r["spec"]["method"] == method
        and r["spec"]["pooling"] == ch["readout"]
        and r["spec"]["options"] == options
    ]


def _runs_at(results: dict, ch: dict, method: str, task: str, lr, options: Optional[dict] = None) -> List[dict]:
    """Finished runs of one setting (``_chosen_runs``' match, on ``task`` at ``lr``), every seed, in seed order."""
    runs = [r for r in _chosen_runs(results, ch, method, options) if (r["spec"]["task"], r["spec"]["lr"]) == (task, lr)]
    return sorted(runs, key=lambda r: r["spec"]["seed"])


def _main_runs(results: dict, ch: dict, method: str, task: str) -> List[dict]:
    """The finished runs of ``method`` on ``task`` at its chosen LR (every seed); none before it is chosen."""
    lr = ch["lr"].get((task, method))
    return [] if lr is None else _runs_at(results, ch, method, task, lr)


def _main_scores(results: dict, ch: dict, method: str) -> Dict[str, List[float]]:
    out = {}
    for t in TASKS:
        xs = [r["score"] for r in _main_runs(results, ch, method, t)]
        if xs:
            out[t] = xs
    return out


def _screen_table(w, results: dict, title: str, specs: List[dict], key) -> None:
    w(f"### {title}\n")
    w("| setting | task | held-out (selection) | dev (reported only) | final / constant train loss |")
    w("|---|---|---|---|---|")
    for s in specs:
        r = _done(results, s)
        if r is None:
            w(f"| {key(s)} | {s['task']} | (not run yet) | | |")
            continue
        ratio = (r["final_train_loss"] / r["constant_train_loss"]) if r.get("final_train_loss") else float("nan")
        w(
            f"| {key(s)} | {s['task']} | {r['selection_score']:.1f} | {r['score']:.1f} | {ratio:.2f}"
            f"{' (collapsed)' if r['collapsed'] else ''} |"
        )
    w("")


def cmd_report(args) -> int:
    results = load_results(args.results)
    specs, ch = plan(results)
    done = [r for r in results["runs"].values() if r.get("status") == "done"]
    lines: List[str] = []
    w = lines.append
    n_done = sum(1 for s in specs if _done(results, s))
    w("# GLUE results, protocol v3 (generated by `benchmarks/glue_sweep.py report`; raw: `glue_results.json`)\n")
    status = (
        f"**Status: complete.** All {len(specs)} runs are finished"
        + (
            f" (the protocol's {protocol_size()} plus {len(specs) - protocol_size()} its collapse and edge rules"
            " added). "
            if len(specs) > protocol_size()
            else ". "
        )
        if n_done == len(specs)
        else f"**Status:** {n_done} of {len(specs)} runs planned so far are finished (later stages are planned once "
        f"their inputs finish; the whole protocol is {protocol_size()} runs when no grid needs extending). "
    )
    w(
        status
        + (
            f"Rough time left, 2 runs at a time on 2 CPU cores: {h:.0f} h. "
            if (h := remaining_hours(results, specs=specs))
            else ""
        )
        + f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Earlier protocols: "
        "`GLUE_RESULTS_v2.md`.\n"
    )
    try:
        plot_sweep(results, ch, args.figure)
        rel = os.path.relpath(args.figure, os.path.dirname(args.out) or ".")
        w(f"![screens, held-out against dev, and the chosen runs]({rel})\n")
    except Exception as e:  # noqa: BLE001 - a figure must never cost the report
        print(f"warning: could not draw {args.figure}: {e}", file=sys.stderr)
    w("## Protocol\n")
    w(__doc__.split("Protocol (written down before any v3 run; SPEC §7):")[1].split("Each run is one")[0].strip())
    vers = next((r.get("versions") for r in done if r.get("versions")), {})
    w(
        f"\nVersions: {json.dumps({k: v for k, v in (vers or {}).items() if k != 'git_commit'})}; code: commit "
        f"`{results.get('source_commit', 'working tree')}`. Runs share 2 CPU cores with other work: times are wall "
        "clock, not comparable between runs. Latest sweep commands (every one is in the JSON, `sweep_commands`): "
        + "; ".join(f"`{c}`" for c in list(dict.fromkeys(results.get("sweep_commands", [])))[-2:])
        + ". Each run's exact "
        "`layerconnect train` command is in the JSON (`runs[id].command`).\n"
    )
    w(METHODS_AS_RUN)
    rs, _, rscores = readout_screen(results)
    w("## Stage 1: readout screen (seed 42)\n")
    w(
        "Mean held-out score per readout: "
        + ", ".join(f"{p} {v:.1f}" if v is not None else f"{p} (unfinished)" for p, v in rscores.items())
        + (f" → **{ch['readout']}**" if ch["readout"] else "")
        + "\n"
    )
    _screen_table(w, results, "runs", rs, lambda s: f"{s['method']} {s['pooling']}")
    if ch["readout"]:
        vs, _, vscores = variant_screen(results, ch["readout"])
        w("## Stage 2: LayerConnect variants (seed 42, readout " + ch["readout"] + ")\n")
        w(
            "Mean held-out score: "
            + ", ".join(f"{v} {x:.1f}" if x is not None else f"{v} (unfinished)" for v, x in vscores.items())
            + (f" → **{ch['variant']}**" if ch["variant"] else "")
            + "\n"
        )
        _screen_table(w, results, "runs", vs, lambda s: next(k for k, o in LC_VARIANTS.items() if o == s["options"]))
        w(_variant_params(results, vs) + "\n")
    if ch["readout"]:
        main = [("houlsby", None)] + ([("layerconnect", LC_VARIANTS[ch["variant"]])] if ch["variant"] else [])
        gs = [
            x
            for t in TASKS
            for m, o in main
            for x in sorted(grid(results, "grid", t, m, ch["readout"], o)[0], key=lambda x: x["lr"])
        ]  # an extension LR (collapse or edge rule) sits in LR order, not at the end
        w("## Stage 3: learning-rate grid (seed 42; the screens' runs at the chosen settings count here too)\n")
        _screen_table(w, results, "runs", gs, lambda x: f"{x['method']} lr {x['lr']:g}")
    if ch["variant"]:
        _main_tables(w, results, ch)
        _ablation_table(w, results, ch)
        bs = sorted(
            (s for s in specs if s["stage"] == "baselines"),
            key=lambda x: (BASELINES.index(x["method"]), TASKS.index(x["task"]), x["lr"]),
        )
        if bs:
            w("## Stage 5: the other baselines' learning-rate grids (seed 42)\n")
            _screen_table(w, results, "runs", bs, lambda x: f"{x['method']} lr {x['lr']:g}")
    _write(args, lines)
    return 0


METHODS_AS_RUN = """## Methods as run

* LayerConnect: SPEC's connector (r = d/8 = 48, K = 2 anchors of 48 x 192, alpha 1), Θ and biases trained;
  the positions and whether the LayerNorms train are stage 2's choice.
* Houlsby: two bottleneck adapters per layer (after attention and after the FFN), bottleneck d/16 = 24,
  swish, AdapterHub's ``double_seq_bn`` placement; the pre-trained **LayerNorms stay frozen**, as in
  AdapterHub's default (the original Houlsby paper trained them).
* Stage 5's baselines: head-only (the readout head alone); BitFit (every bias of the encoder, LayerNorm
  biases included); Pfeiffer (one bottleneck adapter per layer after the FFN, bottleneck 24, relu,
  AdapterHub's ``seq_bn``); LoRA (peft, r = 8, alpha 16, on query and value); full fine-tuning.
* Every method trains the same readout and classifier (the head, counted separately); the encoder's own
  weights stay frozen except for full fine-tuning and BitFit's biases.
"""


def _variant_params(results: dict, specs: List[dict]) -> str:
    """Trainable parameters (without the head) of each LayerConnect variant, as a share of Houlsby's."""
    ho = next(
        (
            r["trainable_params"]
            for r in results["runs"].values()
            if r.get("status") == "done" and r["spec"]["method"] == "houlsby" and not r["spec"]["options"]
        ),
        None,
    )
    parts = []
    for v, o in LC_VARIANTS.items():
        r = next((_done(results, s) for s in specs if s["options"] == o and _done(results, s)), None)
        if r is not None:
            share = f" ({100 * r['trainable_params'] / ho:.1f} % of Houlsby's)" if ho else ""
            parts.append(f"{v} {r['trainable_params']:,}{share}")
    return (
        "Trainable parameters without the head: "
        + (", ".join(parts) or "none finished yet")
        + (f"; Houlsby {ho:,}." if ho else ".")
    )


def _average(scores: Dict[str, List[float]]) -> float:
    """A method's average over tasks of its per-task mean over seeds (every task weighs the same)."""
    return statistics.mean(statistics.mean(v) for v in scores.values())


def _main_tables(w, results: dict, ch: dict) -> None:
    w("## Dev scores of the chosen runs (headline per task; mean ± standard error over seeds)\n")
    w("| method | " + " | ".join(TASKS) + " | average | trainable without / with head |")
    w("|---|" + "---|" * (len(TASKS) + 2))
    scores, any_collapsed = {}, False
    for m in ["layerconnect", "houlsby"] + BASELINES:
        scores[m] = _main_scores(results, ch, m)
        if not scores[m]:
            continue
        marked = {t for t in scores[m] if _chosen_collapsed(results, ch, m, t)}
        any_collapsed = any_collapsed or bool(marked)
        row = [_fmt(scores[m].get(t, [])) + (" (collapsed)" if t in marked else "") for t in TASKS]
        avg = _average(scores[m])
        k = len(scores[m])
        avg_s = f"{avg:.1f}" if k == len(TASKS) else f"({avg:.1f}, {k} task{'s' if k > 1 else ''})"
        w(f"| {m} | " + " | ".join(row) + f" | {avg_s} | {_params_cell(results, ch, m)} |")
    maj = {}
    for r in results["runs"].values():
        if r.get("status") == "done":
            maj.setdefault(r["spec"]["task"], r["majority_dev_score"])
    w("| majority class | " + " | ".join(_one_decimal(maj[t]) if t in maj else "—" for t in TASKS) + " | | 0 |\n")
    w(
        "Trainable parameters: the method's own, then with the readout head of a two-class task (STS-B's"
        " regression head is half as large); the head is the same for every method.\n"
    )
    if any_collapsed:
        w(
            "(collapsed): every LR of that grid, the collapse rule's extension included, collapsed; the cell is"
            " the dev score of the best held-out run, not a learned signal, and it still counts in the average.\n"
        )
    w(
        "Chosen learning rates (best held-out score among non-collapsed runs, if any): "
        + "; ".join(
            f"{m} " + ", ".join(f"{t} {ch['lr'][(t, m)]:g}" for t in TASKS if ch["lr"].get((t, m)) is not None)
            for m in ["layerconnect", "houlsby"] + BASELINES
            if any(ch["lr"].get((t, m)) for t in TASKS)
        )
        + ".\n"
    )
    a, b = scores.get("layerconnect", {}), scores.get("houlsby", {})
    if a and b and set(a) & set(b):
        gap, ci = bootstrap_gap(a, b)
        common = sorted(set(a) & set(b))
        w(
            f"**LayerConnect − Houlsby, mean over {len(common)} task(s):** {gap:+.2f} points; 95 % bootstrap interval "
            + (f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "not available (a task has a single seed)")
            + ". "
            + verdict(a, b, ci)
            + "\n"
        )
    _size_table(w, results, ch)
    collapsed = [r["spec"]["id"] for r in results["runs"].values() if r.get("status") == "done" and r["collapsed"]]
    w(
        "Collapsed runs (excluded from selection unless their whole grid collapsed): "
        f"{', '.join(collapsed) or 'none'}.\n"
    )


def _size_table(w, results: dict, ch: dict) -> None:
    rows = quality_vs_size(results, ch)
    if len(rows) < 2:
        return
    lc = next((x for x in rows if x[0] == "layerconnect"), None)
    ho = next((x for x in rows if x[0] == "houlsby"), None)
    w("### Quality against size (methods with a chosen run on every task, smallest with its head first)\n")
    w(
        "| method | trainable without / with head | % of Houlsby's (without head) | dev average |"
        + (" method − LayerConnect |" if lc else "")
        + " on the front |"
    )
    w("|---|---|---|---|" + ("---|" if lc else "") + "---|")
    for m, n, nh, avg, by in rows:
        share = f"{100 * n / ho[1]:.1f}" if ho and ho[1] else "—"
        diff = ("—" if m == "layerconnect" else f"{avg - lc[3]:+.1f}") if lc else None
        w(
            f"| {m} | {n:,} / {nh:,} | {share} | {avg:.1f} |"
            + (f" {diff} |" if diff is not None else "")
            + f" {'no' if by else 'yes'} |"
        )
    on = [x[0] for x in rows if x[4] is None]
    off = [(x[0], x[4]) for x in rows if x[4] is not None]
    w(
        "\nOn the front (no other method is both at most as large, with its head, and at least as good on the dev"
        " average): "
        + ", ".join(on)
        + "."
        + ("".join(f" {a} is dominated by {b}." for a, b in off))
        + " Dev averages are reported, never used to choose; LayerConnect and Houlsby are means over their seeds,"
        " the other baselines one seed (42)."
        + (
            " How far one seed's average strays: its standard deviation over seeds, from the per-task spread of the"
            " multi-seed methods, is " + ", ".join(f"{m} {v:.1f}" for m, v in spread.items()) + " points."
            if (
                spread := {m: v for m in ("layerconnect", "houlsby") if (v := _one_seed_sd(results, ch, m)) is not None}
            )
            else ""
        )
        + "\n"
    )


def _one_seed_sd(results: dict, ch: dict, method: str) -> Optional[float]:
    """Standard deviation over seeds of a one-seed average over the tasks: sqrt(sum of per-task variances) /
    tasks, from the chosen runs; None unless every task has at least two seeds."""
    sc = _main_scores(results, ch, method)
    if len(sc) != len(TASKS) or any(len(v) < 2 for v in sc.values()):
        return None
    return math.sqrt(sum(statistics.variance(v) for v in sc.values())) / len(sc)


def _chosen_collapsed(results: dict, ch: dict, method: str, task: str) -> bool:
    """Whether the runs at the chosen LR of ``method`` on ``task`` collapsed (only when the whole grid did)."""
    rs = _main_runs(results, ch, method, task)
    return bool(rs) and all(r["collapsed"] for r in rs)


def _params(results: dict, ch: dict, method: str) -> Optional[Tuple[int, int]]:
    """The method's trainable parameters without and with the chosen readout's head, from a finished run of
    the chosen configuration (a two-class task where one exists: heads differ by task); None before one."""
    runs = _chosen_runs(results, ch, method)
    if not runs:
        return None
    r = min(runs, key=lambda x: x["spec"]["task"] == "stsb")
    return r["trainable_params"], r.get("trainable_params_with_head", r["trainable_params"] + r["head_params"])


def _params_cell(results: dict, ch: dict, method: str) -> str:
    n = _params(results, ch, method)
    return "—" if n is None else f"{n[0]:,} / {n[1]:,}"


def quality_vs_size(results: dict, ch: dict) -> List[Tuple[str, int, int, float, Optional[str]]]:
    """(method, trainable without head, with head, dev average, dominated by) for every method with a chosen
    run on each task, smallest first. A method is dominated by another that is at most as large and at least
    as good, strictly in one of the two; a method dominated by none is on the front (dev averages: reported,
    never used to choose)."""
    rows = []
    for m in ["layerconnect", "houlsby"] + BASELINES:
        sc = _main_scores(results, ch, m)
        if len(sc) == len(TASKS) and (n := _params(results, ch, m)) is not None:
            rows.append((m, n[0], n[1], _average(sc)))
    rows.sort(key=lambda x: (x[2], -x[3]))

    def dominator(x):
        return next((y[0] for y in rows if y[2] <= x[2] and y[3] >= x[3] and (y[2], y[3]) != (x[2], x[3])), None)

    return [(*x, dominator(x)) for x in rows]


def protocol_size() -> int:
    """Runs in the whole protocol when no grid is extended (screen runs reused by the grid counted once)."""
    screen = len(READOUTS) * 2 * len(SCREEN_TASKS) + (len(LC_VARIANTS) - 1) * len(SCREEN_TASKS)
    grid = sum(len(LR_GRID[m]) for m in ("layerconnect", "houlsby")) * len(TASKS) - 2 * len(SCREEN_TASKS)
    seeds = (len(SEEDS) - 1) * 2 * len(TASKS)
    abl = (len(LC_ABLATIONS) + len(LR_GRID["houlsby"]) + len(SEEDS) - 1) * len(SCREEN_TASKS)
    return screen + grid + seeds + abl + sum(len(LR_GRID[m]) for m in BASELINES) * len(TASKS)


def remaining_hours(results: dict, jobs: int = 2, specs: Optional[List[dict]] = None) -> Optional[float]:
    """Rough wall-clock hours left for the whole protocol at ``jobs`` runs at a time: seconds per trained
    example (rows x epochs), ``_estimate`` over whole finished runs, tasks never run yet at the median of
    the others; runs not planned yet are assumed to cost the mean of the planned ones."""
    done = [r for r in _whole_runs(results) if r.get("train_size")]
    if not done:
        return None
    per: Dict[Tuple[str, str], List[float]] = {}
    for r in done:
        key = (r["spec"]["task"], r["spec"]["method"])
        per.setdefault(key, []).append(r["wall_time_s"] / (r["train_size"] * r["spec"]["epochs"]))
    rate = {t: _estimate(per, t, "") for t, _ in per}  # each task's median over every method
    fallback = statistics.median(rate.values())
    rows = {t: statistics.median(r["train_size"] for r in done if r["spec"]["task"] == t) for t in rate}
    specs = specs if specs is not None else plan(results)[0]
    todo = [s for s in specs if _done(results, s) is None]

    def cost(s: dict) -> float:
        n = rows.get(s["task"]) or (s.get("train_subsample") or statistics.median(rows.values()))
        r = _estimate(per, s["task"], s["method"])
        return (fallback if r is None else r) * n * s["epochs"]

    known = sum(cost(s) for s in todo)
    unplanned = max(0, protocol_size() - len(specs))
    mean_cost = statistics.mean(cost(s) for s in specs)
    return (known + unplanned * mean_cost) / jobs / 3600


def plot_sweep(results: dict, ch: dict, path: str) -> None:
    """Four panels: the screens (held-out score per setting and task), held-out against dev for every
    finished run, the dev comparison of the chosen runs (mean and standard error over seeds), and the dev
    average against trainable parameters once methods have a chosen run on every task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    sys.path.insert(0, REPO)
    from layerconnect.utils.io import save_figure_atomic

    fig, ((a, b), (c, d)) = plt.subplots(2, 2, figsize=(13, 8.6))
    colour = {m: f"C{i}" for i, m in enumerate(["layerconnect", "houlsby"] + BASELINES)}  # same in every panel
    task_colour = {t: g for t, g in zip(SCREEN_TASKS, ("0.3", "0.65"))}  # greys: not a method's colour
    rows = []
    for s in readout_screen(results)[0]:
        rows.append((f"{'LC' if s['method'] == 'layerconnect' else 'HO'} {s['pooling']}", s))
    if ch["readout"]:
        for s in variant_screen(results, ch["readout"])[0]:
            name = next(k for k, o in LC_VARIANTS.items() if o == s["options"])
            if not any(x["id"] == s["id"] for _, x in rows):  # "all" ran in the readout screen
                rows.append((f"LC {ch['readout']} {name}", s))
    labels = list(dict.fromkeys(lab for lab, _ in rows))
    for k, task in enumerate(SCREEN_TASKS):
        ys, hs, hatch = [], [], []
        for i, lab in enumerate(labels):
            r = next((_done(results, s) for la, s in rows if la == lab and s["task"] == task), None)
            if r is not None:
                ys.append(i + 0.4 * k - 0.2)
                hs.append(r["selection_score"])
                hatch.append(r["collapsed"])
        bars = a.barh(ys, hs, height=0.38, color=task_colour[task])
        for bar, h in zip(bars, hatch):
            if h:
                bar.set_hatch("//")
                bar.set_alpha(0.5)
    a.set_yticks(range(len(labels)), labels, fontsize=8)
    a.invert_yaxis()
    a.set_xlabel("held-out score (x100); hatched = collapsed")
    a.set_title("screens (seed 42): LC = LayerConnect (positions all unless named), HO = Houlsby", fontsize=8)
    a.set_xlim(0, 115)  # room right of the bars for the legend
    a.set_xticks(range(0, 101, 20))
    a.legend(handles=[Patch(color=task_colour[t], label=t) for t in SCREEN_TASKS], fontsize=8, loc="upper right")
    done = [r for r in results["runs"].values() if r.get("status") == "done"]
    for m in sorted({r["spec"]["method"] for r in done}):
        pts = [(r["selection_score"], r["score"]) for r in done if r["spec"]["method"] == m]
        b.scatter(*zip(*pts), s=18, label=m, color=colour.get(m))
    if done:
        lo = min(min(r["selection_score"], r["score"]) for r in done)
        hi = max(max(r["selection_score"], r["score"]) for r in done)
        b.plot([lo, hi], [lo, hi], ls="--", color="grey", lw=1)
    b.set_xlabel("held-out score (selection)")
    b.set_ylabel("dev score (reported)")
    b.set_title("every finished run: does the held-out slice rank like dev?", fontsize=9)
    b.legend(fontsize=7)
    methods = [m for m in ["layerconnect", "houlsby"] + BASELINES if ch["variant"] and _main_scores(results, ch, m)]
    if methods:
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            sc = _main_scores(results, ch, m)
            xs = [i + j * width for i, t in enumerate(TASKS) if t in sc]
            c.bar(
                xs,
                [statistics.mean(sc[t]) for t in TASKS if t in sc],
                width,
                yerr=[_se(sc[t]) or 0.0 for t in TASKS if t in sc],
                capsize=2,
                label=m,
                color=colour[m],
            )
        c.set_xticks([i + 0.4 - width / 2 for i in range(len(TASKS))], TASKS)
        c.set_ylabel("dev score (x100), mean ± s.e. over seeds")
        c.set_ylim(0, 118)  # room above the bars for the legend, which must not hide one
        c.set_yticks(range(0, 101, 20))
        c.legend(fontsize=7, ncol=4, loc="upper center")
    else:
        c.text(0.5, 0.5, "main comparison: after the screens\nand the LR grid", ha="center", va="center")
        c.set_axis_off()
    c.set_title("chosen runs on dev", fontsize=9)
    sizes = quality_vs_size(results, ch) if ch["variant"] else []  # not the screen panel's rows
    if sizes:
        front = [(nh, avg) for _, _, nh, avg, by in sizes if by is None]
        d.plot(*zip(*front), color="grey", lw=1, ls="--", zorder=1)
        for i, (m, _, nh, avg, by) in enumerate(sizes):  # labels alternate below and above: neighbours are close
            d.scatter([nh], [avg], s=40, color=colour[m], zorder=2, marker="x" if by else "o")
            d.annotate(m, (nh, avg), textcoords="offset points", xytext=(5, -10 if i % 2 == 0 else 5), fontsize=8)
        d.set_xscale("log")
        d.margins(x=0.12, y=0.08)  # room for the largest method's label
        d.set_xlabel("trainable parameters with the head (log scale)")
        d.set_ylabel("dev average over the five tasks (x100)")
        d.set_title(
            "quality against size: dashed = the front (no method smaller and better); x = dominated", fontsize=9
        )
    else:
        d.text(
            0.5, 0.5, "quality against size: once methods\nhave a chosen run on every task", ha="center", va="center"
        )
        d.set_axis_off()
    fig.suptitle("GLUE protocol v3, all-MiniLM-L6-v2 (benchmarks/glue_sweep.py report)", fontsize=10)
    fig.tight_layout()
    try:
        save_figure_atomic(fig, path, dpi=90)
    finally:
        plt.close(fig)


def _one_decimal(x: float) -> str:
    """``x`` to one decimal, without the "-0.0" a tiny negative number (a constant predictor's
    correlation) would print."""
    t = f"{x:.1f}"
    return "0.0" if t == "-0.0" else t


def _md_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (a bare ``|`` would start a new column)."""
    return text.replace("|", "\\|")


def _ablation_name(s: dict, ch: dict) -> Optional[str]:
    """The LC_ABLATIONS name of a LayerConnect ablation run, None for the chosen variant itself."""
    extra = {k: v for k, v in s["options"].items() if LC_VARIANTS[ch["variant"]].get(k) != v}
    return next((n for n, o in LC_ABLATIONS.items() if set(o) == set(extra)), None)


def _ablation_label(s: dict, ch: dict) -> str:
    if s["method"] == "houlsby":
        seed = f", seed {s['seed']}" if s["seed"] != SEEDS[0] else ""
        return f"Houlsby, bottleneck 2, lr {s['lr']:g}{seed}" if s["options"] else f"Houlsby (chosen), lr {s['lr']:g}"
    return f"LayerConnect {_ablation_name(s, ch) or '(chosen)'}, lr {s['lr']:g}"


def _ablation_summary(results: dict, ch: dict, task: str) -> Optional[str]:
    """One sentence per task: each finished ablation's held-out and dev difference to LayerConnect's chosen
    run (seed 42), the small adapter at the LR its grid chooses (the same rules as stage 3), and the full
    adapter's, so the table can be read as "what closes the gap"."""
    lr = ch["lr"].get((task, "layerconnect"))
    if lr is None:
        return None
    base = _done(
        results, spec("grid", task, "layerconnect", lr, pooling=ch["readout"], options=LC_VARIANTS[ch["variant"]])
    )
    if base is None:
        return None

    def diff(r: dict) -> str:
        c = " (collapsed)" if r["collapsed"] else ""
        return f"{r['selection_score'] - base['selection_score']:+.1f} / {r['score'] - base['score']:+.1f}{c}"

    parts = []
    for s in ablations(results, ch):
        r = _done(results, s)
        if s["task"] == task and s["method"] == "layerconnect" and r is not None:
            parts.append(f"{_ablation_name(s, ch)} {diff(r)}")
    small_lr = grid(results, "ablations", task, "houlsby", ch["readout"], SMALL_HOULSBY)[1]  # its stage-3 choice
    if small_lr is not None:
        best = _done(
            results, spec("ablations", task, "houlsby", small_lr, pooling=ch["readout"], options=SMALL_HOULSBY)
        )
        parts.append(f"Houlsby at bottleneck 2 (lr {small_lr:g}) {diff(best)}")
    hlr = ch["lr"].get((task, "houlsby"))
    full = hlr and _done(results, spec("grid", task, "houlsby", hlr, pooling=ch["readout"]))
    if full:
        parts.append(f"Houlsby (chosen) {diff(full)}")
    if not parts:
        return None
    return f"{task}, held-out / dev points against LayerConnect (chosen), seed 42: " + "; ".join(parts) + "."


def _scores_by_seed(results: dict, ch: dict, task: str, method: str, options: dict, lr, key: str) -> List[float]:
    """``key`` of every finished run of one setting (any stage), in seed order."""
    return [r[key] for r in _runs_at(results, ch, method, task, lr, options)]


def _signed(x: float) -> str:
    t = _one_decimal(x)
    return t if t.startswith("-") or t == "0.0" else "+" + t


def _interval(gap: float, ci) -> str:
    return _signed(gap) + (f" [{_signed(ci[0])}, {_signed(ci[1])}]" if ci else "")


def ablation_reading(results: dict, ch: dict) -> Optional[str]:
    """What the ablations say, once all have finished: how far undoing each sharing choice moves LayerConnect
    (one seed each, against the seed noise of a single run), and the small and the full adapter against
    LayerConnect over all seeds on the screen tasks (held-out and dev, 95 % bootstrap intervals), then one
    conclusion drawn by fixed rules, so the sentence changes when the numbers do."""
    specs = ablations(results, ch)
    if not specs or any(_done(results, s) is None for s in specs):
        return None
    lc_o = LC_VARIANTS[ch["variant"]]
    small_lr = {t: grid(results, "ablations", t, "houlsby", ch["readout"], SMALL_HOULSBY)[1] for t in SCREEN_TASKS}

    def by(method: str, options: dict, lr_of, key: str) -> Dict[str, List[float]]:
        return {t: _scores_by_seed(results, ch, t, method, options, lr_of(t), key) for t in SCREEN_TASKS}

    def lc(key):
        return by("layerconnect", lc_o, lambda t: ch["lr"][(t, "layerconnect")], key)

    ours = {k: lc(k) for k in ("selection_score", "score")}
    lc_sel = ours["selection_score"]
    if any(len(lc_sel[t]) < 2 for t in SCREEN_TASKS):
        return None
    n = len(SCREEN_TASKS)
    # the standard deviation that a mean over the screen tasks of (one run - another run) has from seeds alone
    noise = {
        k: math.sqrt(sum(2 * statistics.variance(ours[k][t]) for t in SCREEN_TASKS)) / n
        for k in ("selection_score", "score")
    }
    share: Dict[str, Dict[str, List[float]]] = {}
    for s in specs:
        if s["method"] == "layerconnect":
            r = _done(results, s)
            for k in ("selection_score", "score"):
                share.setdefault(k, {}).setdefault(_ablation_name(s, ch), []).append(r[k] - ours[k][s["task"]][0])
    share = {k: {name: statistics.mean(v) for name, v in d.items()} for k, d in share.items()}
    best_name = max(share["selection_score"], key=share["selection_score"].get)
    small = {k: by("houlsby", SMALL_HOULSBY, small_lr.get, k) for k in ("selection_score", "score")}
    full = {k: by("houlsby", {}, lambda t: ch["lr"][(t, "houlsby")], k) for k in ("selection_score", "score")}
    gaps = {
        (who, k): bootstrap_gap(other[k], ours[k])
        for who, other in (("small", small), ("full", full))
        for k in ("selection_score", "score")
    }
    seeds = min(len(x) for d in (small, full, ours) for x in d["score"].values())
    tasks = " and ".join(SCREEN_TASKS)

    def pair(who):
        return f"held-out {_interval(*gaps[(who, 'selection_score')])}, dev {_interval(*gaps[(who, 'score')])}"

    text = (
        f"**Reading.** Undoing one of the hypernetwork's sharing choices moves LayerConnect, mean over {tasks} "
        f"at seed {SEEDS[0]}, by "
        + ", ".join(f"{k} {_signed(v)} / {_signed(share['score'][k])}" for k, v in share["selection_score"].items())
        + f" points (held-out / dev); two runs that differ only in their seed differ by ±{noise['selection_score']:.1f}"
        f" / ±{noise['score']:.1f} on that mean (one standard deviation, from LayerConnect's "
        f"{min(len(x) for x in lc_sel.values())} seeds). Minus LayerConnect, mean "
        f"over {tasks} of {seeds} seeds each, with 95 % bootstrap intervals: Houlsby at bottleneck 2 "
        f"(LayerConnect's budget) {pair('small')}; the full Houlsby {pair('full')}."
    )
    lo = {k: (gaps[("small", k)][1] or (None, None))[0] for k in ("selection_score", "score")}
    clear = [k for k, v in lo.items() if v is not None and v > 0]
    g_s, g_f = gaps[("small", "score")][0], gaps[("full", "score")][0]
    if share["selection_score"][best_name] > 2 * noise["selection_score"]:
        end = (
            f" So part of the gap is the hypernetwork's sharing: {best_name} gains "
            f"{_signed(share['selection_score'][best_name])} held-out, more than twice the seed noise."
        )
    elif len(clear) == 2:
        part = f"; its dev lead is {100 * g_s / g_f:.0f} % of the full adapter's" if g_f > 0 else ""
        end = (
            " So the gap is not the price of the hypernetwork's sharing — un-sharing channels, depth or rank buys "
            "nothing beyond seed noise — but of the connector's form: at the same budget an adapter (a nonlinear "
            "bottleneck inside each layer) beats the linear map between layers on held-out and dev data"
            f"{part}."
        )
    elif clear:
        end = (
            " The sharing choices buy nothing beyond seed noise. At LayerConnect's budget the adapter's lead is"
            f" clear only on {'held-out' if clear == ['selection_score'] else 'dev'} data (held-out scores are each"
            " run's best epoch on the slice that chose it, so they flatter every run; dev is scored once)"
        )
        if clear == ["selection_score"] and 0 < g_f and g_s < g_f / 2:
            end += (
                f". On dev its lead is {_signed(g_s)} of the full adapter's {_signed(g_f)}: most of Houlsby's dev"
                " lead comes with its larger budget rather than its form, and LayerConnect's larger variants above"
                " do not turn more parameters into quality"
            )
        end += "; not settled at these seeds."
    else:
        end = (
            " Neither the sharing nor the connector's form is shown to cause the gap at these seeds: no difference"
            " exceeds twice the seed noise and the small adapter's intervals include zero."
        )
    return text + end


def _ablation_table(w, results: dict, ch: dict) -> None:
    specs = ablations(results, ch)
    if not specs:
        return
    ref = [
        spec("grid", t, m, ch["lr"][(t, m)], pooling=ch["readout"], options=o)
        for t in SCREEN_TASKS
        for m, o in (("layerconnect", LC_VARIANTS[ch["variant"]]), ("houlsby", None))
        if ch["lr"].get((t, m)) is not None
    ]
    w("## Ablations (seed 42): what the hypernetwork's sharing costs, and adapters at LayerConnect's budget\n")
    w("| setting | task | held-out (selection) | dev (reported only) | trainable without head |")
    w("|---|---|---|---|---|")
    for s in sorted(ref + specs, key=lambda x: (x["task"], x["method"] != "layerconnect")):
        r = _done(results, s)
        cells = (
            f"{r['selection_score']:.1f}{' (collapsed)' if r['collapsed'] else ''} | {r['score']:.1f} | "
            f"{r['trainable_params']:,}"
            if r
            else "(not run yet) | | "
        )
        w(f"| {_md_cell(_ablation_label(s, ch))} | {s['task']} | {cells} |")
    w("")
    for t in SCREEN_TASKS:
        line = _ablation_summary(results, ch, t)
        if line:
            w(line + "\n")
    reading = ablation_reading(results, ch)
    if reading:
        w(reading + "\n")


def _write(args, lines: List[str]) -> None:
    sys.path.insert(0, REPO)
    from layerconnect.utils.io import atomic_write_text

    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print(f"wrote {args.out}")


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="see the module docstring (python -m pydoc benchmarks/glue_sweep.py)",
    )
    p.add_argument("command", choices=("run", "plan", "report", "snapshot"))
    p.add_argument(
        "--data-dir",
        default=os.environ.get("LAYERCONNECT_GLUE_DIR", os.path.join("..", "shared", "glue")),
        help="GLUE TSV folder (default: $LAYERCONNECT_GLUE_DIR, else ../shared/glue)",
    )
    p.add_argument("--results", default=RESULTS_JSON, help=f"results JSON (default {RESULTS_JSON})")
    p.add_argument("--out", default=RESULTS_MD, help=f"report file (default {RESULTS_MD})")
    p.add_argument("--figure", default=RESULTS_PNG, help=f"report figure (default {RESULTS_PNG})")
    p.add_argument("--run-root", default=RUN_ROOT, help=f"where runs write (default {RUN_ROOT})")
    p.add_argument("--source", default=None, help="a frozen copy of the code to run (made by `snapshot`)")
    p.add_argument("--commit", default=None, help="snapshot: export and build this commit instead of the working tree")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per run")
    p.add_argument("--max-attempts", type=int, default=2, help="give up on a run after this many failures")
    p.add_argument(
        "--stop-at",
        default=None,
        help="HH:MM UTC: interrupt running runs (they resume if their run folder survives); see --no-fit",
    )
    p.add_argument(
        "--no-fit",
        action="store_true",
        help="with --stop-at: start runs even when they are not expected to finish before it",
    )
    p.add_argument("--limit", type=int, default=40, help="plan: how many pending runs to list")
    args = p.parse_args(argv)
    os.chdir(REPO)
    return {"run": cmd_run, "plan": cmd_plan, "report": cmd_report, "snapshot": cmd_snapshot}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
