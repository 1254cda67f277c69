"""MLflow tracking: runs and lineage (:mod:`.runs`), the registry (:mod:`.registry`), run
comparison reports (:mod:`.compare`) and the ``tracking`` / ``registry`` params
(:mod:`.params`)."""
