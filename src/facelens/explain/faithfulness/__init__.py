"""Is a CAM faithful? Three complementary checks, each a module of pure functions returning
JSON-serialisable dicts: localization against region masks (:mod:`.localization`), the
model-randomisation sanity check (:mod:`.sanity`) and deletion / ROAD (:mod:`.deletion`);
:mod:`.summary` bundles them for ``reports/explain/faithfulness.json``.
"""
