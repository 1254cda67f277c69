"""Side-by-side comparison of MLflow runs as one self-contained HTML report
(``facelens compare RUN_REF [RUN_REF ...]``).

Each reference is an MLflow run id (``runs:/<id>`` also accepted) or a registered model,
``models:/<name>@<alias>`` or ``models:/<name>/<version>``, resolved to the run that produced it
(:mod:`.refs`); :mod:`.snapshot` collects what the report needs from a run, :mod:`.sections` and
:mod:`.page` render it (pure), :mod:`.report` writes it and optionally logs it to a run.
"""
