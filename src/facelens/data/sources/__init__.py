"""Readers for real face datasets, one module per source kind. Each yields
:class:`~facelens.data.sources.records.RawRecord` objects and writes nothing.

A record carries a lazy ``load()`` returning the encoded image bytes, so every image, whatever
its origin, is decoded by :func:`facelens.data.images.decode_image`. Records already known to
be bad (unknown class folder, malformed CSV row, non-numeric score...) carry a ``problem``
``(reason, detail)`` and are quarantined by ``prepare`` without being decoded.

Supported layouts:

* :mod:`.imagefolder`: ``root/<split>/<class>/*`` (the FER2013 image release: ``train/``
  and ``test/``) or ``root/<class>/*``. Class folders are expression names
  (:data:`facelens.constants.EXPRESSIONS`, case-insensitive). Split folders (case-insensitive):
  ``train``/``training`` -> train, ``val``/``valid``/``validation``/``publictest`` -> val,
  ``test``/``privatetest`` -> test. ``PublicTest`` maps to *val*, as the FER2013 CSV's ``Usage``
  does, so both releases of the same dataset split alike.
* :mod:`.fer2013_csv`: ``emotion,pixels[,Usage]`` (Kaggle ``fer2013.csv``; ``Usage`` is
  optional: Training -> train, PublicTest -> val, PrivateTest -> test).
* :mod:`.attributes_table`: an images directory plus a CSV/XLSX table whose first column
  is the image file name and whose other columns are attribute scores (10k US Adult Faces).

SynthFACS is no file source: ``prepare`` renders it (:mod:`facelens.data.synth`).
"""
