"""Hyper-parameter tuning: the ``tune`` params and search space (:mod:`.params`), the only
``trial.suggest_*`` calls (:mod:`.space`) and the Optuna study (:mod:`.study`)."""
