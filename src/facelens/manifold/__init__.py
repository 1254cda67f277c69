"""Embedding manifolds of the test split: PCA / t-SNE / UMAP layouts, their quality, alignment
across runs, and figures."""
