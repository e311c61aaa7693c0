"""The options dataclasses drive the command line: defaults written once, flags generated, reproducible
command lines."""

import argparse
from dataclasses import dataclass
from typing import List, Optional

import pytest

from layerconnect.utils.options import add_options, from_namespace, option, to_command


@dataclass
class Demo:
    name: str = option(help="required")
    count: int = option(3, "how many (50% more than 2)")
    rate: Optional[float] = option(None, "optional float")
    fast: bool = option(False, "go fast")
    progress: bool = option(True, "no progress bar")
    kind: str = option("a", "which", choices=("a", "b"), group="extra")
    tag: List[str] = option(help="repeatable", default_factory=list)

    def __post_init__(self):
        if self.count < 0:
            raise ValueError("--count must be >= 0")


def _parse(argv):
    p = argparse.ArgumentParser(prog="demo")
    add_options(p, Demo)
    return p, p.parse_args(argv)


def test_flags_defaults_and_help():
    p, ns = _parse(["--name", "x"])
    opts = from_namespace(Demo, ns)
    assert opts == Demo(name="x")
    help_text = p.format_help()
    for needle in ("--name NAME", "(default 3)", "50% more", "--fast", "--no-progress", "extra:", "{a,b}"):
        assert needle in help_text, needle
    _, ns = _parse(
        [
            "--name",
            "y",
            "--count",
            "5",
            "--rate",
            "0.5",
            "--fast",
            "--no-progress",
            "--kind",
            "b",
            "--tag",
            "t1",
            "--tag",
            "t2",
        ]
    )
    assert from_namespace(Demo, ns) == Demo("y", 5, 0.5, True, False, "b", ["t1", "t2"])
    with pytest.raises(SystemExit):
        _parse([])  # --name is required
    with pytest.raises(SystemExit):
        _parse(["--name", "x", "--kind", "c"])


def test_command_line_round_trips_and_validation_runs():
    opts = Demo("y", 5, 0.5, True, False, "b", ["t1", "t2"])
    cmd = to_command(opts, "demo")
    assert cmd.startswith("demo --name y --count 5") and "--no-progress" in cmd and "--tag t1 --tag t2" in cmd
    _, ns = _parse(cmd.split()[1:])
    assert from_namespace(Demo, ns) == opts
    assert to_command(Demo("z"), "demo") == "demo --name z"  # defaults are not repeated
    _, ns = _parse(["--name", "x", "--count", "-1"])
    with pytest.raises(ValueError, match="--count must be >= 0"):
        from_namespace(Demo, ns)


def test_train_options_defaults_exist_once():
    from layerconnect.apps.glue.options import DEFAULT_LR, TrainOptions

    single = TrainOptions(task="rte")
    joint = TrainOptions(task="rte,sst2")
    assert single.resolved_lr() == joint.resolved_lr() == DEFAULT_LR["layerconnect"]
    assert joint.joint and joint.tasks == ["rte", "sst2"]
    assert TrainOptions(task="rte", method="houlsby").resolved_lr() == 1e-3
    assert TrainOptions(task="rte").heldout_rows(2490) == 249 and TrainOptions(task="rte").heldout_rows(67349) == 800
    with pytest.raises(ValueError, match="--positions only applies to --method layerconnect"):
        TrainOptions(task="rte", method="houlsby", positions="all")
    with pytest.raises(ValueError, match="not a GLUE task"):
        TrainOptions(task="rte,nope")
    with pytest.raises(ValueError, match="--resume"):
        TrainOptions(task="rte,sst2", resume=True)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        TrainOptions(task="rte", method_option=["novalue"])
