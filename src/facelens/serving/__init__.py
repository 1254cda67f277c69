"""Model serving: the MLflow pyfunc behind ``mlflow models serve``."""

from facelens.serving.pyfunc import FaceLensModel, encode_image, model_signature, output_columns

__all__ = ["FaceLensModel", "encode_image", "model_signature", "output_columns"]
