"""Matrix factorisation trained with BPR on implicit feedback (numpy, vectorised).

The score is ``s(u, i) = p_u · q_i + b_i``. The federation's **global model** is the
item side only: ``item_factors`` (float32 ``num_items x dim``) and ``item_bias``
(float32 ``num_items``). User factors ``p_u`` are private: a :class:`BPRTrainer`
keeps them on the participant, across rounds, and never returns them in an update.

One round on a participant is :meth:`BPRTrainer.train_round`: start from the round's
base item tensors, run ``epochs`` local epochs of mini-batch SGD on the local
interactions, and return a :class:`LocalUpdate` with the trained tensors, the delta,
the touched item rows (for a row-sparse upload) and ``num_examples``.

SGD follows the classic BPR update: per sampled triple ``(u, i, j)`` with ``i`` a
positive and ``j`` a sampled negative, ``x = s(u, i) - s(u, j)`` and the gradient of
``ln σ(x)`` minus L2 regularisation, applied to the rows in the triple only (lazy
regularisation, so untouched item rows do not move and row-sparse deltas are exact).
Per-triple gradients in a mini-batch are summed, not averaged, which is what
per-interaction SGD would do and what keeps ``learning_rate`` comparable across
batch sizes.

Recency weighting (``recency_window`` / ``recency_weight``) changes only which
positives an epoch visits: each user's most recent interactions are visited more often
than older ones, so the factors lean toward what users interact with now. What a user
does next is far better predicted by their last few items than by their oldest ones
(on ML-100K it lifts validation NDCG@10 by ~40 %, see ``bench/RESULTS.md``). Model and
loss are unchanged. Visits are set per interaction, not per participant, so however the
users are split across participants, together they draw what one central trainer would.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file as _st_load_file
from safetensors.numpy import save_file as _st_save_file

from .data import Interactions

__all__ = [
    "BPRConfig",
    "BPRTrainer",
    "LocalUpdate",
    "init_item_tensors",
    "recency_weights",
    "score_items",
]

F32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BPRConfig:
    """Hyperparameters of local BPR training.

    Attributes
    ----------
    dim:
        Number of latent factors.
    learning_rate:
        SGD step size (per triple; gradients in a batch are summed).
    reg:
        L2 regularisation of user factors, item factors and item biases.
    negatives:
        Negatives sampled per positive; each forms its own BPR triple.
    epochs:
        Local epochs per call of :meth:`BPRTrainer.train_round` (one epoch = every
        local positive once per negative; see ``recency_weight`` for the weighted case).
    batch_size:
        Triples per SGD step.
    seed:
        Seeds the user-factor init and every sampling stream.
    mu:
        FedProx proximal weight: adds ``mu * (q - q_base)`` to the item gradients,
        pulling local item parameters toward the round's base. 0 disables it.
    init_scale:
        Standard deviation of the normal init of user (and initial item) factors.
    lr_decay:
        Multiplies the learning rate after each local epoch (1 = constant).
    round_decay:
        A schedule over the federation's rounds: round ``r`` trains at
        ``learning_rate * round_decay ** (r - 1)`` (:meth:`round_learning_rate`; 1 =
        constant). Each participant derives it from the round number the coordinator
        hands it, so every device of a round trains at the same rate whatever rounds it
        missed. It applies to federated training rounds only: a fold-in (training the
        user factors against a deployed model) runs at ``learning_rate``.
    user_epochs:
        User-only epochs (item tensors frozen at the round's base) run before the
        ``epochs`` of a training call, so the item deltas are computed with user factors
        fitted to the current items. With one user per device the user vector is trained
        only on the device, a few steps per round, while the server step moves its items
        by the sum over all their users: without a refresh it lags the items it is paired
        with (bench/RESULTS.md, "peruser-step"). 0 = none.
    hard_negatives:
        Candidates drawn per negative; the one the current model scores highest is
        used (dynamic negative sampling). 1 = plain uniform sampling.
    recency_window:
        How many of each user's most recent interactions (by timestamp, ties by item
        index, as in the leave-one-out split) count as recent. 0 disables recency
        weighting. Interactions without a timestamp are never recent; a participant
        with no timestamps at all trains unweighted.
    recency_weight:
        How many times as often a recent interaction is visited as an older one. With
        weighting on, an epoch visits each recent interaction ``negatives`` times and
        each older one ``negatives / recency_weight`` times in expectation, so an epoch
        is shorter than an unweighted one (about 1/8 on ML-100K with 10 and 40): raise
        ``epochs`` to keep the work per round.
    """

    dim: int = 64
    learning_rate: float = 0.05
    reg: float = 0.01
    negatives: int = 1
    epochs: int = 1
    batch_size: int = 256
    seed: int = 0
    mu: float = 0.0
    init_scale: float = 0.1
    lr_decay: float = 1.0
    round_decay: float = 1.0
    hard_negatives: int = 1
    user_epochs: int = 0
    recency_window: int = 0
    recency_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.recency_window < 0:
            raise ValueError(f"recency_window must be >= 0, got {self.recency_window}")
        if not self.recency_weight > 0.0:
            raise ValueError(f"recency_weight must be > 0, got {self.recency_weight}")
        if not 0.0 < self.round_decay <= 1.0:
            raise ValueError(f"round_decay must be in (0, 1], got {self.round_decay}")
        if self.user_epochs < 0:
            raise ValueError(f"user_epochs must be >= 0, got {self.user_epochs}")

    def round_learning_rate(self, round_number: int) -> float:
        """The learning rate of federated round ``round_number`` (1-based; 0 or less,
        e.g. a caller that does not know the round, counts as round 1)."""
        return self.learning_rate * self.round_decay ** max(round_number - 1, 0)

    @property
    def recency_weighted(self) -> bool:
        """Whether epochs visit positives by recency weight instead of uniformly."""
        return self.recency_window > 0 and self.recency_weight != 1.0

    def replace(self, **changes: Any) -> BPRConfig:
        """Return a copy with some fields changed."""
        values = asdict(self)
        values.update(changes)
        return BPRConfig(**values)


def init_item_tensors(
    num_items: int, dim: int, *, seed: int = 0, scale: float = 0.1
) -> dict[str, F32]:
    """Initial global model: ``item_factors ~ N(0, scale²)`` and zero ``item_bias``.

    This is what a coordinator publishes as version 0 for an MF federation.
    """
    rng = np.random.default_rng([seed, 0x17E])
    return {
        "item_factors": (rng.standard_normal((num_items, dim)) * scale).astype(np.float32),
        "item_bias": np.zeros(num_items, dtype=np.float32),
    }


def recency_weights(train: Interactions, window: int, weight: float) -> npt.NDArray[np.float64]:
    """Per-interaction sampling weights: ``weight`` for each user's ``window`` latest, else 1.

    "Latest" orders a user's interactions by ``(timestamp, item index)`` like the
    leave-one-out split; interactions whose timestamp is unknown (NaN) keep weight 1.
    """
    weights = np.ones(len(train), dtype=np.float64)
    timed = np.flatnonzero(np.isfinite(train.timestamps))
    if window <= 0 or timed.size == 0:
        return weights
    users = train.users[timed]
    order = timed[np.lexsort((train.items[timed], train.timestamps[timed], users))]
    sorted_users = train.users[order]
    counts = np.bincount(sorted_users)
    ends = np.cumsum(counts)  # one past each user's last position in `order`
    from_end = ends[sorted_users] - 1 - np.arange(order.size)
    weights[order[from_end < window]] = weight
    return weights


def score_items(user_factors: F32, item_factors: F32, item_bias: F32) -> npt.NDArray[np.float32]:
    """Scores ``P Qᵀ + b`` for a block of user factor rows: ``(users, num_items)``."""
    return np.asarray(user_factors @ item_factors.T + item_bias[None, :], dtype=np.float32)


@dataclass
class LocalUpdate:
    """What one local round produced.

    Attributes
    ----------
    item_factors, item_bias:
        The trained item tensors (full shape).
    delta:
        ``{"item_factors": trained - base, "item_bias": trained - base}``, full shape.
    rows:
        Sorted, distinct item rows the round touched (positives and sampled
        negatives); every other row of ``delta`` is exactly zero.
    num_examples:
        Number of local training interactions (the FedAvg weight).
    loss:
        Mean BPR loss ``-ln σ(x)`` over the round's triples (diagnostic).
    skipped_steps:
        Mini-batch steps left out because they would have made a parameter NaN or Inf:
        a sign of a too large learning rate (see :mod:`.stability`).
    """

    item_factors: F32
    item_bias: F32
    delta: dict[str, F32]
    rows: IntArray
    num_examples: int
    loss: float = 0.0
    skipped_steps: int = 0

    def sparse_delta(self) -> dict[str, F32]:
        """The delta restricted to :attr:`rows`, for a ``row_sparse`` upload."""
        return {name: np.ascontiguousarray(d[self.rows]) for name, d in self.delta.items()}


def _segment_sum(
    index: IntArray, values: npt.NDArray[np.float32]
) -> tuple[IntArray, npt.NDArray[np.float32]]:
    """Sum rows of ``values`` that share an ``index``; return (unique index, sums)."""
    order = np.argsort(index, kind="stable")
    sorted_index = index[order]
    starts = np.flatnonzero(np.r_[True, sorted_index[1:] != sorted_index[:-1]])
    sums = np.add.reduceat(values[order], starts, axis=0)
    return sorted_index[starts], sums


@dataclass
class _Seen:
    """Membership test for (user, item) pairs via sorted int64 keys."""

    keys: IntArray
    num_items: int
    per_user: list[IntArray] = field(default_factory=list)

    @classmethod
    def build(cls, users: IntArray, items: IntArray, num_items: int) -> _Seen:
        return cls(np.unique(users * num_items + items), num_items)

    def contains(self, users: IntArray, items: IntArray) -> npt.NDArray[np.bool_]:
        keys = users * self.num_items + items
        pos = np.searchsorted(self.keys, keys)
        pos = np.minimum(pos, self.keys.size - 1)
        return np.asarray(self.keys[pos] == keys) if self.keys.size else np.zeros(keys.size, bool)


class PrivateUserFactors:
    """What every local trainer shares: private user factors, scoring, and their state.

    The factors never leave the participant; they are saved with safetensors (no pickle)
    so a restarted participant resumes them.
    """

    user_factors: F32
    steps: int

    def score(
        self, users: IntArray, item_tensors: dict[str, F32] | dict[str, npt.NDArray[np.generic]]
    ) -> npt.NDArray[np.float32]:
        """Scores of local ``users`` (factors as last trained) against item tensors."""
        return score_items(
            self.user_factors[np.asarray(users)],
            np.asarray(item_tensors["item_factors"], dtype=np.float32),
            np.asarray(item_tensors["item_bias"], dtype=np.float32),
        )

    def state_dict(self) -> dict[str, npt.NDArray[np.generic]]:
        """Private state as plain arrays (user factors and the step counter)."""
        return {
            "user_factors": self.user_factors.copy(),
            "steps": np.array([self.steps], dtype=np.int64),
        }

    def load_state_dict(self, state: dict[str, npt.NDArray[np.generic]]) -> None:
        """Restore :meth:`state_dict` output; shapes must match this trainer."""
        factors = np.asarray(state["user_factors"], dtype=np.float32)
        if factors.shape != self.user_factors.shape:
            raise ValueError(
                f"user_factors shape {factors.shape} != expected {self.user_factors.shape}"
            )
        self.user_factors = factors.copy()
        self.steps = int(np.asarray(state["steps"]).reshape(-1)[0])

    def save(self, path: str | Path) -> None:
        """Write the private state to a safetensors file (no pickle)."""
        _st_save_file({k: np.ascontiguousarray(v) for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | Path) -> None:
        """Read state written by :meth:`save`."""
        self.load_state_dict(dict(_st_load_file(str(path))))


class BPRTrainer(PrivateUserFactors):
    """Local BPR-MF trainer that owns the private user factors.

    Parameters
    ----------
    num_users:
        Number of local users (indices ``0..num_users-1`` of the local
        :class:`~participant_sdk.recsys.data.Interactions`).
    num_items:
        Catalog size (rows of the global item tensors).
    config:
        Training hyperparameters.

    Examples
    --------
    >>> trainer = BPRTrainer(num_users=data.num_users, num_items=1682, config=BPRConfig())
    >>> update = trainer.train_round(global_tensors, data)          # doctest: +SKIP
    >>> payload = encode_update(update.sparse_delta(), rows=update.rows, ...)  # doctest: +SKIP
    """

    def __init__(self, *, num_users: int, num_items: int, config: BPRConfig) -> None:
        self.config = config
        self.num_users = num_users
        self.num_items = num_items
        rng = np.random.default_rng([config.seed, 0x05E2])
        self.user_factors: F32 = (
            rng.standard_normal((num_users, config.dim)) * config.init_scale
        ).astype(np.float32)
        # Number of completed training calls: makes every call's sampling stream
        # distinct yet reproducible, and survives save/restore.
        self.steps = 0
        self._skipped_steps = 0  # gated steps of the current training call

    # ------------------------------------------------------------------ training
    def train_round(
        self,
        base: dict[str, F32] | dict[str, npt.NDArray[np.generic]],
        train: Interactions,
        *,
        epochs: int | None = None,
        learning_rate: float | None = None,
        update_items: bool = True,
    ) -> LocalUpdate:
        """Train from the round's base item tensors; return the trained tensors and delta.

        Parameters
        ----------
        base:
            ``{"item_factors": (num_items, dim) float32, "item_bias": (num_items,)}``;
            not modified.
        train:
            Local training interactions (user indices local, items = catalog rows).
        epochs:
            Overrides ``config.epochs`` for this call.
        learning_rate:
            Overrides ``config.learning_rate`` for this call (e.g. a server schedule).
        update_items:
            ``False`` trains user factors only (items frozen): a cheap local
            personalisation step after receiving a new global model.
        """
        cfg = self.config
        base_q = np.asarray(base["item_factors"], dtype=np.float32)
        base_b = np.asarray(base["item_bias"], dtype=np.float32)
        if base_q.shape != (self.num_items, cfg.dim) or base_b.shape != (self.num_items,):
            raise ValueError(
                f"base tensors must be ({self.num_items}, {cfg.dim}) and ({self.num_items},), "
                f"got {base_q.shape} and {base_b.shape}"
            )
        if train.users.size and int(train.users.max()) >= self.num_users:
            raise ValueError("training data has user indices beyond num_users")
        q = base_q.copy()
        b = base_b.copy()
        rng = np.random.default_rng([cfg.seed, self.steps, 0xB9])
        self.steps += 1
        n_epochs = cfg.epochs if epochs is None else epochs
        lr = cfg.learning_rate if learning_rate is None else learning_rate
        touched = np.zeros(self.num_items, dtype=bool)
        losses: list[float] = []
        self._skipped_steps = 0
        if len(train) and n_epochs > 0:
            seen = _Seen.build(train.users, train.items, self.num_items)
            visits = None
            if cfg.recency_weighted:
                weights = recency_weights(train, cfg.recency_window, cfg.recency_weight)
                visits = weights / weights.max()
            # the user refresh: fit the user factors to the base items first (its losses
            # are not reported; its steps move no item, so no row is touched)
            refresh = cfg.user_epochs if update_items else 0
            for epoch in range(refresh + n_epochs):
                # an overflowing step is gated in _epoch, not warned about per batch
                with np.errstate(over="ignore", invalid="ignore"):
                    loss = self._epoch(
                        train,
                        seen,
                        visits,
                        q,
                        b,
                        base_q,
                        base_b,
                        lr,
                        rng,
                        touched,
                        update_items and epoch >= refresh,
                    )
                if epoch >= refresh:
                    losses.append(loss)
                    lr *= cfg.lr_decay
        if not update_items:
            q, b = base_q.copy(), base_b.copy()
            touched[:] = False
        delta = {"item_factors": q - base_q, "item_bias": b - base_b}
        return LocalUpdate(
            item_factors=q,
            item_bias=b,
            delta=delta,
            rows=np.flatnonzero(touched).astype(np.int64),
            num_examples=len(train),
            loss=float(np.mean(losses)) if losses else 0.0,
            skipped_steps=self._skipped_steps,
        )

    def _sample_negatives(self, users: IntArray, seen: _Seen, rng: np.random.Generator) -> IntArray:
        neg = rng.integers(0, self.num_items, size=users.size)
        # Rejection sampling, vectorised: re-draw the few negatives the user has seen.
        for _ in range(20):
            bad = seen.contains(users, neg)
            if not bad.any():
                break
            neg[bad] = rng.integers(0, self.num_items, size=int(bad.sum()))
        return neg

    def _epoch(
        self,
        train: Interactions,
        seen: _Seen,
        visits: npt.NDArray[np.float64] | None,
        q: F32,
        b: F32,
        base_q: F32,
        base_b: F32,
        lr: float,
        rng: np.random.Generator,
        touched: npt.NDArray[np.bool_],
        update_items: bool,
    ) -> float:
        cfg = self.config
        p = self.user_factors
        n_neg = max(1, cfg.negatives)
        if visits is None:
            order = rng.permutation(np.repeat(np.arange(len(train)), n_neg))
        else:
            # interaction k is visited n_neg * visits[k] times in expectation (stochastic
            # rounding); per-interaction, so any partition of the users draws like central
            counts = np.floor(n_neg * visits + rng.random(visits.size)).astype(np.int64)
            order = rng.permutation(np.repeat(np.arange(len(train)), counts))
        users_all = train.users[order]
        pos_all = train.items[order]
        n_cand = max(1, cfg.hard_negatives)
        cands = self._sample_negatives(np.repeat(users_all, n_cand), seen, rng).reshape(-1, n_cand)
        reg, mu = cfg.reg, cfg.mu
        loss_sum = 0.0
        for start in range(0, order.size, cfg.batch_size):
            u = users_all[start : start + cfg.batch_size]
            i = pos_all[start : start + cfg.batch_size]
            pu = p[u]
            if n_cand == 1:
                j = cands[start : start + cfg.batch_size, 0]
            else:
                c = cands[start : start + cfg.batch_size]
                # score every candidate with the current model and keep the hardest
                cs = np.einsum("bd,bmd->bm", pu, q[c]) + b[c]
                j = c[np.arange(c.shape[0]), np.argmax(cs, axis=1)]
            qi, qj = q[i], q[j]
            x = np.einsum("bd,bd->b", pu, qi - qj) + b[i] - b[j]
            # σ(-x) computed stably; it is d ln σ(x) / dx.
            g = (0.5 * (1.0 - np.tanh(0.5 * x))).astype(np.float32)
            loss_sum += float(np.logaddexp(0.0, -x).sum())
            gu = g[:, None] * (qi - qj) - reg * pu
            uu, su = _segment_sum(u, gu)
            # Gated steps: a batch whose step would make any parameter NaN or Inf writes
            # nothing (counted in skipped_steps), so one overflow cannot poison the model.
            new_p = p[uu] + lr * su
            if not update_items:
                if np.isfinite(new_p).all():
                    p[uu] = new_p
                else:
                    self._skipped_steps += 1
                continue
            gpi = g[:, None] * pu - reg * qi
            gpj = -g[:, None] * pu - reg * qj
            rows = np.concatenate([i, j])
            grads = np.concatenate([gpi, gpj])
            gb = np.concatenate([g - reg * b[i], -g - reg * b[j]])
            if mu > 0.0:
                grads -= mu * (np.concatenate([qi, qj]) - base_q[rows])
                gb -= mu * (b[rows] - base_b[rows])
            ur, sq = _segment_sum(rows, grads)
            _, sb = _segment_sum(rows, gb[:, None])
            new_q = q[ur] + lr * sq
            new_b = b[ur] + lr * sb[:, 0]
            if not (
                np.isfinite(new_p).all() and np.isfinite(new_q).all() and np.isfinite(new_b).all()
            ):
                self._skipped_steps += 1
                continue
            p[uu] = new_p
            q[ur] = new_q
            b[ur] = new_b
            touched[ur] = True
        return loss_sum / max(order.size, 1)
