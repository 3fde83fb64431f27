"""The cost table's "head / score evaluations" are counted by the scoring plan from what its
workers computed, not written as formulas: a model that counts its own calls agrees."""

import numpy as np
import torch

from core.evaluation.reference import in_memory_blocks
from core.features import Embeddings
from core.models.kind import ModelKind
from core.scoring.plan import ScoringPlan
from core.scoring.worker import TileWorker, local_executor


class CountingModel(torch.nn.Module):
    """A dot-product scorer that counts every (caption, image) pair it is asked to score,
    as a block (``score``) or as listed pairs (``score_pairs``, rerank's candidates)."""

    kind = ModelKind.TWO_TOWER

    def __init__(self):
        super().__init__()
        self.pairs = 0
        self.unit = torch.nn.Parameter(torch.ones(()))  # a device for the pairs path

    def score(self, text: Embeddings, image: Embeddings) -> torch.Tensor:
        self.pairs += len(text) * len(image)
        return text.embed @ image.embed.T

    def score_pairs(self, text: Embeddings, image: Embeddings, ti, ii) -> torch.Tensor:
        self.pairs += len(ti)
        return (text.embed[ti] * image.embed[ii]).sum(-1)


def test_the_plan_counts_the_pairs_its_workers_scored():
    n, kc = 11, 3  # 11 items: the last block and the last sub-block are partial
    rng = np.random.default_rng(0)
    groups = np.arange(n)
    groups[5] = groups[4]  # one caption group of two: positives span a sub-block edge
    text = Embeddings(torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32))
    image = Embeddings(torch.as_tensor(rng.normal(size=(n, 4)), dtype=torch.float32))
    model = CountingModel()
    plan = ScoringPlan(groups, groups, block=4, chunk=2, k=3)
    execute = local_executor(TileWorker(model, in_memory_blocks(text, image, 4), plan))

    acc = plan.run_retrieval(execute)
    assert plan.pairs_scored["tile"] == n * n  # every pair of the matrix, once
    assert 0 < plan.pairs_scored["positives"] < n * n
    assert sum(plan.pairs_scored.values()) == model.pairs

    index, _ = acc.topk("t2i")
    first = {d: (index[:, :kc], np.zeros((n, kc), np.float32), np.zeros(n, np.int64))
             for d in ("t2i", "i2t")}
    before = model.pairs
    plan.rescore_candidates(execute, first)
    assert plan.pairs_scored["rerank"] == 2 * n * kc == model.pairs - before
