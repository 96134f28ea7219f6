"""What a simulation runs with: :class:`SimulationOptions`, the one home of its defaults.

``fedrec simulate`` / ``fedrec demo`` read their argument defaults from these fields
(:mod:`fedrec.cli`), so the command line and the Python API cannot drift apart. The
module imports nothing heavy: the command line builds its parser from it even where
the simulation's own dependencies (rich, the server extra) are not installed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from fedrec.partition import PartitionScheme
    from participant_sdk.recsys import BPRConfig, IALSConfig

__all__ = ["IALS_SERVER_LR", "SECAGG_CLIP", "SimulationOptions", "default_of"]

# Implicit ALS uploads each participant's closed-form item step: averaging those is the
# step itself, and a larger server step overshoots it (the bpr default of 2 would).
IALS_SERVER_LR = 1.0

# The clip norm of a secure-aggregation simulation without DP: above the largest update
# norm measured on ML-100K (73.3, see coordinator.domain.specs.DEFAULT_UPDATE_NORM_CLIP),
# so honest updates are not scaled down, while the fixed-point scale,
# (2^31 - 1) / (participants * clip), still resolves ~2e-5 per coordinate at 943 users.
SECAGG_CLIP = 100.0


# The training defaults are the best 20-round recipe for 5 IID silos at a constant
# learning rate (bench/RESULTS.md: ML-100K validation NDCG@10 ~0.079 with recency
# weighting, ~0.063 without). A recency-weighted epoch visits each user's 10 latest
# interactions 3 times (the negatives) and older ones 40x less, ~1/8 of a full pass on
# ML-100K, hence 8 local epochs; with recency_window 0 use about 2. `fedrec demo` takes
# ~45 s on 2 cores.
#
# Training stops on validation (the federation's stop policy; the centralized baseline
# stops the same way): after `patience` rounds whose validation NDCG@10 did not beat the
# best by more than `min_delta`, and deploys the best version. `rounds` is only a cap.
# Patience 5: one user is ~0.001 NDCG@10 on ML-100K and round-to-round validation noise is
# of that order, so a shorter patience stops on noise while the curve still climbs
# (issue 9: the 20-round runs peaked at round 16-19); min_delta 0 lets a slow climb
# continue. The cap of 100 bounds a run that keeps creeping up.
@dataclass
class SimulationOptions:
    dataset: Literal["ml-100k", "csv", "synthetic"] = "synthetic"
    data: Path | None = None
    user_col: str | None = None
    item_col: str | None = None
    rating_col: str | None = None
    time_col: str | None = None
    participants: int = 5
    partition: PartitionScheme = "iid"
    rounds: int = 100
    patience: int | None = 5
    min_delta: float = 0.0
    # patience is not consulted before this round (the round policy's min_rounds). None:
    # the recipe search sets it to the last round at which its winner's validation curve
    # still improved (fedrec.selection): a slow start it saw end is no plateau
    min_rounds: int | None = None
    # the deploy policy's smoothing: versions ranked (and patience counted) by the mean
    # validation of the `validation_window` versions centred on each (odd; 1 = raw). 5:
    # choosing on half the validation users and scoring on the other half, it picked
    # better versions than the raw curve and than 3, summed over three runs (ML-100K
    # per-user and 5 IID silos, a per-user synthetic set); 3 lost on an alternating curve
    # cut by a round cap, where the last version's window holds only two values
    # (bench/RESULTS.md, "Deploying on a smoothed validation curve").
    validation_window: int = 5
    seed: int = 0
    # auto = choose the model and server optimizer on validation (fedrec.selection)
    # among the choices not in `pinned` (the option fields the user set); fixed = as given
    recipe: Literal["auto", "fixed"] = "auto"
    pinned: tuple[str, ...] = ()
    # bpr = BPR-MF (federation kind "mf"); ials = confidence-weighted implicit ALS, which
    # weighs each interaction by its strength (the rating column) through alpha
    # ease = closed-form EASE: one round per candidate lambda, the best validated deployed
    model: Literal["bpr", "ials", "ease"] = "bpr"
    # ease: the candidate lambdas, one round each (None: the coordinator's default grid);
    # the recipe search sets them from the data (fedrec.ease_search)
    ease_lambdas: tuple[float, ...] | None = None
    alpha: float = 3.0
    dim: int = 64
    local_epochs: int = 8
    learning_rate: float = 0.05
    # BPR's local rate of round r is learning_rate * round_decay ** (r - 1), sent to the
    # participants in their config (1 = constant; fedrec.selection sets it per recipe)
    round_decay: float = 1.0
    # BPR: user-only epochs against the round's base before the local epochs (0 = none)
    user_epochs: int = 0
    reg: float = 0.01
    negatives: int = 3
    recency_window: int = 10
    recency_weight: float = 40.0
    server_lr: float | None = 2.0  # None: the coordinator's default for server_optimizer
    normalization: Literal["touched", "total", "sqrt_touched"] = "touched"
    weighting: Literal["examples", "uniform"] = "examples"
    # the server optimizer and its hyperparameters (None: the coordinator's default)
    server_optimizer: Literal["fedavg", "fedavgm", "fedadam", "fedyogi"] = "fedavg"
    server_momentum: float | None = None
    server_beta1: float | None = None
    server_beta2: float | None = None
    server_tau: float | None = None
    # reduce-on-plateau of the server step (the strategy's plateau_decay; None = constant)
    plateau_decay: float | None = None
    plateau_patience: int = 5
    # FedProx mu, a federation setting every participant trains with (0 = off)
    proximal_mu: float = 0.0
    # differential privacy: clip norm C and noise multiplier z (None = no DP)
    dp_clip: float | None = None
    dp_noise: float | None = None
    # secure aggregation (the coordinator sees only each round's sum): the Shamir threshold
    # (None: a majority of the participants), the clip norm each participant scales its
    # update to (None: dp_clip, else SECAGG_CLIP), and the graph participants share keys on
    # (complete, or a sparse random Harary graph of even degree; None: 2*ceil(log2 n))
    secure_aggregation: bool = False
    secagg_threshold: int | None = None
    secagg_clip: float | None = None
    secagg_graph: Literal["complete", "harary"] = "complete"
    secagg_degree: int | None = None
    # how updates and downloads travel (the federation's transport.encoding)
    encoding: Literal["float32", "float16", "int8"] = "float32"
    coordinator: str | None = None
    admin_token: str | None = None
    data_dir: Path | None = None
    report: Path | None = None
    workers: int = 4
    fallback_to_synthetic: bool = False
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def strategy(self) -> dict[str, Any]:
        """The federation's strategy, checked by the coordinator's own rules first."""
        from pydantic import ValidationError

        from coordinator.domain.specs import StrategySpec

        chosen = {
            "name": self.server_optimizer,
            "server_lr": self.server_lr,
            "normalization": self.normalization,
            "weighting": self.weighting,
            "server_momentum": self.server_momentum,
            "beta1": self.server_beta1,
            "beta2": self.server_beta2,
            "tau": self.server_tau,
            "plateau_decay": self.plateau_decay,
            "plateau_patience": self.plateau_patience if self.plateau_decay else None,
            "proximal_mu": self.proximal_mu,
        }
        strategy: dict[str, Any] = {k: v for k, v in chosen.items() if v is not None}
        if self.secure_aggregation:
            # the coordinator never sees an update to clip: participants clip (secagg_clip)
            strategy["update_norm_clip"] = None
        try:
            StrategySpec.model_validate(strategy)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise SystemExit(f"invalid server optimizer settings: {problems}") from None
        return strategy

    def privacy(self, participants: int | None = None) -> dict[str, Any] | None:
        """The federation's privacy policy, or None; explains a setting DP or secure
        aggregation cannot use. ``participants`` (the partition's count, once known) sets
        the default secure-aggregation threshold: a majority."""
        dp = self.dp_clip is not None or self.dp_noise is not None
        if not dp and not self.secure_aggregation:
            return None
        from coordinator.domain.errors import ValidationFailed
        from coordinator.domain.privacy import check_dp_policy
        from coordinator.domain.specs import PrivacyPolicy, StrategySpec

        policy: dict[str, Any] = {}
        if dp:
            if self.dp_clip is None or self.dp_noise is None:
                raise SystemExit(
                    "--dp-clip and --dp-noise go together (--dp-noise 0 clips without noise)"
                )
            policy["dp"] = {"clip_norm": self.dp_clip, "noise_multiplier": self.dp_noise}
        if self.secure_aggregation:
            policy["secure_aggregation"] = self._secure_aggregation(participants)
        strategy = self.strategy()
        try:  # the coordinator's own check, before anything starts
            check_dp_policy(
                StrategySpec.model_validate(strategy), PrivacyPolicy.model_validate(policy)
            )
        except ValidationFailed as exc:
            raise SystemExit(
                f"{exc.detail} (set --weighting uniform --normalization total)"
            ) from None
        return policy

    def _secure_aggregation(self, participants: int | None) -> dict[str, Any]:
        """``privacy.secure_aggregation``, refusing what it excludes in the user's terms."""
        wrong = []
        if self.model == "ease":
            wrong.append("--model ease (its Gram sum is not supported; use bpr or ials)")
        if self.weighting != "uniform":
            wrong.append("--weighting examples (example weights would need each update)")
        if self.normalization != "total":
            wrong.append("--normalization touched (updates are dense: every row is sent)")
        if self.dp_clip is not None and self.secagg_clip not in (None, self.dp_clip):
            wrong.append("--secagg-clip different from --dp-clip (DP's bound is the clip)")
        if self.secagg_graph == "complete" and self.secagg_degree is not None:
            wrong.append("--secagg-degree without --secagg-graph harary")
        if wrong:
            raise SystemExit("--secure-aggregation excludes " + "; ".join(wrong))
        if participants is not None and participants < 2:
            raise SystemExit("--secure-aggregation needs at least 2 participants")
        threshold = self.secagg_threshold or (
            max(2, participants // 2 + 1) if participants is not None else 2
        )
        policy: dict[str, Any] = {
            "threshold": threshold,
            "clip_norm": self.secagg_clip or self.dp_clip or SECAGG_CLIP,
        }
        if participants is not None:
            policy["max_participants"] = max(participants, threshold)
        if self.secagg_graph != "complete":
            policy["graph"] = self.secagg_graph
            if self.secagg_degree is not None:
                policy["degree"] = self.secagg_degree
        from pydantic import ValidationError

        from coordinator.domain.specs import SecureAggregation

        try:
            SecureAggregation.model_validate(policy)
        except ValidationError as exc:
            problems = "; ".join(e["msg"] for e in exc.errors())
            raise SystemExit(f"invalid secure-aggregation settings: {problems}") from None
        return policy

    def round_policy(self) -> dict[str, Any]:
        """The federation's round policy: the cap, and early stopping on validation,
        checked by the coordinator's own rules first."""
        from pydantic import ValidationError

        from coordinator.domain.specs import RoundPolicy

        policy: dict[str, Any] = {"min_participants": 1, "max_rounds": self.rounds}
        if self.patience is not None:
            policy.update(patience=self.patience, min_delta=self.min_delta)
            if self.min_rounds is not None:
                policy["min_rounds"] = self.min_rounds
        try:
            RoundPolicy.model_validate(policy)
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise SystemExit(
                f"invalid stop policy (--rounds, --patience, --min-rounds): {problems}"
            ) from None
        return policy

    def deploy_policy(self) -> dict[str, Any]:
        """The federation's deploy policy: the best validated version, on the curve the
        stop policy watches (smoothed over ``validation_window``)."""
        policy: dict[str, Any] = {"policy": "best", "metric": "ndcg@10"}
        # ease's versions are candidate lambdas, not a trajectory to smooth
        if self.validation_window != 1 and self.model != "ease":
            policy["window"] = self.validation_window
        return policy

    def bpr_config(self) -> BPRConfig:
        from participant_sdk.recsys import BPRConfig

        return BPRConfig(
            dim=self.dim,
            learning_rate=self.learning_rate,
            round_decay=self.round_decay,
            user_epochs=self.user_epochs,
            reg=self.reg,
            negatives=self.negatives,
            recency_window=self.recency_window,
            recency_weight=self.recency_weight,
            epochs=self.local_epochs,
            seed=self.seed,
        ).replace(**self.config_overrides)

    def ials_config(self) -> IALSConfig:
        from participant_sdk.recsys import IALSConfig

        return IALSConfig(dim=self.dim, reg=self.reg, alpha=self.alpha, seed=self.seed).replace(
            **self.config_overrides
        )

    def trainer_config(self) -> BPRConfig | IALSConfig:
        """The local training config of the chosen model."""
        return self.ials_config() if self.model == "ials" else self.bpr_config()


_FIELDS = {f.name: f for f in dataclasses.fields(SimulationOptions)}


def default_of(name: str) -> Any:
    """The default of the :class:`SimulationOptions` field ``name``."""
    found = _FIELDS[name]
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    raise KeyError(f"SimulationOptions.{name} has no default")
