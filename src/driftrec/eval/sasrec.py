"""SASRec trained as a strong baseline should be: cross-entropy over the whole catalog, early stopping on
validation NDCG@10.

Kang & McAuley's self-attentive sequential model (2018), trained the way Klenitskiy & Vasilev (RecSys 2023,
"Turning Dross Into Gold Loss") showed it beats BERT4Rec: every position predicts the next item with a
softmax over all items instead of one sampled negative. Cornac's SASRec (one negative, a fixed 10 epochs)
is kept beside it as ``sasrec``; this one is ``sasrec-ce``.

The training loop, the early stopping on held-out events and the report are driftrec.eval.sequential's
(shared with ``gru4rec-ce``); this module is the network and its settings.

Defaults: 2 blocks, 64 dimensions, one head, Adam at 1e-3, batches of 64, patience 60 epochs (with 20, seed 1
stopped on an early plateau at epoch 36 with validation 0.088 where patience 60 reached 0.126 at epoch 147:
docs/results.md), at most 200 epochs; the input length (200) and dropout (0.5) chosen by that validation
NDCG@10 on MovieLens-100K from (50, 0.2) 0.113, (50, 0.5) 0.117 and (200, 0.5) 0.128 (docs/results.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from driftrec.eval.sequential import NextItemCE

if TYPE_CHECKING:
    import torch


class SASRecCE(NextItemCE):
    """SASRec with full cross-entropy and early stopping (see the module docstring)."""

    name = "sasrec-ce"

    def __init__(
        self,
        *,
        dim: int = 64,
        blocks: int = 2,
        max_len: int = 200,
        dropout: float = 0.5,
        learning_rate: float = 1e-3,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 60,
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
        self.blocks = blocks

    def _network(self, n_items: int) -> torch.nn.Module:
        import torch
        from torch import nn

        dim, blocks, max_len, dropout = self.dim, self.blocks, self.max_len, self.dropout

        class Network(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.items = nn.Embedding(n_items + 1, dim, padding_idx=0)
                self.positions = nn.Embedding(max_len, dim)
                self.dropout = nn.Dropout(dropout)
                layer = nn.TransformerEncoderLayer(
                    dim, nhead=1, dim_feedforward=dim, dropout=dropout, batch_first=True, norm_first=True
                )
                self.encoder = nn.TransformerEncoder(layer, blocks, enable_nested_tensor=False)
                self.norm = nn.LayerNorm(dim)
                for embedding in (self.items, self.positions):  # small initial logits (RecBole's 0.02)
                    nn.init.normal_(embedding.weight, std=0.02)
                with torch.no_grad():
                    self.items.weight[0].zero_()
                causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
                self.register_buffer("causal", causal, persistent=False)

            def forward(self, sequences: torch.Tensor) -> torch.Tensor:
                """Hidden states (batch, length, dim) of left-padded sequences; padding attends to nothing new."""
                length = sequences.shape[1]
                x = self.items(sequences) + self.positions(torch.arange(length, device=sequences.device))[None]
                x = self.dropout(x) * (sequences > 0).unsqueeze(-1)
                x = self.encoder(x, mask=self.causal[:length, :length], is_causal=True)
                return self.norm(x)

            def logits(self, hidden: torch.Tensor) -> torch.Tensor:
                return hidden @ self.items.weight.T  # tied input/output embeddings

        return Network()
