"""ModuleList and ModuleDict: torch's container API, registration and state-dict keys."""

from collections import OrderedDict

import numpy as np
import pytest

from fastcnn import nn

torch = pytest.importorskip("torch")


def test_modulelist_api_as_torchs():
    a, b, c, d = nn.ReLU(), nn.Tanh(), nn.GELU(), nn.ELU()
    layers = nn.ModuleList([a, b])
    assert layers.append(c) is layers and list(layers) == [a, b, c]
    layers.insert(1, d)
    assert list(layers) == [a, d, b, c] and layers[-1] is c
    layers.insert(-1, a)  # as list.insert
    assert list(layers) == [a, d, b, a, c]
    assert isinstance(layers[1:3], nn.ModuleList) and list(layers[1:3]) == [d, b]
    del layers[0]
    assert list(layers) == [d, b, a, c] and [name for name, _ in layers.named_children()] == [
        "0",
        "1",
        "2",
        "3",
    ]
    del layers[::2]
    assert list(layers) == [b, c]
    layers[-1] = d
    assert list(layers) == [b, d] and layers.pop() is d and len(layers) == 1
    layers += [a, c]
    assert list(layers + nn.ModuleList([d])) == [b, a, c, d] and len(layers) == 3
    assert list(layers.extend(layers)) == [b, a, c, b, a, c]


def test_modulelist_state_dict_and_repr_match_torch():
    ours = nn.ModuleList([nn.Linear(3, 3, rng=i) for i in range(3)] + [nn.ReLU()])
    theirs = torch.nn.ModuleList([torch.nn.Linear(3, 3) for _ in range(3)] + [torch.nn.ReLU()])
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())  # "0.weight", ...
    same = nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.Tanh()])
    torch_same = torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU(), torch.nn.Tanh()])
    assert repr(same) == repr(torch_same)  # "(0-1): 2 x ReLU()"
    assert repr(nn.ModuleList()) == "ModuleList()"


def test_moduledict_api_as_torchs():
    relu, tanh, gelu = nn.ReLU(), nn.Tanh(), nn.GELU()
    blocks = nn.ModuleDict(OrderedDict([("b", relu), ("a", tanh)]))
    assert blocks.keys() == ["b", "a"] and "a" in blocks and "c" not in blocks
    blocks["c"] = gelu
    assert list(blocks) == ["b", "a", "c"] and blocks.values() == [relu, tanh, gelu]
    blocks["b"] = gelu  # replaced in place
    assert blocks.items() == [("b", gelu), ("a", tanh), ("c", gelu)]
    assert blocks.pop("a") is tanh and len(blocks) == 2
    blocks.update([("d", relu)])
    blocks.update(nn.ModuleDict({"e": tanh}))
    del blocks["b"]
    assert blocks.keys() == ["c", "d", "e"]
    blocks.clear()
    assert len(blocks) == 0
    with pytest.raises(KeyError, match=r"ModuleDict has no module 'x'"):
        del blocks["x"]


def test_moduledict_state_dict_matches_torch_and_children_train():
    ours = nn.ModuleDict({"conv": nn.Conv2d(1, 2, 3, rng=0), "bn": nn.BatchNorm2d(2)})
    theirs = torch.nn.ModuleDict({"conv": torch.nn.Conv2d(1, 2, 3), "bn": torch.nn.BatchNorm2d(2)})
    ours.load_state_dict(theirs.state_dict())
    assert list(ours.state_dict()) == list(theirs.state_dict())
    np.testing.assert_array_equal(ours["conv"].weight.data, theirs["conv"].weight.detach())
    ours.eval()
    assert not ours["bn"].training
    assert repr(ours).startswith("ModuleDict(\n  (conv): Conv2d(1, 2, kernel_size=(3, 3)")
