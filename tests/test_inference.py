"""depthdistill.predict and depthdistill.export called from Python, on a module (the CLI tests cover checkpoints)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tests.tiny_rgbd import NUM_CLASSES, TinySegmenter

import depthdistill
from depthdistill import ConfigError

PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def test_predict_on_files_and_tensors_matches_the_model_written_out(tmp_path):
    model = TinySegmenter(dropout=0.5).train()  # predict runs it in eval mode: no dropout
    image = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "room.png")
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    from_file, from_tensor = depthdistill.predict(
        model, [tmp_path / "room.png", torch.from_numpy(image).permute(2, 0, 1) / 255.0], tmp_path / "out",
        opacity=0.3, palette=PALETTE, normalization=(mean, std))
    rgb = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - torch.tensor(mean).view(3, 1, 1)) \
        / torch.tensor(std).view(3, 1, 1)
    with torch.no_grad():
        expected = model.eval()(rgb[None]).argmax(1)[0]
    for p in (from_file, from_tensor):
        assert torch.equal(p.label, expected)
        assert np.array_equal(p.mask, PALETTE[expected.numpy()])
        assert np.abs(p.overlay - (0.3 * p.mask + 0.7 * image)).max() <= 0.5 + 1e-6
    assert (from_file.name, from_tensor.name) == ("room", "image1")
    assert np.array_equal(np.asarray(Image.open(from_file.files["label"])), expected.numpy())
    assert np.array_equal(np.asarray(Image.open(from_tensor.files["mask"])), from_tensor.mask)
    assert np.array_equal(np.asarray(Image.open(from_file.files["overlay"])), from_file.overlay)


def test_predict_leaves_the_module_in_its_mode_and_writes_nothing_without_out_dir(tmp_path):
    model = TinySegmenter().train()
    [p] = depthdistill.predict(model, torch.rand(1, 3, 8, 8))
    assert model.training and p.files == {} and p.label.max() < NUM_CLASSES
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "b" / "a.png")
    with pytest.raises(ConfigError, match="two images are named"):
        depthdistill.predict(model, [tmp_path / "a.png", tmp_path / "b" / "a.png"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
def test_export_of_a_module_reproduces_it_and_leaves_it_alone(tmp_path):
    model = TinySegmenter().train()
    result = depthdistill.export(model, "torchscript", tmp_path / "student.ts.pt", height=16, width=16)
    assert result.path == tmp_path / "student.ts.pt" and result.format == "torchscript"
    assert 0 <= result.max_difference <= 1e-4 and model.training
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(result.path))(x), model.eval()(x), atol=1e-4, rtol=1e-4)


def test_iter_predict_checks_everything_first_then_writes_one_image_at_a_time(tmp_path):
    from depthdistill.inference import iter_predict

    model = TinySegmenter()
    with pytest.raises(depthdistill.MissingFileError, match="missing.png"):
        iter_predict(model, [torch.rand(3, 4, 4), tmp_path / "missing.png"], tmp_path / "out")  # not iterated
    predictions = iter_predict(model, torch.rand(2, 3, 4, 4), tmp_path / "out")
    first = next(predictions)
    assert first.files["mask"].is_file() and not (tmp_path / "out" / "image1_mask.png").exists()
    assert [p.name for p in predictions] == ["image1"] and (tmp_path / "out" / "image1_mask.png").is_file()
