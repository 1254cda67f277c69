"""The ``facelens`` command line (Typer): :mod:`facelens.cli.app` is the entry point.

One module per command group (``data``, ``predict``, ``explain``, ``runs``, ``compare``) and
small shared modules (console output, project defaults, model access, inputs, response rows).
"""
