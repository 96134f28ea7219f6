"""Response models of the coordinator's REST API v1 (see ``docs/api.md``).

These are the SDK's own copies of the wire schemas: the SDK never imports the
coordinator. Every model accepts fields it does not know (``extra="allow"``), so an
older SDK keeps working against a newer coordinator; unknown fields stay readable
through ``model_extra``. The federation specs (:class:`ModelSpec`, :class:`RoundPolicy`,
...) are also what ``client.federations.create()`` accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "AdaptiveClipping",
    "AdminToken",
    "AdminTokenState",
    "AuditEvent",
    "BaseAPIModel",
    "DeployPolicy",
    "Deployment",
    "DeploymentEvent",
    "DifferentialPrivacy",
    "EncodedWeights",
    "EnrolledParticipant",
    "Evaluation",
    "Federation",
    "FederationState",
    "Health",
    "IssuedAdminToken",
    "LimitsPolicy",
    "MetricsRow",
    "ModelSpec",
    "ModelVersion",
    "Participant",
    "ParticipantState",
    "PrivacyPolicy",
    "SecAggStatus",
    "SecureAggregation",
    "PrivacySpent",
    "Receipt",
    "Round",
    "RoundPolicy",
    "RoundState",
    "SamplingPolicy",
    "SigningKey",
    "Split",
    "StrategySpec",
    "Target",
    "TransportPolicy",
]

FederationState = Literal["active", "evaluating", "completed", "failed"]
ParticipantState = Literal["active", "revoked"]
AdminTokenState = Literal["active", "expired", "revoked"]
RoundState = Literal["open", "aggregating", "closed", "failed"]
Split = Literal["validation", "test"]

T = TypeVar("T")


class BaseAPIModel(BaseModel):
    """Base of every SDK model: tolerant of extra fields."""

    model_config = ConfigDict(extra="allow")


# --- federation configuration (request and response) --------------------------------------


class ModelSpec(BaseAPIModel):
    """The model a federation trains, e.g. matrix factorisation (``kind="mf"``).

    Attributes
    ----------
    kind : str
        Model family: ``"mf"`` for matrix factorisation trained with BPR, ``"ials"``
        for confidence-weighted matrix factorisation (implicit ALS). Same tensors.
    num_items : int
        Rows of the item tables (the catalog size).
    dim : int
        Latent dimension (unused by ``kind="ease"``).
    ease_lambdas : list of float, optional
        ``kind="ease"``: the candidate L2 penalties, one version per round.
    ease_top_k : int, optional
        ``kind="ease"``: ship ``B`` pruned to its ``k`` largest weights per column
        (``ease_b_index``/``ease_b_value``); ``None``: dense ``ease_b``.
    seed, init_scale
        Initialisation of version 0; the coordinator's defaults when ``None``.
    """

    kind: str
    num_items: int
    dim: int = 1
    seed: int | None = None
    init_scale: float | None = None
    ease_lambdas: list[float] | None = None
    ease_top_k: int | None = None


class StrategySpec(BaseAPIModel):
    """How updates are aggregated, e.g. ``name="fedavg"`` with ``server_lr``.

    ``name`` is the server optimizer (``"fedavg"``: base + ``server_lr`` * delta) and
    ``aggregator`` how the round's updates combine into that delta (``"mean"``).
    ``normalization`` is ``"touched"`` (each item row averaged over the updates that
    sent it; the coordinator's default) or ``"total"`` (every row divided by the
    round's total example weight, for many small participants); ``weighting`` is
    ``"examples"`` (an update weighs its ``num_examples``; the default) or ``"uniform"``.
    Server optimizers ``"fedavgm"`` (``server_momentum``), ``"fedadam"`` and ``"fedyogi"``
    (``beta1``, ``beta2``, ``tau``) keep state on the coordinator; ``proximal_mu`` is
    the FedProx mu every participant trains with (``FederatedRecommender`` reads it).
    ``update_norm_clip`` scales every update to at most that global L2 norm before it is
    aggregated (the coordinator's default: 10,000).
    Aggregators robust to poisoning: ``"median"`` and ``"trimmed_mean"`` (coordinate-wise,
    per item row over the updates that sent it; ``trim_fraction``, and ``min_contributors``
    below which a row takes the mean) and ``"multi_krum"`` (``krum_byzantine_fraction``).
    ``plateau_decay`` (e.g. 0.5) multiplies the server step by that factor each time the
    validation curve has not improved for ``plateau_patience`` versions (reduce-on-plateau;
    the coordinator's default: none, a constant step).
    """

    name: str | None = None
    aggregator: str | None = None
    server_lr: float | None = None
    normalization: str | None = None
    weighting: str | None = None
    server_momentum: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    tau: float | None = None
    proximal_mu: float | None = None
    plateau_decay: float | None = None
    plateau_patience: int | None = None
    update_norm_clip: float | None = None
    trim_fraction: float | None = None
    min_contributors: int | None = None
    krum_byzantine_fraction: float | None = None


class SamplingPolicy(BaseAPIModel):
    """Client sampling per round (``RoundPolicy.sampling``), drawn by the coordinator.

    Attributes
    ----------
    kind : {"poisson", "fixed"}
        ``poisson``: each participant joins each round with probability ``rate``;
        ``fixed``: exactly ``size`` participants per round.
    rate : float or None
        ``poisson`` only.
    size : int or None
        ``fixed`` only.
    """

    kind: str
    rate: float | None = None
    size: int | None = None


class RoundPolicy(BaseAPIModel):
    """When rounds close: quorum, round budget, deadline, and what to do below quorum;
    when training stops early; how long the final version's evaluation may take.

    Attributes
    ----------
    patience : int or None
        Stop once this many evaluated versions in a row did not beat the best aggregated
        validation value of the deploy metric by more than ``min_delta``.
    min_delta : float or None
        The smallest gain that counts as an improvement (the coordinator's default: 0).
    min_rounds : int or None
        Patience is not consulted before this many rounds have completed (at most
        ``max_rounds``); the round budget, privacy budget and target still stop earlier.
    final_evaluation_seconds : float or None
        Once stopped, the federation is ``evaluating`` until every active participant
        reported the final version on validation, or for at most this long (0 = not at
        all).
    max_failed_rounds : int or None
        The federation fails (``state="failed"``) once this many of its rounds failed.
    sampling : SamplingPolicy or None
        Client sampling per round; ``None``: every participant in every round.
    """

    min_participants: int | None = None
    max_rounds: int | None = None
    deadline_seconds: float | None = None
    below_quorum: str | None = None
    patience: int | None = None
    min_delta: float | None = None
    min_rounds: int | None = None
    final_evaluation_seconds: float | None = None
    max_failed_rounds: int | None = None
    sampling: SamplingPolicy | None = None


class Target(BaseAPIModel):
    """Stop once the aggregated validation ``metric`` reaches ``value``."""

    metric: str
    value: float


class DeployPolicy(BaseAPIModel):
    """Which version gets deployed, e.g. ``policy="best"`` by ``metric="ndcg@10"``.

    Attributes
    ----------
    window : int or None
        Rank versions (and count patience) by the mean validation value of the ``window``
        versions centred on each (odd; the coordinator's default 1 = each version's own).
    """

    policy: str | None = None
    metric: str | None = None
    window: int | None = None


class AdaptiveClipping(BaseAPIModel):
    """Adaptive clipping (Andrew et al. 2021): C follows a quantile of the update norms.

    Attributes
    ----------
    target_quantile : float
        gamma: the fraction of updates C should leave unclipped.
    learning_rate : float
        eta_C: each round ``C <- C * exp(-eta_C * (b - gamma))``, b the noised fraction.
    clipped_count_stddev : float or None
        sigma_b, the noise on the unclipped count (above ``noise_multiplier / 2``);
        ``None``: the expected cohort / 20, at least ``noise_multiplier``.
    """

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: float | None = None


class DifferentialPrivacy(BaseAPIModel):
    """Participant-level differential privacy: DP-FedAvg with server-side clipping.

    Every update is scaled to a global L2 norm of at most ``clip_norm``, and Gaussian
    noise of std ``noise_multiplier * clip_norm`` is added to the round's sum. The
    coordinator needs strategy ``weighting="uniform"`` and ``normalization="total"``.

    Attributes
    ----------
    clip_norm : float
        C: each update is scaled by ``min(1, C / its global L2 norm)``.
    noise_multiplier : float
        z: noise std ``z * C``; 0 clips only (no privacy guarantee).
    delta : float or None
        The delta at which the epsilon spent is reported; the coordinator's default
        (``1e-5``) when ``None``.
    max_epsilon : float or None
        Complete the federation before a round would spend more than this epsilon.
    adaptive_clipping : AdaptiveClipping or None
        Adapt C towards a quantile of the update norms (``clip_norm`` is the first C).
    """

    clip_norm: float
    noise_multiplier: float
    delta: float | None = None
    max_epsilon: float | None = None
    adaptive_clipping: AdaptiveClipping | None = None


class SecureAggregation(BaseAPIModel):
    """Secure aggregation: the coordinator learns only the sum of each round's updates.

    Attributes
    ----------
    threshold : int
        t: the fewest participants any phase may close with (and whose shares rebuild a
        dropped participant's masks).
    clip_norm : float or None
        C: participants clip their update to this global L2 norm before encoding it
        (default: ``dp.clip_norm``).
    max_participants : int or None
        The encoding's bound on summed inputs (the coordinator's default 1000 if ``None``).
    phase_seconds : float or None
        How long each phase after the key advertisement waits for late participants.
    graph : str or None
        ``complete`` (share with everyone) or ``harary`` (SecAgg+: with k neighbours on a
        random graph the coordinator draws per round).
    degree : int or None
        ``harary``: k, even (default 2*ceil(log2 n)).
    neighbour_threshold : int or None
        ``harary``: the Shamir threshold within a neighbourhood (default a majority of k+1).
    """

    threshold: int
    clip_norm: float | None = None
    max_participants: int | None = None
    phase_seconds: float | None = None
    graph: Literal["complete", "harary"] | None = None
    degree: int | None = None
    neighbour_threshold: int | None = None


class PrivacyPolicy(BaseAPIModel):
    """Privacy limits applied to every update: an L2 norm bound and/or differential privacy.

    Attributes
    ----------
    max_update_norm : float or None
        Reject updates whose global L2 norm exceeds this.
    dp : DifferentialPrivacy or None
        Clip and noise every round (see :class:`DifferentialPrivacy`).
    secure_aggregation : SecureAggregation or None
        The coordinator sees only the sum of the round's updates (see
        :class:`SecureAggregation`); the SDK runs the protocol by itself.
    """

    max_update_norm: float | None = None
    dp: DifferentialPrivacy | None = None
    secure_aggregation: SecureAggregation | None = None


class SecAggStatus(BaseAPIModel):
    """A round's secure aggregation as this participant sees it (``client.secagg.status``).

    Attributes
    ----------
    phase : {"advertise", "share", "masked", "unmask", "done", "aborted"}
        Which message the round waits for.
    phase_deadline : datetime or None
        When the phase closes without late participants.
    threshold, clip_norm, max_participants, vector_length
        The round's parameters and fixed-point encoding.
    graph : {"complete", "harary"}
        Whom participants share with; ``degree`` and ``neighbour_threshold`` are the
        Harary graph's as drawn for the round (None before the draw and for ``complete``).
    in_cohort, answered : bool
        Whether this participant takes part, and already sent this phase's message.
    roster, inbox, unmask_request : dict or None
        The coordinator's message this participant needs for its next one.
    survivors : list of str or None
        Phase ``done``: whose inputs the sum holds.
    abort_reason : str or None
        Phase ``aborted``: why.
    """

    federation_id: str
    round: int
    phase: str
    phase_deadline: datetime | None = None
    threshold: int
    clip_norm: float
    max_participants: int
    vector_length: int
    graph: str = "complete"
    degree: int | None = None
    neighbour_threshold: int | None = None
    in_cohort: bool = False
    answered: bool = False
    roster: dict[str, Any] | None = None
    inbox: dict[str, Any] | None = None
    unmask_request: dict[str, Any] | None = None
    survivors: list[str] | None = None
    abort_reason: str | None = None


class LimitsPolicy(BaseAPIModel):
    """Bounds on what participants report (``Federation.limits``).

    Attributes
    ----------
    max_num_examples : int or None
        The largest ``num_examples`` an update may declare.
    max_num_users : int or None
        The largest ``num_users`` an evaluation may declare.
    metrics : list of str or None
        The metric names evaluations may report; ``FederatedRecommender`` reports
        ``hr``, ``ndcg``, ``precision``, ``recall`` (and ``sampled_hr``, ``sampled_ndcg``
        on test) at its ``k``. The coordinator's default covers ``k=10``.
    """

    max_num_examples: int | None = None
    max_num_users: int | None = None
    metrics: list[str] | None = None


class TransportPolicy(BaseAPIModel):
    """How updates and model downloads travel (``Federation.transport``).

    Attributes
    ----------
    encoding : {"float32", "float16", "int8"}
        Updates must be uploaded in it (``client.updates.submit(encoding=...)``; the
        coordinator refuses any other, 422) and downloads default to it.
        ``FederatedRecommender`` follows it on its own.
    """

    encoding: Literal["float32", "float16", "int8"] = "float32"


class PrivacySpent(BaseAPIModel):
    """The differential privacy a federation has spent so far (``Federation.privacy_spent``).

    Attributes
    ----------
    epsilon : float or None
        Epsilon spent at ``delta``, amplified by sampling at ``sampling_rate``; ``None``
        means unbounded: ``noise_multiplier`` 0 clips without a privacy guarantee.
    delta : float
        The delta of ``epsilon``.
    rounds : int
        Aggregated (noisy) rounds so far.
    accountant : str
        ``"pld"`` (Poisson or no sampling, add/remove adjacency), ``"rdp-replace-one"``
        (fixed-size sampling) or ``"rdp"`` (older versions).
    sampling_rate : float
        The rate q the rounds were accounted at (1: no sampling).
    clip_norm : float or None
        Adaptive clipping only: the C this version's round clipped to.
    next_clip_norm : float or None
        Adaptive clipping only: the C the next round clips to.
    """

    epsilon: float | None = None
    delta: float
    rounds: int
    accountant: str = "pld"
    sampling_rate: float = 1.0
    clip_norm: float | None = None
    next_clip_norm: float | None = None


# --- resources ------------------------------------------------------------------------------


class Health(BaseAPIModel):
    """``GET /healthz``: ``status`` is ``"ok"`` when the coordinator serves."""

    status: str


class Federation(BaseAPIModel):
    """One joint training job.

    Attributes
    ----------
    id : str
        The federation id (``fid`` in every other call).
    name : str
        Human-readable name.
    state : {"active", "evaluating", "completed", "failed"}
        ``evaluating`` once training stopped (round budget, target, patience, privacy
        budget) until the final version's validation figures are in; then ``completed``.
        ``failed`` once ``rounds.max_failed_rounds`` rounds failed.
    current_round : int or None
        The open round's number; ``None`` once evaluating or completed.
    latest_version : int
        The newest model version (0 is the initial model).
    deployed_version : int or None
        The live version, if any.
    participant_count : int
        Enrolled participants.
    created_at : datetime
        Creation time.
    model, strategy, rounds, target, deploy, privacy, limits, transport
        The configuration the federation was created with.
    privacy_spent : PrivacySpent or None
        Differential privacy spent so far; ``None`` without ``privacy.dp``.
    max_wait_seconds, max_cohort_wait_seconds : int or None
        The coordinator's long-poll maxima, as on :class:`Round` (``None`` from
        coordinators that do not advertise them here): the client learns them, so its
        first long-poll already asks for the full wait.
    """

    id: str
    name: str
    state: FederationState
    current_round: int | None = None
    latest_version: int
    deployed_version: int | None = None
    participant_count: int = 0
    created_at: datetime
    model: ModelSpec
    strategy: StrategySpec | None = None
    rounds: RoundPolicy | None = None
    target: Target | None = None
    deploy: DeployPolicy | None = None
    privacy: PrivacyPolicy | None = None
    limits: LimitsPolicy | None = None
    transport: TransportPolicy = Field(default_factory=TransportPolicy)
    privacy_spent: PrivacySpent | None = None
    max_wait_seconds: int | None = None
    max_cohort_wait_seconds: int | None = None


class AdminToken(BaseAPIModel):
    """An admin token (never the token itself).

    Attributes
    ----------
    id : str
        The admin token's id: revoke it by this id.
    name : str
        The name given at creation; ``bootstrap`` for the coordinator's own.
    kind : {"bootstrap", "issued"}
        ``bootstrap``: FEDREC_ADMIN_TOKEN or data_dir/admin_token; ``issued``: created
        through :meth:`AdminTokens.create <participant_sdk.resources.AdminTokens.create>`.
    state : {"active", "expired", "revoked"}
        Whether it works now.
    created_at, expires_at : datetime
        When it was created, and when it stops working.
    revoked_at : datetime or None
        When it was revoked, if it was.
    created_by : str
        ``coordinator``, ``admin-token:<id>`` or ``admin``.
    """

    id: str
    name: str
    kind: str
    state: AdminTokenState
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None = None
    created_by: str


class IssuedAdminToken(AdminToken):
    """An admin token just created, with the token (shown only this once).

    Attributes
    ----------
    token : str
        The admin bearer token; left out of ``repr()`` so it does not end up in logs.
    """

    token: str = Field(repr=False)


class Participant(BaseAPIModel):
    """An enrolled organisation or device.

    Attributes
    ----------
    id : str
        The participant id.
    name : str
        Its name.
    state : {"active", "revoked"}
        Revoked participants can no longer call the API.
    created_at : datetime
        Enrolment time.
    token_expires_at : datetime or None
        When the current token expires (the SDK refreshes it before).
    """

    id: str
    name: str
    state: ParticipantState
    created_at: datetime
    token_expires_at: datetime | None = None


class EnrolledParticipant(Participant):
    """A participant just enrolled, with its bearer token (shown only this once).

    Attributes
    ----------
    token : str
        The participant's bearer token; hand it to the participant over a secure
        channel. It is left out of ``repr()`` so it does not end up in logs.
    """

    token: str = Field(repr=False)


class Round(BaseAPIModel):
    """One training round of a federation.

    Attributes
    ----------
    number : int
        1, 2, ... within the federation.
    state : {"open", "aggregating", "closed", "failed"}
        Uploads are accepted while ``open``.
    base_version : int
        The model version participants train from in this round.
    update_count : int
        Updates received so far.
    result_version : int or None
        The version this round produced, once closed.
    opened_at, closed_at, deadline_at : datetime or None
        Timestamps; ``deadline_at`` is ``None`` without a deadline.
    cohort_size : int or None
        Under client sampling: how many participants were drawn into the round
        (``None``: no sampling, or not drawn yet).
    in_cohort : bool or None
        Whether this participant takes part in the round (``False``: not sampled, wait
        for the next round); ``None`` for the admin.
    upload_takes_evaluation : bool
        The round's upload may carry the participant's validation figures of
        ``base_version`` (``Updates.submit(..., validation=...)``): one request instead of
        an upload and an evaluation report. ``False`` from coordinators without it.
    max_wait_seconds : int or None
        On ``rounds.current`` answers: the longest ``wait`` the coordinator holds a
        long-poll; ``wait_for_next`` asks for that much. ``None`` from coordinators that
        do not advertise it (they accept 60 s).
    max_cohort_wait_seconds : int or None
        On ``rounds.current`` answers: the longest ``wait`` of a poll with ``after`` and
        ``in_cohort`` (it is answered at once for a round this participant is drawn into,
        so waiting through the others is renewed only this often). ``None`` from
        coordinators that do not advertise it (``max_wait_seconds`` applies).
    """

    number: int
    state: RoundState
    base_version: int
    update_count: int = 0
    result_version: int | None = None
    opened_at: datetime | None = None
    closed_at: datetime | None = None
    deadline_at: datetime | None = None
    cohort_size: int | None = None
    in_cohort: bool | None = None
    upload_takes_evaluation: bool = False
    max_wait_seconds: int | None = None
    max_cohort_wait_seconds: int | None = None

    @property
    def awaiting_draw(self) -> bool:
        """A sampled round whose cohort is not drawn yet (too few participants so far)."""
        return self.in_cohort is False and self.cohort_size is None


class EncodedWeights(BaseAPIModel):
    """A version's weights in one compressed encoding (``ModelVersion.encodings``)."""

    sha256: str
    size: int


class ModelVersion(BaseAPIModel):
    """An immutable, content-addressed global model.

    Attributes
    ----------
    version : int
        0 is the initial model; each closed round adds one.
    round : int or None
        The round that produced it (``None`` for version 0).
    parent : int or None
        The version it was aggregated from (``None`` for version 0).
    sha256 : str
        Hex digest of the weights bytes (also their ``ETag``).
    chain_hash : str
        Hash chain over the lineage (see ``docs/api.md``).
    size : int
        Size of the weights in bytes.
    created_at : datetime
        Creation time.
    contributors : list of str
        Sorted sha256s of the updates aggregated into it.
    step_scale : float
        Scale of the server step that made it (1; less after the coordinator backed
        off a diverging federation).
    restored_from : int or None
        The version whose weights it carries when a validation collapse was undone.
    server_state_sha256 : str or None
        Digest of the server optimizer's state stored with it (FedAvgM, FedAdam and
        FedYogi keep moments); ``None`` for a stateless optimizer.
    manifest : str or None
        The canonical JSON manifest the coordinator signed (``None`` for versions older
        than signing).
    signature : str or None
        Base64 Ed25519 signature of ``manifest`` (see :class:`SigningKey`).
    encodings : dict of str to EncodedWeights, or None
        The weights in the federation's compressed transport encoding (also named by
        ``manifest``); ``None``: float32 only.
    """

    version: int
    round: int | None = None
    parent: int | None = None
    sha256: str
    chain_hash: str
    size: int
    created_at: datetime
    contributors: list[str] = Field(default_factory=list)
    step_scale: float = 1.0
    restored_from: int | None = None
    server_state_sha256: str | None = None
    manifest: str | None = None
    signature: str | None = None
    encodings: dict[str, EncodedWeights] | None = None
    privacy_spent: PrivacySpent | None = None


class AuditEvent(BaseAPIModel):
    """One event of the coordinator's audit log (``GET /v1/audit``, admin).

    Attributes
    ----------
    seq : int
        Position in the chain, from 1.
    actor, action, outcome : str
        Who did what, and whether it was ``ok``, ``refused`` or ``failed``.
    federation_id, subject : str or None
        What it concerned.
    detail : dict
        Small facts (digests, counts, the problem slug).
    prev_hash, hash : str
        The HMAC chain (checked by ``fedrec audit verify``).
    """

    seq: int
    created_at: datetime
    actor: str
    action: str
    federation_id: str | None = None
    subject: str | None = None
    outcome: str
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str
    hash: str


class SigningKey(BaseAPIModel):
    """``GET /v1/signing-key``: the public key that signs every model version.

    Attributes
    ----------
    algorithm : str
        ``"Ed25519"``.
    public_key : str
        The raw 32-byte public key, base64: pin it (``Client(signing_key=...)``).
    key_id : str
        Fingerprint: sha256 of the raw key, first 16 hex digits.
    """

    algorithm: Literal["Ed25519"]
    public_key: str
    key_id: str


class Receipt(BaseAPIModel):
    """The coordinator's acknowledgement of an update: it is durable once this exists.

    Attributes
    ----------
    update_id : str
        Id of the stored update.
    round : int
        The round it counts for.
    sha256 : str
        Hex digest of the uploaded bytes.
    size : int
        Bytes uploaded.
    num_examples : int
        The weight of the update in FedAvg.
    received_at : datetime
        When the coordinator stored it.
    """

    update_id: str
    round: int
    sha256: str
    size: int
    num_examples: int
    received_at: datetime


class Evaluation(BaseAPIModel):
    """One participant's metrics for one model version and split.

    Attributes
    ----------
    version : int
        The model version evaluated.
    split : {"validation", "test"}
        Which local split.
    metrics : dict of str to float
        E.g. ``{"ndcg@10": 0.04}``.
    num_users : int
        Users evaluated (the weight in the aggregate).
    participant_id : str
        Who reported it.
    created_at : datetime
        When it was reported.
    """

    version: int
    split: str
    metrics: dict[str, float]
    num_users: int
    participant_id: str
    created_at: datetime


class MetricsRow(BaseAPIModel):
    """Aggregated metrics of one model version on one split, weighted by ``num_users``.

    Attributes
    ----------
    version : int
        The model version.
    round : int or None
        The round that produced it.
    split : str
        ``"validation"`` or ``"test"``.
    metrics : dict of str to float
        The ``num_users``-weighted averages.
    num_users : int
        Users over all reports.
    participants : int
        How many participants reported.
    """

    version: int
    round: int | None = None
    split: str
    metrics: dict[str, float]
    num_users: int
    participants: int


class DeploymentEvent(BaseAPIModel):
    """One promotion or roll-back in a deployment's history.

    Attributes
    ----------
    version : int
        The version made live.
    actor : str or None
        Who did it: the admin, or the deploy policy.
    reason : str or None
        Why, e.g. a promotion by policy or a manual roll-back.
    metric_value : float or None
        The policy metric's value for that version, when the policy chose it.
    created_at : datetime or None
        When it happened.
    """

    version: int
    actor: str | None = None
    reason: str | None = None
    metric_value: float | None = None
    created_at: datetime | None = None


class Deployment(BaseAPIModel):
    """The live model version of a federation.

    Attributes
    ----------
    version : int
        The deployed model version.
    policy : str or None
        The federation's deploy policy (``"best"``, ``"latest"`` or ``"none"``).
    deployed_at : datetime or None
        When this version went live.
    deployed_by : str or None
        Who promoted it (the admin or the policy).
    history : list of DeploymentEvent
        Every promotion and roll-back, oldest first; the last one is live.
    """

    version: int
    policy: str | None = None
    deployed_at: datetime | None = None
    deployed_by: str | None = None
    history: list[DeploymentEvent] = Field(default_factory=list)


class ItemList(BaseModel, Generic[T]):
    """The ``{"items": [...]}`` envelope of every list endpoint (internal)."""

    model_config = ConfigDict(extra="allow")

    items: list[T]
