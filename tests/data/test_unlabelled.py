"""The one definition of an unlabelled sample: telling it apart, and the labelled → unlabelled view."""

import pytest
import torch

from depthdistill.data import SyntheticRGBD, collate_rgbd, is_unlabelled, without_labels
from depthdistill.data._io import make_sample
from depthdistill.data.unlabelled import UnlabelledView
from depthdistill.errors import DatasetError


def test_make_sample_without_label_has_no_label_key_and_checks_sizes():
    import numpy as np

    sample = make_sample(np.zeros((4, 5, 3), np.uint8), np.full((4, 5), 2.0), None, "u")
    assert sorted(sample) == ["depth", "id", "rgb"]
    assert sample["rgb"].shape == (3, 4, 5) and sample["depth"].shape == (1, 4, 5)
    with pytest.raises(DatasetError, match=r"depth \(4, 6\)"):
        make_sample(np.zeros((4, 5, 3), np.uint8), np.ones((4, 6)), None, "u")


def test_without_labels_equals_the_labelled_samples_minus_labels():
    labelled = SyntheticRGBD(num_samples=3, size=(24, 32), seed=2)
    view = without_labels(labelled)
    assert len(view) == 3 and view.labelled is False and view.class_names == labelled.class_names
    for i in range(3):
        original, unlabelled = labelled[i], view[i]
        assert "label" not in unlabelled and set(original) - set(unlabelled) == {"label"}
        assert unlabelled["id"] == original["id"]
        assert torch.equal(unlabelled["rgb"], original["rgb"]) and torch.equal(unlabelled["depth"], original["depth"])
    assert without_labels(view) is view


def test_is_unlabelled_for_samples_batches_and_datasets():
    labelled = SyntheticRGBD(num_samples=2, size=(24, 32))
    assert not is_unlabelled(labelled) and not is_unlabelled(labelled[0])
    assert is_unlabelled(without_labels(labelled)) and is_unlabelled(without_labels(labelled)[0])
    assert is_unlabelled(SyntheticRGBD(num_samples=1, size=(24, 32), split="unlabelled"))
    # datasets without a `labelled` attribute are judged by their first sample
    assert is_unlabelled([without_labels(labelled)[0]]) and not is_unlabelled([labelled[0]])
    assert is_unlabelled(collate_rgbd([without_labels(labelled)[0]] * 2))
    with pytest.raises(DatasetError, match="empty list"):
        is_unlabelled([])


def test_unlabelled_view_runs_the_wrapped_transform_with_the_label():
    seen = []

    def transform(sample):
        seen.append("label" in sample)
        return sample

    view = UnlabelledView(SyntheticRGBD(num_samples=1, size=(24, 32), transform=transform))
    assert "label" not in view[0] and seen == [True]


def test_the_docs_synthetic_example_runs_and_prints_what_it_says(capsys):
    import re
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    section = page[page.index("### On synthetic scenes"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/data.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    comments = [line.split("#")[-1].strip() for line in code.splitlines() if line.startswith("print(")]
    assert [line.strip() for line in printed] == comments
