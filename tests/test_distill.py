import math

import pytest
import torch

import planting_core as pc


def test_kd_loss_matches_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    T = 2.0
    total = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zs = sum(math.exp(v / T) for v in row_s)
        zt = sum(math.exp(v / T) for v in row_t)
        ps = [math.exp(v / T) / zs for v in row_s]
        pt = [math.exp(v / T) / zt for v in row_t]
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt))
    expected = total / 2 * T * T
    assert pc.kd_loss(s, t, T).item() == pytest.approx(expected, rel=1e-5)
    assert pc.kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_mixes_cross_entropy():
    s, t, y = torch.randn(5, 4), torch.randn(5, 4), torch.randint(0, 4, (5,))
    mixed = pc.kd_loss(s, t, 3.0, labels=y, alpha=0.25)
    expected = 0.75 * pc.kd_loss(s, t, 3.0) + 0.25 * torch.nn.functional.cross_entropy(s, y)
    assert mixed.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="needs labels"):
        pc.kd_loss(s, t, 3.0, alpha=0.5)


def test_cached_teacher_logits_equal_live_ones(data, teacher):
    cached = pc.teacher_logits(teacher, data.train.x, batch_size=50)
    teacher.eval()
    with torch.no_grad():
        for i in range(0, len(data.train), 32):  # batches of another size, as training takes them
            assert torch.allclose(cached[i:i + 32], teacher(data.train.x[i:i + 32]), atol=1e-5)
    assert cached.shape == (len(data.train), data.num_classes)


def test_kd_losses_are_kd_loss_of_each_batch():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(3, 8, 5, generator=g), torch.randn(3, 8, 5, generator=g)
    y = torch.randint(0, 5, (3, 8), generator=g)
    for alpha in (0.0, 0.3):
        many = pc.distill.kd_losses(s, t, 2.0, y, alpha)
        assert many.shape == (3,)
        for c in range(3):
            assert torch.allclose(many[c], pc.kd_loss(s[c], t[c], 2.0, y[c], alpha), atol=1e-6)


def test_one_default_temperature_in_the_library_and_the_book():
    import inspect
    from planting_core import book as pb
    defaults = {inspect.signature(f).parameters["T"].default for f in (pc.kd_loss, pc.distill.kd_losses)}
    assert defaults == {pc.TrainConfig().T} == {pb.PARAMS["T"].default}
