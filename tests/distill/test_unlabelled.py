"""The unlabelled-data method: the depth teacher's targets on unlabelled RGB-D frames, and its RGB-labeller control."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from depthdistill.data import collate_rgbd, without_labels
from depthdistill.distill import Distiller, DistillSettings
from depthdistill.distill.config import RunConfig
from depthdistill.distill.methods.unlabelled import unlabelled_loss
from depthdistill.errors import ConfigError, DatasetError
from tests.tiny_rgbd import NUM_CLASSES, TinyRGBD, TinySegmenter

COMMON = dict(batch_size=4, lr=0.05, progress=False, log_echo=False, device="cpu")


def _model():
    torch.manual_seed(0)
    return TinySegmenter(dropout=0.0, norm=False)  # no random draws or running statistics on the extra forwards


def test_soft_targets_are_t_squared_kl_written_out():
    s, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    temperature = 2.0
    p = (t / temperature).softmax(1)
    q = (s / temperature).softmax(1)
    expected = (p * (p.log() - q.log())).sum(1).mean() * temperature**2
    got = unlabelled_loss(s, t, targets="soft", temperature=temperature, confidence=0.0)
    torch.testing.assert_close(got, expected)


def test_hard_targets_keep_only_the_confident_pixels():
    s = torch.randn(1, 3, 2, 2)
    t = torch.tensor([[[[9.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 9.0]]]])
    got = unlabelled_loss(s, t, targets="hard", temperature=1.0, confidence=0.9)
    # two confident pixels: (0,0) is class 0, (1,1) class 2; the flat ones (top probability 1/3) are ignored
    expected = (F.cross_entropy(s[:, :, 0, 0], torch.tensor([0]))
                + F.cross_entropy(s[:, :, 1, 1], torch.tensor([2]))) / 2
    torch.testing.assert_close(got, expected)
    assert float(unlabelled_loss(s, t, targets="hard", temperature=1.0, confidence=1.0)) == 0.0


def test_the_student_learns_from_the_teachers_targets_on_unlabelled_frames():
    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(16, seed=7))
    d = Distiller(_model(), NUM_CLASSES, "paper", method="unlabelled", vtce=False, **COMMON)
    student = d.train(labelled, teacher_epochs=1, student_epochs=2, unlabelled_data=unlabelled)
    assert student is d.model and list(d.fits) == ["tn", "sn"]
    assert all(record["unlabelled"] > 0 for record in d.fits["sn"].history)
    # weight 0: the same student as the teacher's weights trained on with CE alone (what BL+PS does)
    silent = Distiller(_model(), NUM_CLASSES, "paper", method="unlabelled", vtce=False, unlabelled_weight=0.0,
                       **COMMON)
    silent_student = silent.train(labelled, teacher_epochs=1, student_epochs=2, unlabelled_data=unlabelled)
    plain = Distiller(_model(), NUM_CLASSES, "paper", **COMMON)
    plain.train_teacher(labelled, 1)
    ce_only = plain.train_student(labelled, 2, vtce=False)
    for p, q, r in zip(silent_student.parameters(), ce_only.parameters(), student.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not all(torch.equal(p, r) for p, r in zip(silent_student.parameters(), student.parameters()))


def test_the_student_can_start_from_the_initial_weights():
    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(8, seed=7))
    d = Distiller(_model(), NUM_CLASSES, "paper", method="unlabelled", student_start="initial", **COMMON)
    student = d.train(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    assert student is not d.model  # a copy with the initial weights, not the teacher's


def test_the_control_labels_with_an_rgb_model_and_never_uses_depth():
    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(8, seed=7))
    d = Distiller(_model(), NUM_CLASSES, "paper", method="unlabelled", **COMMON)
    table = d.run_experiment(labelled, TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=1,
                             rows=["BL", "SN", "SN-RGB"], unlabelled_data=unlabelled)
    assert [r.name for r in table] == ["BL", "SN", "SN-RGB"]
    assert {"bl", "tn", "sn", "bl_tn", "sn_rgb"} <= set(d.fits)
    control = Distiller(_model(), NUM_CLASSES, "paper", method="unlabelled", **COMMON)
    control.train_control(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    assert control.teacher is None and list(control.fits) == ["bl_tn", "sn_rgb"]


def test_unlabelled_data_errors():
    labelled, unlabelled = TinyRGBD(4), without_labels(TinyRGBD(4, seed=7))
    for chosen in ({"settings": "default"}, {"method": "removal"}):  # a method chosen is kept, and says why
        with pytest.raises(ConfigError, match="does not use unlabelled data"):
            Distiller(_model(), NUM_CLASSES, **chosen, **COMMON).train(labelled, teacher_epochs=1, student_epochs=1,
                                                                       unlabelled_data=unlabelled)
    method = Distiller(_model(), NUM_CLASSES, method="unlabelled", **COMMON)
    with pytest.raises(ConfigError, match="needs unlabelled RGB-D frames"):
        method.train(labelled, teacher_epochs=1, student_epochs=1)
    with pytest.raises(DatasetError, match="have a 'label'"):
        method.train(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=TinyRGBD(4, seed=7))


def test_settings_left_to_the_library_become_the_unlabelled_preset_when_frames_are_given():
    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(8, seed=7))
    auto = Distiller(_model(), NUM_CLASSES, alpha=4.0, **COMMON)
    assert (auto.settings.preset, auto.method.name) == ("default", "removal")
    student = auto.train(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    assert auto.settings == DistillSettings.from_preset("unlabelled", alpha=4.0)  # the override is kept
    # the same training as naming the preset
    named = Distiller(_model(), NUM_CLASSES, "unlabelled", alpha=4.0, **COMMON)
    expected = named.train(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    for p, q in zip(student.parameters(), expected.parameters(), strict=True):
        assert torch.equal(p, q)
    # without frames the library's choice stays the depth-removal default
    plain = Distiller(_model(), NUM_CLASSES, **COMMON)
    plain.train(labelled, teacher_epochs=1, student_epochs=1)
    assert (plain.settings.preset, plain.method.name) == ("default", "removal")


def test_frames_given_after_a_phase_trained_with_other_settings_are_refused():
    labelled, unlabelled = TinyRGBD(4), without_labels(TinyRGBD(4, seed=7))
    d = Distiller(_model(), NUM_CLASSES, **COMMON)
    d.train_teacher(labelled, 1)
    with pytest.raises(ConfigError, match=r"after phases \['tn'\] trained with the 'default' settings.*"
                                          r"settings='unlabelled'"):
        d.train(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)


def test_a_run_file_with_unlabelled_frames_and_no_method_runs_the_unlabelled_preset():
    frames = {"data": {"unlabelled": {"split": "unlabelled", "num_samples": 8}}}
    assert RunConfig.from_dict(frames).distill == DistillSettings.from_preset("unlabelled")
    assert RunConfig.from_dict({**frames, "distill": {"alpha": 4.0}}).distill == \
        DistillSettings.from_preset("unlabelled", alpha=4.0)
    for chosen in ({"preset": "paper", "method": "unlabelled"}, {"method": "unlabelled"}):
        assert RunConfig.from_dict({**frames, "distill": chosen}).distill == DistillSettings.from_dict(chosen)
    assert RunConfig.from_dict({}).distill == DistillSettings()


def test_the_controls_rgb_labeller_is_the_experiments_bl_at_tn_trained_once(monkeypatch):
    from depthdistill.distill import student as student_phase

    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(8, seed=7))
    trained = []
    train_plain = student_phase.train_plain

    def counting(distiller, model, *args, name, **kwargs):
        trained.append(name)
        return train_plain(distiller, model, *args, name=name, **kwargs)

    monkeypatch.setattr(student_phase, "train_plain", counting)
    d = Distiller(_model(), NUM_CLASSES, "unlabelled", **COMMON)
    d.run_experiment(labelled, TinyRGBD(4, seed=1), teacher_epochs=1, student_epochs=1,
                     rows=["BL@TN", "SN-RGB"], unlabelled_data=unlabelled)
    assert trained.count("bl_tn") == 1
    # a baseline with other epochs is another model
    assert d.train_baseline(labelled, 2, name="bl_tn") is not d.models["BL@TN"]
    assert trained.count("bl_tn") == 2


def test_the_controls_labeller_can_train_longer_than_the_teacher():
    labelled, unlabelled = TinyRGBD(8), without_labels(TinyRGBD(8, seed=7))
    d = Distiller(_model(), NUM_CLASSES, "unlabelled", control_labeller_epochs=3, **COMMON)
    control = d.train_control(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    assert list(d.fits) == ["sn_rgb_labeller", "sn_rgb"] and len(d.fits["sn_rgb_labeller"].history) == 3
    # the labeller is the baseline trained for those epochs (trained once: the memo returns it again)
    reference = Distiller(_model(), NUM_CLASSES, "unlabelled", **COMMON).train_baseline(labelled, 3)
    for p, q in zip(d.train_baseline(labelled, 3, name="sn_rgb_labeller").parameters(), reference.parameters(),
                    strict=True):
        assert torch.equal(p, q)
    assert list(d.fits) == ["sn_rgb_labeller", "sn_rgb"]
    usual = Distiller(_model(), NUM_CLASSES, "unlabelled", **COMMON)
    usual_control = usual.train_control(labelled, teacher_epochs=1, student_epochs=1, unlabelled_data=unlabelled)
    assert list(usual.fits) == ["bl_tn", "sn_rgb"]
    assert not all(torch.equal(p, q) for p, q in zip(control.parameters(), usual_control.parameters()))
    for bad in (0, 1.5, True):
        with pytest.raises(ConfigError, match="control_labeller_epochs must be an integer >= 1"):
            DistillSettings(control_labeller_epochs=bad)


class _CountingReads(torch.utils.data.Dataset):
    def __init__(self, data):
        self.data, self.reads = data, 0

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        self.reads += 1
        return self.data[index]


@pytest.mark.parametrize("loader", [False, True])
def test_one_epoch_passes_once_over_the_unlabelled_frames_also_when_the_labelled_data_is_a_loader(loader):
    labelled = TinyRGBD(8)
    if loader:  # batches of 2: four steps per epoch, whatever the settings' batch size
        labelled = torch.utils.data.DataLoader(labelled, batch_size=2, collate_fn=collate_rgbd)
    frames = _CountingReads(without_labels(TinyRGBD(16, seed=7)))
    reads = []
    d = Distiller(_model(), NUM_CLASSES, "unlabelled", **COMMON, callbacks=[
        lambda state: reads.append(frames.reads) if (state.phase, state.event) == ("sn", "epoch_end") else None])
    d.train_teacher(TinyRGBD(8), 1)
    d.train(labelled, teacher_epochs=1, student_epochs=3, unlabelled_data=frames)
    assert [b - a for a, b in zip(reads, reads[1:])] == [16, 16]
