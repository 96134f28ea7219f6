"""Example bodies of the OpenAPI document, one federation's story told consistently.

tests/api/test_openapi_docs.py validates each against its schema, so they cannot drift.
"""

from __future__ import annotations

import base64
from typing import Any

FID = "f3b0c1d2e4a5b6c7"
PID = "p7e8d9c0b1a2f3e4"
WHEN = "2026-03-01T12:00:00Z"
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
CHAIN = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

MODEL = {"kind": "mf", "num_items": 1682, "dim": 64}

FEDERATION_CREATE: dict[str, Any] = {
    "name": "movies",
    "model": MODEL,
    "strategy": {"name": "fedavg"},
    "rounds": {"max_rounds": 20, "min_participants": 2, "deadline_seconds": 600},
    "target": {"metric": "ndcg@10", "value": 0.05},
}

FEDERATION: dict[str, Any] = {
    "id": FID,
    "name": "movies",
    "state": "active",
    "model": {**MODEL, "ease_lambdas": [10.0], "seed": 0, "init_scale": 0.01},
    "strategy": {
        "name": "fedavg",
        "aggregator": "mean",
        "server_lr": 1.0,
        "normalization": "touched",
        "weighting": "examples",
        "trim_fraction": 0.1,
        "min_contributors": 3,
        "krum_byzantine_fraction": 0.2,
    },
    "rounds": {
        "min_participants": 2,
        "max_rounds": 20,
        "deadline_seconds": 600,
        "below_quorum": "extend",
        "max_failed_rounds": 100,
        "patience": None,
        "min_delta": 0.0,
        "min_rounds": None,
        "final_evaluation_seconds": 300,
    },
    "target": {"metric": "ndcg@10", "value": 0.05},
    "deploy": {"policy": "best", "metric": "ndcg@10"},
    "privacy": {"max_update_norm": None, "dp": None},
    "limits": {
        "max_num_examples": 100_000_000,
        "max_num_users": 10_000_000,
        "metrics": ["hr@10", "ndcg@10", "sampled_hr@10", "sampled_ndcg@10"],
    },
    "privacy_spent": None,
    "current_round": 3,
    "latest_version": 2,
    "deployed_version": None,
    "participant_count": 2,
    "created_at": WHEN,
}

CATALOG = {"items": ["movie-1", "movie-2", "movie-3"]}

PARTICIPANT_CREATE = {"name": "shop-berlin"}
PARTICIPANT = {"id": PID, "name": "shop-berlin", "state": "active", "created_at": WHEN}
REVOKED_PARTICIPANT = {**PARTICIPANT, "state": "revoked"}
# a made-up token for the documentation's example; no coordinator ever issued it
EXAMPLE_TOKEN = "frp_3q2-7wEvdDLh0kB9yZc1UaXx8FmQe6sRnPjTgVoKiLw"  # nosec B105 # doc example
ENROLLED_PARTICIPANT = {**PARTICIPANT, "token": EXAMPLE_TOKEN}

ISSUED_ID = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
ADMIN_TOKEN_CREATE = {"name": "ci-deploy", "expires_in_seconds": 7 * 24 * 3600}
BOOTSTRAP_ADMIN_TOKEN = {
    "id": "0f1e2d3c-4b5a-4968-8776-655443322110",
    "name": "bootstrap",
    "kind": "bootstrap",
    "state": "active",
    "created_at": "2026-02-20T09:00:00Z",
    "expires_at": "2026-03-22T09:00:00Z",
    "revoked_at": None,
    "created_by": "coordinator",
}
ADMIN_TOKEN = {
    "id": ISSUED_ID,
    "name": "ci-deploy",
    "kind": "issued",
    "state": "active",
    "created_at": WHEN,
    "expires_at": "2026-03-08T12:00:00Z",
    "revoked_at": None,
    "created_by": f"admin-token:{BOOTSTRAP_ADMIN_TOKEN['id']}",
}
REVOKED_ADMIN_TOKEN = {**ADMIN_TOKEN, "state": "revoked", "revoked_at": "2026-03-02T08:30:00Z"}
# made up for the documentation, like EXAMPLE_TOKEN
EXAMPLE_ADMIN_TOKEN = "fra_Vb7Qm2XkPz9LrT4nWc1YhE8uJd6SgAf3oKiNe5RtCwM"  # nosec B105 # doc example
ISSUED_ADMIN_TOKEN = {**ADMIN_TOKEN, "token": EXAMPLE_ADMIN_TOKEN}

ROUND = {
    "number": 3,
    "state": "open",
    "base_version": 2,
    "update_count": 1,
    "result_version": None,
    "opened_at": WHEN,
    "closed_at": None,
    "deadline_at": "2026-03-01T12:10:00Z",
    "cohort_size": 40,
    "in_cohort": True,
}
CLOSED_ROUND = {
    **ROUND,
    "number": 2,
    "state": "closed",
    "base_version": 1,
    "update_count": 2,
    "result_version": 2,
    "closed_at": "2026-03-01T11:59:00Z",
}

RECEIPT = {
    "update_id": "u1a2b3c4d5e6f708",
    "round": 3,
    "sha256": SHA,
    "size": 430_112,
    "num_examples": 5_120,
    "received_at": WHEN,
}

MODEL_VERSION = {
    "version": 3,
    "round": 3,
    "parent": 2,
    "sha256": SHA,
    "chain_hash": CHAIN,
    "size": 437_896,
    "created_at": WHEN,
    "contributors": [PID, "p0a1b2c3d4e5f6a7"],
    "step_scale": 1.0,
    "restored_from": None,
    "server_state_sha256": None,
    "privacy_spent": {
        "epsilon": 6.77,
        "delta": 1e-5,
        "rounds": 3,
        "accountant": "pld",
        "sampling_rate": 0.04,
    },
}

EVALUATION_CREATE = {
    "split": "validation",
    "metrics": {"ndcg@10": 0.043, "hr@10": 0.21},
    "num_users": 120,
}
EVALUATION = {
    "version": 3,
    "split": "validation",
    "metrics": {"ndcg@10": 0.043, "hr@10": 0.21},
    "num_users": 120,
    "participant_id": PID,
    "created_at": WHEN,
}

METRICS_HISTORY = {
    "items": [
        {
            "version": 3,
            "round": 3,
            "split": "validation",
            "metrics": {"ndcg@10": 0.041, "hr@10": 0.2},
            "num_users": 250,
            "participants": 2,
        }
    ]
}

DEPLOYMENT_CREATE = {"version": 3}
DEPLOYMENT = {
    "version": 3,
    "policy": "best",
    "deployed_at": WHEN,
    "deployed_by": "admin",
    "history": [
        {
            "version": 2,
            "actor": "admin",
            "reason": "promote",
            "metric_value": None,
            "created_at": "2026-03-01T11:00:00Z",
        },
        {
            "version": 3,
            "actor": "admin",
            "reason": "promote",
            "metric_value": None,
            "created_at": WHEN,
        },
    ],
}

SIGNING_KEY = {
    "algorithm": "Ed25519",
    "public_key": "m4bq0Vb2k8Jx8YV0Qm1n3c8y7rS2KjS1d9J0b6a5cWg=",
    "key_id": "5f1c2a9e0b7d3c44",
}
AUDIT_EVENTS = {
    "items": [
        {
            "seq": 41,
            "created_at": WHEN,
            "actor": f"participant:{PID}",
            "action": "upload",
            "federation_id": FID,
            "subject": "round 3",
            "outcome": "ok",
            "detail": {"sha256": SHA, "num_examples": 1200},
            "prev_hash": CHAIN,
            "hash": SHA,
        }
    ]
}

HEALTH = {"status": "ok"}
READY = {"status": "ready"}


# secure aggregation (bytes are placeholders of the right length)
def _b64(size: int, fill: int) -> str:
    return base64.b64encode(bytes([fill]) * size).decode()


PID2 = "p0a1b2c3d4e5f6a7"
_SECAGG_HEAD = {"federation_id": FID, "round": 3, "participant": PID}
SECAGG_KEYS = {
    **_SECAGG_HEAD,
    "encryption_key": _b64(32, 1),
    "mask_key": _b64(32, 2),
    "self_mask_commitment": _b64(32, 3),
}
SECAGG_SHARES = {**_SECAGG_HEAD, "ciphertexts": {PID2: _b64(160, 4)}}
SECAGG_MASKED_INPUT = {**_SECAGG_HEAD, "words": _b64(4 * 6, 5)}
SECAGG_UNMASK = {
    **_SECAGG_HEAD,
    "self_mask_shares": {PID: _b64(66, 6), PID2: _b64(66, 7)},
    "mask_key_shares": {},
}
SECAGG_STATUS = {
    "federation_id": FID,
    "round": 3,
    "phase": "share",
    "phase_deadline": "2026-03-01T12:01:00Z",
    "threshold": 2,
    "clip_norm": 1.0,
    "max_participants": 1000,
    "vector_length": 6,
    "graph": "complete",
    "degree": None,
    "neighbour_threshold": None,
    "in_cohort": True,
    "answered": False,
    "roster": {
        "federation_id": FID,
        "round": 3,
        "threshold": 2,
        "vector_length": 6,
        "entries": [
            dict(SECAGG_KEYS),
            {**SECAGG_KEYS, "participant": PID2, "encryption_key": _b64(32, 8)},
        ],
    },
    "inbox": None,
    "unmask_request": None,
    "survivors": None,
    "abort_reason": None,
}
