"""Federation policies as validated value objects (pydantic, no web framework).

The API reuses these as request schemas, so the rules live in one place.
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from participant_sdk.wire import TensorSpec, ease_spec, ease_update_spec, mf_spec

__all__ = [
    "AdaptiveClipping",
    "DB_INT_MAX",
    "DEFAULT_METRICS",
    "DeployPolicy",
    "DifferentialPrivacy",
    "LimitsPolicy",
    "ModelSpec",
    "PrivacyPolicy",
    "RoundPolicy",
    "SamplingPolicy",
    "SecureAggregation",
    "StrategySpec",
    "TargetSpec",
    "TransportPolicy",
]

# server_lr of fedadam/fedyogi when none is given (Reddi et al. 2021 use 10^-2 to 10^-1.5)
ADAPTIVE_SERVER_LR = 0.01
# ease: the solve holds ~2 num_items² floats and takes ~num_items³ flops (see ease_solve)
EASE_MAX_ITEMS = 20_000
# a log grid wide enough for sparse and dense data: round r publishes B(lambda_r)
EASE_DEFAULT_LAMBDAS = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
METRIC_PATTERN = r"^(ndcg|hr|precision|recall|sampled_ndcg|sampled_hr)@[1-9][0-9]{0,3}$"
# what the SDK's FederatedRecommender reports at its default k=10 (validation: the first
# four; test: all six, the sampled-99 ones when the catalog is large enough)
DEFAULT_METRICS = (
    "hr@10",
    "ndcg@10",
    "precision@10",
    "recall@10",
    "sampled_hr@10",
    "sampled_ndcg@10",
)
# the largest value an Integer column holds on every backend (PostgreSQL's is 32-bit):
# every integer a caller sends that reaches such a column is bounded by it
DB_INT_MAX = 2**31 - 1
# updates of a default federation are clipped to this L2 norm: ~136x the largest update
# norm measured on ML-100K (73.3: one participant holding every user, bench.quality's
# recipe and grids, every setting, 20 rounds), so honest updates are not clipped (the
# quality bench's bytes do not move), while a hostile one cannot overflow the model
DEFAULT_UPDATE_NORM_CLIP = 10_000.0


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Spec):
    """The model a federation trains: its family and size."""

    kind: Literal["mf", "ials", "ease"] = Field(
        description="Model family: `mf` = matrix factorisation trained with BPR; `ials` = "
        "confidence-weighted matrix factorisation (implicit ALS, dense updates; `item_bias` "
        "stays 0). Both have the same tensors. `ease` = closed-form item-item model (EASE): "
        "one tensor `ease_b` (num_items x num_items; pruned with `ease_top_k`), one solve per "
        "candidate lambda."
    )
    num_items: int = Field(gt=0, le=50_000_000, description="Rows of the item tables.")
    dim: int = Field(
        default=1,
        gt=0,
        le=4096,
        description="Latent dimension of the item factors (required for `mf`/`ials`; "
        "unused by `ease`).",
    )
    ease_lambdas: tuple[float, ...] = Field(
        default=EASE_DEFAULT_LAMBDAS,
        min_length=1,
        max_length=20,
        description="`ease` only: candidate L2 penalties, one per round (round r publishes "
        "version r = B(ease_lambdas[r-1]); the deploy policy picks one on validation).",
    )
    ease_top_k: int | None = Field(
        default=None,
        ge=1,
        le=EASE_MAX_ITEMS,
        description="`ease` only: keep the top_k largest-magnitude weights of each column "
        "of B (what participants download: tensors `ease_b_index` and `ease_b_value`, "
        "num_items x top_k, instead of the dense `ease_b`). Must be below num_items; "
        "null (the default) ships B dense.",
    )
    seed: int = Field(
        default=0, ge=0, le=2**63 - 1, description="Seed of the initial item factors."
    )
    init_scale: float = Field(
        default=0.01,
        ge=0,
        le=10,
        description="Std of the initial item factors (biases start at 0).",
    )

    @model_validator(mode="before")
    @classmethod
    def _factor_models_need_dim(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("kind") in ("mf", "ials") and "dim" not in data:
            raise ValueError(f"model kind {data['kind']!r} needs dim (the latent dimension)")
        return data

    @model_validator(mode="after")
    def _bounded_size(self) -> ModelSpec:
        if self.num_items * self.dim > 500_000_000:
            raise ValueError("num_items * dim must be at most 5e8 parameters")
        if self.kind == "ease" and self.num_items > EASE_MAX_ITEMS:
            raise ValueError(
                f"num_items must be at most {EASE_MAX_ITEMS} for kind 'ease' (its model is "
                f"num_items^2 floats, its solve ~n^3 flops), got {self.num_items}"
            )
        if self.ease_top_k is not None and not (
            self.kind == "ease" and self.ease_top_k < self.num_items
        ):
            raise ValueError(
                "ease_top_k applies to kind 'ease' only and must be below num_items "
                f"({self.num_items}); leave it out to ship B dense"
            )
        lambdas = self.ease_lambdas
        if not all(math.isfinite(lam) and 0 < lam <= 1e9 for lam in lambdas):
            raise ValueError("ease_lambdas must be finite numbers in (0, 1e9]")
        if len(set(lambdas)) != len(lambdas):
            raise ValueError("ease_lambdas must be distinct")
        return self

    def tensors(self) -> dict[str, TensorSpec]:
        if self.kind == "ease":
            return ease_spec(num_items=self.num_items, top_k=self.ease_top_k)
        return mf_spec(num_items=self.num_items, dim=self.dim)

    def update_tensors(self) -> dict[str, TensorSpec]:
        """What an update carries: the deltas of :meth:`tensors`, or for `ease` the
        participant's item Gram matrix."""
        if self.kind == "ease":
            return ease_update_spec(num_items=self.num_items)
        return self.tensors()


class StrategySpec(_Spec):
    """How the coordinator combines a round's updates into the next version."""

    name: Literal["fedavg", "fedavgm", "fedadam", "fedyogi"] = Field(
        default="fedavg",
        description="Server optimizer: how the aggregated delta moves the model "
        "(`fedavg`: base + server_lr * delta; `fedavgm`: with server momentum; "
        "`fedadam`, `fedyogi`: adaptive, Reddi et al. 2021). Its state is kept per version.",
    )
    aggregator: Literal["mean", "median", "trimmed_mean", "multi_krum"] = Field(
        default="mean",
        description="How the round's updates combine into one delta, each update first "
        "clipped to `update_norm_clip`: `mean` = weighted mean (see `normalization` and "
        "`weighting`); robust to poisoning: `median` / `trimmed_mean` = coordinate-wise, per "
        "item row over the updates that sent that row, one vote each (rows with fewer than "
        "`min_contributors` fall back to the mean); `multi_krum` = the mean of the updates "
        "closest to their neighbours. Robust aggregators hold the round's updates in memory "
        "and need the individual updates (no DP, no secure aggregation).",
    )
    trim_fraction: float = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        allow_inf_nan=False,
        description="`trimmed_mean` only: per row and coordinate, drop this fraction of the "
        "row's contributors' values at each end (rounded down) before averaging.",
    )
    min_contributors: int = Field(
        default=3,
        ge=1,
        le=100_000,
        description="`median`/`trimmed_mean` only: a row sent by fewer updates than this "
        "takes the clipped weighted mean instead (an order statistic of 1 or 2 values "
        "defends nothing).",
    )
    krum_byzantine_fraction: float = Field(
        default=0.2,
        ge=0,
        lt=0.5,
        allow_inf_nan=False,
        description="`multi_krum` only: f = floor(this x the round's updates) assumed "
        "hostile; each update is scored by its squared distances to its n - f - 2 nearest "
        "others and the n - f best are averaged.",
    )
    server_lr: float = Field(
        default=1.0,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="eta, the server step size: scale of the averaged delta (1 = plain FedAvg). "
        "Default 1 for `fedavg` and `fedavgm`, 0.01 for `fedadam` and `fedyogi` (whose "
        "step is about eta per coordinate whatever the delta's scale).",
    )
    normalization: Literal["touched", "total", "sqrt_touched"] = Field(
        default="touched",
        description=(
            "Denominator of each item row's weighted delta sum: `touched` = the weight of "
            "the updates that sent that row (per-row mean); `total` = the weight of every "
            "update in the round, so rows move in proportion to the weight that touched "
            "them (suits many small participants); `sqrt_touched` = the square root of the "
            "weight that sent that row (between the two: a row's sum over its c senders / "
            "sqrt(c) with uniform weights). Weights: see `weighting`."
        ),
    )
    weighting: Literal["examples", "uniform"] = Field(
        default="examples",
        description=(
            "Weight of an update: its `num_examples` (`examples`), or 1 for every update "
            "(`uniform`; with one participant per user, each delta already sums its "
            "examples' gradients)."
        ),
    )
    server_momentum: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="`fedavgm` only: beta of the momentum m = beta * m + delta; the model "
        "moves by server_lr * m.",
    )
    beta1: float = Field(
        default=0.9,
        ge=0,
        lt=1,
        description="`fedadam`/`fedyogi` only: decay of the first moment "
        "m = beta1 * m + (1 - beta1) * delta.",
    )
    beta2: float = Field(
        default=0.99,
        ge=0,
        lt=1,
        description="`fedadam`/`fedyogi` only: decay of the second moment v (Adam: "
        "v = beta2 * v + (1 - beta2) * delta^2; Yogi: v - (1 - beta2) * delta^2 * "
        "sign(v - delta^2)).",
    )
    tau: float = Field(
        default=1e-3,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="`fedadam`/`fedyogi` only: adaptivity; the step is "
        "server_lr * m / (sqrt(v) + tau), and v starts at tau^2.",
    )
    update_norm_clip: float | None = Field(
        default=DEFAULT_UPDATE_NORM_CLIP,
        gt=0,
        le=1e12,
        allow_inf_nan=False,
        description="Each update is scaled by min(1, C / its global L2 norm) before it is "
        "aggregated, so no participant moves the model further than C (null = off; "
        "`ease` Grams are never clipped). To refuse such updates instead, set "
        "`privacy.max_update_norm`.",
    )
    plateau_decay: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        allow_inf_nan=False,
        description="Reduce-on-plateau: each time the deploy metric's validation curve "
        "(smoothed over the deploy policy's `window`) has not improved by more than the "
        "round policy's `min_delta` for `plateau_patience` versions, the server step is "
        "multiplied by this factor, for good (the version's `step_scale`, in its lineage "
        "record). A step that stays large keeps a noisy federation jumping round to round. "
        "null = a constant step.",
    )
    plateau_patience: int = Field(
        default=5,
        ge=1,
        le=100_000,
        description="`plateau_decay` only: versions without a gain before each decay.",
    )
    proximal_mu: float = Field(
        default=0.0,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="FedProx mu for the participants' local training (0 = off): a proximal "
        "term mu/2 * ||q - q_base||^2 keeps local item factors near the round's base. The "
        "coordinator only stores and serves it.",
    )

    @property
    def needs_individual_updates(self) -> bool:
        """Whether the aggregator reads each update on its own (every robust one does),
        rather than only their sum: DP's sensitivity bound and secure aggregation, which
        reveals only the sum, both require the `mean`."""
        return self.aggregator != "mean"

    @model_validator(mode="before")
    @classmethod
    def _adaptive_step_default(cls, data: object) -> object:
        # an adaptive step is ~server_lr per coordinate: 1 (the fedavg default) would blow up
        if isinstance(data, dict) and "server_lr" not in data:
            if data.get("name") in ("fedadam", "fedyogi"):
                return {**data, "server_lr": ADAPTIVE_SERVER_LR}
        return data


class SamplingPolicy(_Spec):
    """Client sampling: which participants take part in a round, drawn when it opens."""

    kind: Literal["poisson", "fixed"] = Field(
        description="`poisson`: each active participant joins each round independently with "
        "probability `rate` (what the DP accountant's amplification by sampling assumes); "
        "`fixed`: exactly `size` participants (all of them if fewer are active), drawn "
        "uniformly without replacement."
    )
    rate: float | None = Field(
        default=None,
        gt=0,
        le=1,
        allow_inf_nan=False,
        description="`poisson` only: the probability q that a participant is in a round.",
    )
    size: int | None = Field(
        default=None,
        ge=1,
        le=DB_INT_MAX,
        description="`fixed` only: how many participants each round draws.",
    )

    @model_validator(mode="after")
    def _one_parameter_per_kind(self) -> SamplingPolicy:
        if self.kind == "poisson" and (self.rate is None or self.size is not None):
            raise ValueError("sampling kind 'poisson' takes `rate` (in (0, 1]) and no `size`")
        if self.kind == "fixed" and (self.size is None or self.rate is not None):
            raise ValueError("sampling kind 'fixed' takes `size` (>= 1) and no `rate`")
        return self


class RoundPolicy(_Spec):
    """How many rounds a federation runs, their quorum, deadlines and stopping."""

    min_participants: int = Field(
        default=1, ge=1, le=DB_INT_MAX, description="Quorum for deadline closes."
    )
    max_rounds: int = Field(default=10, ge=1, le=100_000, description="Rounds producing a version.")
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=31_536_000,
        allow_inf_nan=False,
        description="Round deadline counted from its opening (at most a year); none = no deadline.",
    )
    below_quorum: Literal["extend", "fail"] = Field(
        default="extend", description="At a deadline below quorum: extend it, or fail the round."
    )
    max_failed_rounds: int = Field(
        default=100,
        ge=1,
        le=100_000,
        description="The federation fails (state `failed`, no round open) once this many "
        "of its rounds failed (below quorum at the deadline, or an aggregation that would "
        "produce non-finite weights).",
    )
    patience: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "Early stopping: complete once `patience` evaluated versions in a row have not "
            "improved the deploy metric's aggregated validation value by more than "
            "`min_delta` over the best so far; none = stop only at `max_rounds` or the target."
        ),
    )
    min_delta: float = Field(
        default=0.0,
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="The smallest validation gain that counts as an improvement (see patience).",
    )
    min_rounds: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description=(
            "A floor under early stopping: `patience` is not consulted before this many "
            "rounds have completed, so a curve that starts flat (a slow start) is not "
            "stopped before it climbs. `max_rounds`, the privacy budget and the target "
            "still stop the federation as before. At most `max_rounds`; none = patience "
            "applies from the first round."
        ),
    )
    sampling: SamplingPolicy | None = Field(
        default=None,
        description=(
            "Client sampling per round, drawn by the coordinator from a CSPRNG when the round "
            "opens and recorded with it; sampled-out participants see `in_cohort: false` and "
            "wait for the next round. Completeness and quorum count the cohort only (quorum "
            "is min(`min_participants`, cohort size)). Null: every active participant takes "
            "part in every round."
        ),
    )
    final_evaluation_seconds: float = Field(
        default=600.0,
        ge=0,
        le=86_400,
        allow_inf_nan=False,
        description=(
            "Once the federation stops it is `evaluating`: it completes when every active "
            "participant has reported its validation figures of the final version, or after "
            "this many seconds; 0 = complete at once (the final version goes unevaluated)."
        ),
    )

    @model_validator(mode="after")
    def _min_rounds_within_cap(self) -> RoundPolicy:
        if self.min_rounds is not None and self.min_rounds > self.max_rounds:
            raise ValueError(
                f"min_rounds ({self.min_rounds}) exceeds max_rounds ({self.max_rounds}): "
                "lower min_rounds or raise max_rounds"
            )
        return self


class TargetSpec(_Spec):
    """An early-stop target on the aggregated validation figures."""

    metric: str = Field(pattern=METRIC_PATTERN, description="e.g. `ndcg@10`.")
    value: float = Field(
        allow_inf_nan=False,
        description="Stop once the aggregated validation metric reaches this.",
    )


class DeployPolicy(_Spec):
    """Which version goes live when the federation completes."""

    policy: Literal["best", "latest", "none"] = Field(
        default="best",
        description="`best`: the version with the best validation `metric`; `latest`: the "
        "last version; `none`: only the admin promotes.",
    )
    metric: str = Field(
        default="ndcg@10",
        pattern=METRIC_PATTERN,
        description="The validation metric `best` ranks by (and early stopping watches).",
    )
    window: int = Field(
        default=1,
        ge=1,
        le=99,
        description="Smoothing of the validation curve that `best` ranks and early stopping "
        "(patience) watches: each version's value is the mean over the evaluated versions "
        "of the `window` consecutive ones centred on it (an odd number; fewer at the ends "
        "of the curve). 1 = each version's own value. A noisy curve (many participants "
        "with few users each) otherwise deploys its luckiest evaluation. Not applied to "
        "`ease`, whose versions are candidate lambdas.",
    )

    @model_validator(mode="after")
    def _odd_window(self) -> DeployPolicy:
        if self.window % 2 == 0:
            raise ValueError(
                f"window must be odd (centred on the version it ranks), not {self.window}"
            )
        return self


class AdaptiveClipping(_Spec):
    """Quantile-based adaptive clipping (Andrew et al. 2021, "Differentially Private
    Learning with Adaptive Clipping"): the clip norm follows a target quantile of the
    update norms, estimated each round from a noised count of the unclipped updates."""

    target_quantile: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="gamma: the fraction of updates the clip norm should leave unclipped.",
    )
    learning_rate: float = Field(
        default=0.2,
        gt=0,
        le=10,
        allow_inf_nan=False,
        description="eta_C: each round C <- C * exp(-eta_C * (b - gamma)), b the noised "
        "fraction of updates whose norm was at most C.",
    )
    clipped_count_stddev: float | None = Field(
        default=None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        description="sigma_b: std of the Gaussian noise on the count of unclipped updates. "
        "Must exceed noise_multiplier / 2 (the updates' noise multiplier becomes "
        "(z^-2 - (2 sigma_b)^-2)^(-1/2)). Null: the round's expected cohort / 20 (the "
        "paper's choice), raised to at least noise_multiplier.",
    )


class DifferentialPrivacy(_Spec):
    """DP-FedAvg with server-side fixed clipping (McMahan et al. 2018).

    The privacy unit is one participant: every update is clipped to ``clip_norm``, and
    Gaussian noise of std ``noise_multiplier * clip_norm`` is added to the round's sum.
    """

    clip_norm: float = Field(
        gt=0,
        allow_inf_nan=False,
        description="C: each update is scaled by min(1, C / its global L2 norm).",
    )
    noise_multiplier: float = Field(
        ge=0,
        le=1000,
        allow_inf_nan=False,
        description=(
            "z: Gaussian noise of std z * C is added to every coordinate of the sum of the "
            "clipped updates; 0 clips only (no privacy guarantee: epsilon is unbounded)."
        ),
    )
    delta: float = Field(
        default=1e-5,
        gt=0,
        lt=1,
        description="The delta at which the epsilon spent is reported (below 1 / participants).",
    )
    max_epsilon: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Complete the federation before a round would spend more than this.",
    )
    adaptive_clipping: AdaptiveClipping | None = Field(
        default=None,
        description="Adapt C each round towards a quantile of the update norms "
        "(`clip_norm` is then the initial C). Part of the noise pays for the count, so "
        "epsilon stays that of `noise_multiplier`. Not with secure aggregation.",
    )

    @model_validator(mode="after")
    def _budget_needs_noise(self) -> DifferentialPrivacy:
        if self.max_epsilon is not None and self.noise_multiplier == 0:
            raise ValueError(
                "max_epsilon needs noise_multiplier > 0: without noise epsilon is unbounded"
            )
        sigma_b = self.adaptive_clipping.clipped_count_stddev if self.adaptive_clipping else None
        if sigma_b is not None and 2 * sigma_b <= self.noise_multiplier:
            raise ValueError(
                f"adaptive_clipping.clipped_count_stddev {sigma_b:g} must exceed "
                f"noise_multiplier / 2 = {self.noise_multiplier / 2:g}: the count's noise "
                "is paid for out of the updates' noise, and at that std none would be left "
                "(raise clipped_count_stddev, or leave it out for the default)"
            )
        return self


class SecureAggregation(_Spec):
    """Secure aggregation (Bonawitz et al. 2017): the coordinator learns only the sum of the
    round's updates. Participants clip locally and upload masked fixed-point vectors."""

    threshold: int = Field(
        ge=2,
        le=2**20,
        description="t: the fewest participants whose shares rebuild a dropped participant's "
        "mask key or a survivor's self-mask; every phase needs at least t participants or "
        "the round aborts (nothing is published). t-1 colluders with the coordinator learn "
        "nothing about one input.",
    )
    clip_norm: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        allow_inf_nan=False,
        description="C: each participant scales its update to a global L2 norm of at most C "
        "before encoding it (every coordinate is then in [-C, C], the fixed-point range). "
        "Default: `privacy.dp.clip_norm`; one of the two is required, and they must agree.",
    )
    max_participants: int = Field(
        default=1000,
        ge=2,
        le=2**20,
        description="The most participants one round may sum: the fixed-point scale is "
        "floor((2^31-1) / (max_participants * C)), so each coordinate of the sum is within "
        "survivors / (2 * scale) of the exact sum of the clipped updates.",
    )
    phase_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="How long each phase after the key advertisement (share keys, masked "
        "input, unmask) waits for participants that have not answered; the advertisement "
        "phase ends when the whole cohort advertised or at the round's deadline.",
    )
    graph: Literal["complete", "harary"] = Field(
        default="complete",
        description="Whom each participant shares keys and masks with: `complete` = every "
        "other participant (client cost O(n)); `harary` = its k neighbours on a Harary "
        "graph over an order the coordinator draws per round from a CSPRNG and records "
        "(SecAgg+, Bell et al. 2020: client cost O(k)). A participant's privacy then rests "
        "on its neighbourhood: fewer than `neighbour_threshold` colluders in it learn nothing.",
    )
    degree: int | None = Field(
        default=None,
        ge=2,
        le=1024,
        description="`harary` only: k, even; each participant has k/2 neighbours on each side "
        "of the drawn ring. Default 2*ceil(log2 n) for the n participants that advertised "
        "keys; k >= n-1 is the complete graph.",
    )
    neighbour_threshold: int | None = Field(
        default=None,
        ge=2,
        le=1025,
        description="`harary` only: the Shamir threshold within a neighbourhood (a "
        "participant and its k neighbours): the fewest neighbours whose shares rebuild its "
        "masks. Default: a majority of the k+1, (k+1)//2 + 1. A round whose "
        "survivors leave some neighbourhood below it, or split the survivors' graph, aborts.",
    )

    @model_validator(mode="after")
    def _graph_settings(self) -> SecureAggregation:
        if self.graph == "complete" and (
            self.degree is not None or self.neighbour_threshold is not None
        ):
            raise ValueError("degree and neighbour_threshold apply to graph 'harary' only")
        if self.degree is not None and self.degree % 2:
            raise ValueError("degree must be even (k/2 neighbours on each side of the ring)")
        if (
            self.degree is not None
            and self.neighbour_threshold is not None
            and self.neighbour_threshold > self.degree + 1
        ):
            raise ValueError("neighbour_threshold must be at most degree + 1")
        return self


class PrivacyPolicy(_Spec):
    """Bounds on what one update may change, and differential privacy."""

    max_update_norm: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Reject updates whose global L2 norm exceeds this (see also "
        "`strategy.update_norm_clip`, which scales them down instead).",
    )
    dp: DifferentialPrivacy | None = Field(
        default=None,
        description=(
            "Participant-level differential privacy (central: the coordinator is trusted). "
            "Needs strategy weighting `uniform` and normalization `total`."
        ),
    )
    secure_aggregation: SecureAggregation | None = Field(
        default=None,
        description="Secure aggregation: the coordinator sees only the sum of the round's "
        "updates (needs aggregator `mean`, weighting `uniform`, normalization `total`, no "
        "`update_norm_clip`, no `max_update_norm`; item tables are sent dense).",
    )

    @model_validator(mode="after")
    def _adaptive_clipping_sees_norms(self) -> PrivacyPolicy:
        if (
            self.secure_aggregation is not None
            and self.dp is not None
            and self.dp.adaptive_clipping is not None
        ):
            raise ValueError(
                "privacy.dp.adaptive_clipping cannot run with privacy.secure_aggregation: the "
                "coordinator sees only the sum, not the norms it must count; leave one out"
            )
        return self

    @property
    def secure_clip_norm(self) -> float | None:
        """The L2 bound participants clip to under secure aggregation (None: not used)."""
        if self.secure_aggregation is None:
            return None
        if self.secure_aggregation.clip_norm is not None:
            return self.secure_aggregation.clip_norm
        return self.dp.clip_norm if self.dp is not None else None


class LimitsPolicy(_Spec):
    """Bounds on what participants report: nothing a participant sends can outweigh the
    others without limit, or fill the database."""

    max_num_examples: int = Field(
        default=100_000_000,
        ge=1,
        le=2**53,
        description="The largest `num_examples` an update may declare (its weight under "
        "`strategy.weighting: examples`); a larger one is refused (422).",
    )
    max_num_users: int = Field(
        default=10_000_000,
        ge=1,
        le=DB_INT_MAX,
        description="The largest `num_users` an evaluation may declare (its weight in the "
        "aggregated metrics behind `target`, `patience` and the `best` deploy policy).",
    )
    metrics: tuple[str, ...] = Field(
        default=DEFAULT_METRICS,
        min_length=1,
        max_length=32,
        description="The metric names evaluations may report (the SDK reports hr, ndcg, "
        "precision, recall and their sampled_ variants at its k, 10 by default); "
        "`target.metric` and `deploy.metric` must be among them.",
    )

    @model_validator(mode="after")
    def _metric_names(self) -> LimitsPolicy:
        bad = [name for name in self.metrics if not re.match(METRIC_PATTERN, name)]
        if bad:
            raise ValueError(f"unknown metric names {bad}; use e.g. 'ndcg@10', 'sampled_hr@10'")
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError("limits.metrics must be distinct")
        return self


class TransportPolicy(_Spec):
    """How model downloads and updates travel: fewer bytes for a bounded error."""

    encoding: Literal["float32", "float16", "int8"] = Field(
        default="float32",
        description="`float32`: exact. `float16`: half the bytes (updates and downloads "
        "in IEEE half precision; values beyond ±65504 are refused). `int8`: about a "
        "quarter: int8 codes with one float32 scale per item row (a 1-D tensor is one "
        "row), error at most max|row| / 254 per value. Participants upload in it (other "
        "encodings are refused, 422), downloads default to it, and the coordinator "
        "aggregates and keeps float32. `mf` and `ials` only; not with secure aggregation, "
        "whose fixed-point encoding is its own.",
    )
