"""core.models.dropout: the fast CPU dropout keeps nn.Dropout's distribution."""

import pytest
import torch

from core.models.dropout import Dropout


@pytest.mark.parametrize("p", [0.1, 0.2, 0.5])
def test_dropout_drops_with_probability_p_and_rescales_the_rest(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1003) + 0.5  # an odd count: the last int64 draw is part-used
    y = Dropout(p).train()(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.003
    torch.testing.assert_close(y[kept], x[kept] / (1 - p))
    # independent draws in each row: the kept fraction of each column pair does not
    # depend on its neighbour (the 4 lanes of one int64 draw are independent)
    both = (kept[:, 0::4] & kept[:, 1::4]).float().mean().item()
    assert abs(both - (1 - p) ** 2) < 0.005


def test_dropout_follows_the_global_seed_and_is_the_identity_in_eval():
    x = torch.ones(64, 128, dtype=torch.bfloat16)
    d = Dropout(0.3).train()
    torch.manual_seed(1)
    a = d(x)
    torch.manual_seed(1)
    assert torch.equal(a, d(x))
    assert a.dtype == torch.bfloat16
    assert not torch.equal(a, d(x))  # the next draw differs
    assert d.eval()(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)
