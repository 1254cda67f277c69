"""Model serving: the MLflow pyfunc behind ``mlflow models serve`` (:mod:`.pyfunc`; its
contract in :mod:`.schema`, requests in :mod:`.requests`, responses in :mod:`.responses`, CAMs
in :mod:`.explain_rows`), how it is logged (:mod:`.log_model`) and face cropping
(:mod:`.faces`)."""
