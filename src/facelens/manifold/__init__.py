"""Embedding manifolds of the test split, one concept per module: the ``manifold`` params
(:mod:`.params`), the embeddings and the fixed subset (:mod:`.features`), layouts
(:mod:`.layouts`), their quality (:mod:`.quality`), alignment across runs (:mod:`.alignment`)
to a per-data-version reference (:mod:`.reference`), figures (:mod:`.figures`), the
interactive page (:mod:`.html`) and the whole analysis (:mod:`.analysis`).
"""
