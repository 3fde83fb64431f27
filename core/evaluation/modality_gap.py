"""The modality gap: how far apart a contrastive model keeps its image and caption embeddings
(Liang et al., 2022). Measured on paired embeddings of one split:

- centroid distance: || mean(image embeddings) - mean(caption embeddings) ||;
- linear-probe separability: 5-fold cross-validated accuracy of a logistic regression that
  tells an image embedding from a caption embedding (0.5 = the modalities mix);
- 2-D views for the report: PCA and t-SNE (scikit-learn) of both sets together.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def modality_gap(image: np.ndarray, text: np.ndarray, seed: int = 0, views: bool = True) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.manifold import TSNE
    from sklearn.model_selection import cross_val_score

    image, text = np.asarray(image, np.float64), np.asarray(text, np.float64)
    x = np.concatenate([image, text])
    y = np.r_[np.zeros(len(image)), np.ones(len(text))]
    folds = int(min(5, len(image), len(text)))
    probe = cross_val_score(LogisticRegression(max_iter=2000), x, y, cv=folds) if folds >= 2 else [np.nan]
    out = {"n": int(len(image)),
           "centroid_distance": float(np.linalg.norm(image.mean(0) - text.mean(0))),
           "linear_probe_accuracy": float(np.mean(probe)),
           "mean_pair_cosine": float((image * text).sum(1).mean())}
    if views:
        out["pca"] = PCA(2, random_state=seed).fit_transform(x).tolist()
        perplexity = float(min(30.0, (len(x) - 1) / 3))
        out["tsne"] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x).tolist()
    return out


def gap_figure(gaps: dict, path: Path) -> Path:
    """One row per model: PCA and t-SNE of its image (blue) and caption (orange) embeddings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(gaps), 2, figsize=(7, 3.1 * len(gaps)), squeeze=False)
    for row, (label, g) in zip(axes, gaps.items()):
        n = g["n"]
        for ax, view in zip(row, ("pca", "tsne")):
            pts = np.asarray(g[view])
            ax.scatter(pts[:n, 0], pts[:n, 1], s=5, alpha=0.6, label="images", color="#1f77b4")
            ax.scatter(pts[n:, 0], pts[n:, 1], s=5, alpha=0.6, label="captions", color="#ff7f0e")
            ax.set_title(f"{label}: {view.upper() if view == 'pca' else 't-SNE'}\n"
                         f"centroid dist {g['centroid_distance']:.2f}, probe acc "
                         f"{g['linear_probe_accuracy']:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
