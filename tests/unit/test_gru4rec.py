"""GRU4Rec reads a user's items only: the left padding that lines histories up in a batch is packed away,
so the state after the last item does not depend on how much padding came before it, nor on other rows."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from driftrec.eval.gru4rec import GRU4RecCE  # noqa: E402


def network(max_len: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = GRU4RecCE(max_len=max_len, dim=8)._network(30)
    net.eval()  # no dropout
    return net


def padded(items: list[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * (length - len(items)) + items])


def test_the_state_after_a_history_does_not_depend_on_its_padding() -> None:
    short, long = network(5), network(40)  # same seed: the same weights
    history = [3, 7, 1, 12]
    with torch.no_grad():
        a = short(padded(history, 5))[0, -1]
        b = long(padded(history, 40))[0, -1]
    assert torch.allclose(a, b, atol=1e-6)


def test_a_row_is_not_changed_by_the_rows_beside_it() -> None:
    net = network(10)
    alone = padded([4, 5, 6], 10)
    batch = torch.cat([alone, padded([9, 8, 7, 6, 5, 4, 3, 2, 1, 11], 10), padded([], 10)])
    with torch.no_grad():
        by_itself = net(alone)[0]
        in_batch = net(batch)[0]
    assert torch.allclose(by_itself, in_batch, atol=1e-6)
    assert torch.count_nonzero(in_batch[:7]) == 0  # padding positions carry no state
    assert torch.count_nonzero(in_batch[7:]) > 0


def test_logits_score_every_item_with_the_tied_embeddings() -> None:
    net = network(6)
    with torch.no_grad():
        hidden = net(padded([1, 2], 6))[:, -1]
        logits = net.logits(hidden)
    assert logits.shape == (1, 31)  # padding column included; the trainer drops it
    assert torch.allclose(logits, hidden @ net.items.weight.T)
