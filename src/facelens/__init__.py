"""facelens: tracked experiments for facial-expression deep learning with explanations.

Layers, lowest first; a module imports only from its own layer or lower ones
(``tests/unit/test_layers.py`` reads every import with ``ast`` and checks it):

0. ``errors``, ``_io``, ``_closure``, ``constants``, ``device``, ``interrupts``, ``plots``,
   ``progress``: no project imports above them;
1. ``data``: SynthFACS, readers, the safe decoder, manifest, split, torch dataset;
2. ``models``: VGG16 builder, weights, export, activation cache;
3. ``training``: fit / evaluate loops, metrics, the recipe (never MLflow, never Optuna);
4. ``explain``, ``manifold``, ``tuning``: CAMs and faithfulness, embeddings and layouts, the
   Optuna study (never MLflow: tracking enters through callbacks that a stage wires);
5. ``serving``: the MLflow pyfunc and how it is logged (it needs models and explain, not the
   tracking helpers, which sit above it because the registry stores served models);
6. ``tracking``: runs, lineage, the study tracker, the registry;
7. ``config``: composes the params models that live beside their code (each lower layer
   receives only its own section);
8. ``stages``: one module per DVC stage, I/O around the pure calls below;
9. ``cli``: the ``facelens`` command; ``pipelines/`` scripts sit beside it.

Package ``__init__`` modules import nothing, so importing one module (``config`` imports every
``params`` module) does not pull in the rest of its package, and a stage's import closure, with
it its DVC dependencies, stays exact.
"""

__version__ = "0.1.0"
