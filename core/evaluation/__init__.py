"""Evaluation in one process, without Ray: ``reference`` encodes galleries and scores them
(validation during training, the reference the distributed scoring job is checked against,
the benchmarks); ``scored`` reads finished scoring runs back; ``analyses`` computes what the
report shows beyond Recall@K (scaling, sibling accuracy, concepts, modality gap, examples)."""

from core.evaluation.reference import (encode_batches, in_memory_blocks, rerank_retrieval,
                                       score_matrix, stream_retrieval, validate)

__all__ = ["encode_batches", "in_memory_blocks", "rerank_retrieval", "score_matrix",
           "stream_retrieval", "validate"]
