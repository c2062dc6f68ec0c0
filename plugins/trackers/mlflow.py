"""``mlflow``: an MLflow tracking store in the folder itself, offline: ``FOLDER/mlflow.db`` (SQLite) and
``FOLDER/mlartifacts/`` (needs ``mlflow-skinny`` with SQLAlchemy and Alembic: ``realfill[tracking]``).

``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`` shows it. One experiment per folder
(``realfill``), one MLflow run per run name (an ablation: one per run and training stage); the run config
as parameters, the scalars as metrics, the validation strips as images, the comparison table as a JSON
artifact. MLflow's plain-file store refuses new use (maintenance mode), so SQLite it is.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Literal

from realfill.components import ComponentConfig, Tracker
from realfill.config_files import dotted_keys
from realfill.hookspecs import hookimpl

STORE = "mlflow.db"
ARTIFACTS = "mlartifacts"
EXPERIMENT = "realfill"
#: MLflow's limit on a parameter's value
MAX_PARAM = 6000


class MlflowTracker(Tracker):
    name = "mlflow"
    summary = "MLflow, offline: FOLDER/mlflow.db (SQLite) + FOLDER/mlartifacts (params, metrics, images, tables)"
    needs = ("extra: tracking",)
    requires = ("mlflow", "sqlalchemy", "alembic")

    class Config(ComponentConfig):
        name: Literal["mlflow"] = "mlflow"

    def start(self, directory, run_name, config):
        from mlflow.tracking import MlflowClient  # start-up time; the extra

        # its schema set-up notices on stderr would break the one-line output (set after the import, which
        # configures mlflow's logger)
        for noisy in ("mlflow", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)

        directory = Path(directory).resolve()
        with warnings.catch_warnings():  # SQLAlchemy's deprecation notices about MLflow's own mappers
            warnings.simplefilter("ignore", DeprecationWarning)
            self.client = MlflowClient(tracking_uri=f"sqlite:///{directory / STORE}")
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         self.client.create_experiment(EXPERIMENT, artifact_location=(directory / ARTIFACTS).as_uri()))
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        from mlflow.entities import Param

        params = [Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in dotted_keys(config).items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 parameters a batch
            self.client.log_batch(self.run_id, params=[Param(p.key, p.value[:MAX_PARAM])
                                                       for p in params[start:start + 100]])

    def log_scalars(self, values, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_image(self, tag, image, step):
        self.client.log_image(self.run_id, image, key=tag, step=step)

    def log_table(self, tag, rows, step):
        self.client.log_text(self.run_id, json.dumps(rows, indent=2), f"{tag}-step{step}.json")

    def finish(self):
        self.client.set_terminated(self.run_id)


@hookimpl
def realfill_register_trackers(registry):
    registry.add(MlflowTracker)
