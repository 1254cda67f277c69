"""The ``tracking`` and ``registry`` params sections: where MLflow records runs, and the
registered model's name and aliases."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["RegisterParams", "TrackingParams"]


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackingParams(_Closed):
    """Where MLflow records runs (``MLFLOW_TRACKING_URI`` in the environment wins)."""

    tracking_uri: str = Field("sqlite:///mlflow.db", description="MLflow tracking URI.")
    experiment: str = Field("facelens", description="MLflow experiment name.")


class RegisterParams(_Closed):
    """Model-registry policy for the ``register`` stage."""

    model_name: str | None = Field(
        None, description="Registered model name; default facelens-<task>."
    )
    challenger_alias: str = Field(
        "challenger", min_length=1, description="Alias of each new version."
    )
    champion_alias: str = Field(
        "champion", min_length=1, description="Alias of the best version on the current data."
    )

    def name_for(self, task: str) -> str:
        """The registered model name: ``model_name``, or ``facelens-<task>``."""
        return self.model_name or f"facelens-{task}"

    def champion_uri(self, task: str) -> str:
        """``models:/<name>@<champion alias>``: what the CLI and serving use by default."""
        return f"models:/{self.name_for(task)}@{self.champion_alias}"
