"""Evaluation in one process, without Ray: ``reference`` encodes galleries and scores them
(validation during training, the reference the distributed scoring job is checked against,
the benchmarks); ``scored`` reads finished scoring runs back; ``analyses`` computes what the
report shows beyond Recall@K (scaling, sibling accuracy, concepts, modality gap, examples);
``metrics``, ``significance``, ``comparison``, ``caption_quality``, ``modality_gap``,
``fine_grained`` and ``cross_split`` are the measures themselves."""
