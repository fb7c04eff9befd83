"""IBL data for NEDS: ONE loading, preprocessing, synthetic ALF sessions and the HF dataset.

The data path, one module per step: :mod:`.ibl` loads a session through ONE into a
:class:`~.raw.RawSession`; :mod:`.preprocess` bins it (trial exclusion rules in
:mod:`.exclusion`); :mod:`.build` writes the dataset (:mod:`.schema` for its tables,
:mod:`.card` for its card); :mod:`.load` checks and reads it; :mod:`.training_data` serves it
to training; :mod:`.publish` uploads it. :mod:`.synthetic` writes synthetic sessions in the
ALF layout with a ONE cache; :mod:`.cli_prepare` is the ``neds-hf prepare-data`` command.
:mod:`.windows` defines the optional continuous windows over whole recordings.
"""

from .build import BuildReport, build_dataset, is_neds_dataset
from .cli_prepare import packaged_eids, packaged_eids_file, read_eids_file
from .errors import CorruptedFileError, IBLDataError, MissingDataError, SessionNotFoundError
from .exclusion import EXCLUSION_REASONS
from .load import (
    DatasetFolderError,
    DatasetIntegrityError,
    check_dataset_folder,
    default_modalities,
    load_modalities,
    load_neds_dataset,
    load_neurons,
    load_normalization,
    load_sessions,
    load_windows,
    verify_dataset,
)
from .preprocess import (
    CONTINUOUS_BEHAVIORS,
    DATASET_MODALITIES,
    SPLITS,
    PreprocessedSession,
    PreprocessingConfig,
    preprocess_session,
)
from .publish import push_dataset_to_hub
from .raw import RawSession
from .schema import NEURON_FEATURES, SESSION_FEATURES, TRIAL_FEATURES
from .synthetic import load_ground_truth, make_synthetic_cache
from .training_data import NedsTrialDataset, SessionBatchSampler
from .windows import WindowConfig, WindowLongerThanRecordingError

__all__ = [
    "CONTINUOUS_BEHAVIORS",
    "DATASET_MODALITIES",
    "EXCLUSION_REASONS",
    "NEURON_FEATURES",
    "SESSION_FEATURES",
    "SPLITS",
    "TRIAL_FEATURES",
    "BuildReport",
    "CorruptedFileError",
    "DatasetFolderError",
    "DatasetIntegrityError",
    "IBLDataError",
    "MissingDataError",
    "NedsTrialDataset",
    "PreprocessedSession",
    "PreprocessingConfig",
    "RawSession",
    "SessionBatchSampler",
    "SessionNotFoundError",
    "WindowConfig",
    "WindowLongerThanRecordingError",
    "build_dataset",
    "check_dataset_folder",
    "default_modalities",
    "is_neds_dataset",
    "load_ground_truth",
    "load_modalities",
    "load_neds_dataset",
    "load_neurons",
    "load_normalization",
    "load_sessions",
    "load_windows",
    "make_synthetic_cache",
    "packaged_eids",
    "packaged_eids_file",
    "preprocess_session",
    "push_dataset_to_hub",
    "read_eids_file",
    "verify_dataset",
]
