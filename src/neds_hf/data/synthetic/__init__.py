"""Realistic synthetic IBL-like sessions with known ground truth, in the real ALF layout.

A synthetic session imitates an IBL repeated-site Neuropixels recording closely enough that the
real loading code (:mod:`neds_hf.data.ibl`, through ONE-api) and the real preprocessing run on it
unchanged, while every quantity they estimate is known exactly:

* **Task**: IBL biased-choice-world trials. The first block has ``probabilityLeft = 0.5``
  (``first_block_trials``, 90 by default), then blocks alternate between 0.2 and 0.8 with lengths
  drawn from an exponential of mean 60 truncated to [20, 100]. Stimuli of contrast
  {0, 0.0625, 0.125, 0.25, 1} appear left with probability ``probabilityLeft``; choices follow a
  psychometric curve biased by the block; reaction times are log-normal and slower at low
  contrast. A fixed number of *planted bad trials* of each exclusion kind is inserted (see
  :data:`EXCLUSION_REASONS`).
* **Behaviour**: a continuous wheel trajectory (minimum-jerk turns from first movement to
  response, small movements in the inter-trial intervals) recorded like the FPGA rotary encoder
  (quantised to 2π/4096 rad, one irregular timestamp per encoder tick), and whisker ROI motion
  energy driven by wheel movement plus spontaneous whisking, sampled by a 60 Hz left camera
  (whose timestamps file carries a few extra leading timestamps, as in older sessions) and a
  150 Hz right camera. Licks (``alf/licks.times``, :mod:`.licks`) come in bursts after rewards,
  a few after errors and spontaneously, from their own random stream.
* **Neurons**: regions along a repeated-site insertion (VISa, CA1, DG, LP, PO with their Allen
  layer ids; fibre tracts and the outside of the brain on channels without units). Each neuron's
  log-rate is a region-specific tuning to six covariates (:data:`COVARIATE_NAMES`: wheel speed,
  whisker motion energy, choice, block prior, signed and unsigned stimulus) plus loadings on a
  few shared latent factors (driven by the covariates plus smooth noise). Rates are piecewise
  constant on a 5 ms grid and spikes are drawn from the exact inhomogeneous Poisson process, so
  the expected spike count of any bin is known exactly. Baseline rates span 0.2-40 Hz with a
  fraction below 2 Hz for the firing-rate filter to remove.
* **Pose**: the left camera's Lightning Pose table (``alf/_ibl_leftCamera.lightningPose.pqt``:
  paws, nose tip and lick tube, ``_x`` / ``_y`` / ``_likelihood``) driven by a latent action
  per frame (still / move / groom / wheel turn, the last tied to the wheel), with marker noise
  and low-likelihood occlusions (:mod:`.pose`); the true actions and paw speeds go to
  ``<root>/ground_truth/<eid>.pose.npz`` (:func:`load_pose_truth`). With
  ``action_tuning > 0`` half of the neurons are also tuned to the action.
* **Presets** (:data:`PRESETS`, ``SyntheticSessionSpec.preset``): ``easy`` (the default; the
  output of a seed never changes) drives the neurons strongly by every covariate;
  ``realistic`` makes choice and block weak, distributed signals (choice starting with the
  movement), wheel tuning moderate and adds shared per-region latent noise that behaviour does
  not explain, so that linear decoders from counts score near typical IBL values. The
  ground truth carries ``expected_counts_observed``, the encoding oracle: expected counts given
  what a model of the dataset observes (:mod:`.oracle`).

Files are written in the real ALF layout (``lab/Subjects/subject/date/number/alf/...``) with a
real ONE cache (``sessions.pqt``, ``datasets.pqt``) at the root, so ``One(cache_dir=root,
mode='local')`` lists and loads them without warnings. Ground truth goes to
``<root>/ground_truth/<eid>.npz`` and ``<eid>.json`` (not indexed by ONE); see
:func:`load_ground_truth` and :data:`GROUND_TRUTH_ARRAYS` for the exact format.

Session ids are ``uuid5(SYNTHETIC_NAMESPACE, "lab/Subjects/subject/date/number")`` and the
session path is a function of ``(seed, index)``, so the same seed always gives the same ids.

Modules, one concept each: :mod:`.spec` (specification, presets, identity, faults),
:mod:`.task` (trials and wheel), :mod:`.signals` (covariates, latents, cameras),
:mod:`.licks` (lick times), :mod:`.pose` (left-camera pose and actions), :mod:`.neurons`
(probes, units, spikes), :mod:`.oracle` (expected counts given the observed behaviour),
:mod:`.session` (a whole session and its ground truth), :mod:`.alf` (ALF writer),
:mod:`.one_cache` (ONE cache tables) and :mod:`.cli` (a corpus on disk and the
``neds-hf make-synthetic`` command).
"""

from .alf import (
    GROUND_TRUTH_DIRNAME,
    POSE_TRUTH_SUFFIX,
    load_ground_truth,
    load_pose_truth,
    write_alf_session,
    write_channels,
    write_ground_truth,
    write_spike_sorting,
)
from .cli import add_make_synthetic_arguments, make_synthetic_cache, run_make_synthetic
from .licks import LICKS_STREAM, generate_licks
from .neurons import (
    ALLEN_IDS,
    COSMOS_OF_BERYL,
    N_CHANNELS,
    PROBE_LAYOUT,
    REGION_TUNING,
    SyntheticProbe,
)
from .one_cache import SESSIONS_PROJECT, TASK_PROTOCOL, write_one_cache
from .pose import POSE_ACTIONS, POSE_GROUND_TRUTH_ARRAYS, POSE_MARKERS, SyntheticPose
from .session import GROUND_TRUTH_ARRAYS, SyntheticSession, generate_session
from .signals import CAMERA_RATES_HZ, COVARIATE_NAMES, SIMULATION_DT_S, WHEEL_RESOLUTION_RAD
from .spec import (
    FAULTS,
    PRESETS,
    STANDARD_BIN_SIZE_S,
    STANDARD_N_BINS,
    STANDARD_WINDOW_S,
    SYNTHETIC_LABS,
    SYNTHETIC_NAMESPACE,
    SyntheticPreset,
    SyntheticSessionSpec,
    session_eid,
    session_rel_path,
    synthetic_session_identity,
)
from .task import (
    CONTRAST_LEVELS,
    DEFAULT_MAX_RT_S,
    DEFAULT_MAX_TRIAL_DURATION_S,
    DEFAULT_MIN_RT_S,
    EXCLUSION_REASONS,
    TRIALS_TABLE_COLUMNS,
    exclusion_flags,
    first_exclusion_reason,
    wheel_kinematics,
)

__all__ = [
    "ALLEN_IDS",
    "CAMERA_RATES_HZ",
    "CONTRAST_LEVELS",
    "COSMOS_OF_BERYL",
    "COVARIATE_NAMES",
    "DEFAULT_MAX_RT_S",
    "DEFAULT_MAX_TRIAL_DURATION_S",
    "DEFAULT_MIN_RT_S",
    "EXCLUSION_REASONS",
    "FAULTS",
    "GROUND_TRUTH_ARRAYS",
    "GROUND_TRUTH_DIRNAME",
    "LICKS_STREAM",
    "N_CHANNELS",
    "POSE_ACTIONS",
    "POSE_GROUND_TRUTH_ARRAYS",
    "POSE_MARKERS",
    "POSE_TRUTH_SUFFIX",
    "PRESETS",
    "PROBE_LAYOUT",
    "REGION_TUNING",
    "SESSIONS_PROJECT",
    "SIMULATION_DT_S",
    "STANDARD_BIN_SIZE_S",
    "STANDARD_N_BINS",
    "STANDARD_WINDOW_S",
    "SYNTHETIC_LABS",
    "SYNTHETIC_NAMESPACE",
    "TASK_PROTOCOL",
    "TRIALS_TABLE_COLUMNS",
    "WHEEL_RESOLUTION_RAD",
    "SyntheticPose",
    "SyntheticPreset",
    "SyntheticProbe",
    "SyntheticSession",
    "SyntheticSessionSpec",
    "add_make_synthetic_arguments",
    "exclusion_flags",
    "first_exclusion_reason",
    "generate_licks",
    "generate_session",
    "load_ground_truth",
    "load_pose_truth",
    "make_synthetic_cache",
    "run_make_synthetic",
    "session_eid",
    "session_rel_path",
    "synthetic_session_identity",
    "wheel_kinematics",
    "write_alf_session",
    "write_channels",
    "write_ground_truth",
    "write_one_cache",
    "write_spike_sorting",
]
