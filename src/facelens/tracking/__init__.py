"""MLflow tracking: runs and lineage (:mod:`.runs`), the registry (:mod:`.registry`) and the
``tracking`` / ``registry`` params (:mod:`.params`)."""
