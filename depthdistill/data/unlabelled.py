"""Unlabelled RGB-D: what it is, how to tell, and how to get it from labelled data.

An *unlabelled sample* is the library's sample dict without its ``"label"`` key::

    {"rgb": float32 (3, H, W), "depth": float32 (1, H, W) metres (0 = missing), "id": str}

(:func:`depthdistill.data._io.make_sample` builds both kinds). Nothing stands in for the missing label (no all-void
map), so code that needs a label fails on a ``KeyError`` rather than training on nothing. The transforms accept both
kinds; :func:`~depthdistill.data.collate_rgbd` batches either kind and refuses a batch that mixes them.

Every dataset says which kind it yields through a ``labelled`` attribute; :func:`is_unlabelled` reads it (or looks
at a sample), and :func:`without_labels` turns a labelled dataset into an unlabelled view of the same frames.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch.utils.data import Dataset

from depthdistill.errors import DatasetError

__all__ = ["UnlabelledView", "is_unlabelled", "without_labels"]


def is_unlabelled(data: dict[str, Any] | Sequence[dict[str, Any]]) -> bool:
    """Whether a sample, a batch or a dataset is unlabelled (has rgb and depth but no ``"label"``).

    A dict (sample or batch) is unlabelled when it has no ``"label"`` key. A dataset answers through its
    ``labelled`` attribute (every dataset of :mod:`depthdistill.data` has one); for any other dataset its first
    sample decides.

    Args:
        data: A sample dict, a batch dict, or a dataset (anything indexable that yields sample dicts).

    Returns:
        ``True`` for unlabelled data.

    Raises:
        DatasetError: If ``data`` is an empty dataset without a ``labelled`` attribute (nothing to look at).

    Examples:
        >>> import torch
        >>> from depthdistill.data import SyntheticRGBD
        >>> is_unlabelled({"rgb": torch.zeros(3, 2, 2), "depth": torch.ones(1, 2, 2), "id": "a"})
        True
        >>> is_unlabelled(SyntheticRGBD(num_samples=2, split="unlabelled")), is_unlabelled(SyntheticRGBD(2))
        (True, False)
    """
    if isinstance(data, dict):
        return "label" not in data
    labelled = getattr(data, "labelled", None)
    if labelled is not None:
        return not labelled
    if len(data) == 0:
        raise DatasetError(f"cannot tell whether an empty {type(data).__name__} is unlabelled: it has no sample to "
                           "look at and no 'labelled' attribute")
    return "label" not in data[0]


class UnlabelledView(Dataset):
    """A labelled dataset's samples without their labels: sample ``i`` is ``dataset[i]`` minus ``"label"``.

    The wrapped dataset's transform runs first (with the label, so a joint transform sees all three), then the
    label is dropped. ``class_names``, ``palette`` and ``num_classes`` are passed through when the dataset has them,
    so a teacher's classes can still be named.

    Args:
        dataset: Any dataset yielding sample dicts.

    Attributes:
        dataset: The wrapped dataset.
        labelled: Always ``False``.

    Examples:
        >>> from depthdistill.data import SyntheticRGBD
        >>> view = UnlabelledView(SyntheticRGBD(num_samples=2, size=(32, 32)))
        >>> sorted(view[0]), len(view), view.labelled
        (['depth', 'id', 'rgb'], 2, False)
    """

    labelled = False

    def __init__(self, dataset: Sequence[dict[str, Any]]) -> None:
        self.dataset = dataset
        for name in ("class_names", "palette", "num_classes"):
            if hasattr(dataset, name):
                setattr(self, name, getattr(dataset, name))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.dataset[index]
        return {key: value for key, value in sample.items() if key != "label"}

    def __repr__(self) -> str:
        return f"UnlabelledView({self.dataset!r})"


def without_labels(dataset: Sequence[dict[str, Any]]) -> UnlabelledView:
    """The frames of a labelled dataset as unlabelled samples, e.g. "use the training frames without labels".

    Args:
        dataset: Any dataset yielding sample dicts (labelled or not).

    Returns:
        An :class:`UnlabelledView`; a view of a view is not nested again.

    Examples:
        >>> import torch
        >>> from depthdistill.data import SyntheticRGBD
        >>> train = SyntheticRGBD(num_samples=2, size=(32, 32))
        >>> unlabelled = without_labels(train)
        >>> "label" in unlabelled[1], torch.equal(unlabelled[1]["depth"], train[1]["depth"])
        (False, True)
    """
    return dataset if isinstance(dataset, UnlabelledView) else UnlabelledView(dataset)
