"""Recall@K, MRR, median rank: the one implementation against a brute-force reference, on
random matrices with ties and several correct answers per query; streaming == full."""

from __future__ import annotations

import numpy as np
import pytest

from core.metrics import (evaluate_scores, keys_to_index, keys_to_scores, order_keys,
                          ranks_from_scores, ranks_from_topk, retrieval_metrics)
from core.retrieval import StreamingRetrieval, correct_pairs, positive_keys, reduce_tile


def brute_force_rank(row, query_group, gallery_groups):
    """The documented rule, literally: sort by (score desc, index asc), find the first hit."""
    order = sorted(range(len(row)), key=lambda j: (-row[j], j))
    return next(r for r, j in enumerate(order) if gallery_groups[j] == query_group)


def random_case(seed, nt=37, ni=29, levels=4):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (nt, ni)).astype(np.float32)  # heavy ties
    image_groups = rng.integers(0, 20, ni)
    text_groups = np.concatenate([image_groups, rng.choice(image_groups, nt - ni)])
    rng.shuffle(text_groups)
    return scores, text_groups, image_groups


@pytest.mark.parametrize("seed", range(5))
def test_ranks_match_brute_force_with_ties_and_groups(seed):
    scores, tg, ig = random_case(seed)
    ranks = ranks_from_scores(scores, tg, ig, chunk=8)
    ref = [brute_force_rank(scores[q], tg[q], ig) for q in range(len(tg))]
    assert ranks.tolist() == ref
    m = retrieval_metrics(ranks, ks=(1, 5, 10), gallery_size=len(ig))
    ref = np.asarray(ref)
    assert m["R@5"] == pytest.approx(np.mean(ref < 5))
    assert m["MRR"] == pytest.approx(np.mean(1 / (ref + 1)))
    assert m["median_rank"] == pytest.approx(np.median(ref + 1))


def test_known_small_example():
    scores = np.array([[0.9, 0.1, 0.5],
                       [0.5, 0.5, 0.2],   # tie: index 0 ranks before index 1
                       [0.3, 0.8, 0.1]], dtype=np.float32)
    g = np.array([0, 1, 2])
    m = evaluate_scores(scores, g, g, ks=(1, 2))
    # t2i ranks: 0, 1 (tied with 0, lower index first), 2
    assert m["t2i"]["R@1"] == pytest.approx(1 / 3)
    assert m["t2i"]["R@2"] == pytest.approx(2 / 3)
    assert m["t2i"]["MRR"] == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)
    assert m["t2i"]["median_rank"] == 2.0


def test_order_keys_round_trip_and_order():
    s = np.array([[-1.5, 0.0, -0.0, 2.5, 1e-30, -np.inf, np.inf]], dtype=np.float32)
    idx = np.arange(7)[None, :]
    keys = order_keys(s, idx)
    assert keys_to_index(keys).tolist() == idx.tolist()
    back = keys_to_scores(keys)
    assert np.array_equal(back[0, [0, 3, 4, 5, 6]], s[0, [0, 3, 4, 5, 6]])
    order = np.argsort(-keys[0]).tolist()
    assert order == [6, 3, 4, 1, 2, 0, 5]  # +0 and -0 are equal: lower index first
    with pytest.raises(ValueError, match="NaN"):
        order_keys(np.array([np.nan]), np.array([0]))


@pytest.mark.parametrize("tile", [(5, 7), (37, 29), (1, 29), (16, 3)])
def test_streaming_equals_full_matrix(tile):
    scores, tg, ig = random_case(11)
    ti, ii = correct_pairs(tg, ig)
    pos = positive_keys(ti, ii, scores[ti, ii], len(tg), len(ig))
    acc = StreamingRetrieval(tg, ig, k=10, positives=pos)
    tiles = [(a, b) for a in range(0, len(tg), tile[0]) for b in range(0, len(ig), tile[1])]
    for a, b in reversed(tiles):  # any order
        acc.add_tile(np.arange(a, min(a + tile[0], len(tg))),
                     np.arange(b, min(b + tile[1], len(ig))), scores[a:a + tile[0], b:b + tile[1]])
    t2i, i2t = acc.ranks()
    assert t2i.tolist() == ranks_from_scores(scores, tg, ig).tolist()
    assert i2t.tolist() == ranks_from_scores(scores.T, ig, tg).tolist()
    assert acc.metrics() == evaluate_scores(scores, tg, ig)
    idx, top = acc.topk("t2i")
    ref = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    assert idx.tolist() == ref.tolist()
    assert np.array_equal(top, np.take_along_axis(scores, ref, 1))
    # ranks read off the top-K lists agree wherever they are below K
    from_lists = ranks_from_topk(idx, tg, ig)
    assert (from_lists[t2i < 10] == t2i[t2i < 10]).all() and (from_lists[t2i >= 10] == 10).all()


def test_partials_merge_like_tiles():
    scores, tg, ig = random_case(3)
    ti, ii = correct_pairs(tg, ig)
    pos = positive_keys(ti, ii, scores[ti, ii], len(tg), len(ig))
    a = StreamingRetrieval(tg, ig, k=5, positives=pos)
    b = StreamingRetrieval(tg, ig, k=5, positives=pos)
    for r in range(0, len(tg), 10):
        rows, cols = np.arange(r, min(r + 10, len(tg))), np.arange(len(ig))
        a.add_tile(rows, cols, scores[rows])
        b.add_partial(rows, cols, **reduce_tile(rows, cols, scores[rows], tg, ig, 5, pos))
    assert np.array_equal(a.t2i.keys, b.t2i.keys) and np.array_equal(a.i2t.keys, b.i2t.keys)
    assert a.metrics() == b.metrics()


def test_bad_requests_are_clear_errors():
    scores, tg, ig = random_case(0, nt=6, ni=6)
    with pytest.raises(ValueError, match="gallery holds only 6"):
        retrieval_metrics(np.zeros(6, int), ks=(1, 10), gallery_size=6)
    with pytest.raises(ValueError, match="K=10"):
        StreamingRetrieval(tg, ig, k=10)
    with pytest.raises(ValueError, match="empty"):
        StreamingRetrieval(np.array([]), np.array([]), k=1)
    with pytest.raises(ValueError, match="no correct item"):
        ranks_from_scores(scores, np.full(6, 999), ig)
