"""End-to-end inference cost: a whole encoder forward pass with each fine-tuning method attached.

Median latency and throughput of ``model(**inputs)`` (sequence classification, ``eval()``,
``torch.inference_mode``) for:

    base           the frozen pre-trained model alone (the floor)
    houlsby        + two bottleneck adapters per layer   (layerconnect.baselines.apply_method)
    pfeiffer       + one bottleneck adapter per layer    (layerconnect.baselines.apply_method)
    lora           + LoRA r=8 on query/value, unmerged   (peft, via apply_method)
    lora-merged    the same LoRA after ``merge_and_unload()`` (should cost what base costs)
    lc:<backend>   + LayerConnect, default config, on each available connector backend
    lc-oop:<backend>  the same with inplace_inference=False (a new output tensor per connector);
                   opt-in (--methods ...,layerconnect-oop), to show what writing in place saves

Adapters, LoRA matrices and connectors get random non-zero parameters (N(0, 0.02)), and each
variant's logits are checked to differ from the base's, so no method is timed as a no-op.
All variants are timed side by side in one run, interleaved in a new random order every repeat
(:mod:`layerconnect.apps.bench.harness`); **overhead** is the median over repeats of the paired ratio
variant/base within the same repeat, minus one, which cancels slow drifts of a shared machine.

``--memory`` also measures one training step (forward, backward, AdamW step; batch 32, length 128,
BERT-base geometry by default) per method: the peak of memory allocated during the step above what
was live before it (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the profiler's allocation
events, because ``tracemalloc`` does not see torch's allocator), and the bytes of activations saved
for backward (``saved_tensors_hooks``, distinct storages, parameters excluded). The base row of the
memory table trains the task head only (its floor). To compare what each method *adds*, the saved
bytes are measured once more with the gradient forced down to the input embeddings for every
method (same back-propagation path for all); for LayerConnect that extra over the base, per
connector position, is reported in units of one ``x``-sized tensor (N x d): 1.00 means each
connector keeps exactly its input ``x`` and nothing else.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import statistics
import sys
import warnings
from contextlib import contextmanager
from typing import Any, Dict, List, Optional, Tuple

import torch

from ...utils.paths import default_model_path
from . import harness as H
from .options import E2EBenchOptions

SCHEMA = "layerconnect.apps.bench.e2e/1"
MODELS = ("minilm", "bert-base", "bert-large")
METHODS = ("base", "houlsby", "pfeiffer", "lora", "lora-merged", "layerconnect")
OPTIONAL_METHODS = ("layerconnect-oop",)  # only when named in --methods
HEADLINE = {"model": "bert-base", "batch": 32, "seq": 128}
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}

# The CPU default grid keeps the run to a few minutes on 2 cores: a shape is kept when its cost
# (batch x seq x layers x d^2) is at most that of BERT-base at batch 8 x length 64.
CPU_DEFAULT_BUDGET = 8 * 64 * 12 * 768**2

DESCRIPTION = __doc__.split("\n\n")[0]
EPILOG = f"""\
Default grid. CUDA: models {{minilm, bert-base, bert-large}} x batch {{1, 8, 32, 128}} x length
{{64, 128, 512}}, bfloat16. CPU (float32): models {{minilm, bert-base}}, batch {{1, 8, 32}}, length
{{64, 128}}, keeping only shapes no costlier than BERT-base at batch 8 x length 64 -- so the CPU
default skips bert-large, batch 128, length 512, BERT-base at batch 32 and at batch 8 x length 128
(the headline shape is run explicitly, see below); 3 repeats. Lists given with
--models/--batch/--seq are run in full (5 repeats on CPU unless --repeats).
Headline (acceptance) run on CPU:
  layerconnect bench --e2e --models bert-base --batch 32 --seq 128 --repeats 9
Output: <out>/e2e.json (schema {SCHEMA}) and <out>/e2e.png, written atomically.
"""


def build_parser() -> argparse.ArgumentParser:
    return H.build_bench_parser("bench_e2e", DESCRIPTION, EPILOG, E2EBenchOptions)


# ---------------------------------------------------------------------------------------------
# models and variants
# ---------------------------------------------------------------------------------------------


def model_config(name: str):
    from transformers import BertConfig

    if name == "minilm":
        cfg = BertConfig.from_pretrained(default_model_path())
    elif name == "bert-base":
        cfg = BertConfig()
    elif name == "bert-large":
        cfg = BertConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    else:
        raise SystemExit(f"--models: {name!r} is not one of {', '.join(MODELS)}")
    cfg.num_labels = 2
    return cfg


@contextmanager
def _quiet_transformers():
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)


def build_base(name: str, device: torch.device, dtype: torch.dtype):
    """MiniLM with its pre-trained weights (new head); BERT geometries randomly initialised."""
    from transformers import BertForSequenceClassification

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with _quiet_transformers():
        if name == "minilm":
            m = BertForSequenceClassification.from_pretrained(default_model_path(), num_labels=2)
        else:
            m = BertForSequenceClassification(model_config(name))
    for p in m.parameters():
        p.requires_grad_(False)
    return m.to(device=device, dtype=dtype).eval()


def _randomise_trainable(model, std: float = 0.02) -> int:
    """Give every trainable non-head parameter (adapters, LoRA, connectors) random values."""
    from layerconnect.baselines import head_parameter_names

    head = set(head_parameter_names(model))
    n = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and name not in head:
                p.normal_(0.0, std)
                n += p.numel()
    return n


def _share_frozen(base):
    """A deep copy of ``base`` whose parameters and buffers are the base's own tensors (no copy):
    every variant but ``lora-merged`` leaves the base weights untouched, so they can share them."""
    memo = {id(t): t for t in list(base.parameters()) + list(base.buffers())}
    return copy.deepcopy(base, memo)


def make_variant(base, method: str, backend: Optional[str] = None):
    """``(model, trainable_param_count)`` for one method applied to (a copy of) ``base``."""
    from layerconnect.baselines import apply_method, trainable_parameters

    if method == "base":
        return base, 0
    if method == "lora-merged":
        m = apply_method(copy.deepcopy(base), "lora")
        _randomise_trainable(m)
        n = trainable_parameters(m, include_head=False)
        return m.merge_and_unload().eval(), n
    m = _share_frozen(base)
    if method == "layerconnect":
        m = apply_method(m, "layerconnect", backend=backend)
    elif method == "layerconnect-oop":
        m = apply_method(m, "layerconnect", backend=backend, inplace_inference=False)
    else:
        m = apply_method(m, method)
    _randomise_trainable(m)
    return m.eval(), trainable_parameters(m, include_head=False)


def _inputs(batch: int, seq: int, vocab: int, device, gen: torch.Generator) -> Dict[str, torch.Tensor]:
    ids = torch.randint(1000, vocab, (batch, seq), generator=gen)
    return {
        "input_ids": ids.to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.long, device=device),
    }


def _lc_backends(
    device: torch.device, dtype: torch.dtype, wanted: Optional[List[str]]
) -> Tuple[List[str], List[Dict[str, str]]]:
    from lc_kernels import backends as B

    out, skipped = [], []
    all_b = B.all_backends()
    for name in wanted or sorted(all_b):
        if name not in all_b:
            raise SystemExit(f"--backends: {name!r} is not a known backend; known: {sorted(all_b)}")
        b = all_b[name]
        reason = b.unavailable_reason()
        if reason is None and device.type not in b.devices:
            reason = f"runs on {list(b.devices)}, not {device.type}"
        if reason is None and dtype not in b.dtypes.get(device.type, ()):
            reason = f"no {dtype} on {device.type}"
        if reason is None and name == "triton" and device.type == "cpu":
            reason = "CPU runs triton under the interpreter: a test path, not a speed path"
        if reason is None:
            out.append(name)
        else:
            skipped.append({"variant": f"lc:{name}", "reason": reason})
    return out, skipped


# ---------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------


MODES = ("eager", "compile", "cuda-graphs")


def _modes(args, device) -> List[str]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in MODES:
            raise SystemExit(f"--modes: {m!r} is not one of {', '.join(MODES)}")
        if m == "cuda-graphs" and device.type != "cuda":
            raise SystemExit("--modes cuda-graphs needs a CUDA device (use --device cuda, or drop it on CPU)")
    return modes or ["eager"]


def _compiled(model, mode: str):
    """``model`` in execution ``mode``: eager as is; compile = torch.compile(fullgraph=True); cuda-graphs =
    torch.compile(mode='reduce-overhead') (CUDA graphs replay the whole forward)."""
    if mode == "eager":
        return model
    # The variants share the base's weight tensors and differ only by forward hooks (connectors, adapters);
    # dynamo does not guard on hooks by default and would hand every variant the base's graph.
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    if mode == "compile":
        return torch.compile(model, fullgraph=True)
    return torch.compile(model, mode="reduce-overhead", fullgraph=True)


def _pairs(text: Optional[str]) -> Optional[List[Tuple[int, int]]]:
    if text is None:
        return None
    out = []
    for tok in text.split(","):
        b, sep, s = tok.strip().lower().partition("x")
        if not sep or not b.isdigit() or not s.isdigit() or int(b) < 1 or int(s) < 1:
            raise SystemExit(f"--shapes: {tok!r} is not BATCHxLENGTH (e.g. 8x64)")
        out.append((int(b), int(s)))
    return out


def _grid(args, device) -> Tuple[List[Tuple[str, int, int]], List[Dict[str, Any]]]:
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    batches = H.parse_int_list(args.batch, "--batch")
    seqs = H.parse_int_list(args.seq, "--seq")
    pairs = _pairs(args.shapes)
    if pairs is not None and (batches or seqs):
        raise SystemExit("--shapes replaces --batch/--seq: give one or the other")
    explicit = models is not None or batches is not None or seqs is not None or pairs is not None
    cpu = device.type == "cpu"
    if args.quick:
        models, batches, seqs = models or ["minilm"], batches or [1, 8], seqs or [64]
    models = models or (["minilm", "bert-base"] if cpu else list(MODELS))
    batches = batches or ([1, 8, 32] if cpu else [1, 8, 32, 128])
    seqs = seqs or ([64, 128] if cpu else [64, 128, 512])
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: {m!r} is not one of {', '.join(MODELS)}")
    shapes, skipped = [], []
    combos = pairs or [(b, s) for b in batches for s in seqs]
    for m in models:
        cfg = model_config(m)
        for b, s in combos:
            if True:
                if s > cfg.max_position_embeddings:
                    skipped.append(
                        {
                            "model": m,
                            "batch": b,
                            "seq": s,
                            "reason": f"longer than the model's {cfg.max_position_embeddings} positions",
                        }
                    )
                    continue
                cost = b * s * cfg.num_hidden_layers * cfg.hidden_size**2
                if cpu and not explicit and not args.quick and cost > CPU_DEFAULT_BUDGET:
                    skipped.append({"model": m, "batch": b, "seq": s, "reason": "CPU default grid budget"})
                    continue
                shapes.append((m, b, s))
    return shapes, skipped


def _repeats(args, device) -> int:
    if args.repeats:
        return args.repeats
    if device.type == "cuda":
        return 20
    explicit = args.models or args.batch or args.seq or args.shapes
    return 3 if (args.quick or not explicit) else 5


def _variant_key(meth: str, be: Optional[str]) -> str:
    return {"layerconnect": f"lc:{be}", "layerconnect-oop": f"lc-oop:{be}"}.get(meth, meth)


def _methods(args) -> List[str]:
    if not args.methods:
        return list(METHODS)
    ms = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in ms:
        if m not in METHODS + OPTIONAL_METHODS:
            raise SystemExit(f"--methods: {m!r} is not one of {', '.join(METHODS + OPTIONAL_METHODS)}")
    return ["base"] + [m for m in ms if m != "base"]


def _paired_overhead(samples: List[float], base: List[float]) -> Dict[str, float]:
    ratios = sorted(v / b for v, b in zip(samples, base))
    med = statistics.median(ratios)
    return {
        "overhead_pct": (med - 1.0) * 100.0,
        "overhead_q1_pct": (H._quantile(ratios, 0.25) - 1.0) * 100.0,
        "overhead_q3_pct": (H._quantile(ratios, 0.75) - 1.0) * 100.0,
    }


def _time_shape(models, mname, batch, seq, cfg, mode, device, dtype, gen, rng, bar, trainable, warmup, repeats):
    """Every variant at one shape in one execution mode, interleaved; overhead paired with the base."""
    inputs = [_inputs(batch, seq, cfg.vocab_size, device, gen) for _ in range(2)]
    checks = []
    with torch.inference_mode():
        ref_logits = models["base"](**inputs[0]).logits.float()
        for k, mdl in models.items():
            if k == "base":
                continue
            diff = float((mdl(**inputs[0]).logits.float() - ref_logits).abs().max())
            checks.append(
                {
                    "model": mname,
                    "batch": batch,
                    "seq": seq,
                    "mode": mode,
                    "variant": k,
                    "max_abs_logit_diff_vs_base": diff,
                    "active": diff > 0,
                }
            )
            if diff == 0:
                warnings.warn(
                    f"{k} on {mname}: logits identical to the base model's; the method is inactive", stacklevel=2
                )

    def runner(mdl):
        def run(i):
            with torch.inference_mode():
                return mdl(**inputs[i]).logits

        return run

    variants = [H.Variant(k, runner(v)) for k, v in models.items()]
    stats = H.measure_interleaved(
        variants,
        device=device,
        n_buffers=len(inputs),
        warmup=warmup,
        repeats=repeats,
        min_sample_s=0.0,
        rng=rng,
        on_sample=lambda _n: bar.update(1),
    )
    base_s = stats["base"].samples
    rows = []
    for k, st in stats.items():
        row = {
            "model": mname,
            "batch": batch,
            "seq": seq,
            "tokens": batch * seq,
            "variant": k,
            "mode": mode,
            "trainable_params": trainable.get(k, 0),
            "compiled": mode != "eager",
            "dtype": str(dtype).replace("torch.", ""),
            "seq_per_s": batch / st.median,
            "tokens_per_s": batch * seq / st.median,
        }
        row.update(st.as_dict())
        row.update(_paired_overhead(st.samples, base_s))
        rows.append(row)
    return rows, checks


def measure_latency(args, device, dtype, bar, rng, gen, backends, methods):
    shapes, skipped = _grid(args, device)
    repeats = _repeats(args, device)
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cpu" else 3)
    results: List[Dict[str, Any]] = []
    checks: List[Dict[str, Any]] = []
    by_model: Dict[str, List[Tuple[int, int]]] = {}
    for m, b, s in shapes:
        by_model.setdefault(m, []).append((b, s))
    for mname, bs in by_model.items():
        bar.set_description_str(f"building {mname}")
        base = build_base(mname, device, dtype)
        cfg = base.config
        models: Dict[str, Any] = {"base": base}
        trainable: Dict[str, int] = {"base": 0}
        for meth in methods:
            if meth == "base":
                continue
            for be in backends if meth.startswith("layerconnect") else [None]:
                key = _variant_key(meth, be)
                try:
                    models[key], trainable[key] = make_variant(base, meth, be)
                except ImportError as exc:
                    skipped.append({"model": mname, "variant": key, "reason": f"not importable: {exc}"})
        for mode in _modes(args, device):
            compiled = {k: _compiled(v, mode) for k, v in models.items()}
            for batch, seq in bs:
                bar.set_description_str(f"{mname} b={batch} s={seq} {mode}")
                rows, chk = _time_shape(
                    compiled, mname, batch, seq, cfg, mode, device, dtype, gen, rng, bar, trainable, warmup, repeats
                )
                results += rows
                checks += chk
        del models, base
    return shapes, skipped, checks, results, repeats, warmup


# ---------------------------------------------------------------------------------------------
# training-step memory
# ---------------------------------------------------------------------------------------------


def _cpu_peak_during(fn) -> Tuple[int, str]:
    """Peak bytes allocated (net, above the start) while ``fn`` runs, from profiler allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    try:  # the allocation timeline (alloc > 0, free < 0); a private but long-standing profiler API
        from torch._C._profiler import _EventType

        def walk(es):
            for e in es:
                yield e
                yield from walk(e.children)

        allocs = [
            e for e in walk(prof.profiler.kineto_results.experimental_event_tree()) if e.tag == _EventType.Allocation
        ]
        allocs.sort(key=lambda e: e.start_time_ns)
        cur = peak = 0
        for e in allocs:
            cur += e.extra_fields.alloc_size
            peak = max(peak, cur)
        return peak, "torch.profiler allocation events"
    except (ImportError, AttributeError) as exc:  # pragma: no cover - depends on torch internals
        raise RuntimeError(f"cannot read the profiler's allocation events in torch {torch.__version__}: {exc}") from exc


def _saving_hook(model):
    """A ``saved_tensors_hooks`` pair that records the distinct non-parameter storages saved."""
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: Dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in param_ptrs:
            saved[st.data_ptr()] = st.nbytes()
        return t

    return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), saved


def memory_of_step(model, inputs, device) -> Dict[str, Any]:
    """Peak memory and saved activations of one real training step (forward, backward, AdamW)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4) if params else None
    hooks, saved = _saving_hook(model)

    def step():
        with hooks:
            loss = model(**inputs).loss
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)

    model.train()
    torch.manual_seed(0)  # dropout masks: the same draws for every method
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak, how = torch.cuda.max_memory_allocated() - before, "torch.cuda.max_memory_allocated"
    else:
        peak, how = _cpu_peak_during(step)
    return {"peak_step_bytes": int(peak), "saved_activation_bytes": int(sum(saved.values())), "method_of_peak": how}


def saved_with_grad_to_embeddings(model, inputs) -> int:
    """Saved activation bytes of a forward pass in which every method back-propagates to the input
    embeddings. In a real step a method saves nothing below its lowest trainable parameter (the
    head-only floor saves almost nothing), which muddles "what does this method add"; forcing the
    gradient down to the embeddings gives every method the same path, so the difference from the
    base is exactly what the method's own modules keep."""
    emb = model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    hooks, saved = _saving_hook(model)
    model.train()
    torch.manual_seed(0)
    try:
        with hooks:
            model(**inputs)
    finally:
        handle.remove()
    return int(sum(saved.values()))


def _memory_worker(
    mname: str, b: int, s: int, meth: str, be: Optional[str], device: str, dtype: str, seed: int, threads: Optional[int]
) -> Dict[str, Any]:
    """One method's training-step memory, in a fresh process (see :func:`measure_memory`)."""
    H.apply_threads(threads)
    dev, dt = torch.device(device), _DTYPES[dtype]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    base = build_base(mname, dev, dt)
    inputs = _inputs(b, s, base.config.vocab_size, dev, gen)
    inputs["labels"] = torch.randint(0, 2, (b,), generator=gen).to(dev)
    if meth == "base":
        from layerconnect.baselines import apply_method

        model = apply_method(base, "head")  # the floor: only the task head trains
    else:
        model, _ = make_variant(base, meth, be)
    row = {"variant": _variant_key(meth, be), "model": mname, "batch": b, "seq": s}
    row.update(memory_of_step(model, inputs, dev))
    row["saved_bytes_grad_to_embeddings"] = saved_with_grad_to_embeddings(model, inputs)
    return row


def measure_memory(args, device, dtype, backends, methods, seed, bar) -> Dict[str, Any]:
    """Training-step memory of each method, each in its own fresh process: allocator caches and
    fragmentation left by one method cannot inflate (or hide) the next one's figures, and a process
    holding a dozen BERT-base training graphs' worth of freed-but-cached memory cannot run the
    machine out of RAM."""
    import concurrent.futures as cf
    import multiprocessing as mp

    try:
        mname, b, s = args.memory_shape.split(",")
        b, s = int(b), int(s)
    except ValueError:
        raise SystemExit(
            f"--memory-shape: expected model,batch,seq like bert-base,32,128, got {args.memory_shape!r}"
        ) from None
    if mname not in MODELS:
        raise SystemExit(f"--memory-shape: {mname!r} is not one of {', '.join(MODELS)}")
    if args.quick and args.memory_shape == "bert-base,32,128":
        mname, b, s = "minilm", 4, 64
    keys = []
    for meth in methods:
        if meth in ("lora-merged", "layerconnect-oop"):
            continue  # inference-time forms: they train as "lora" / "layerconnect"
        for be in backends if meth == "layerconnect" else [None]:
            keys.append((meth, be))
    rows = []
    dt_name = str(dtype).replace("torch.", "")
    ctx = mp.get_context("spawn")
    for meth, be in keys:
        bar.set_description_str(f"memory {meth if be is None else 'lc:' + be}")
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
            rows.append(
                pool.submit(_memory_worker, mname, b, s, meth, be, device.type, dt_name, seed, args.threads).result()
            )
        bar.update(1)
    cfg = model_config(mname)
    x_bytes = b * s * cfg.hidden_size * torch.empty((), dtype=dtype).element_size()
    base_row = next((r for r in rows if r["variant"] == "base"), None)
    if base_row is not None:
        for r in rows:
            r["extra_saved_bytes_vs_base"] = r["saved_activation_bytes"] - base_row["saved_activation_bytes"]
            r["extra_peak_bytes_vs_base"] = r["peak_step_bytes"] - base_row["peak_step_bytes"]
            r["extra_saved_grad_to_emb_bytes_vs_base"] = (
                r["saved_bytes_grad_to_embeddings"] - base_row["saved_bytes_grad_to_embeddings"]
            )
            if r["variant"].startswith("lc:"):
                from ...method.config import LayerConnectConfig, resolve_positions

                n_pos = len(resolve_positions(LayerConnectConfig().positions, cfg.num_hidden_layers))
                r["connector_positions"] = n_pos
                r["extra_saved_x_tensors_per_connector"] = r["extra_saved_grad_to_emb_bytes_vs_base"] / (
                    n_pos * x_bytes
                )
    return {
        "model": mname,
        "batch": b,
        "seq": s,
        "x_bytes": x_bytes,
        "rows": rows,
        "isolation": "one fresh process per method",
    }


# ---------------------------------------------------------------------------------------------
# run, report
# ---------------------------------------------------------------------------------------------


def run(args) -> Dict[str, Any]:
    device = H.resolve_device(args.device)
    H.apply_threads(args.threads)
    dtype = _DTYPES[args.dtype or ("float32" if device.type == "cpu" else "bfloat16")]
    seed = args.seed if args.seed is not None else H.fresh_seed()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    methods = _methods(args)
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else None
    want_lc = any(m.startswith("layerconnect") for m in methods)
    backends, skipped_b = _lc_backends(device, dtype, wanted) if want_lc else ([], [])
    env = H.environment(device)
    n_lc = sum(m.startswith("layerconnect") for m in methods)
    n_var = len(methods) - n_lc + n_lc * len(backends)
    do_latency = not args.memory_only
    do_memory = args.memory or args.memory_only
    total = 0
    if do_latency:
        shapes, _ = _grid(args, device)
        reps = _repeats(args, device)
        total += len(shapes) * n_var * reps
    if do_memory:
        total += n_var
    bar = H.progress_bar(total, not args.no_progress, "e2e")
    out: Dict[str, Any] = {"schema": SCHEMA, "env": env, "skipped": list(skipped_b)}
    try:
        if do_latency:
            shapes, skipped, checks, results, repeats, warmup = measure_latency(
                args, device, dtype, bar, rng, gen, backends, methods
            )
            out["skipped"] += skipped
            out["checks"] = checks
            out["results"] = results
        else:
            repeats = warmup = None
            out["checks"], out["results"] = [], []
        if do_memory:
            out["memory"] = measure_memory(args, device, dtype, backends, methods, seed, bar)
    finally:
        bar.close()
    env["loadavg_end"] = list(os.getloadavg())
    out["config"] = {
        "device": device.type,
        "dtype": str(dtype).replace("torch.", ""),
        "methods": methods,
        "backends": backends,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "modes": args.modes,
        "argv": sys.argv[1:],
    }
    out["headline"] = _headline(out.get("results", []), device)
    return out


def _headline(results, device) -> Optional[Dict[str, Any]]:
    """The acceptance figure: LayerConnect's overhead < Houlsby's / 3 and <= Pfeiffer's (CPU)."""
    sel = {
        r["variant"]: r
        for r in results
        if r["model"] == HEADLINE["model"]
        and r["batch"] == HEADLINE["batch"]
        and r["seq"] == HEADLINE["seq"]
        and r["mode"] == "eager"
    }
    if "houlsby" not in sel or "pfeiffer" not in sel:
        return None
    lc = {k: v["overhead_pct"] for k, v in sel.items() if k.startswith("lc:")}
    if not lc:
        return None
    hou, pfe = sel["houlsby"]["overhead_pct"], sel["pfeiffer"]["overhead_pct"]
    best = "lc:cpu" if "lc:cpu" in lc else min(lc, key=lc.get)
    return {
        **HEADLINE,
        "device": device.type,
        "houlsby_overhead_pct": hou,
        "pfeiffer_overhead_pct": pfe,
        "lc_overhead_pct": lc,
        "judged_variant": best,
        "pass": bool(lc[best] < hou / 3.0 and lc[best] <= pfe),
    }


def _memory_lines(mem: Dict[str, Any]) -> List[str]:
    """The training-step memory table."""
    out: List[str] = []
    mb = lambda v: f"{v / 2**20:.1f}"
    rows = []
    for r in mem["rows"]:
        per = r.get("extra_saved_x_tensors_per_connector")
        rows.append(
            [
                r["variant"],
                mb(r["peak_step_bytes"]),
                mb(r.get("extra_peak_bytes_vs_base", 0)),
                mb(r["saved_activation_bytes"]),
                mb(r.get("extra_saved_grad_to_emb_bytes_vs_base", 0)),
                "" if per is None else f"{per:.3f}",
            ]
        )
    out.append(
        f"training-step memory: {mem['model']} batch {mem['batch']} length {mem['seq']} "
        f"(one x = {mb(mem['x_bytes'])} MiB)"
    )
    out.append(
        H.format_table(
            [
                "variant",
                "step peak MiB",
                "+ vs base",
                "saved act. MiB",
                "+ vs base (grad to emb.)",
                "extra x per connector",
            ],
            rows,
        )
    )
    return out


def format_results(res: Dict[str, Any]) -> str:
    env = res["env"]
    cfg = res["config"]
    lines = [
        f"e2e benchmark  {cfg['device']} {cfg['dtype']}  "
        f"{env['cpu_model'] if cfg['device'] == 'cpu' else env.get('gpu')}  torch {env['torch']}  "
        f"threads {env['torch_threads']}  {env['date_utc']} UTC  load {env['loadavg_1_5_15']}"
        + f"  modes {cfg.get('modes', 'eager')}"
    ]
    if res.get("results"):
        rows = []
        for r in res["results"]:
            over = (
                ""
                if r["variant"] == "base"
                else (f"{r['overhead_pct']:+.2f}% [{r['overhead_q1_pct']:+.1f},{r['overhead_q3_pct']:+.1f}]")
            )
            rows.append(
                [
                    f"{r['model']} b={r['batch']} s={r['seq']}",
                    r["mode"],
                    r["variant"],
                    f"{r['median_ms']:.2f}",
                    f"{r['q1_ms']:.2f}-{r['q3_ms']:.2f}",
                    f"{r['seq_per_s']:.1f}",
                    over,
                    f"{r['trainable_params']:,}",
                ]
            )
        lines.append(
            H.format_table(
                ["shape", "mode", "variant", "median ms", "IQR ms", "seq/s", "overhead vs base [IQR]", "trainable"],
                rows,
            )
        )
    for c in res.get("checks", []):
        if not c["active"]:
            lines.append(f"INACTIVE (logits equal the base's): {c}")
    for s in res["skipped"]:
        lines.append(f"skipped: {s}")
    mem = res.get("memory")
    if mem:
        lines += _memory_lines(mem)
    h = res.get("headline")
    if h:
        lc = ", ".join(f"{k} {v:+.2f}%" for k, v in h["lc_overhead_pct"].items())
        lines.append(
            f"headline {h['model']} b={h['batch']} s={h['seq']}: houlsby {h['houlsby_overhead_pct']:+.2f}%  "
            f"pfeiffer {h['pfeiffer_overhead_pct']:+.2f}%  {lc}; {h['judged_variant']} must be "
            f"< houlsby/3 = {h['houlsby_overhead_pct'] / 3:+.2f}% and <= pfeiffer: "
            f"{'PASS' if h['pass'] else 'FAIL'}"
        )
    return "\n".join(lines)


def plot(res: Dict[str, Any], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = []
    for r in res["results"]:
        key = (r["model"], r["batch"], r["seq"], r.get("mode", "eager"))
        if key not in shapes:
            shapes.append(key)
    variants = [v for v in dict.fromkeys(r["variant"] for r in res["results"]) if v != "base"]
    if not shapes or not variants:
        return
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(shapes) * max(1, len(variants)) / 2), 4))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        ys = []
        for key in shapes:
            r = next(
                (
                    r
                    for r in res["results"]
                    if (r["model"], r["batch"], r["seq"], r.get("mode", "eager")) == key and r["variant"] == v
                ),
                None,
            )
            ys.append(float("nan") if r is None else r["overhead_pct"])
        ax.bar([i + j * width for i in range(len(shapes))], ys, width, label=v)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(shapes))])
    ax.set_xticklabels([f"{m}\nb={b} s={s}\n{mode}" for m, b, s, mode in shapes], fontsize=7)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("latency overhead over base (%)")
    env = res["env"]
    ax.set_title(
        f"e2e inference overhead ({res['config']['device']}, {res['config']['dtype']}, "
        f"torch {env['torch']}, {env['date_utc']})",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    H.save_figure_atomic(fig, path)
    plt.close(fig)


def main(argv: Optional[List[str]] = None, args: Optional[E2EBenchOptions] = None) -> int:
    return H.bench_main(argv, args, E2EBenchOptions, build_parser, run, format_results, plot, "e2e")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
