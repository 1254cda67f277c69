"""The DVC stages, one module each (``prepare``, ``split``, ``tune``, ``train``, ``evaluate``,
``explain``, ``manifold``, ``register``), and what they share (:mod:`.common`, and
:mod:`.train_run` for the stages that log into the train run).

A stage module holds the stage's core: one named function, ``run``, with explicit arguments,
doing the stage's I/O around pure calls into the layers below. The scripts in ``pipelines/``
parse the command line that ``dvc.yaml`` gives them, call ``run`` through
:func:`facelens.stages.common.run_stage`, and print one summary line.
"""
