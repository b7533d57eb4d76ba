"""Weighted k-nearest-neighbour classifier on L2-normalised features (Wu et al., 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict(
    bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
    num_classes: int, k: int = 200, temperature: float = 0.1, chunk: int = 1024,
) -> torch.Tensor:
    """Predicted class of each query: the k most cosine-similar bank features vote with
    weight exp(sim / temperature)."""
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    k = min(k, bank.shape[0])
    preds = []
    for start in range(0, queries.shape[0], chunk):
        sim = queries[start:start + chunk] @ bank.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device)
        votes.scatter_add_(1, bank_labels[top_idx], weights)
        preds.append(votes.argmax(1))
    return torch.cat(preds) if preds else torch.zeros(0, dtype=torch.long, device=queries.device)


def knn_accuracy(bank, bank_labels, queries, query_labels, num_classes, k=200, temperature=0.1) -> float:
    pred = knn_predict(bank, bank_labels, queries, num_classes, k, temperature)
    return (pred == query_labels).float().mean().item()
