"""Model artifacts: a fitted engine written to MODEL_DIR as a versioned folder, and read back.

    MODEL_DIR/model-000000488548-1764636000123/
        manifest.json          version, the log position (seq) it covers, counts, fit times,
                               the settings it was fitted with, its components, the components
                               left out (registry.left_out), the engine that trained it (local, spark)
        state.npz              the model state: id maps, catalog, preference snapshots, recent
                               events, popularity, trending, co-occurrence
        components/<name>/     each registered component's params.json + state.npz
        ranker.npz             the learned second stage (LightGBM's model text and its feature inputs),
                               when one was kept
        retrieval/             the ANN indexes (hnswlib's files) and the content projection, for a
                               catalog of ANN_MIN_ITEMS or more (recommenders/retrieval.py)

Everything is numpy/scipy arrays in `.npz` files and JSON (recommenders/persistence.py): no
pickles of live objects, nothing runs code on load. A folder is written under a hidden temporary
name and renamed into place, so a reader never sees half an artifact; names sort by (seq, time),
so the newest is the last; only the newest `keep` are kept.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

from recommenders import registry
from recommenders.engine import Engine
from recommenders.hybrid import HybridPolicy
from recommenders.interaction_data import EventWeighting, InteractionData
from recommenders.persistence import load_arrays, save_arrays
from recommenders.ranker import LearnedRanker
from recommenders.retrieval import Retrieval

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST, STATE, COMPONENTS, RANKER, RETRIEVAL = "manifest.json", "state.npz", "components", "ranker.npz", "retrieval"
_NAME = re.compile(r"^model-(\d{12})-(\d{13})$")


class UnreadableArtifactError(RuntimeError):
    """An artifact folder that is complete by name but cannot be read (damaged on disk, copied by hand)."""


@dataclass(frozen=True)
class Artifact:
    """A complete artifact folder and what its manifest says."""

    path: Path
    manifest: dict

    @property
    def version(self) -> str:
        return self.path.name

    @property
    def fitted_through_seq(self) -> int:
        return int(self.manifest["fitted_through_seq"])


def write_artifact(engine: Engine, model_dir: Path, keep: int = 3, trained_by: str = "local") -> Artifact:
    """Write `engine` as a new artifact (atomically) and prune all but the newest `keep`.

    `trained_by` names the trainer (local, spark) for the record; readers never branch on it."""
    model_dir.mkdir(parents=True, exist_ok=True)
    written_ms = int(time.time() * 1000)
    name = f"model-{engine.fitted_through_seq:012d}-{written_ms:013d}"
    staging = model_dir / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        save_arrays(staging / STATE, engine.data.state())
        for component_name, component in engine.components.items():
            component.save(staging / COMPONENTS / component_name)
        if engine.ranker is not None:
            save_arrays(staging / RANKER, engine.ranker.state())
        if engine.retrieval is not None:
            engine.retrieval.save(staging / RETRIEVAL)
        manifest = {
            "format": FORMAT, "version": name, "fitted_through_seq": engine.fitted_through_seq,
            "fitted_at": engine.fitted_at, "fit_seconds": round(engine.fit_seconds, 3), "written_at": written_ms / 1000,
            "component_seconds": {k: round(v, 3) for k, v in engine.component_seconds.items()},
            "counts": {"users": engine.data.n_users, "items": engine.data.n_items,
                       "interactions": engine.data.n_interactions},
            "settings": {"event_weights": dataclasses.asdict(engine.data.weighting),
                         "hybrid": dataclasses.asdict(engine.hybrid.policy),
                         "collaborative_weights": engine.collaborative.weights},
            "components": {name: type(c).__name__ for name, c in engine.components.items()},
            "left_out": [name for name in registry.registrations() if name not in engine.components],
            "engine": trained_by,
            "ranker": engine.ranker_report,
            "retrieval": engine.retrieval is not None,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _fsync_tree(staging)
        final = model_dir / name
        os.rename(staging, final)  # atomic on one filesystem: the folder appears whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    prune(model_dir, keep)
    return Artifact(final, manifest)


def list_artifacts(model_dir: Path) -> list[Artifact]:
    """Complete artifacts, oldest first."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in sorted(model_dir.iterdir()):
        if _NAME.match(path.name) and (path / MANIFEST).is_file():
            try:
                found.append(Artifact(path, json.loads((path / MANIFEST).read_text())))
            except (OSError, ValueError):  # pruned meanwhile, or not ours
                continue
    return found


def newest_artifact(model_dir: Path) -> Artifact | None:
    artifacts = list_artifacts(model_dir)
    return artifacts[-1] if artifacts else None


def load_engine(artifact: Artifact, policy: HybridPolicy | None = None,
                collaborative_weights: dict[str, float] | None = None, ann_min_items: int | None = None) -> Engine:
    """The engine an artifact holds, at the log position it covers; nothing is refitted.

    The event weights come from the artifact (its preference rows were built with them); the
    blend's policy and weights are serving choices, so the caller's settings win. A component
    registered after the artifact was written is fitted here on the loaded state; one the trainer
    left out (manifest "left_out": too large a catalog for it) stays out. So is retrieval, the ANN
    indexes, when the catalog has `ann_min_items` items and the artifact has none; below that size
    the indexes it has are not used (every item is scored).
    """
    manifest = artifact.manifest
    if manifest.get("format") != FORMAT:
        raise UnreadableArtifactError(f"{artifact.path}: artifact format {manifest.get('format')} is not {FORMAT}")
    try:
        weighting = EventWeighting(**manifest["settings"]["event_weights"])
        data = InteractionData.from_state(load_arrays(artifact.path / STATE), weighting)
        loaded = {name: registry.component_class(name).load(artifact.path / COMPONENTS / name)
                  for name in registry.registrations() if (artifact.path / COMPONENTS / name).is_dir()}
        ranker = LearnedRanker.from_state(load_arrays(artifact.path / RANKER)) if (artifact.path / RANKER).is_file() else None
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as error:
        raise UnreadableArtifactError(f"{artifact.path}: {error!r}") from error
    components = {}
    left_out = set(manifest.get("left_out", ()))
    for name in registry.registrations():
        if name in left_out:
            continue
        if name in loaded:
            components[name] = loaded[name]
        else:
            log.warning("artifact %s has no %s: fitting it now", artifact.version, name)
            components[name] = registry.registrations()[name].factory().fit(data)
    engine = Engine(data, components, policy or HybridPolicy(**manifest["settings"]["hybrid"]),
                    collaborative_weights, ranker)
    engine.ranker_report = manifest.get("ranker", {})
    engine.fitted_through_seq = engine.position = artifact.fitted_through_seq
    engine.fitted_at, engine.fit_seconds = float(manifest["fitted_at"]), float(manifest["fit_seconds"])
    if ann_min_items is not None and data.n_items >= ann_min_items:
        if (artifact.path / RETRIEVAL).is_dir():
            try:
                engine.retrieval = Retrieval.load(artifact.path / RETRIEVAL, components["als"], components["content"],
                                                  components["item_based"])
            except (OSError, RuntimeError, KeyError, ValueError) as error:  # hnswlib says RuntimeError
                raise UnreadableArtifactError(f"{artifact.path}: {error!r}") from error
        else:
            log.warning("artifact %s has no ANN indexes for its %d items: building them now", artifact.version,
                        data.n_items)
            engine.retrieval = engine.build_retrieval()
    return engine


def prune(model_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` artifacts, and staging folders a crashed writer left behind."""
    for artifact in list_artifacts(model_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(artifact.path, ignore_errors=True)
    hour_ago = time.time() - 3600
    for staging in model_dir.glob(".tmp-model-*"):
        if staging.stat().st_mtime < hour_ago:
            shutil.rmtree(staging, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    """Flush every file to disk before the rename publishes them: a crash never leaves a torn artifact."""
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
