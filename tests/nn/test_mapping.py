"""The plain → depth-aware mapping, torch.ao's way: a copy per caller, a table per conversion, nothing global."""

import pytest
import torch
import torch.nn as nn

import depthdistill
from depthdistill import (
    ConfigError,
    ConfigTypeError,
    DepthAwareAvgPool2d,
    DepthAwareConv2d,
    DepthAwareModule,
    convert_to_depth_aware,
    convert_to_plain,
    default_depth_aware_mapping,
    depth_context,
    list_depth_aware,
)
from depthdistill.nn import mapping as mapping_module


class Shift(nn.Module):
    """A toy plain layer (adds a learned bias), known to no global table."""

    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return x + self.bias.view(-1, 1, 1)


class DepthAwareShift(DepthAwareModule, Shift):
    """The bias scaled by depth: ``x + b · depth``."""

    def forward(self, x):
        depth, _ = self.depth_for(x)
        return x + self.bias.view(-1, 1, 1) * depth


class ShiftSubclass(Shift):
    pass


def _net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), Shift(4), ShiftSubclass(4), nn.AvgPool2d(3, 1, 1))


def test_the_default_mapping_is_the_built_in_table_and_a_copy():
    table = default_depth_aware_mapping()
    before = dict(table)
    assert (table[nn.Conv2d], table[nn.AvgPool2d]) == (DepthAwareConv2d, DepthAwareAvgPool2d)
    assert Shift not in table
    table[Shift] = DepthAwareShift
    del table[nn.Conv2d]
    assert default_depth_aware_mapping() == before
    assert list_depth_aware(convert_to_depth_aware(_net())) == ["0"]  # the mutated copy changed nothing
    assert depthdistill.default_depth_aware_mapping is default_depth_aware_mapping


def test_a_per_call_mapping_converts_its_types_in_that_call_only():
    table = {**default_depth_aware_mapping(), Shift: DepthAwareShift}
    model = convert_to_depth_aware(_net(), mapping=table, alpha=1.0)
    assert list_depth_aware(model) == ["0", "1", "2"]
    assert type(model[1]) is DepthAwareShift
    assert isinstance(model[2], DepthAwareShift) and isinstance(model[2], ShiftSubclass)  # derived once
    assert type(convert_to_depth_aware(_net(), mapping=table)[2]) is type(model[2])
    with torch.no_grad():
        model[1].bias.fill_(1.0)
        x, depth = torch.randn(1, 3, 5, 5), torch.full((1, 1, 5, 5), 2.0)
        with depth_context(depth):
            got = model(x)
            want = model[3](model[0](x) + 2.0)
        torch.testing.assert_close(got, want)  # bias 1 scaled by 2 m; ShiftSubclass's is 0
    assert list_depth_aware(convert_to_depth_aware(_net())) == ["0"]  # the next call uses the default again
    assert [type(m) for m in convert_to_plain(model)] == [type(m) for m in _net()]


def test_a_mapping_without_avgpool_never_converts_pools():
    table = default_depth_aware_mapping()
    del table[nn.AvgPool2d]
    assert list_depth_aware(convert_to_depth_aware(_net(), mapping=table, pooling=True, include=["0", "3"])) == ["0"]
    assert list_depth_aware(convert_to_depth_aware(_net(), pooling=True)) == ["0", "3"]


def test_a_mapped_subclass_takes_precedence_over_its_base():
    class DepthAwareShiftSubclass(DepthAwareModule, ShiftSubclass):
        def forward(self, x):
            return super().forward(x)

    table = {Shift: DepthAwareShift, ShiftSubclass: DepthAwareShiftSubclass, nn.Conv2d: DepthAwareConv2d}
    model = convert_to_depth_aware(_net(), mapping=table)
    assert type(model[2]) is DepthAwareShiftSubclass
    assert type(convert_to_plain(model)[2]) is ShiftSubclass


@pytest.mark.parametrize("table, error, message", [
    ([nn.Conv2d], ConfigTypeError, "mapping must be a dict"),
    ({nn.Conv2d: DepthAwareShift}, ConfigError, "must derive from both DepthAwareModule and Conv2d"),
    ({Shift: DepthAwareConv2d}, ConfigError, "must derive from both DepthAwareModule and Shift"),
    ({"Conv2d": DepthAwareConv2d}, ConfigError, "plain_type must be an nn.Module subclass"),
])
def test_bad_mappings_are_refused(table, error, message):
    with pytest.raises(error, match=message):
        convert_to_depth_aware(_net(), mapping=table)


def test_built_in_entries_are_one_literal_table_not_import_side_effects():
    assert mapping_module.BUILT_IN_MAPPING == {nn.Conv2d: DepthAwareConv2d, nn.AvgPool2d: DepthAwareAvgPool2d}
    import inspect

    import depthdistill.nn.conv as conv
    import depthdistill.nn.pooling as pooling
    assert "register_depth_aware" not in inspect.getsource(conv) + inspect.getsource(pooling)


class _LegacyPickle:
    """Pickles as depthdistill 0.1 pickled a conv subclass's layer: the rebuild function by its old name in
    nn.conv, with the plain class alone, then the layer's state."""

    def __init__(self, layer):
        self.layer = layer

    def __reduce_ex__(self, protocol):
        from depthdistill.nn import conv

        return conv._rebuild_depth_aware, (type(self.layer).plain_class,), self.layer.__getstate__()


def test_pickles_written_before_per_call_mappings_still_load():
    import pickle

    class Legacy(nn.Conv2d):
        pass

    globals()["Legacy"] = Legacy  # picklable by name, as a user's class in a module is
    Legacy.__qualname__ = "Legacy"
    layer = convert_to_depth_aware(nn.Sequential(Legacy(1, 2, 3)), alpha=2.0)[0]
    loaded = pickle.loads(pickle.dumps(_LegacyPickle(layer)))
    assert type(loaded) is type(layer) and isinstance(loaded, DepthAwareConv2d) and loaded.alpha == 2.0
    assert torch.equal(loaded.weight, layer.weight)
