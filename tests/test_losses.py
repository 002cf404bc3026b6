"""VTCE and its schedule against Eq. 9–11 written out with plain exp/log."""

import math

import pytest
import torch

from depthdistill import VTCELoss, vtce_loss, vtce_temperature


@pytest.mark.parametrize("epoch", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9, 1.0])
def test_temperature_formula(epoch, beta):
    assert vtce_temperature(epoch, beta) == pytest.approx(math.exp(-beta * (epoch**2 - epoch + 2) / 2), rel=1e-12)


def test_temperature_values_quoted_in_the_paper_notes():
    assert [round(vtce_temperature(e), 3) for e in range(4)] == [0.407, 0.407, 0.165, 0.027]
    with pytest.raises(ValueError):
        vtce_temperature(-1)


def _formula(student, teacher, t, mask):
    """−Σ_i T q_t,i log q_s,i per pixel by explicit exp/sum, mean over masked pixels."""
    total, count = 0.0, 0
    b, c, h, w = student.shape
    for n in range(b):
        for y in range(h):
            for x in range(w):
                if mask is not None and not mask[n, y, x]:
                    continue
                zs = [float(student[n, i, y, x]) / t for i in range(c)]
                zt = [float(teacher[n, i, y, x]) / t for i in range(c)]
                ss, st = sum(math.exp(v) for v in zs), sum(math.exp(v) for v in zt)
                total += -sum(t * (math.exp(zt[i]) / st) * math.log(math.exp(zs[i]) / ss) for i in range(c))
                count += 1
    return total / count


@pytest.mark.parametrize("with_mask", [False, True])
def test_loss_against_formula(with_mask):
    student = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    teacher = torch.randn(2, 4, 3, 5, dtype=torch.float64)
    mask = torch.rand(2, 3, 5) > 0.4 if with_mask else None
    t = vtce_temperature(1)
    assert vtce_loss(student, teacher, t, mask).item() == pytest.approx(_formula(student, teacher, t, mask), rel=1e-10)


def test_teacher_is_detached_and_empty_mask_is_zero():
    student = torch.randn(1, 3, 2, 2, requires_grad=True)
    teacher = torch.randn(1, 3, 2, 2, requires_grad=True)
    vtce_loss(student, teacher, 0.5).backward()
    assert student.grad is not None and teacher.grad is None
    empty = vtce_loss(student, teacher.detach(), 0.5, torch.zeros(1, 2, 2, dtype=torch.bool))
    assert empty.item() == 0.0 and empty.requires_grad


def test_module_uses_schedule_and_custom_schedule():
    s, t = torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2)
    assert VTCELoss(beta=0.5)(s, t, epoch=2).item() == pytest.approx(vtce_loss(s, t, vtce_temperature(2, 0.5)).item())
    custom = VTCELoss(schedule=lambda e: 4.0)
    assert custom.temperature(9) == 4.0
    assert custom(s, t, epoch=9).item() == pytest.approx(vtce_loss(s, t, 4.0).item())


def test_errors():
    with pytest.raises(ValueError, match="differ"):
        vtce_loss(torch.randn(1, 3, 2, 2), torch.randn(1, 4, 2, 2), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        vtce_loss(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), -1.0)
    with pytest.raises(ValueError, match="mask"):
        vtce_loss(torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2), 1.0, torch.ones(2, 2, dtype=torch.bool))


def _limit(student, teacher):
    """lim T→0 of −T Σ q_t log q_s: the student's margin max_j z_s,j − z_s,k at the teacher's top class k."""
    k = teacher.argmax(dim=1, keepdim=True)
    return (student.amax(dim=1) - student.gather(1, k).squeeze(1)).mean()


@pytest.mark.parametrize("epoch", [15, 30, 42, 60])
def test_late_epochs_stay_finite_and_reach_the_limit(epoch):
    # Eq. 10 puts T below float32's range from epoch 15 (3.7e-42) and at exactly 0.0 from epoch 42
    student = (torch.randn(2, 5, 3, 3) * 4).requires_grad_()
    teacher = torch.randn(2, 5, 3, 3) * 4
    t = vtce_temperature(epoch)
    loss = vtce_loss(student, teacher, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all()
    torch.testing.assert_close(loss, _limit(student.detach(), teacher), rtol=1e-5, atol=1e-5)


def test_small_temperature_matches_formula_in_float64():
    student = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    teacher = torch.randn(1, 4, 2, 3, dtype=torch.float64)
    for t in (0.05, 0.01):  # z/T stays within float64 here, so the naive formula is a valid reference
        assert vtce_loss(student, teacher, t).item() == pytest.approx(_formula(student, teacher, t, None), rel=1e-9)
