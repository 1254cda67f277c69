"""Model serving: the MLflow pyfunc behind ``mlflow models serve`` (:mod:`.pyfunc`) and face
cropping (:mod:`.faces`)."""
