import numpy as np
import torch

from recindex.config import ModelConfig
from recindex.models.two_tower import TwoTowerModel, pad_sequences


def _model(tiny_synthetic, **kwargs):
    torch.manual_seed(0)
    return TwoTowerModel.for_data(tiny_synthetic, ModelConfig(dim=16, heads=2, max_len=8, **kwargs)).eval()


def test_padding_never_produces_nan_and_outputs_are_unit_length(tiny_synthetic):
    model = _model(tiny_synthetic)
    padded, lengths = pad_sequences([np.array([1]), np.arange(20)], 8, model.n_items)
    states = model.user_states(torch.as_tensor(padded), torch.as_tensor(lengths))
    assert torch.isfinite(states).all()
    assert torch.allclose(states.norm(dim=-1), torch.ones(2, 8), atol=1e-5)
    assert lengths.tolist() == [1, 8] and padded[1].tolist() == list(range(12, 20))


def test_sasrec_encoder_is_causal(tiny_synthetic):
    model = _model(tiny_synthetic)
    a = torch.tensor([[1, 2, 3, 4]])
    b = torch.tensor([[1, 2, 9, 10]])
    lengths = torch.tensor([4])
    with torch.no_grad():
        sa, sb = model.user_states(a, lengths), model.user_states(b, lengths)
    assert torch.allclose(sa[0, :2], sb[0, :2], atol=1e-6)  # the future does not leak into the past
    assert not torch.allclose(sa[0, 2], sb[0, 2])


def test_mean_encoder_is_causal_running_mean(tiny_synthetic):
    model = _model(tiny_synthetic, encoder="mean")
    with torch.no_grad():
        s1 = model.user_states(torch.tensor([[5, 6, 7]]), torch.tensor([3]))
        s2 = model.user_states(torch.tensor([[5, 6, 8]]), torch.tensor([3]))
    assert torch.allclose(s1[0, :2], s2[0, :2])


def test_untrained_item_uses_content_features_only(tiny_synthetic):
    model = _model(tiny_synthetic)
    mask = np.ones(model.n_items, bool)
    mask[5] = False
    model.set_trained_items(mask)
    with torch.no_grad():
        before = model.item_vectors(torch.tensor([5, 6]))
        model.item_tower.ids.weight[5] += 10.0
        model.item_tower.ids.weight[6] += 10.0
        after = model.item_vectors(torch.tensor([5, 6]))
    assert torch.allclose(before[0], after[0])  # the cold item ignores its ID embedding
    assert not torch.allclose(before[1], after[1])


def test_id_dropout_mask_leaves_content_only(tiny_synthetic):
    model = _model(tiny_synthetic)
    keep = torch.ones(model.n_items + 1, dtype=torch.bool)
    keep[3] = False
    with torch.no_grad():
        content_only = model.item_tower.attributes(model.item_tower.tokens[torch.tensor([3])])
        dropped = model.item_tower(torch.tensor([3, 4]), keep)
        full = model.item_tower(torch.tensor([3, 4]))
    assert torch.allclose(dropped[0], content_only[0])
    assert torch.allclose(dropped[1], full[1])
    assert not torch.allclose(dropped[0], full[0])
