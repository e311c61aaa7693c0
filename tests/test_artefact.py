"""save_connectors / load_connectors under faults and bad files (issue 18): the pair of files is written
as a whole or not at all, a load validates everything before it touches the model, a head-less artefact
is refused on a model with a head unless asked for, and every error names the file."""

import json
import os
import stat

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_model import _batch, _tiny  # noqa: E402

from layerconnect import LayerConnectConfig, add_connectors, load_connectors, save_connectors  # noqa: E402
from layerconnect.method import ArtefactError  # noqa: E402
from layerconnect.method.artefact import CONFIG_FILE, CONNECTOR_FILE  # noqa: E402


def _trained(seed=0, **cfg):
    model = _tiny("bert")
    add_connectors(model, LayerConnectConfig(down_factor=4, **cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def _logits(model):
    with torch.no_grad():
        return model.eval()(**_batch()).logits


def _state(model):
    return {n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()}


def test_interrupted_save_keeps_the_previous_artefact_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "task")
    old = _trained(seed=1)
    save_connectors(old, path)
    new = _trained(seed=2)
    import safetensors.torch as st

    real = st.save

    def dies_after_tensors(tensors, *a, **k):  # the first file is built, then the process "dies"
        real(tensors, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(st, "save", dies_after_tensors)
    with pytest.raises(KeyboardInterrupt):
        save_connectors(new, path)
    monkeypatch.setattr(st, "save", real)
    assert sorted(os.listdir(path)) == [CONNECTOR_FILE, CONFIG_FILE]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], "a temporary folder was left behind"
    fresh = _tiny("bert")
    load_connectors(fresh, path)
    torch.testing.assert_close(_logits(fresh), _logits(old), rtol=0, atol=0)
    save_connectors(new, path)  # and a later save replaces both files
    fresh = _tiny("bert")
    load_connectors(fresh, path)
    torch.testing.assert_close(_logits(fresh), _logits(new), rtol=0, atol=0)


def test_save_refuses_a_folder_with_other_files_and_follows_the_umask(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ArtefactError, match="holds other files"):
        save_connectors(_trained(), str(tmp_path / "mine"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    old = os.umask(0o022)
    try:
        save_connectors(_trained(), str(tmp_path / "ok"))
    finally:
        os.umask(old)
    mode = stat.S_IMODE(os.stat(tmp_path / "ok" / CONNECTOR_FILE).st_mode)
    assert mode == 0o644, oct(mode)


def test_headless_artefact_is_refused_on_a_model_with_a_head(tmp_path):
    cfg = transformers.BertConfig(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=37, vocab_size=60
    )
    torch.manual_seed(0)
    encoder = transformers.BertModel(cfg)
    add_connectors(encoder, LayerConnectConfig(down_factor=4))
    save_connectors(encoder, str(tmp_path / "headless"))
    target = _tiny("bert")
    before = _state(target)
    with pytest.raises(ArtefactError, match=r"head 'classifier'.*untrained head.*head='keep'"):
        load_connectors(target, str(tmp_path / "headless"))
    assert not hasattr(target, "layerconnect")
    assert all(torch.equal(p, before[n][0]) and p.requires_grad == before[n][1] for n, p in target.named_parameters())
    load_connectors(target, str(tmp_path / "headless"), head="keep")  # on purpose: allowed
    assert torch.equal(target.classifier.weight, before["classifier.weight"][0])


def _broken(tmp_path, how):
    path = tmp_path / how
    save_connectors(_trained(), str(path))
    meta = json.loads((path / CONFIG_FILE).read_text())
    if how == "format":
        meta["format"] = "layerconnect/99"
    elif how == "geometry-key":
        del meta["geometry"]["r"]
    elif how == "geometry-value":
        meta["geometry"]["r"] = 4
    if how.startswith(("format", "geometry")):
        (path / CONFIG_FILE).write_text(json.dumps(meta))
    elif how == "not-utf8":
        (path / CONFIG_FILE).write_bytes(b"\xff\xfe{not json")
    elif how == "truncated":
        data = (path / CONNECTOR_FILE).read_bytes()
        (path / CONNECTOR_FILE).write_bytes(data[: len(data) // 2])
    elif how == "dir-for-file":
        os.unlink(path / CONNECTOR_FILE)
        os.mkdir(path / CONNECTOR_FILE)
    return str(path)


@pytest.mark.parametrize(
    "how,message",
    [
        ("format", "has format 'layerconnect/99'"),
        ("geometry-key", r"'geometry' lacks \['r'\]"),
        ("geometry-value", "does not follow from its config"),
        ("not-utf8", "is not valid UTF-8 JSON"),
        ("truncated", "cannot be read as safetensors"),
        ("dir-for-file", "is a directory, not a file"),
    ],
)
def test_damaged_artefacts_name_the_file_and_leave_the_model_alone(tmp_path, how, message):
    path = _broken(tmp_path, how)
    target = _tiny("bert")
    before = _state(target)
    with pytest.raises(ArtefactError, match=message) as e:
        load_connectors(target, path)
    assert path in str(e.value)
    assert not hasattr(target, "layerconnect")
    assert all(p.requires_grad == before[n][1] for n, p in target.named_parameters())
    load_connectors(target, _broken(tmp_path, "fine"))  # a retry with a good artefact works


def test_wrong_head_shape_leaves_the_model_loadable_again(tmp_path):
    save_connectors(_trained(), str(tmp_path / "t"))
    other = _tiny("bert", num_labels=5)
    with pytest.raises(ArtefactError, match="classifier.weight: saved shape"):
        load_connectors(other, str(tmp_path / "t"))
    assert not hasattr(other, "layerconnect")
    with pytest.raises(ValueError, match="head='sometimes'"):
        load_connectors(other, str(tmp_path / "t"), head="sometimes")
