"""One participant's whole federated loop, in a few lines.

Example::

    from participant_sdk import Client, FederatedRecommender

    client = Client("http://coordinator:8000", token)
    rec = FederatedRecommender.from_file(client, federation_id, "interactions.csv")
    rec.run()                       # evaluate, train, upload each round until the federation ends
    rec.recommend("user-42", k=10)  # from the deployed version, never an item the user has

``from_file`` keeps what loading dropped in :attr:`~FederatedRecommender.cleaning_report`
(and logs it). ``run()`` logs a line per round at INFO (progress, ETA) and
"reconnected" after an outage; ``run(progress_bar=True)`` also draws a bar (rich).
``recommend()`` re-reads the deployment at most every ``deployment_ttl`` seconds, so a
promote or roll-back is picked up, and answers a user it has no interactions of with the
local popularity ranking, flagged as such (:class:`Recommendations`).

Each round the participant downloads the round's base version, evaluates it on its
local validation split and reports the figures, trains locally from that base (BPR-MF
for a federation of kind ``mf``, implicit ALS for ``ials``), and uploads the delta (BPR
only the item rows it touched, implicit ALS every row; ``ease`` uploads its item Gram in
the first round only, see :mod:`.recsys.ease_trainer`) after checking it is finite and
sane (:mod:`.recsys.stability`: a diverged round is retried at half the learning rate,
then skipped with a clear error). Once the federation stops training (it is
``evaluating``), the participant evaluates the final version on validation too, so the
deploy policy can choose it. User factors never leave the process. Progress is saved
after every upload, so a participant restarted from its
``state_dir`` resumes at the coordinator's current round and never uploads twice into
one round.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, overload

import numpy as np
import numpy.typing as npt

from ._base_client import retry_after_seconds
from ._client import Client
from ._exceptions import (
    APIConnectionError,
    ConflictError,
    FederationCompletedError,
    FutureRoundError,
    InternalServerError,
    NotFoundError,
    NotSampledError,
    ParticipantRevokedError,
    RateLimitError,
    RoundClosedError,
    UpdateConflictError,
    WaitTimeoutError,
)
from .progress import RoundProgress
from .recsys.data import (
    CleaningReport,
    DataFileError,
    Interactions,
    load_csv,
    load_movielens_100k,
    map_to_catalog,
)
from .recsys.ease_trainer import EASEConfig, EASETrainer
from .recsys.ials import IALSConfig
from .recsys.metrics import (
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    recommend,
    seen_matrix,
)
from .recsys.model import BPRConfig, LocalUpdate
from .recsys.splits import LeaveOneOutSplit, concat, leave_one_out
from .recsys.stability import TrainingDivergedError, train_with_backoff
from .recsys.trainers import config_for, fold_in, make_trainer, prepare_to_score, uploads_dense
from .types import Round
from .wire import Encoding, mf_spec

__all__ = ["FederatedRecommender", "Recommendations", "StepOutcome"]

log = logging.getLogger("fedrec.participant")

StepOutcome = Literal["uploaded", "waiting", "completed", "diverged"]
SAMPLED_NEGATIVES = 99  # EVALUATION.md: the literature's sampled variant
# evaluating with no validation users of ours: poll this often instead of long-polling
# run() refreshes the participant token once this share of its lifetime is left
TOKEN_REFRESH_FRACTION = 1 / 3
IDLE_POLL_SECONDS = 2.0
# a sampled round waiting for enough participants to draw: poll this often (the
# long-poll would wait for the next round, and this one may still draw us)
DRAW_POLL_SECONDS = 2.0
F32 = npt.NDArray[np.float32]
# how stale recommend()'s view of the deployment may be (a promote/roll-back shows up)
DEPLOYMENT_TTL_SECONDS = 30.0


class Recommendations(list[str]):
    """Recommended catalog item ids, best first, and how they were chosen.

    A plain ``list`` of item ids with two attributes:

    Attributes
    ----------
    fallback:
        ``None`` when personalised by the deployed model; ``"popularity"`` when the user
        has no local interactions, so the most popular local items were returned.
    version:
        The deployed model version the participant served from.
    """

    def __init__(self, items: Sequence[str], *, fallback: str | None, version: int | None):
        super().__init__(items)
        self.fallback = fallback
        self.version = version


def _outage_pause(exc: Exception, delay: float) -> float:
    """Seconds ``run()`` waits after its client's own retries are spent: the back-off
    ``delay`` with jitter, or the coordinator's last ``Retry-After`` (jittered) when
    longer: a 503 ``overloaded`` or a 429 says when to come back."""
    pause = delay * (0.5 + random.random())  # nosec B311 # back-off jitter, not a secret
    response = getattr(exc, "response", None)
    if isinstance(exc, InternalServerError | RateLimitError) and response is not None:
        asked = retry_after_seconds(response)
        if asked is not None:
            pause = max(pause, asked)
    return pause


@dataclass
class _Progress:
    """What must survive a restart: the last round uploaded and version evaluated."""

    last_round: int = 0
    last_evaluated_version: int = -1
    test_reported_version: int = -1
    history: list[dict[str, object]] = field(default_factory=list)


class FederatedRecommender:
    """A participant: local data, a local trainer, and the federated loop.

    Parameters
    ----------
    client:
        A :class:`~participant_sdk.Client` holding this participant's token.
    federation_id:
        The federation to take part in.
    interactions:
        Local interactions whose items are already catalog rows (see :meth:`from_file`,
        which maps external ids onto the federation's catalog).
    config:
        Local training hyperparameters: a ``BPRConfig`` for a federation of kind ``mf``,
        an ``IALSConfig`` for ``ials``, none for ``ease`` (the kind's defaults when
        ``None``); ``dim`` is
        taken from the federation's model, and BPR's ``mu`` (FedProx) from its strategy's
        ``proximal_mu``.
    state_dir:
        Where progress and the private user factors are saved after each upload.
    sparse:
        Upload only the item rows touched this round (row-sparse) instead of dense deltas
        (implicit ALS touches every row, so it always uploads dense deltas).
    k:
        Cut-off of the reported metrics (``ndcg@k``, ``hr@k``, ...).
    deployment_ttl:
        :meth:`recommend` re-reads which version is deployed when its view is older than
        this many seconds (0 = on every call), so a promote or roll-back is picked up.
    on_token_refresh:
        Called with the new token each time :meth:`run` refreshes the participant's
        token (before a third of its lifetime is left): persist it if the process may
        restart, since the old token stops working shortly after.
    """

    def __init__(
        self,
        client: Client,
        federation_id: str,
        interactions: Interactions,
        *,
        config: BPRConfig | IALSConfig | EASEConfig | None = None,
        state_dir: str | Path | None = None,
        sparse: bool = True,
        k: int = 10,
        deployment_ttl: float = DEPLOYMENT_TTL_SECONDS,
        on_token_refresh: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        # run() refreshes an expiring participant token; the callback persists the new one
        self.on_token_refresh = on_token_refresh
        self._token_expires_at: datetime | None = None
        self._token_lifetime = 0.0
        self.federation_id = federation_id
        federation = client.federations.get(federation_id)
        self.num_items = federation.model.num_items
        self.max_rounds = federation.rounds.max_rounds if federation.rounds else None
        self.config = config_for(federation.model.kind, config, dim=federation.model.dim)
        # secure aggregation: the coordinator sees only the sum; the protocol runs in step()
        self.secure_aggregation = (
            federation.privacy is not None and federation.privacy.secure_aggregation is not None
        )
        self._participant_id: str | None = None
        self._model_dim = federation.model.dim or 1
        # why the last secure-aggregation round was refused (see step())
        self.last_refusal: Exception | None = None
        # FedProx mu is the federation's setting: every participant trains with the same
        mu = federation.strategy.proximal_mu if federation.strategy is not None else None
        # uploads must be in the federation's encoding; downloads follow it too
        self.encoding = federation.transport.encoding
        if mu is not None and isinstance(self.config, BPRConfig):
            self.config = self.config.replace(mu=mu)
        if interactions.num_items != self.num_items:
            raise ValueError(
                f"interactions index {interactions.num_items} items but the federation's "
                f"model has {self.num_items}; map them with map_to_catalog first"
            )
        if not len(interactions):
            # from_file refuses such a file; built directly, say it once, not per round
            log.warning(
                "participant of federation %s has no local interactions: it will skip "
                "every round and report no figures",
                federation_id,
            )
        self.data = interactions
        self.split: LeaveOneOutSplit = leave_one_out(interactions)
        self.k = k
        self.sparse = sparse
        self.trainer = make_trainer(
            self.config, num_users=interactions.num_users, num_items=self.num_items
        )
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.progress = _Progress()
        self.deployed_version: int | None = None
        # a round we could not act on (aggregating, closed before our upload, no data)
        self._skipped_round = 0
        # evaluating, and nothing of ours to report: the long-poll would not wait for us
        self._idle_until_completed = False
        # the current round is sampled but not drawn yet: poll instead of long-polling,
        # unless the coordinator's in_cohort long-poll wakes at the draw (one that
        # advertises max_cohort_wait_seconds does): then wait for it like for a round
        self._awaiting_draw = False
        self._draw_wakes_waits = False
        # the coordinator answers GET …/rounds/current/weights (the round with its base
        # weights, one request); False once an older one answered 404 to it
        self._round_weights = True
        self._deployed: dict[str, F32] | None = None
        self.deployment_ttl = deployment_ttl
        self._deployment_checked = -math.inf
        # what from_file's loader dropped (malformed rows, duplicates); None otherwise
        self.cleaning_report: CleaningReport | None = None
        self._folded_version: int | None = None
        # why the last round was skipped when local training diverged (see step())
        self.last_divergence: TrainingDivergedError | None = None
        self._load_state()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_file(
        cls,
        client: Client,
        federation_id: str,
        path: str | Path,
        *,
        user_col: str | None = None,
        item_col: str | None = None,
        rating_col: str | None = None,
        time_col: str | None = None,
        encoding: str = "utf-8-sig",
        item_id_base: int | None = None,
        **kwargs: object,
    ) -> FederatedRecommender:
        """Load a local interaction file and map its items onto the federation's catalog.

        ``u.data`` (MovieLens 100K) is read as such; any other file is CSV/TSV with a
        header, its columns named by the arguments or auto-detected, decoded with
        ``encoding``. What loading dropped (malformed rows, duplicate pairs) is logged
        and kept in :attr:`cleaning_report`; items the catalog lacks are logged too.
        ``item_id_base`` matters only for a federation without a catalog (see
        :meth:`from_interactions`); MovieLens ids start at 1, so ``u.data`` defaults to 1.

        Raises
        ------
        DataFileError
            The file does not decode (the message names the line), or holds no usable
            interaction (a header alone, or only malformed rows).
        """
        path = Path(path)
        if path.name == "u.data":
            interactions, report = load_movielens_100k(path)
            item_id_base = 1 if item_id_base is None else item_id_base
        else:
            interactions, report = load_csv(
                path,
                user_col=user_col,
                item_col=item_col,
                rating_col=rating_col,
                time_col=time_col,
                encoding=encoding,
            )
        if report.malformed or report.duplicates_collapsed:
            log.warning("%s: %s", path, report.summary())
        else:
            log.info("%s: %s", path, report.summary())
        recommender = cls.from_interactions(
            client,
            federation_id,
            interactions,
            item_id_base=0 if item_id_base is None else item_id_base,
            **kwargs,
        )
        recommender.cleaning_report = report
        return recommender

    @classmethod
    def from_interactions(
        cls,
        client: Client,
        federation_id: str,
        interactions: Interactions,
        *,
        item_id_base: int = 0,
        **kwargs: object,
    ) -> FederatedRecommender:
        """Map interactions with external item ids onto the federation's catalog.

        A federation without a catalog has no ids, only rows ``0..num_items-1``: an item
        id (an integer) is then row ``id - item_id_base``; pass ``item_id_base=1`` for
        ids that start at 1, such as MovieLens's.

        Raises
        ------
        DataFileError
            None of the interactions' items is in the catalog (nothing to train on).
        """
        catalog: Sequence[str] = client.federations.catalog(federation_id)
        has_catalog = bool(catalog)
        if not has_catalog:
            num_items = client.federations.get(federation_id).model.num_items
            catalog = [str(row + item_id_base) for row in range(num_items)]
        mapping = map_to_catalog(interactions, catalog)
        if mapping.unknown_interactions:
            first = ", ".join(mapping.unknown_items[:5])
            if has_catalog:
                where = "outside the federation's catalog"
                hint = ""
            else:
                last = len(catalog) - 1 + item_id_base
                where = f"whose ids are not integers in {item_id_base}..{last}"
                hint = (
                    f"; the federation has no catalog, so item id - {item_id_base} is the "
                    "model row: pass item_id_base=1 if your ids start at 1, or create the "
                    "federation with a catalog"
                )
            message = (
                f"{mapping.unknown_interactions} interactions with "
                f"{len(mapping.unknown_items)} items {where} (first: {first})"
            )
            if not len(mapping.interactions):
                raise DataFileError(f"no interaction left to train on: {message}{hint}")
            log.warning("%s were left out%s", message, hint)
        return cls(client, federation_id, mapping.interactions, **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the loop
    def run(
        self,
        *,
        round_timeout: float = 3600.0,
        outage_timeout: float | None = None,
        progress_bar: bool = False,
    ) -> dict[str, float]:
        """Take part until the federation completes; return the test metrics reported.

        Each round, the first contact included, takes one request to learn of: a
        long-poll (:meth:`Rounds.wait_for_next` with ``in_cohort``) that the coordinator
        answers at once when there is work for this participant (a round it takes part
        in, or training stopped) and holds otherwise (``round_timeout`` bounds one wait,
        after which the participant simply asks again); a poll that times out or loses its
        connection is asked again. A
        coordinator restart, overload or a network blip is ridden out: the client's own
        retries first, then this loop retries with backoff (and the coordinator's
        ``Retry-After``) and resumes at whatever round is current (logging
        "reconnected"). By default it never gives up: a participant that stopped would
        leave a round it was drawn into waiting for its deadline. ``outage_timeout``
        (seconds) makes it raise after an outage that long instead. Each uploaded round is
        logged at INFO with the ETA to the round cap; ``progress_bar`` draws a bar too
        (needs ``rich``). A revoked token raises
        :class:`~participant_sdk.ParticipantRevokedError` (and says so in the log).
        """
        progress = RoundProgress(self.federation_id, self.max_rounds, bar=progress_bar)
        outage_started: float | None = None
        delay = 1.0
        self._learn_token_expiry(self.client.participants.me(self.federation_id).token_expires_at)
        try:
            while True:
                try:
                    self._keep_token_fresh()
                    # one request per round, the first contact included: a long-poll that
                    # answers at once when there is work for this participant (a round it
                    # takes part in, training stopped) and holds otherwise (the rounds it
                    # sits out cost no request); its answer is the round step works on
                    # wake up in time to refresh the token before it expires
                    current, weights = self._wait_for_work(
                        min(round_timeout, max(1.0, self._seconds_until_refresh()))
                    )
                    outcome = self._step(current, weights)
                    if outage_started is not None:
                        progress.reconnected(time.monotonic() - outage_started)
                        outage_started, delay = None, 1.0
                    if outcome == "uploaded":
                        last = self.progress.history[-1]
                        loss = last.get("loss")
                        progress.uploaded(
                            self.progress.last_round,
                            int(last.get("num_examples", 0)),  # type: ignore[call-overload]
                            float(loss) if isinstance(loss, int | float) else None,
                        )
                    if outcome == "completed":
                        log.info(
                            "federation %s completed; reporting test figures", self.federation_id
                        )
                        return self.finish()
                    if self._idle_until_completed:
                        time.sleep(min(IDLE_POLL_SECONDS, round_timeout))
                    if self._awaiting_draw and not self._draw_wakes_waits:
                        # an older coordinator: its long-poll does not wake at the draw (it
                        # answers at once for the undrawn round): ask again in a moment
                        time.sleep(min(DRAW_POLL_SECONDS, round_timeout))
                    self._awaiting_draw = False
                except WaitTimeoutError:
                    continue
                except ParticipantRevokedError:
                    log.error("participant revoked by the coordinator's admin; stopping")
                    raise
                except (APIConnectionError, InternalServerError, RateLimitError) as exc:
                    now = time.monotonic()
                    outage_started = outage_started or now
                    if outage_timeout is not None and now - outage_started > outage_timeout:
                        raise
                    pause = _outage_pause(exc, delay)
                    log.warning("coordinator unreachable (%s); retrying in %.0fs", exc, pause)
                    time.sleep(pause)
                    delay = min(delay * 2, 30.0)
        finally:
            progress.close()

    def _learn_token_expiry(self, expires_at: datetime | None) -> None:
        self._token_expires_at = expires_at
        if expires_at is not None:
            self._token_lifetime = max(0.0, (expires_at - datetime.now(UTC)).total_seconds())

    def _seconds_until_refresh(self) -> float:
        """Until a third of the token's lifetime is left (inf: it does not expire)."""
        if self._token_expires_at is None:
            return math.inf
        left = (self._token_expires_at - datetime.now(UTC)).total_seconds()
        return left - self._token_lifetime * TOKEN_REFRESH_FRACTION

    def _keep_token_fresh(self) -> None:
        """Refresh the participant token once a third of its lifetime is left."""
        if self._seconds_until_refresh() > 0:
            return
        refreshed = self.client.participants.refresh_token(self.federation_id)
        self._learn_token_expiry(refreshed.token_expires_at)
        log.info("participant token refreshed; it now expires at %s", refreshed.token_expires_at)
        if self.on_token_refresh is not None:
            self.on_token_refresh(refreshed.token)

    def _wait_for_work(self, timeout: float) -> tuple[Round, dict[str, F32] | None]:
        """run()'s long-poll for the next round this participant takes part in, with the
        round's base weights when it has work (one request); an older coordinator's
        long-poll, then the download in :meth:`_step`."""
        if self._round_weights:
            try:
                work = self.client.rounds.wait_for_work(
                    self.federation_id,
                    after=self.waiting_after,
                    timeout=timeout,
                    in_cohort=True,
                    encoding=self._download_encoding,
                )
            except NotFoundError as exc:
                self._round_after_404(exc)  # an older coordinator: its long-poll below
            else:
                return work.round, _float32(work.weights)
        current = self.client.rounds.wait_for_next(
            self.federation_id, after=self.waiting_after, timeout=timeout, in_cohort=True
        )
        return current, None

    def _look(self) -> tuple[Round, dict[str, F32] | None]:
        """The current round and, when it has work for this participant, its base
        weights: one request (two on an older coordinator: the download in :meth:`_step`)."""
        if self._round_weights:
            try:
                work = self.client.rounds.current_with_weights(
                    self.federation_id, encoding=self._download_encoding
                )
            except NotFoundError as exc:
                return self._round_after_404(exc), None
            else:
                return work.round, _float32(work.weights)
        return self.client.rounds.current(self.federation_id), None

    def _round_after_404(self, exc: NotFoundError) -> Round:
        """The current round, read alone after ``…/rounds/current/weights`` answered
        ``exc``: if the round is there, the route was unknown (a coordinator before it),
        so the round and its weights are asked apart from now on; if not, the federation
        is gone and ``exc`` is raised. A 404 that names what is missing (its problem type
        is not the generic ``not-found`` of an unknown route: a model version gone, say)
        is raised as it is and the route kept."""
        if exc.slug not in (None, "not-found"):
            raise exc
        try:
            current = self.client.rounds.current(self.federation_id)
        except NotFoundError:
            raise exc from None
        log.info("the coordinator has no rounds/current/weights (%s): two requests a round", exc)
        self._round_weights = False
        return current

    @property
    def _download_encoding(self) -> Encoding | None:
        # a float32 federation's download is asked for as before (no query)
        return None if self.encoding == "float32" else self.encoding

    @property
    def waiting_after(self) -> int:
        """The round number after which there is new work: wait for a round beyond it."""
        return max(self.progress.last_round, self._skipped_round)

    def step(self) -> StepOutcome:
        """Do this round's work if there is any: evaluate the base, train, upload.

        Returns ``"uploaded"``, ``"waiting"`` (nothing to do until the next round opens,
        or the federation is evaluating its final version, which this step reports on
        validation), ``"completed"`` (the federation has ended) or ``"diverged"``: local
        training gave NaN/Inf or an exploded update even after halving the learning rate,
        so nothing was uploaded this round (:attr:`last_divergence` and the log say why).
        """
        return self._step(*self._look())

    def _step(self, current: Round, weights: dict[str, F32] | None = None) -> StepOutcome:
        """:meth:`step` on ``current``, the round as the coordinator just answered (a
        look, or the long-poll :meth:`run` waits with), and its base ``weights`` when that
        answer carried them (else they are downloaded if there is work)."""
        if current.state != "open" or current.number <= self.progress.last_round:
            # only now can the federation have stopped (its last round is then closed)
            federation = self.client.federations.get(self.federation_id)
            if federation.state == "evaluating":
                self._evaluate_final(federation.latest_version)
                self._skipped_round = max(self._skipped_round, current.number)
                return "waiting"
            if federation.state != "active":
                return "completed"
            self._skipped_round = max(self._skipped_round, current.number)
            return "waiting"
        if current.awaiting_draw:
            # a sampled round drawn once enough participants enrolled: an in_cohort wait
            # after the previous round answers when it draws us (waiting_after stays
            # there); an older coordinator's does not, so check again soon instead
            log.info("round %d draws its sample once enough participants enrolled", current.number)
            self._awaiting_draw = True
            self._draw_wakes_waits = current.max_cohort_wait_seconds is not None
            return "waiting"
        if current.in_cohort is False:
            # not sampled this round: no download, no training; wait for the next round
            log.info("not sampled for round %d; waiting for the next round", current.number)
            self._skipped_round = max(self._skipped_round, current.number)
            return "waiting"
        if weights is None:
            weights = self._weights(current.base_version)
        # validation figures of the base the upload carries (one request, not two)
        pending: tuple[dict[str, float], int] | None = None
        if self.progress.last_evaluated_version < current.base_version:
            prepare_to_score(self.trainer, weights, self.split.train)
            if self._upload_carries_report(current):
                pending = self._validation_report(weights)
            else:
                self._report_validation(current.base_version, weights)
                self.progress.last_evaluated_version = current.base_version
        outcome, carried = self._train_and_upload(current, weights, pending)
        if pending is not None and not carried:
            # not uploaded (diverged, no data, refused): the report goes on its own
            self.client.evaluations.submit(
                self.federation_id, current.base_version, "validation", *pending
            )
        self.progress.last_evaluated_version = max(
            self.progress.last_evaluated_version, current.base_version
        )
        return outcome

    def _upload_carries_report(self, current: Round) -> bool:
        """Whether this round's upload takes the validation report of its base."""
        return (
            current.upload_takes_evaluation
            and not isinstance(self.trainer, EASETrainer)
            and not self.secure_aggregation
            and bool(self.split.valid.users.size)
        )

    def _train_and_upload(
        self,
        current: Round,
        weights: dict[str, F32],
        validation: tuple[dict[str, float], int] | None,
    ) -> tuple[StepOutcome, bool]:
        """Train from the base and upload; also says whether the upload carried (and the
        coordinator recorded) ``validation``."""
        if isinstance(self.trainer, EASETrainer):
            return self._submit_gram(current.number, current.base_version), False
        try:
            # never upload garbage: checked, and retried at half the rate on divergence
            update, learning_rate = train_with_backoff(
                self.trainer, weights, self.split.train, round_number=current.number
            )
        except TrainingDivergedError as exc:
            log.error("%s", exc)
            self.last_divergence = exc
            self._skipped_round = current.number
            return "diverged", False
        if update.num_examples == 0:
            log.warning("no local training data; skipping round %d", current.number)
            self._skipped_round = current.number
            return "waiting", False
        if self.secure_aggregation:
            return self._contribute_securely(current.number, update, learning_rate), False
        carried = validation is not None
        try:
            if self.sparse and not uploads_dense(self.trainer):
                self.client.updates.submit(
                    self.federation_id,
                    current.number,
                    update.sparse_delta(),
                    base_version=current.base_version,
                    num_examples=update.num_examples,
                    rows=update.rows,
                    encoding=self.encoding,
                    validation=validation,
                )
            else:
                self.client.updates.submit(
                    self.federation_id,
                    current.number,
                    update.delta,
                    base_version=current.base_version,
                    num_examples=update.num_examples,
                    encoding=self.encoding,
                    validation=validation,
                )
        except UpdateConflictError:
            # our earlier upload holds the round: the figures go on their own
            log.warning("round %d already has an update from us; moving on", current.number)
            carried = False
        except (RoundClosedError, FutureRoundError, NotSampledError):
            log.info(
                "round %d closed before our upload; resuming at the current round", current.number
            )
            self._skipped_round = current.number
            return "waiting", False
        except FederationCompletedError:
            # training stopped meanwhile: the next step evaluates the final version
            self._skipped_round = current.number
            return "waiting", False
        self._record_upload(current.number, update, learning_rate)
        return "uploaded", carried

    def _record_upload(self, number: int, update: LocalUpdate, learning_rate: float) -> None:
        self.progress.last_round = number
        self.progress.history.append(
            {
                "round": number,
                "loss": update.loss,
                "num_examples": int(update.num_examples),
                "rows": int(update.rows.size),
                "learning_rate": learning_rate,
            }
        )
        self._save_state()

    def _contribute_securely(
        self, number: int, update: LocalUpdate, learning_rate: float
    ) -> StepOutcome:
        """Secure aggregation: the dense delta (every item row: which rows we touched must
        not show), clipped and masked, through the round's four phases. A refused request
        from the coordinator sends nothing and skips the round, loudly."""
        # imported here: the SDK core stays thin for federations without secure aggregation
        from .secagg.client import SecAggRefusal
        from .secagg.session import contribute

        if self._participant_id is None:
            self._participant_id = self.client.participants.me(self.federation_id).id
        # the coordinator's order: every tensor of the model spec flattened, in spec order
        spec = mf_spec(num_items=self.num_items, dim=self._model_dim)
        vector = np.concatenate([np.ravel(update.delta[name]) for name in spec])
        try:
            outcome = contribute(
                self.client, self.federation_id, number, self._participant_id, vector
            )
        except SecAggRefusal as exc:
            log.error(
                "round %d: refused the coordinator's secure-aggregation request, nothing sent: %s",
                number,
                exc,
            )
            self.last_refusal = exc
            self._skipped_round = number
            return "waiting"
        except (RoundClosedError, FutureRoundError, FederationCompletedError):
            self._skipped_round = number
            return "waiting"
        if outcome.result != "summed":
            log.warning(
                "round %d: our update is not in the secure sum (%s%s)",
                number,
                outcome.result,
                f": {outcome.abort_reason}" if outcome.abort_reason else "",
            )
            self._skipped_round = number
            return "waiting"
        self._record_upload(number, update, learning_rate)
        return "uploaded"

    def _submit_gram(self, number: int, base_version: int) -> StepOutcome:
        """EASE: upload the local Gram in the first round, then an update without rows
        (the "ready" signal once the base is reported on validation)."""
        assert isinstance(self.trainer, EASETrainer)
        tensors, rows = self.trainer.gram_update(self.split.train, base_version=base_version)
        if not len(self.split.train):
            log.warning("no local training data; skipping round %d", number)
            self._skipped_round = number
            return "waiting"
        try:
            self.client.updates.submit(
                self.federation_id,
                number,
                tensors,
                base_version=base_version,
                num_examples=len(self.split.train),
                rows=rows,
            )
        except UpdateConflictError:
            log.warning("round %d already has an update from us; moving on", number)
        except (RoundClosedError, FutureRoundError, FederationCompletedError):
            self._skipped_round = number
            return "waiting"
        self.progress.last_round = number
        self.progress.history.append(
            {"round": number, "num_examples": len(self.split.train), "rows": int(rows.size)}
        )
        self._save_state()
        return "uploaded"

    def finish(self) -> dict[str, float]:
        """After completion: fetch the deployed version, fit each local user to it from
        their whole history (train + validation: :func:`~.recsys.trainers.fold_in`), and
        report its test metrics once."""
        try:
            version = self.client.deployment.get(self.federation_id).version
        except NotFoundError:
            version = self.client.federations.get(self.federation_id).latest_version
        weights = self._serve(version)
        metrics = self.test_metrics(weights)
        if self.progress.test_reported_version != version and self.split.test.users.size:
            try:
                self.client.evaluations.submit(
                    self.federation_id, version, "test", metrics, int(self.split.test.users.size)
                )
            except ConflictError as exc:
                if exc.slug != "evaluation-exists":
                    raise
                # a re-run (new state_dir, other data): the first report stands
                log.warning(
                    "test figures of version %d were already reported by this participant "
                    "and differ from these; the coordinator keeps the first report (%s)",
                    version,
                    exc,
                )
            self.progress.test_reported_version = version
            self._save_state()
        return metrics

    def _serve(self, version: int) -> dict[str, F32]:
        """Make ``version`` the one :meth:`recommend` scores with."""
        weights = self._weights(version)
        if self._folded_version != version:
            # score the deployed model with each user's whole local history (train +
            # validation), as the deployed recommender would; once per version
            fold_in(self.trainer, weights, concat(self.split.train, self.split.valid))
            self._folded_version = version
        self.deployed_version = version
        self._deployed = weights
        self._deployment_checked = time.monotonic()
        return weights

    def _refresh_deployment(self) -> None:
        """Follow a promote or roll-back: re-read the deployment once its view is stale."""
        if time.monotonic() - self._deployment_checked < self.deployment_ttl:
            return
        try:
            version = self.client.deployment.get(self.federation_id).version
        except NotFoundError:  # nothing deployed any more: keep serving what we have
            self._deployment_checked = time.monotonic()
            return
        if version != self.deployed_version:
            log.info(
                "deployment changed: serving version %d (was %s)", version, self.deployed_version
            )
            self._serve(version)
        self._deployment_checked = time.monotonic()

    # ------------------------------------------------------------------ evaluation
    def validation_metrics(self, weights: dict[str, F32]) -> dict[str, float]:
        """Full-ranking metrics on the local validation items (candidates exclude train)."""
        return evaluate_loo(
            lambda users: self.trainer.score(users, weights),
            self.split.train,
            self.split.valid,
            k=self.k,
        )

    def test_metrics(self, weights: dict[str, F32]) -> dict[str, float]:
        """Full-ranking and sampled (99 negatives) metrics on the local test items."""
        if not self.split.test.users.size:
            return {}

        def score(users: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
            return self.trainer.score(users, weights)

        seen = concat(self.split.train, self.split.valid)
        metrics = evaluate_loo(score, seen, self.split.test, k=self.k)
        most_seen = int(seen_matrix(self.data, self.split.test.users).sum(axis=1).max())
        if self.num_items - most_seen >= SAMPLED_NEGATIVES:
            negatives = draw_sampled_negatives(
                self.data, self.split.test.users, n=SAMPLED_NEGATIVES
            )
            metrics.update(evaluate_sampled(score, self.split.test, negatives, k=self.k))
        else:
            log.info("catalog too small for %d sampled negatives per user", SAMPLED_NEGATIVES)
        return metrics

    def _evaluate_final(self, version: int) -> None:
        """Report the federation's final version on validation, once."""
        self._idle_until_completed = not self.split.valid.users.size
        if self.progress.last_evaluated_version >= version or self._idle_until_completed:
            return
        self._report_validation(version, self._weights(version))
        self.progress.last_evaluated_version = version
        self._save_state()

    def _validation_report(self, weights: dict[str, F32]) -> tuple[dict[str, float], int]:
        return self.validation_metrics(weights), int(self.split.valid.users.size)

    def _report_validation(self, version: int, weights: dict[str, F32]) -> None:
        if not self.split.valid.users.size:
            return
        self.client.evaluations.submit(
            self.federation_id, version, "validation", *self._validation_report(weights)
        )

    # ------------------------------------------------------------------ serving
    def recommend(self, user_id: str, k: int = 10) -> Recommendations:
        """Top-``k`` catalog item ids for a local user from the deployed version.

        Items the user already has (in any split) are never recommended. A user with no
        local interactions gets the most popular local items instead, flagged by
        ``fallback == "popularity"`` on the result. The deployed version is re-read when
        older than ``deployment_ttl`` seconds, so a promote or roll-back is followed.
        """
        if self._deployed is None:
            self.finish()
        else:
            self._refresh_deployment()
        assert self._deployed is not None
        user = self.data.user_index().get(str(user_id))
        if user is None or not np.any(self.data.users == user):
            return Recommendations(
                self._popular(k), fallback="popularity", version=self.deployed_version
            )
        users = np.array([user], dtype=np.int64)
        scores = self.trainer.score(users, self._deployed)
        top = recommend(scores, seen_matrix(self.data, users), k)[0]
        return Recommendations(
            [self.data.item_ids[i] for i in top if i >= 0],
            fallback=None,
            version=self.deployed_version,
        )

    def _popular(self, k: int) -> list[str]:
        """The ``k`` items with the most local interactions (ties: lower row first)."""
        counts = np.bincount(self.data.items, minlength=self.num_items)
        order = np.argsort(-counts, kind="stable")[:k]
        return [self.data.item_ids[i] for i in order]

    # ------------------------------------------------------------------ state
    def _weights(self, version: int) -> dict[str, F32]:
        tensors = self.client.models.weights(
            self.federation_id, version, encoding=self._download_encoding
        )
        return _float32(tensors)

    def _load_state(self) -> None:
        if self.state_dir is None:
            return
        progress = self.state_dir / "progress.json"
        trainer = self.state_dir / "trainer.safetensors"
        if progress.exists() and trainer.exists():
            self.progress = _Progress(**json.loads(progress.read_text()))
            self.trainer.load(trainer)
            log.info("resumed from %s after round %d", self.state_dir, self.progress.last_round)

    def _save_state(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # trainer first, then progress: progress never points past the saved factors
        self.trainer.save(self.state_dir / "trainer.safetensors.tmp")
        os.replace(
            self.state_dir / "trainer.safetensors.tmp", self.state_dir / "trainer.safetensors"
        )
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".progress-")
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(self.progress), handle)
        os.replace(tmp, self.state_dir / "progress.json")


@overload
def _float32(tensors: dict[str, npt.NDArray[np.generic]]) -> dict[str, F32]: ...
@overload
def _float32(tensors: None) -> None: ...
def _float32(tensors: dict[str, npt.NDArray[np.generic]] | None) -> dict[str, F32] | None:
    """Downloaded tensors as the trainers take them (float32 arrays)."""
    if tensors is None:
        return None
    return {name: np.asarray(array, dtype=np.float32) for name, array in tensors.items()}
