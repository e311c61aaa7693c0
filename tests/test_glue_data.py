"""GLUE TSV loading: every task layout, error messages that name file and line, held-out slice, real files."""

import os
import random

import pytest

pytest.importorskip("datasets", reason='the GLUE layer needs `datasets` (pip install -e ".[glue]")')


from layerconnect.apps.glue import TASKS, GlueDataError, load_glue, load_split, read_glue_tsv
from layerconnect.apps.glue.data import resolve_data_dir, split_heldout, subsample

WORDS = [
    "the",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "a",
    "red",
    "blue",
    "ran",
    "fast",
    "slow",
    "big",
    "small",
    "bird",
    "flew",
    "over",
    "tree",
    "house",
    "car",
    "good",
    "bad",
    "film",
    "is",
    "not",
    "very",
]
PUNCT = ['"', ".", ",", "'"]


def _sentence(rng, lo=3, hi=9):
    s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))
    if rng.random() < 0.3:
        s = '" ' + s  # an unbalanced quote, as in the real MRPC/SST-2 files: quoting must be off
    return s + " ."


def write_tiny_glue(root, n_train=40, n_dev=16, seed=0):
    """A tiny GLUE directory in the original TSV layouts (CoLA header-less, MRPC with a BOM, ...).

    Labels follow a simple rule of the text (does "not" occur?) so a model can move on them.
    Returns {task: {split: rows written}}.
    """
    rng = random.Random(seed)
    counts = {}

    def w(task_dir, split, header, rows, bom=False):
        d = os.path.join(root, task_dir)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{split}.tsv"), "w", encoding="utf-8-sig" if bom else "utf-8", newline="") as fh:
            if header:
                fh.write("\t".join(header) + "\n")
            for r in rows:
                fh.write("\t".join(str(x) for x in r) + "\n")
        counts.setdefault(task_dir, {})[split] = len(rows)

    for split, n in (("train", n_train), ("dev", n_dev)):
        pairs = [(_sentence(rng), _sentence(rng)) for _ in range(n)]
        lab = [int("not" in a or "not" in b) for a, b in pairs]
        w(
            "RTE",
            split,
            ["index", "sentence1", "sentence2", "label"],
            [(i, a, b, ["entailment", "not_entailment"][y]) for i, ((a, b), y) in enumerate(zip(pairs, lab))],
        )
        w(
            "WNLI",
            split,
            ["index", "sentence1", "sentence2", "label"],
            [(i, a, b, y) for i, ((a, b), y) in enumerate(zip(pairs, lab))],
        )
        w(
            "QNLI",
            split,
            ["index", "question", "sentence", "label"],
            [(i, a, b, ["entailment", "not_entailment"][y]) for i, ((a, b), y) in enumerate(zip(pairs, lab))],
        )
        w(
            "MRPC",
            split,
            ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
            [(y, 1000 + i, 2000 + i, a, b) for i, ((a, b), y) in enumerate(zip(pairs, lab))],
            bom=True,
        )
        w(
            "STS-B",
            split,
            [
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ],
            [
                (
                    i,
                    "main-captions",
                    "MSRvid",
                    "2012test",
                    f"{i:04d}",
                    "none",
                    "none",
                    a,
                    b,
                    f"{5.0 * (1 - y) * rng.random():.3f}",
                )
                for i, ((a, b), y) in enumerate(zip(pairs, lab))
            ],
        )
        w(
            "QQP",
            split,
            ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [(i, 2 * i, 2 * i + 1, a, b, y) for i, ((a, b), y) in enumerate(zip(pairs, lab))],
        )
        # MNLI: 12 columns in train, 16 in dev (five annotator labels), gold_label last; dev is two files
        mnli = ["entailment", "neutral", "contradiction"]
        parse_cols = [
            "index",
            "promptID",
            "pairID",
            "genre",
            "sentence1_binary_parse",
            "sentence2_binary_parse",
            "sentence1_parse",
            "sentence2_parse",
            "sentence1",
            "sentence2",
        ]
        for stem in ["train"] if split == "train" else ["dev_matched", "dev_mismatched"]:
            extra = ["label1"] if stem == "train" else ["label1", "label2", "label3", "label4", "label5"]
            rows = []
            for i, (a, b) in enumerate(pairs):
                y = mnli[(a.count(" ") + b.count(" ")) % 3]
                rows.append(
                    (i, i, f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b, *([y] * len(extra)), y)
                )
            w("MNLI", stem, parse_cols + extra + ["gold_label"], rows)
        sents = [_sentence(rng) for _ in range(n)]
        lab1 = [int("not" not in s) for s in sents]
        w("CoLA", split, None, [("gj04", y, "" if y else "*", s) for s, y in zip(sents, lab1)])
        w("SST-2", split, ["sentence", "label"], [(s, y) for s, y in zip(sents, lab1)])
    return counts


@pytest.fixture(scope="module")
def tiny_glue(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    counts = write_tiny_glue(str(root))
    return str(root), counts


@pytest.mark.parametrize("task", ["rte", "wnli", "qnli", "mrpc", "stsb", "cola", "sst2", "qqp", "mnli"])
def test_every_layout_reads_with_canonical_columns(tiny_glue, task):
    root, counts = tiny_glue
    t = TASKS[task]
    train, devs = load_glue(task, root)
    assert len(train) == counts[t.dir_name]["train"]
    assert sorted(devs) == sorted(name for name, _, _ in t.dev_splits)
    for name, stem, _ in t.dev_splits:
        assert len(devs[name]) == counts[t.dir_name][stem]
    assert set(train.column_names) == {*t.text_fields, "label", "idx"}
    # read the raw file ourselves and compare text and labels field by field
    path = os.path.join(root, t.dir_name, "train.tsv")
    with open(path, encoding="utf-8-sig") as fh:
        lines = fh.read().split("\n")
    rows = [ln.split("\t") for ln in lines[(1 if t.tsv_header else 0) :] if ln]
    header = lines[0].lstrip("\ufeff").split("\t") if t.tsv_header else None
    for i, row in enumerate(rows):
        for f, col in zip(t.text_fields, t.tsv_text):
            assert train[i][f] == row[header.index(col) if header else col]
        raw = row[header.index(t.tsv_label) if header else t.tsv_label]
        want = float(raw) if t.is_regression else (t.label_names.index(raw) if t.label_names else int(raw))
        assert train[i]["label"] == pytest.approx(want, abs=1e-6) if t.is_regression else train[i]["label"] == want


def test_mrpc_bom_does_not_reach_the_header(tiny_glue):
    root, _ = tiny_glue
    with open(os.path.join(root, "MRPC", "train.tsv"), "rb") as fh:
        assert fh.read(3) == b"\xef\xbb\xbf"  # the fixture really has a BOM
    cols = read_glue_tsv("mrpc", os.path.join(root, "MRPC", "train.tsv"))
    assert set(cols) == {"sentence1", "sentence2", "label", "idx"}


def test_unbalanced_quotes_stay_in_the_text(tmp_path):
    d = tmp_path / "SST-2"
    d.mkdir()
    (d / "train.tsv").write_text('sentence\tlabel\n" a quote that never closes\t1\nnext row\t0\n')
    cols = read_glue_tsv("sst2", str(d / "train.tsv"))
    assert cols["sentence"] == ['" a quote that never closes', "next row"]
    assert cols["label"] == [1, 0]


def test_missing_directory_and_file_are_named(tmp_path):
    with pytest.raises(GlueDataError, match="does not exist"):
        resolve_data_dir(str(tmp_path / "nope"))
    with pytest.raises(GlueDataError, match=r"RTE.*train\.tsv not found|train\.tsv not found"):
        load_split("rte", "train", str(tmp_path))


@pytest.mark.parametrize(
    "content, match",
    [
        (
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tb\n",
            r"train\.tsv, line 3: 3 tab-separated fields, expected 4",
        ),
        (
            "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n",
            r"train\.tsv, line 2: label 'maybe' is not valid for rte",
        ),
        ("index\tsentence1\tlabel\n0\ta\tentailment\n", r"line 1: header lacks column\(s\) \['sentence2'\]"),
        ("", r"is empty"),
        ("index\tsentence1\tsentence2\tlabel\n", r"holds no data rows"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, content, match):
    d = tmp_path / "RTE"
    d.mkdir()
    (d / "train.tsv").write_text(content)
    with pytest.raises(GlueDataError, match=match) as e:
        load_split("rte", "train", str(tmp_path))
    assert str(d / "train.tsv") in str(e.value)


def test_bad_labels_for_numeric_tasks(tmp_path):
    d = tmp_path / "CoLA"
    d.mkdir()
    (d / "train.tsv").write_text("gj04\t1\t\tok .\ngj04\t2\t*\tbad label .\n")
    with pytest.raises(GlueDataError, match=r"line 2: label '2' is not valid for cola"):
        load_split("cola", "train", str(tmp_path))
    d = tmp_path / "STS-B"
    d.mkdir()
    (d / "train.tsv").write_text(
        "\t".join(["c"] * 7 + ["sentence1", "sentence2", "score"]) + "\n" + "\t".join(["x"] * 9 + ["high"]) + "\n"
    )
    with pytest.raises(GlueDataError, match=r"line 2: label 'high' is not valid for stsb \(expected a number\)"):
        load_split("stsb", "train", str(tmp_path))


def test_hub_is_used_without_a_local_dir_and_its_failure_says_what_to_do(monkeypatch):
    import datasets

    calls = []

    def fake(path, name, split):
        calls.append((path, name, split))
        if name == "rte":
            raise ConnectionError("offline")
        return datasets.Dataset.from_dict({"premise": ["a"], "hypothesis": ["b"], "label": [0], "idx": [0]})

    monkeypatch.delenv("LAYERCONNECT_GLUE_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert len(load_split("mnli", "mismatched")) == 1
    assert calls == [("nyu-mll/glue", "mnli", "validation_mismatched")]
    with pytest.raises(GlueDataError, match="--data-dir DIR or set \\$LAYERCONNECT_GLUE_DIR"):
        load_split("rte", "dev")


def test_env_var_is_the_fallback_and_unknown_task_is_refused(tiny_glue, monkeypatch):
    root, counts = tiny_glue
    monkeypatch.setenv("LAYERCONNECT_GLUE_DIR", root)
    assert len(load_split("rte", "dev")) == counts["RTE"]["dev"]
    with pytest.raises(ValueError, match="not a GLUE task"):
        load_split("squad", "train")
    with pytest.raises(ValueError, match="not a split of rte"):
        load_split("rte", "test")


def test_heldout_slice_is_fixed_disjoint_and_independent_of_run_seed(tiny_glue):
    root, _ = tiny_glue
    train = load_split("rte", "train", root)
    rest1, held1 = split_heldout(train, 10)
    rest2, held2 = split_heldout(train, 10)
    h1, h2, r1 = list(held1["idx"]), list(held2["idx"]), list(rest1["idx"])
    assert h1 == h2 and len(h1) == 10
    assert not set(h1) & set(r1)
    assert sorted(h1 + r1) == list(range(len(train)))
    sub = subsample(rest1, 7)
    assert len(sub) == 7 and set(sub["idx"]) <= set(r1)
    assert list(subsample(rest1, 7)["idx"]) == list(sub["idx"])
    with pytest.raises(ValueError, match="must be smaller than the train set"):
        split_heldout(train, len(train))


def _real_glue_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.environ.get("LAYERCONNECT_GLUE_DIR"), os.path.join(here, "..", "..", "shared", "glue")):
        if d and os.path.isdir(d):
            return d
    return None


@pytest.mark.skipif(_real_glue_dir() is None, reason="shared GLUE files not present")
@pytest.mark.parametrize("task, n", [("cola", 1043), ("mrpc", 408), ("rte", 277), ("stsb", 1500), ("sst2", 872)])
def test_real_dev_files_have_the_official_row_counts(task, n):
    root = _real_glue_dir()
    if not os.path.isfile(os.path.join(root, TASKS[task].dir_name, "dev.tsv")):
        pytest.skip(f"{task} dev file absent")
    ds = load_split(task, "dev", root)
    assert len(ds) == n
    labels = list(ds["label"])
    if task == "stsb":
        assert min(labels) >= 0 and max(labels) <= 5
    else:
        assert set(labels) == {0, 1}
    assert all(isinstance(x, str) and x for f in TASKS[task].text_fields for x in ds[f])
