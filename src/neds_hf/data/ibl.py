"""Loading one IBL session through ONE-api into a :class:`~neds_hf.data.raw.RawSession`.

The same code runs online (``ONE(base_url='https://openalyx.internationalbrainlab.org')``,
datasets downloaded on demand) and offline (``One(cache_dir=..., mode='local')`` on a local
cache such as the synthetic one of :mod:`neds_hf.data.synthetic`): only ONE methods that both
offer are used (``get_details``, ``list_collections``, ``list_datasets``, ``load_object`` with
``download_only=True``), and files are decoded with ONE's own ALF reader, except ``.npy``
arrays, which are read without pickle support so that a cache cannot run code
(:func:`read_alf_file`).

What is loaded, following the IBL conventions (brainbox ``SpikeSortingLoader`` /
``SessionLoader`` semantics, re-implemented on one-api + iblatlas only):

* probes: every ``alf/probeXX`` collection of the session (plain ``One`` has no ``eid2pid``);
* spike sorting per probe from ``alf/<probe>/iblsorter``, else ``alf/<probe>/pykilosort``, else
  the shortest ``alf/<probe>*`` collection holding ``spikes.times``; ``revision`` is passed to
  ONE (None = the default / newest revision). ``spikes.clusters`` is cast to int64 before any
  arithmetic (it is uint16 in current sorts). Probes are merged with a cumulative offset of
  cluster rows and spikes are stably sorted by time;
* clusters: ``metrics`` (``firing_rate``, ``label``), ``uuids``, ``depths`` and the peak channel,
  whose ``channels.brainLocationIds_ccf_2017`` gives the Allen id, mapped to Allen, Beryl and
  Cosmos acronyms by ``iblatlas.regions.BrainRegions`` (offline); ``channels.mlapdv`` gives the
  coordinates (µm from bregma). Channels come from ``alf/<probe>/electrodeSites``, else the
  sorting collection, else ``alf/<probe>``;
* the trials table (``alf``), wheel position / timestamps, and whisker ROI motion energy of the
  left camera, else the right camera. A camera with more timestamps than frames keeps the
  **last** ``n_frames`` timestamps (IBL convention); fewer timestamps than frames is an error;
* lick times (``alf/licks.times``) when the session has them: a session without them is loaded
  with ``lick_times=None`` (its licking rate is then missing, not a reason to skip it); lick
  times that are not finite are an error, unsorted ones are sorted.
* the left camera's paw pose (:func:`neds_hf.data.pose.load_paw_pose`), optional: a session
  without it is loaded with ``paw_pose.absent`` saying so.

Errors (defined in :mod:`neds_hf.data.errors`): an unknown session id raises
:class:`SessionNotFoundError`; absent data raise :class:`MissingDataError`; an unreadable file
raises :class:`CorruptedFileError` naming it; inconsistent contents raise ``ValueError`` naming
the session, probe and datasets.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import CorruptedFileError, IBLDataError, MissingDataError, SessionNotFoundError
from .pose import load_paw_pose
from .raw import CLUSTER_COLUMNS, TRIAL_COLUMNS, RawSession

__all__ = [
    "OPENALYX_PASSWORD",
    "OPENALYX_URL",
    "CorruptedFileError",
    "IBLDataError",
    "MissingDataError",
    "SessionNotFoundError",
    "list_probes",
    "load_session",
    "make_one",
    "read_alf_file",
    "select_spike_sorting_collection",
]

_logger = logging.getLogger(__name__)

#: The public IBL database and its public password.
OPENALYX_URL = "https://openalyx.internationalbrainlab.org"
OPENALYX_PASSWORD = "international"

#: Default spike sorter preference (first found wins), as in brainbox.
DEFAULT_SPIKE_SORTER_PREFERENCE = ("iblsorter", "pykilosort")

#: Cameras tried for whisker motion energy, in order.
MOTION_ENERGY_CAMERAS = ("left", "right")

_PROBE_COLLECTION = re.compile(r"^alf/(probe\d{2}[a-z]?)(?:/|$)")


def make_one(
    cache_dir: str | Path | None = None,
    online: bool = False,
    *,
    base_url: str = OPENALYX_URL,
    username: str | None = None,
    password: str | None = OPENALYX_PASSWORD,
    silent: bool = True,
    **kwargs: Any,
):
    """Create the ONE instance the loader works with.

    Offline (default), a local ``one.api.One`` on the cache tables in ``cache_dir``; it never
    touches the network and raises ``FileNotFoundError`` when the tables are absent. Online, a
    ``OneAlyx`` on ``base_url`` (the public IBL server by default) downloading into
    ``cache_dir`` (ONE's default location when None); extra keyword arguments go to ``ONE``.
    """
    if not online:
        if cache_dir is None:
            raise ValueError("an offline ONE needs cache_dir (a folder with sessions.pqt)")
        cache_dir = Path(cache_dir)
        missing = [n for n in ("sessions.pqt", "datasets.pqt") if not (cache_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{cache_dir} is not a ONE cache: {', '.join(missing)} not found "
                "(write one with `neds-hf make-synthetic` or download with --online)"
            )
        from one.api import One

        return One(cache_dir=str(cache_dir), mode="local")
    from one.api import ONE

    options: dict[str, Any] = {"base_url": base_url, "silent": silent, **kwargs}
    if username is not None:
        options["username"] = username
    if password is not None:
        options["password"] = password
    if cache_dir is not None:
        options["cache_dir"] = str(cache_dir)
    return ONE(**options)


@functools.lru_cache(maxsize=1)
def _brain_regions():
    from iblatlas.regions import BrainRegions

    return BrainRegions()


def _is_not_found(error: BaseException) -> bool:
    from one.alf.exceptions import ALFObjectNotFound

    if isinstance(error, (ALFObjectNotFound, KeyError)):
        return True
    response = getattr(error, "response", None)
    return getattr(response, "status_code", None) == 404


def _session_details(one: Any, eid: str) -> Any:
    """The session record (lab, subject, date...) or :class:`SessionNotFoundError`."""
    try:
        details = one.get_details(eid)
    except ValueError as error:  # unparsable id
        raise SessionNotFoundError(eid, f"not a valid session id ({error})") from error
    except Exception as error:
        if _is_not_found(error):
            raise SessionNotFoundError(eid, f"absent from {_describe(one)}") from error
        raise
    if details is None or len(details) == 0:
        raise SessionNotFoundError(eid, f"absent from {_describe(one)}")
    return details


def _describe(one: Any) -> str:
    cache_dir = getattr(one, "cache_dir", None)
    base_url = getattr(getattr(one, "alyx", None), "base_url", None)
    if base_url and not getattr(one, "offline", True):
        return f"the ONE database {base_url}"
    return f"the ONE cache {cache_dir}"


def list_probes(one: Any, eid: str) -> list[str]:
    """Probe names of a session (``probe00``...), from its ``alf/probeXX`` collections."""
    probes = set()
    for collection in one.list_collections(eid):
        match = _PROBE_COLLECTION.match(str(collection))
        if match:
            probes.add(match.group(1))
    return sorted(probes)


def _revision_available(rel_paths: Sequence[str], revision: str | None) -> bool:
    """Whether ONE's last-before rule finds a copy at or before ``revision``."""
    from one.alf.path import rel_path_parts

    if revision is None:
        return len(rel_paths) > 0
    revisions = [(rel_path_parts(p, assert_valid=False)[1] or "") for p in rel_paths]
    return any(r <= revision for r in revisions)


def select_spike_sorting_collection(
    one: Any,
    eid: str,
    probe: str,
    preference: Sequence[str] = DEFAULT_SPIKE_SORTER_PREFERENCE,
    revision: str | None = None,
) -> str | None:
    """The collection to load a probe's spike sorting from, or None when it has none.

    ``alf/<probe>/<sorter>`` for the first sorter of ``preference`` that holds
    ``spikes.times`` (at or before ``revision``), else the shortest ``alf/<probe>*`` collection
    that does.
    """
    from one.alf.path import rel_path_parts

    datasets = one.list_datasets(
        eid, collection=f"alf/{probe}*", filename="spikes.times*", details=True
    )
    by_collection: dict[str, list[str]] = {}
    for rel_path in datasets["rel_path"] if len(datasets) else []:
        collection = rel_path_parts(rel_path, assert_valid=False)[0] or ""
        if collection == f"alf/{probe}" or collection.startswith(f"alf/{probe}/"):
            by_collection.setdefault(collection, []).append(rel_path)
    candidates = {c: p for c, p in by_collection.items() if _revision_available(p, revision)}
    for sorter in preference:
        collection = f"alf/{probe}/{sorter}"
        if collection in candidates:
            return collection
    if candidates:
        return min(candidates, key=lambda c: (len(c), c))
    return None


def _object_files(
    one: Any,
    eid: str,
    obj: str,
    collection: str,
    revision: str | None,
    attributes: Sequence[str] | None = None,
) -> list[Path]:
    """Local paths of an ALF object's datasets (downloaded first when online)."""
    kwargs: dict[str, Any] = {}
    if attributes is not None:
        kwargs["attribute"] = list(attributes)
    files = one.load_object(
        eid, obj, collection=collection, revision=revision, download_only=True, **kwargs
    )
    return [Path(f) for f in files if f]


def read_alf_file(path: Path) -> Any:
    """Decode one ALF file; a ``.npy`` is read with ``allow_pickle=False``.

    ONE's reader (``one.alf.io.load_file_content``) loads ``.npy`` files with
    ``allow_pickle=True``, which runs any code a pickle placed in a cache carries; arrays are
    therefore read here without pickle support (a pickled ``.npy`` is refused), and only the
    other formats (Parquet, CSV, JSON) go through ONE's reader. Returns None for an empty file.
    """
    from one.alf import io as alfio

    if path.suffix != ".npy":
        return alfio.load_file_content(path)
    if path.stat().st_size == 0:
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickle" in str(error).lower() or "object arrays" in str(error).lower():
            raise ValueError(
                "the file holds pickled Python objects, which are never loaded from data "
                "files (unpickling could run code); expected a plain numeric .npy array"
            ) from error
        raise
    return array.flatten() if array.ndim == 2 and array.shape[1] == 1 else array


def _read_object(eid: str, files: Sequence[Path]) -> dict[str, Any]:
    """Decode an ALF object's files, naming the file that cannot be read."""
    contents: dict[str, Any] = {}
    for path in files:
        try:
            contents[path.name] = read_alf_file(path)
        except Exception as error:  # numpy / pyarrow / csv decoders raise many types
            raise CorruptedFileError(eid, path, error) from error
        if contents[path.name] is None:
            raise CorruptedFileError(eid, path, ValueError("file decoded to nothing"))
    bunch: dict[str, Any] = {}
    for path in files:
        parts = path.name.split(".")
        # _namespace_object.attribute[_timescale][.extra].ext -> key: attribute
        bunch[parts[1]] = contents[path.name]
    return bunch


def _load_object(
    one: Any,
    eid: str,
    obj: str,
    collection: str,
    revision: str | None,
    attributes: Sequence[str],
    what: str,
) -> dict[str, Any]:
    """Load the listed attributes of an object; :class:`MissingDataError` if any is absent.

    The returned dict maps attribute -> content, plus ``"_files"``: the local paths read.
    """
    from one.alf.exceptions import ALFObjectNotFound

    try:
        files = _object_files(one, eid, obj, collection, revision, attributes)
    except ALFObjectNotFound as error:
        raise MissingDataError(
            eid, f"no {what} ({obj}.* not found in collection {collection!r})"
        ) from error
    bunch = _read_object(eid, files)
    absent = [a for a in attributes if a not in bunch]
    if absent:
        raise MissingDataError(
            eid,
            f"{what} lacks {', '.join(f'{obj}.{a}' for a in absent)} in collection {collection!r}",
        )
    bunch["_files"] = files
    return bunch


def _as_1d(eid: str, where: str, name: str, values: Any, dtype: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"session {eid} {where}: {name} has shape {array.shape}, expected 1-D")
    return array.astype(dtype, copy=False)


def _load_channels(
    one: Any, eid: str, probe: str, sorting_collection: str, revision: str | None
) -> tuple[dict[str, np.ndarray], str]:
    """Allen ids and mlapdv of a probe's channels, and the dataset they came from."""
    from one.alf.exceptions import ALFObjectNotFound

    attributes = ("brainLocationIds_ccf_2017", "mlapdv")
    searched = []
    for obj, collection in (
        ("electrodeSites", f"alf/{probe}"),
        ("channels", sorting_collection),
        ("channels", f"alf/{probe}"),
    ):
        searched.append(f"{collection}/{obj}")
        try:
            files = _object_files(one, eid, obj, collection, revision, attributes)
        except ALFObjectNotFound:
            continue
        bunch = _read_object(eid, files)
        if all(a in bunch for a in attributes):
            return bunch, f"{collection}/{obj}"
    raise MissingDataError(
        eid,
        f"{probe}: no channel brain locations (brainLocationIds_ccf_2017 + mlapdv) in "
        + ", ".join(searched),
    )


def _region_acronyms(eid: str, probe: str, allen_ids: np.ndarray) -> dict[str, np.ndarray]:
    """Allen, Beryl and Cosmos acronyms of Allen ids, refusing ids unknown to iblatlas."""
    regions = _brain_regions()
    known = np.isin(allen_ids, regions.id)
    if not np.all(known):
        unknown = sorted({int(i) for i in allen_ids[~known]})
        raise ValueError(
            f"session {eid} {probe}: channels.brainLocationIds_ccf_2017 holds Allen ids unknown "
            f"to iblatlas.regions.BrainRegions: {unknown}"
        )
    acronyms = {
        "region_allen": regions.id2acronym(allen_ids),
        "region_beryl": regions.id2acronym(allen_ids, mapping="Beryl"),
        "region_cosmos": regions.id2acronym(allen_ids, mapping="Cosmos"),
    }
    for name, values in acronyms.items():
        if len(values) != len(allen_ids):  # id2acronym drops what it cannot map
            raise ValueError(f"session {eid} {probe}: {name} mapping lost ids")
    return acronyms


def _load_probe(
    one: Any, eid: str, probe: str, collection: str, revision: str | None
) -> dict[str, Any]:
    """Spikes (int64 cluster rows) and the clusters table of one probe, validated."""
    where = f"{probe} ({collection})"
    spikes = _load_object(
        one, eid, "spikes", collection, revision, ("times", "clusters"), f"{probe} spike sorting"
    )
    clusters = _load_object(
        one,
        eid,
        "clusters",
        collection,
        revision,
        ("channels", "depths", "metrics", "uuids"),
        f"{probe} clusters",
    )
    spike_times, spike_clusters = _validated_spikes(eid, where, spikes)
    cluster_columns = _validated_clusters(eid, where, clusters)
    n_clusters = len(cluster_columns["channel"])
    if len(spike_clusters) and (spike_clusters.min() < 0 or spike_clusters.max() >= n_clusters):
        raise ValueError(
            f"session {eid} {where}: spikes.clusters values span "
            f"{spike_clusters.min()}..{spike_clusters.max()} but clusters.* has "
            f"{n_clusters} rows"
        )
    channels, channels_source = _load_channels(one, eid, probe, collection, revision)
    locations = _cluster_locations(eid, probe, where, channels, channels_source, cluster_columns)
    table = pd.DataFrame(
        {
            "probe": np.full(n_clusters, probe, dtype=object),
            "cluster_id": np.arange(n_clusters, dtype=np.int64),
            "cluster_uuid": cluster_columns["uuids"],
            **locations["acronyms"],
            "depth_um": cluster_columns["depths"],
            "x_um": locations["coordinates"][:, 0],
            "y_um": locations["coordinates"][:, 1],
            "z_um": locations["coordinates"][:, 2],
            "qc_label": cluster_columns["metrics"]["label"].to_numpy(dtype=np.float64),
            "firing_rate_hz": cluster_columns["metrics"]["firing_rate"].to_numpy(np.float64),
            "region_allen_id": locations["allen_ids"],
            "channel": cluster_columns["channel"],
        }
    )
    revisions = sorted({_revision_of(path) or "" for path in spikes["_files"]})
    return {
        "spike_times": spike_times,
        "spike_clusters": spike_clusters,
        "clusters": table,
        "collection": collection,
        "revision": revisions[-1] if revisions else "",
        "channels_source": channels_source,
    }


def _validated_spikes(
    eid: str, where: str, spikes: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """``spikes.times`` (float64, finite) and ``spikes.clusters`` (int64) of equal length."""
    spike_times = _as_1d(eid, where, "spikes.times", spikes["times"], np.float64)
    # Cast before any arithmetic: spikes.clusters is uint16 in current sorts.
    spike_clusters = _as_1d(eid, where, "spikes.clusters", spikes["clusters"], np.int64)
    if len(spike_times) != len(spike_clusters):
        raise ValueError(
            f"session {eid} {where}: spikes.times has {len(spike_times)} entries but "
            f"spikes.clusters has {len(spike_clusters)}"
        )
    if not np.all(np.isfinite(spike_times)):
        raise ValueError(f"session {eid} {where}: spikes.times contains NaN or inf")
    return spike_times, spike_clusters


def _validated_clusters(eid: str, where: str, clusters: dict[str, Any]) -> dict[str, Any]:
    """Peak channel, depth, metrics table and uuids of the clusters, all of one length."""
    channels_of_cluster = _as_1d(eid, where, "clusters.channels", clusters["channels"], np.int64)
    depths = _as_1d(eid, where, "clusters.depths", clusters["depths"], np.float64)
    metrics = clusters["metrics"]
    uuids = clusters["uuids"]
    if isinstance(uuids, pd.DataFrame):
        if "uuids" not in uuids.columns:
            raise ValueError(f"session {eid} {where}: clusters.uuids.csv lacks a 'uuids' column")
        uuids = uuids["uuids"]
    uuids = np.asarray(pd.Series(uuids).astype(str))
    if not isinstance(metrics, pd.DataFrame):
        raise ValueError(f"session {eid} {where}: clusters.metrics is not a table")
    missing_metrics = [c for c in ("firing_rate", "label") if c not in metrics.columns]
    if missing_metrics:
        raise ValueError(f"session {eid} {where}: clusters.metrics lacks {missing_metrics}")
    lengths = {
        "clusters.channels": len(channels_of_cluster),
        "clusters.depths": len(depths),
        "clusters.metrics": len(metrics),
        "clusters.uuids": len(uuids),
    }
    if len(set(lengths.values())) != 1:
        raise ValueError(f"session {eid} {where}: clusters datasets differ in length {lengths}")
    return {"channel": channels_of_cluster, "depths": depths, "metrics": metrics, "uuids": uuids}


def _cluster_locations(
    eid: str,
    probe: str,
    where: str,
    channels: dict[str, Any],
    channels_source: str,
    cluster_columns: dict[str, Any],
) -> dict[str, Any]:
    """Allen id, region acronyms and mlapdv coordinates of each cluster's peak channel."""
    channels_of_cluster = cluster_columns["channel"]
    allen_ids = _as_1d(
        eid, where, "brainLocationIds_ccf_2017", channels["brainLocationIds_ccf_2017"], np.int64
    )
    mlapdv = np.asarray(channels["mlapdv"], dtype=np.float64)
    if mlapdv.ndim != 2 or mlapdv.shape != (len(allen_ids), 3):
        raise ValueError(
            f"session {eid} {where}: {channels_source}.mlapdv has shape {mlapdv.shape}, "
            f"expected ({len(allen_ids)}, 3)"
        )
    if len(channels_of_cluster) and (
        channels_of_cluster.min() < 0 or channels_of_cluster.max() >= len(allen_ids)
    ):
        raise ValueError(
            f"session {eid} {where}: clusters.channels values span "
            f"{channels_of_cluster.min()}..{channels_of_cluster.max()} but "
            f"{channels_source} has {len(allen_ids)} channels"
        )
    cluster_allen_ids = allen_ids[channels_of_cluster]
    return {
        "allen_ids": cluster_allen_ids,
        "acronyms": _region_acronyms(eid, probe, cluster_allen_ids),
        "coordinates": mlapdv[channels_of_cluster],  # (n_clusters, 3) µm
    }


def _revision_of(path: Path) -> str | None:
    for part in reversed(Path(path).parts):
        if part.startswith("#") and part.endswith("#") and len(part) > 2:
            return part.strip("#")
    return None


def _merge_probes(
    probe_data: Sequence[dict[str, Any]],
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Concatenate probes: global cluster row = probe offset + cluster id; sort spikes by time."""
    offsets = np.cumsum([0] + [len(p["clusters"]) for p in probe_data])[:-1]
    spike_times = np.concatenate([p["spike_times"] for p in probe_data])  # (n_spikes,)
    spike_clusters = np.concatenate(
        [p["spike_clusters"] + offset for p, offset in zip(probe_data, offsets)]
    )  # (n_spikes,) int64
    order = np.argsort(spike_times, kind="stable")
    clusters = pd.concat([p["clusters"] for p in probe_data], ignore_index=True)
    return spike_times[order], spike_clusters[order], clusters


def _load_trials(one: Any, eid: str, revision: str | None) -> pd.DataFrame:
    from one.alf.exceptions import ALFObjectNotFound

    try:
        files = _object_files(one, eid, "trials", "alf", revision)
    except ALFObjectNotFound as error:
        raise MissingDataError(eid, "no trials (alf/_ibl_trials.* not found)") from error
    columns: dict[str, np.ndarray] = {}
    # Loose _ibl_trials.<attribute> files first, the table last (its columns win, as in ONE).
    for path in sorted(files, key=lambda p: p.name.split(".")[1] == "table"):
        content = _read_object(eid, [path])
        attribute, value = next(iter(content.items()))
        if isinstance(value, pd.DataFrame):
            for name in value.columns:
                columns[str(name)] = value[name].to_numpy()
        else:
            array = np.asarray(value)
            if array.ndim == 2:
                for k in range(array.shape[1]):
                    columns[f"{attribute}_{k}"] = array[:, k]
            else:
                columns[attribute] = array
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"session {eid}: trials datasets differ in length {lengths}")
    ordered = [c for c in TRIAL_COLUMNS if c in columns]
    ordered += sorted(c for c in columns if c not in ordered)
    trials = pd.DataFrame({name: columns[name] for name in ordered})
    missing = [c for c in TRIAL_COLUMNS if c not in trials.columns]
    if missing:
        raise MissingDataError(eid, f"trials lack the columns {missing}")
    if len(trials) == 0:
        raise MissingDataError(eid, "the trials table is empty (0 trials)")
    return trials


def _load_wheel(one: Any, eid: str, revision: str | None) -> tuple[np.ndarray, np.ndarray]:
    wheel = _load_object(one, eid, "wheel", "alf", revision, ("position", "timestamps"), "wheel")
    timestamps = _as_1d(eid, "wheel", "_ibl_wheel.timestamps", wheel["timestamps"], np.float64)
    position = _as_1d(eid, "wheel", "_ibl_wheel.position", wheel["position"], np.float64)
    if len(timestamps) != len(position):
        raise ValueError(
            f"session {eid}: _ibl_wheel.timestamps has {len(timestamps)} entries but "
            f"_ibl_wheel.position has {len(position)}"
        )
    return timestamps, position


def _load_motion_energy(
    one: Any, eid: str, revision: str | None
) -> tuple[np.ndarray, np.ndarray, str, dict[str, Any]]:
    """Whisker motion energy and its frame times: left camera, else right camera."""
    absent = []
    for camera in MOTION_ENERGY_CAMERAS:
        obj = f"{camera}Camera"
        listed = one.list_datasets(
            eid, collection="alf", filename={"object": obj, "attribute": "ROIMotionEnergy"}
        )
        if len(listed) == 0:
            absent.append(f"alf/{obj}.ROIMotionEnergy")
            continue
        bunch = _load_object(
            one, eid, obj, "alf", revision, ("ROIMotionEnergy", "times"), f"{camera} camera"
        )
        motion_energy = _as_1d(eid, obj, "ROIMotionEnergy", bunch["ROIMotionEnergy"], np.float64)
        times = _as_1d(eid, obj, "times", bunch["times"], np.float64)
        n_frames, n_times = len(motion_energy), len(times)
        if n_times < n_frames:
            raise ValueError(
                f"session {eid}: {obj}.times has {n_times} timestamps for {n_frames} "
                f"{obj}.ROIMotionEnergy frames (fewer timestamps than frames)"
            )
        # Older sessions have extra leading timestamps: keep the last n_frames (IBL convention).
        times = times[n_times - n_frames :]
        return (
            times,
            motion_energy,
            camera,
            {"n_dropped_timestamps": n_times - n_frames, "absent": absent},
        )
    raise MissingDataError(
        eid, "no whisker motion energy on any camera (" + ", ".join(absent) + ")"
    )


def _load_licks(one: Any, eid: str, revision: str | None) -> np.ndarray | None:
    """Sorted lick times (s) from ``alf/licks.times``, or None when the session has none."""
    listed = one.list_datasets(
        eid, collection="alf", filename={"object": "licks", "attribute": "times"}
    )
    if len(listed) == 0:
        return None
    bunch = _load_object(one, eid, "licks", "alf", revision, ("times",), "licks")
    times = _as_1d(eid, "licks", "licks.times", bunch["times"], np.float64)
    if not np.all(np.isfinite(times)):
        raise ValueError(
            f"session {eid}: licks.times holds {int((~np.isfinite(times)).sum())} NaN/inf "
            f"of {len(times)} lick times; expected finite times in seconds"
        )
    return np.sort(times)  # (n_licks,)


def load_session(
    one: Any,
    eid: str,
    *,
    revision: str | None = None,
    spike_sorter_preference: Sequence[str] = DEFAULT_SPIKE_SORTER_PREFERENCE,
) -> RawSession:
    """Load one session through ONE into a :class:`RawSession` (all probes merged).

    ``revision`` (``"YYYY-MM-DD"``) is passed to every ONE load (ONE returns the last revision
    at or before it); None uses ONE's default (newest) revision. ``spike_sorter_preference``
    orders the ``alf/<probe>/<sorter>`` collections to try. The clusters table has the
    :data:`~neds_hf.data.raw.CLUSTER_COLUMNS` plus ``firing_rate_hz`` (clusters.metrics),
    ``region_allen_id`` and ``channel`` (peak channel). ``metadata`` records, per probe, the
    collection, revision and channels dataset used, the probes without spike sorting, and the
    motion-energy camera and timestamp alignment.
    """
    eid = str(eid)
    details = _session_details(one, eid)
    loaded, probes_without_sorting = _load_probes(one, eid, revision, spike_sorter_preference)
    spike_times, spike_clusters, clusters = _merge_probes(loaded)
    clusters = clusters[[*CLUSTER_COLUMNS, "firing_rate_hz", "region_allen_id", "channel"]]
    trials = _load_trials(one, eid, revision)
    wheel_timestamps, wheel_position = _load_wheel(one, eid, revision)
    me_times, motion_energy, camera, me_info = _load_motion_energy(one, eid, revision)
    lick_times = _load_licks(one, eid, revision)
    paw_pose = load_paw_pose(one, eid, revision)
    date = details["date"]
    metadata = {
        "revision_requested": revision,
        "spike_sorter_preference": list(spike_sorter_preference),
        "probes": {
            d["probe"]: {
                "collection": d["collection"],
                "revision": d["revision"],
                "channels": d["channels_source"],
                "n_clusters": len(d["clusters"]),
                "n_spikes": len(d["spike_times"]),
            }
            for d in loaded
        },
        "probes_without_spike_sorting": probes_without_sorting,
        "motion_energy_camera": camera,
        "motion_energy_dropped_timestamps": me_info["n_dropped_timestamps"],
        "motion_energy_absent": me_info["absent"],
        "licks_absent": lick_times is None,
        "pose": paw_pose.describe(),
        "number": int(details["number"]) if details.get("number") is not None else None,
    }
    return RawSession(
        session_id=eid,
        subject=str(details["subject"]),
        lab=str(details["lab"]),
        date=pd.Timestamp(date).date().isoformat() if date is not None else "",
        probes=[d["probe"] for d in loaded],
        spike_times=spike_times,
        spike_clusters=spike_clusters,
        clusters=clusters,
        trials=trials,
        wheel_timestamps=wheel_timestamps,
        wheel_position=wheel_position,
        motion_energy_times=me_times,
        motion_energy=motion_energy,
        motion_energy_camera=camera,
        metadata=metadata,
        lick_times=lick_times,
        paw_pose=paw_pose,
    )


def _load_probes(
    one: Any, eid: str, revision: str | None, spike_sorter_preference: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every probe with spike sorting (loaded) and the names of those without (logged)."""
    probes = list_probes(one, eid)
    if not probes:
        raise MissingDataError(eid, "no probe collections (alf/probeXX) in this session")
    loaded: list[dict[str, Any]] = []
    probes_without_sorting = []
    for probe in probes:
        collection = select_spike_sorting_collection(
            one, eid, probe, spike_sorter_preference, revision
        )
        if collection is None:
            probes_without_sorting.append(probe)
            _logger.warning("session %s: %s has no spike sorting; probe skipped", eid, probe)
            continue
        data = _load_probe(one, eid, probe, collection, revision)
        data["probe"] = probe
        loaded.append(data)
    if not loaded:
        raise MissingDataError(
            eid,
            f"no spike sorting for any probe ({', '.join(probes)}): no spikes.times in "
            f"alf/<probe>/{{{','.join(spike_sorter_preference)}}} or alf/<probe>*"
            + (f" at or before revision {revision}" if revision else ""),
        )
    return loaded, probes_without_sorting
