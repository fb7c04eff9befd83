"""Configuration of NEDS (Neural Encoding and Decoding at Scale) models.

This module imports only `transformers` (and the standard library) so that it can be copied next
to a checkpoint and loaded with ``trust_remote_code=True`` where neds_hf is not installed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Any, ClassVar

from transformers import PreTrainedConfig

#: The kinds of modality a NEDS model can tokenize and predict.
MODALITY_KINDS = ("spikes", "continuous", "categorical")

#: The five IBL modalities of the NEDS paper, in token order.
IBL_MODALITIES: tuple[dict[str, Any], ...] = (
    {"name": "spikes", "kind": "spikes"},
    {"name": "wheel_speed", "kind": "continuous"},
    {"name": "whisker_motion_energy", "kind": "continuous"},
    {"name": "choice", "kind": "categorical", "num_classes": 2},
    {"name": "block", "kind": "categorical", "num_classes": 3},
)

#: The label a categorical behaviour holds where it is missing (a continuous one holds NaN).
INVALID_LABEL = -1

#: How continuous behaviours can be scaled (with per-session constants) before the model.
BEHAVIOR_NORMALIZATIONS = ("minmax", "zscore", "none")

#: How `attention_dropout` regularises attention: ``"keys"`` drops random keys per (trial, head)
#: through the attention mask; ``"probabilities"`` drops attention probabilities (the reference's
#: way), through the attention kernel's own ``dropout_p``.
ATTENTION_DROPOUT_MODES = ("keys", "probabilities")
#: What the heads of trial-level categorical modalities read (``NedsConfig.trial_level_readout``).
TRIAL_LEVEL_READOUTS = ("token", "token_and_spikes")

#: NEDS multi-task masking schemes (sampled per trial by the collator).
NEDS_SCHEMES = ("neural", "behavior", "within_spikes", "within_behavior", "cross_modal")
#: MtM masking schemes for the spike-only configuration; their order is the prompt-token order.
MTM_SCHEMES = ("neuron", "causal", "intra_region", "inter_region")

_AUTO_MAP = {
    "AutoConfig": "configuration_neds.NedsConfig",
    "AutoModel": "modeling_neds.NedsModel",
    "AutoModelForMaskedLM": "modeling_neds.NedsForMaskedModeling",
}


def _default_modalities() -> list[dict[str, Any]]:
    return [dict(spec) for spec in IBL_MODALITIES]


def _normalize_modality(spec: Mapping[str, Any], position: int) -> dict[str, Any]:
    """Validate one modality entry and fill its defaults."""
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"modalities[{position}] must be a mapping with 'name' and 'kind', got {spec!r}"
        )
    name = spec.get("name")
    kind = spec.get("kind")
    if not isinstance(name, str) or not name:
        raise ValueError(f"modalities[{position}].name must be a non-empty string, got {name!r}")
    if kind not in MODALITY_KINDS:
        raise ValueError(
            f"modalities[{position}] ({name!r}): kind must be one of {MODALITY_KINDS}, got {kind!r}"
        )
    unknown = set(spec) - {"name", "kind", "num_classes", "trial_level", "allow_missing"}
    if unknown:
        raise ValueError(f"modalities[{position}] ({name!r}): unknown fields {sorted(unknown)}")
    normalized: dict[str, Any] = {"name": name, "kind": kind}
    if kind == "categorical":
        num_classes = spec.get("num_classes")
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(
                f"modalities[{position}] ({name!r}): a categorical modality needs "
                f"num_classes >= 2, "
                f"got num_classes={num_classes!r}"
            )
        normalized["num_classes"] = num_classes
        normalized["trial_level"] = bool(spec.get("trial_level", True))
    else:
        if spec.get("num_classes") is not None:
            raise ValueError(
                f"modalities[{position}] ({name!r}): num_classes is only valid for categorical "
                f"modalities, got kind={kind!r} with num_classes={spec['num_classes']!r}"
            )
        if spec.get("trial_level", False):
            raise ValueError(
                f"modalities[{position}] ({name!r}): only categorical modalities can be trial_level"
            )
    allow_missing = spec.get("allow_missing", False)
    if not isinstance(allow_missing, bool):
        raise ValueError(
            f"modalities[{position}] ({name!r}): allow_missing must be true or false, got "
            f"{allow_missing!r}"
        )
    if allow_missing and kind == "spikes":
        raise ValueError(f"modalities[{position}] ({name!r}): spikes cannot be missing")
    if allow_missing:  # stored only when set, so the paper's modality entries stay as they were
        normalized["allow_missing"] = True
    return normalized


def allows_missing(spec: Mapping[str, Any]) -> bool:
    """Whether a behaviour may hold missing entries (NaN, or ``INVALID_LABEL`` for categorical
    ones), which are then hidden on input and never scored; otherwise such entries are errors."""
    return bool(spec.get("allow_missing", False))


def _describe_modality(spec: Mapping[str, Any]) -> str:
    """``name (kind[, C classes][, per bin])`` of one modality entry, for error messages."""
    details = [spec["kind"]]
    if spec["kind"] == "categorical":
        details.append(f"{spec.get('num_classes')} classes")
        if not spec.get("trial_level", True):
            details.append("per bin")
    return f"{spec['name']} ({', '.join(details)})"


def check_declared_modalities(
    model_modalities: Iterable[Mapping[str, Any]],
    declared: Iterable[Mapping[str, Any]],
    dataset: str,
) -> None:
    """A ValueError naming both lists when a dataset's declared modalities cannot feed a model:
    every modality of the model must be declared with the same kind, number of classes and
    trial level (whether it may be missing is the dataset's business)."""
    model_modalities, declared = list(model_modalities), list(declared)
    by_name = {spec["name"]: spec for spec in declared}
    problems = []
    for spec in model_modalities:
        other = by_name.get(spec["name"])
        if other is None:
            problems.append(f"{spec['name']} is not declared")
        elif _describe_modality(other) != _describe_modality(spec):
            problems.append(
                f"{spec['name']} is {_describe_modality(spec)} in the model but "
                f"{_describe_modality(other)} in the dataset"
            )
    if problems:
        raise ValueError(
            f"the model's modalities {[_describe_modality(s) for s in model_modalities]} "
            f"disagree with those dataset {dataset} declares "
            f"{[_describe_modality(s) for s in declared]}: " + "; ".join(problems)
        )


def normalize_sessions(sessions: Any, field_name: str = "sessions") -> dict[str, int]:
    """Turn a mapping or a sequence of (id, n_neurons) pairs into an ordered dict, validating it.

    The one rule for what a session table is; the config and the model's `add_sessions` use it.
    `field_name` names the argument in error messages.
    """
    if sessions is None:
        return {}
    if isinstance(sessions, Mapping):
        pairs: Iterable[Any] = sessions.items()
    elif isinstance(sessions, Iterable) and not isinstance(sessions, str | bytes):
        pairs = []
        for entry in sessions:
            if isinstance(entry, Mapping):
                pairs.append((entry.get("session_id"), entry.get("n_neurons")))
            else:
                pairs.append(tuple(entry))
    else:
        raise ValueError(
            f"{field_name} must map session ids to neuron counts, got {type(sessions).__name__}"
        )
    normalized: dict[str, int] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"{field_name}: expected (session_id, n_neurons) pairs, got {pair!r}")
        session_id, n_neurons = pair
        if not isinstance(session_id, str) or not session_id:
            raise ValueError(
                f"{field_name}: session ids must be non-empty strings, got {session_id!r}"
            )
        if session_id in normalized:
            raise ValueError(f"{field_name}: duplicate session id {session_id!r}")
        if not isinstance(n_neurons, int) or isinstance(n_neurons, bool) or n_neurons < 1:
            raise ValueError(
                f"{field_name}[{session_id!r}]: n_neurons must be a positive integer, "
                f"got {n_neurons!r}"
            )
        normalized[session_id] = n_neurons
    return normalized


class NedsConfig(PreTrainedConfig):
    r"""Configuration of a NEDS model: sizes, modalities, sessions and masking settings.

    `NedsConfig()` is the paper's single-session NEDS (hidden 256, 8 heads, MLP 512, 5 layers,
    dropout 0.4, embedding dropout 0.2, rotary positions) over the five IBL modalities, with no
    sessions yet: add them with :meth:`add_sessions` or pass ``sessions={session_id: n_neurons}``.
    The spike-only MtM configuration is ``NedsConfig.for_mtm(...)``.

    Args:
        hidden_size: width of every token.
        num_hidden_layers: number of pre-LayerNorm transformer blocks.
        num_attention_heads: attention heads; must divide `hidden_size`.
        intermediate_size: width of the MLP inside each block.
        hidden_act: MLP activation.
        hidden_dropout: dropout on the attention and MLP outputs (residual branches).
        attention_dropout: dropout rate inside attention, applied as `attention_dropout_mode`
            says.
        attention_dropout_mode: ``"keys"`` (default): each (trial, head) ignores a random
            fraction of the keys through a boolean attention mask; on CPU this keeps
            `scaled_dot_product_attention` on its fused kernel (~1.5x faster training steps at
            NEDS sizes than probability dropout, see ``benchmarks/bench_model.py``).
            ``"probabilities"``: dropout on the attention probabilities, as the reference code
            does: on GPU through the attention kernel's own ``dropout_p`` (SDPA's fused kernels
            and flash attention support it); on CPU in training through the eager attention
            form, ~2x cheaper there than SDPA's unfused dropout path, still ~1.6x the cost of
            key dropout. Flash attention supports only ``"probabilities"`` (it takes no mask).
        embedding_dropout: dropout on the summed token + embeddings.
        layer_norm_eps: LayerNorm epsilon.
        initializer_range: std of the normal initialisation.
        fixup_init: scale the residual-branch output projections by ``0.67 * L**-0.25`` at
            initialisation, as the reference implementation does.
        use_rope: rotary position embedding on queries and keys, by time bin.
        rope_theta: rotary base.
        num_time_bins: time bins per trial (T); every time-varying modality shares them.
        modalities: the modalities as data: ``{"name", "kind", "num_classes", "trial_level"}``
            with kind ``spikes`` (exactly one), ``continuous`` (one value per bin) or
            ``categorical`` (``num_classes`` >= 2; one label per trial when ``trial_level``,
            the default, else one per bin); ``"allow_missing": True`` lets a behaviour hold
            missing entries (NaN for continuous, ``INVALID_LABEL`` = -1 for categorical), hidden
            on input and never scored, instead of rejecting them.
        sessions: the sessions the model knows, ``{session_id: n_neurons}``, in order.
        spike_stitcher_size: width of the per-session spike stitcher (per-neuron input vectors).
        behavior_stitcher_size: width of the small per-modality continuous tokenizers.
        spread_trial_tokens: give each trial-level variable ``num_time_bins`` tokens, as the
            reference code does (500 tokens per IBL trial instead of 302).
        use_prompt: prepend a prompt token naming the masking scheme (MtM).
        prompt_schemes: the schemes a prompt token can name (its embedding rows).
        mask_ratio: fraction of time bins / neurons / tokens masked by ratio-based schemes.
        causal_mask_ratio: mask ratio of the MtM causal scheme (0.6 in the reference).
        masking_schemes: training schemes and their probabilities; `None` means uniform over
            the NEDS schemes (or the MtM schemes when spikes are the only modality).
        behavior_normalization: how continuous behaviours are scaled before they reach the
            model, with the per-session constants of the dataset (train split): ``"zscore"``
            (default), ``"minmax"`` (to [0, 1], as the reference code) or ``"none"``. Part of
            the model: its behaviour predictions are in these units. Z-scoring is the default
            because min-max scaling squeezes heavy-tailed wheel speed near 0 and makes the
            behaviour losses ~100x smaller than the spike loss; on the synthetic corpus it
            lifts decoding R² from ~0 to ~0.7-0.9 at equal steps (see the README).
        trial_level_readout: what the head of a trial-level categorical modality reads:
            ``"token"`` (default): the final state of its own token(s);
            ``"token_and_spikes"``: that plus the mean final state of the spike tokens (a
            direct path from the population activity to the label).
        modality_loss_weights: ``{modality name: weight}`` multiplying that modality's mean
            loss in the total training loss (every modality not named weighs 1; `None`: all
            1). Each modality's loss is already a mean over its scored entries, so a
            trial-level cross-entropy on one token and a Poisson NLL over N x T counts start
            on an equal footing; a weight shifts the balance further.
    """

    model_type: ClassVar[str] = "neds"

    hidden_size: int = 256
    num_hidden_layers: int = 5
    num_attention_heads: int = 8
    intermediate_size: int = 512
    hidden_act: str = "gelu"
    hidden_dropout: float | int = 0.4
    attention_dropout: float | int = 0.4
    attention_dropout_mode: str = "keys"
    embedding_dropout: float | int = 0.2
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    fixup_init: bool = True
    use_rope: bool = True
    rope_theta: float | int = 10000.0
    num_time_bins: int = 100
    modalities: list[dict[str, Any]] = field(default_factory=_default_modalities)
    sessions: dict[str, int] = field(default_factory=dict)
    spike_stitcher_size: int = 512
    behavior_stitcher_size: int = 8
    spread_trial_tokens: bool = False
    use_prompt: bool = False
    prompt_schemes: list[str] = field(default_factory=lambda: list(MTM_SCHEMES))
    mask_ratio: float | int = 0.3
    causal_mask_ratio: float | int = 0.6
    masking_schemes: dict[str, float] | None = None
    behavior_normalization: str = "zscore"
    trial_level_readout: str = "token"
    modality_loss_weights: dict[str, float] | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        self.modalities = [
            _normalize_modality(spec, position) for position, spec in enumerate(self.modalities)
        ]
        self.sessions = normalize_sessions(self.sessions)
        self._validate()
        if not getattr(self, "auto_map", None):
            self.auto_map = dict(_AUTO_MAP)
        super().__post_init__(**kwargs)

    def _validate(self) -> None:
        """Raise one ValueError listing every invalid field."""
        errors = [
            *self._size_errors(),
            *self._rate_errors(),
            *self._modality_errors(),
            *self._masking_errors(),
            *self._loss_weight_errors(),
            *self._readout_errors(),
        ]
        if errors:
            raise ValueError("Invalid NedsConfig: " + "; ".join(errors))

    def _size_errors(self) -> list[str]:
        """Sizes must be positive integers, the head size must divide and (with RoPE) be even."""
        errors: list[str] = []
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
            "num_time_bins",
            "spike_stitcher_size",
            "behavior_stitcher_size",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                errors.append(f"{name} must be a positive integer, got {value!r}")
        if not errors and self.hidden_size % self.num_attention_heads:
            errors.append(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if not errors and self.use_rope and (self.hidden_size // self.num_attention_heads) % 2:
            errors.append(
                f"use_rope=True needs an even head size, got hidden_size/num_attention_heads = "
                f"{self.hidden_size}/{self.num_attention_heads}"
            )
        return errors

    def _rate_errors(self) -> list[str]:
        """Dropout rates in [0, 1), mask ratios in (0, 1], a known attention dropout mode."""
        errors: list[str] = []
        for name in ("hidden_dropout", "attention_dropout", "embedding_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                errors.append(f"{name} must be in [0, 1), got {value!r}")
        if self.attention_dropout_mode not in ATTENTION_DROPOUT_MODES:
            errors.append(
                f"attention_dropout_mode must be one of {ATTENTION_DROPOUT_MODES}, got "
                f"{self.attention_dropout_mode!r}"
            )
        for name in ("mask_ratio", "causal_mask_ratio"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                errors.append(f"{name} must be in (0, 1], got {value!r}")
        return errors

    def _modality_errors(self) -> list[str]:
        """Unique modality names, exactly one spikes modality, a known behaviour scaling."""
        errors: list[str] = []
        names = [spec["name"] for spec in self.modalities]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            errors.append(f"modalities: duplicate names {duplicates}")
        n_spikes = sum(spec["kind"] == "spikes" for spec in self.modalities)
        if n_spikes != 1:
            errors.append(
                f"modalities: exactly one modality of kind 'spikes' is needed, got {n_spikes}"
            )
        if self.behavior_normalization not in BEHAVIOR_NORMALIZATIONS:
            errors.append(
                f"behavior_normalization must be one of {BEHAVIOR_NORMALIZATIONS}, got "
                f"{self.behavior_normalization!r}"
            )
        return errors

    def _loss_weight_errors(self) -> list[str]:
        """Loss weights name known modalities and are finite and >= 0."""
        if self.modality_loss_weights is None:
            return []
        errors: list[str] = []
        names = [spec["name"] for spec in self.modalities]
        unknown = sorted(set(self.modality_loss_weights) - set(names))
        if unknown:
            errors.append(f"modality_loss_weights: unknown modalities {unknown}; known: {names}")
        bad = {
            name: weight
            for name, weight in self.modality_loss_weights.items()
            if not (isinstance(weight, (int, float)) and math.isfinite(weight) and weight >= 0)
        }
        if bad:
            errors.append(f"modality_loss_weights must be finite and >= 0, got {bad}")
        return errors

    def _readout_errors(self) -> list[str]:
        """A known trial-level readout."""
        if self.trial_level_readout not in TRIAL_LEVEL_READOUTS:
            return [
                f"trial_level_readout must be one of {TRIAL_LEVEL_READOUTS}, got "
                f"{self.trial_level_readout!r}"
            ]
        return []

    def modality_loss_weight(self, name: str) -> float:
        """Weight of modality `name`'s mean loss in the total loss (1 unless set)."""
        return float((self.modality_loss_weights or {}).get(name, 1.0))

    def _masking_errors(self) -> list[str]:
        """Prompt schemes when prompting; known, positive-sum, satisfiable masking schemes."""
        errors: list[str] = []
        if self.use_prompt and not self.prompt_schemes:
            errors.append("use_prompt=True needs at least one entry in prompt_schemes")
        if self.masking_schemes is None:
            return errors
        allowed = set(NEDS_SCHEMES) | set(MTM_SCHEMES)
        unknown = sorted(set(self.masking_schemes) - allowed)
        if unknown:
            errors.append(f"masking_schemes: unknown schemes {unknown}; known: {sorted(allowed)}")
        weights = list(self.masking_schemes.values())
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            errors.append(
                f"masking_schemes: probabilities must be >= 0 with a positive sum, "
                f"got {self.masking_schemes}"
            )
        if not self.behavior_modalities:
            with_behavior = sorted(set(self.masking_schemes) - set(MTM_SCHEMES) - {"within_spikes"})
            if with_behavior:
                errors.append(
                    f"masking_schemes {with_behavior} need behaviour modalities, but spikes "
                    "are the only modality"
                )
        return errors

    def to_dict(self) -> dict[str, Any]:
        """Serialisable dict; sessions become ``[[session_id, n_neurons], ...]`` so that their
        order (the order of the per-session parameter rows) survives JSON key sorting."""
        output = super().to_dict()
        output["sessions"] = [[session_id, n] for session_id, n in self.sessions.items()]
        return output

    # ----------------------------------------------------------------------------------------
    # Derived views
    @property
    def head_dim(self) -> int:
        """Size of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def session_ids(self) -> list[str]:
        """Session ids in the order of the per-session parameter rows."""
        return list(self.sessions)

    @property
    def spike_modality(self) -> dict[str, Any]:
        """The (single) spikes modality entry."""
        return next(spec for spec in self.modalities if spec["kind"] == "spikes")

    @property
    def behavior_modalities(self) -> list[dict[str, Any]]:
        """All non-spike modalities, in config order (the column order of `behavior_mask`)."""
        return [spec for spec in self.modalities if spec["kind"] != "spikes"]

    @property
    def continuous_modalities(self) -> list[dict[str, Any]]:
        """Continuous modalities in config order (the column order of `behavior_values`)."""
        return [spec for spec in self.modalities if spec["kind"] == "continuous"]

    @property
    def categorical_modalities(self) -> list[dict[str, Any]]:
        """Categorical modalities in config order (the column order of `behavior_labels`)."""
        return [spec for spec in self.modalities if spec["kind"] == "categorical"]

    @property
    def behaviors_with_missing(self) -> list[str]:
        """Names of the behaviours that may hold missing entries (``allow_missing``); when there
        are any, batches carry a ``behavior_valid`` mask."""
        return [spec["name"] for spec in self.behavior_modalities if allows_missing(spec)]

    def modality_num_tokens(self, spec: Mapping[str, Any]) -> int:
        """How many tokens one trial of this modality becomes."""
        if spec["kind"] == "categorical" and spec.get("trial_level", True):
            return self.num_time_bins if self.spread_trial_tokens else 1
        return self.num_time_bins

    @property
    def num_tokens(self) -> int:
        """Tokens per trial, prompt token included."""
        return int(self.use_prompt) + sum(self.modality_num_tokens(s) for s in self.modalities)

    @property
    def default_masking_schemes(self) -> dict[str, float]:
        """Scheme probabilities the collator uses when none are configured."""
        if self.masking_schemes is not None:
            return dict(self.masking_schemes)
        schemes = MTM_SCHEMES if not self.behavior_modalities else NEDS_SCHEMES
        return {name: 1.0 / len(schemes) for name in schemes}

    # ----------------------------------------------------------------------------------------
    # Sessions
    def add_sessions(self, sessions: Mapping[str, int]) -> list[str]:
        """Append sessions ``{session_id: n_neurons}``; returns the new ids in order.

        Only the configuration changes here; use the model's `add_sessions` to also create the
        per-session parameters.
        """
        new_sessions = normalize_sessions(sessions, field_name="add_sessions")
        existing = sorted(set(new_sessions) & set(self.sessions))
        if existing:
            raise ValueError(f"add_sessions: sessions already known to the model: {existing}")
        self.sessions = {**self.sessions, **new_sessions}
        return list(new_sessions)

    @classmethod
    def for_mtm(cls, sessions: Mapping[str, int] | None = None, **kwargs: Any) -> NedsConfig:
        """The spike-only MtM configuration: spikes only, prompt token on, MtM schemes.

        Defaults follow the MtM NDT1 reference (hidden 512, 5 layers, 8 heads, MLP 1024).
        """
        defaults: dict[str, Any] = {
            "modalities": [{"name": "spikes", "kind": "spikes"}],
            "use_prompt": True,
            "hidden_size": 512,
            "intermediate_size": 1024,
        }
        defaults.update(kwargs)
        return cls(sessions=copy.deepcopy(dict(sessions or {})), **defaults)


__all__ = [
    "ATTENTION_DROPOUT_MODES",
    "BEHAVIOR_NORMALIZATIONS",
    "IBL_MODALITIES",
    "INVALID_LABEL",
    "MODALITY_KINDS",
    "MTM_SCHEMES",
    "NEDS_SCHEMES",
    "TRIAL_LEVEL_READOUTS",
    "NedsConfig",
    "allows_missing",
    "check_declared_modalities",
    "normalize_sessions",
]
