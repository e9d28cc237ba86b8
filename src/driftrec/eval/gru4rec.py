"""GRU4Rec trained as a strong baseline: a recurrent next-item model with cross-entropy over the whole
catalog and early stopping on validation NDCG@10 (``gru4rec-ce``).

Hidasi et al.'s session-based GRU (2016), trained the way Hidasi & Czapp ("The Effect of Third Party
Implementations on Reproducibility", RecSys 2023) found it competitive with SASRec: a softmax
cross-entropy loss, tied input/output item embeddings, Adam. MovieLens-100K's 1,682 items make the full
softmax cheap, so no negatives are sampled. Each user's history is one sequence (not split into sessions),
as ``sasrec-ce`` reads it; the training loop, early stopping and report are driftrec.eval.sequential's.

Defaults: one GRU layer of 64 units, dropout 0.2 on the embeddings and the hidden states, Adam at 3e-3,
batches of 64, inputs of the latest 200 items, patience 30 epochs, at most 200. The learning rate was
chosen by validation NDCG@10 on MovieLens-100K (3e-3: 0.1236 at epoch 101; 1e-3: 0.1233 at epoch 107);
the rest follows ``sasrec-ce`` and was not tuned (docs/results.md, "A second sequential baseline").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftrec.eval.sequential import NextItemCE

if TYPE_CHECKING:
    import torch


class GRU4RecCE(NextItemCE):
    """GRU4Rec with full cross-entropy and early stopping (see the module docstring)."""

    name = "gru4rec-ce"

    def __init__(
        self,
        *,
        dim: int = 64,
        layers: int = 1,
        max_len: int = 200,
        dropout: float = 0.2,
        learning_rate: float = 3e-3,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 30,
        seed: int = 0,
    ):
        super().__init__(
            dim=dim,
            max_len=max_len,
            dropout=dropout,
            learning_rate=learning_rate,
            batch_size=batch_size,
            max_epochs=max_epochs,
            patience=patience,
            seed=seed,
        )
        self.layers = layers

    def _network(self, n_items: int) -> torch.nn.Module:
        import torch
        from torch import nn
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        dim, layers, dropout = self.dim, self.layers, self.dropout

        class Network(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
                nn.init.normal_(self.items.weight, std=0.02)
                with torch.no_grad():
                    self.items.weight[0].zero_()
                self.dropout = nn.Dropout(dropout)
                self.gru = nn.GRU(dim, dim, layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)

            def forward(self, sequences: torch.Tensor) -> torch.Tensor:
                """Hidden states (batch, length, dim) of left-padded sequences: the GRU starts at each
                row's first item (the padding is moved behind it and packed away, then moved back)."""
                length = sequences.shape[1]
                lengths = (sequences > 0).sum(dim=1).clamp(min=1)  # an empty history reads one padding step
                shift = (torch.arange(length)[None] + (length - lengths)[:, None]) % length
                x = self.dropout(self.items(sequences.gather(1, shift)))  # left- to right-aligned
                packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
                out, _ = self.gru(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=length)
                back = (torch.arange(length)[None] - (length - lengths)[:, None]) % length
                out = out.gather(1, back[..., None].expand(-1, -1, dim))  # right- to left-aligned
                return self.dropout(out)

            def logits(self, hidden: torch.Tensor) -> torch.Tensor:
                return hidden @ self.items.weight.T  # tied input/output embeddings

        return Network()
