"""Training on a Dask cluster: a client from the compute settings, and the pooled model
through LightGBM's Dask interface for training rows that outgrow one machine.

Dask and ``lightgbm.dask`` are imported only when a function here runs: the in-process path
never pays for them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from configs.settings import ComputeSettings, ModelSettings
from features import columns as C
from models.train import labelled, logloss, model_params, validation_mask

if TYPE_CHECKING:
    from distributed import Client


@contextmanager
def dask_client(cfg: ComputeSettings) -> Iterator[Client]:
    """A client of the cluster at ``cfg.dask_address``, or of a local cluster of
    ``cfg.n_workers`` x ``cfg.threads_per_worker`` started here and closed on exit."""
    from distributed import Client, LocalCluster

    if cfg.dask_address:
        with Client(cfg.dask_address) as client:
            yield client
        return
    with LocalCluster(n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                      processes=cfg.processes, protocol="tcp", host="127.0.0.1",
                      dashboard_address=None
                      ) as cluster, Client(cluster) as client:
        yield client


def fit_pooled_dask(rows: pd.DataFrame, feature_names: list[str], cfg: ModelSettings,
                    client: Client, partitions: int = 0) -> lgb.Booster:
    """The pooled model fitted by ``lightgbm.dask.DaskLGBMClassifier`` on the cluster of
    ``client``, the training rows split into ``partitions`` parts (0: one per worker).

    The parameters are the local model's. LightGBM's Dask interface has no early stopping:
    all ``cfg.num_boost_round`` rounds are trained, then the booster is cut at the round with
    the lowest log-loss on the validation slice. Histograms are built per worker and merged,
    so the trees are close to, not equal to, the local ones; LightGBM's distributed learning
    keeps the monotone constraints but only with the ``basic`` method."""
    import dask.dataframe as dd
    from lightgbm.dask import DaskLGBMClassifier

    rows = labelled(rows)
    is_valid = validation_mask(rows, cfg)
    train = rows.loc[~is_valid, [*feature_names, C.LABEL]].reset_index(drop=True)
    parts = partitions or max(1, len(client.scheduler_info()["workers"]))
    frame = dd.from_pandas(train, npartitions=parts)
    params: dict[str, Any] = dict(model_params(feature_names, cfg))
    params.pop("num_threads", None)  # each worker's threads, not the local setting
    clf = DaskLGBMClassifier(client=client, n_estimators=cfg.num_boost_round, **params)
    clf.fit(frame[feature_names], frame[C.LABEL].astype("int8"))
    booster = clf.to_local().booster_
    if is_valid.any():
        best = best_round(booster, rows.loc[is_valid, feature_names].to_numpy("float32"),
                          rows.loc[is_valid, C.LABEL].to_numpy("float64"))
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster


def best_round(booster: lgb.Booster, x: np.ndarray, y: np.ndarray) -> int:
    """The number of boosting rounds (from 1) with the lowest log-loss on ``x``, ``y``."""
    raw = np.zeros(len(y))
    losses = []
    for k in range(booster.num_trees()):  # binary objective: one tree per round
        raw += np.asarray(booster.predict(x, start_iteration=k, num_iteration=1,
                                          raw_score=True))
        losses.append(logloss(y, 1.0 / (1.0 + np.exp(-raw))))
    return int(np.argmin(losses)) + 1
