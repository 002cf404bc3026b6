"""Methods as parts: a new method is one class plus one registry entry, and run_experiment's SN row runs it."""

from __future__ import annotations

import re

import pytest
import torch

from depthdistill.distill import METHODS, Distiller, Method, get_method, methods, register_method
from depthdistill.errors import ConfigError, ConfigTypeError
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter


class CrossEntropyOnly(Method):
    """A toy method: the plain model trained with CE for all the epochs, no teacher (the baseline by another name)."""

    name = "toy_ce"
    summary = "CE on RGB for teacher + student epochs"

    def train(self, distiller, train_data, *, teacher_epochs, student_epochs, val_data=None, unlabelled_data=None):
        return distiller.train_baseline(train_data, teacher_epochs + student_epochs, val_data, name="sn")


@pytest.fixture()
def registry(monkeypatch):
    """A copy of the registry for the test to add to."""
    monkeypatch.setattr(methods, "METHODS", dict(METHODS))
    return methods.METHODS


def _model():
    torch.manual_seed(0)
    return TinySegmenter(dropout=0.0)


def test_a_registered_toy_method_is_what_the_sn_row_trains(registry):
    register_method(CrossEntropyOnly)
    assert registry["toy_ce"] is CrossEntropyOnly and isinstance(get_method("toy_ce"), CrossEntropyOnly)
    train, test = TinyRGBD(8), TinyRGBD(4, seed=1)
    common = dict(batch_size=4, progress=False, log_echo=False, device="cpu")
    d = Distiller(_model(), NUM_CLASSES, method="toy_ce", **common)
    table = d.run_experiment(train, test, teacher_epochs=1, student_epochs=1, rows=["BL", "SN"])
    assert d.teacher is None  # the toy method never asked for a teacher
    # SN is BL's training under another name: same initial weights, epochs, seed and data
    for p, q in zip(d.models["SN"].parameters(), d.models["BL"].parameters(), strict=True):
        assert torch.equal(p, q)
    assert table["SN"].mean_iou == table["BL"].mean_iou and table["SN"].epochs == 1
    with pytest.raises(ConfigError, match="'toy_ce' defines no SN-RGB control row; compare it with the rows BL@TN"):
        d.train_control(train, teacher_epochs=1, student_epochs=1)
    default = Distiller(_model(), NUM_CLASSES, **common)
    default.run_experiment(train, test, teacher_epochs=1, student_epochs=1, rows=["SN"])
    assert default.teacher is not None  # the paper's method trains its teacher


def test_registering_checks_the_class_and_the_name(registry):
    with pytest.raises(ConfigTypeError, match="Method subclass"):
        register_method(object)  # type: ignore[arg-type]

    class Clash(CrossEntropyOnly):
        name = "removal"

    with pytest.raises(ConfigError, match="already registered"):
        register_method(Clash)
    # every registered name is listed (the built-in ones and any the session added)
    assert {"removal", "unlabelled", "aux_depth", "online", "consistency"} <= set(METHODS)
    with pytest.raises(ConfigError, match=r"unknown method 'nope'; registered: " + re.escape(str(sorted(METHODS)))):
        get_method("nope")


def test_the_default_method_is_teacher_then_shared_weight_student():
    train = TinyRGBD(4)
    d = Distiller(_model(), NUM_CLASSES, "paper", batch_size=4, progress=False, log_echo=False, device="cpu")
    student = d.train(train, teacher_epochs=1, student_epochs=1)
    assert student is d.model and list(d.fits) == ["tn", "sn"] and "vtce" in d.fits["sn"].history[0]


@pytest.mark.parametrize("name", ["removal", "unlabelled", "online", "aux_depth", "consistency"])
def test_trains_teacher_says_whether_sn_trains_the_teacher_phase(name):
    from depthdistill.data import without_labels

    d = Distiller(_model(), NUM_CLASSES, method=name, batch_size=4, lr=0.05, progress=False, log_echo=False,
                  device="cpu")
    extra = {"unlabelled_data": without_labels(TinyRGBD(4, seed=7))} if METHODS[name].uses_unlabelled else {}
    d.train(TinyRGBD(4), teacher_epochs=1, student_epochs=1, **extra)
    assert ("tn" in d.fits) is METHODS[name].trains_teacher
