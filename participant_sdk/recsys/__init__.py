"""Recommendation core of the participant SDK: data, splits, BPR-MF, implicit ALS, metrics.

Imported on use (``import participant_sdk`` does not load it). The simulation-only
pieces (user partitions, the synthetic data set, the MovieLens download) live in the
``fedrec`` application package.

Typical participant round::

    from participant_sdk.recsys import BPRConfig, BPRTrainer, load_csv, map_to_catalog

    data, report = load_csv("interactions.csv")
    mapped = map_to_catalog(data, catalog)            # catalog from the federation
    trainer = BPRTrainer(num_users=mapped.interactions.num_users,
                         num_items=len(catalog), config=BPRConfig(dim=128))
    update = trainer.train_round(global_tensors, mapped.interactions)
    # upload update.sparse_delta() with rows=update.rows, num_examples=update.num_examples
"""

from .data import (
    CatalogMapping,
    CleaningReport,
    DataFileError,
    Interactions,
    from_arrays,
    k_core,
    load_csv,
    load_movielens_100k,
    load_movielens_ratings_csv,
    map_to_catalog,
)
from .ials import IALSConfig, IALSTrainer, confidence, item_gradient, solve_users
from .metrics import (
    draw_sampled_negatives,
    evaluate_loo,
    evaluate_sampled,
    evaluate_split,
    loo_ranks,
    rank_metrics,
    recommend,
    seen_matrix,
    top_k,
)
from .model import (
    BPRConfig,
    BPRTrainer,
    LocalUpdate,
    init_item_tensors,
    recency_weights,
    score_items,
)
from .popularity import PopularityModel
from .splits import (
    LeaveOneOutSplit,
    RandomSplit,
    concat,
    leave_one_out,
    leave_one_out_keys,
    split_80_20,
)
from .stability import TrainingDivergedError, train_with_backoff, update_problem

__all__ = [
    "BPRConfig",
    "BPRTrainer",
    "CatalogMapping",
    "CleaningReport",
    "DataFileError",
    "IALSConfig",
    "IALSTrainer",
    "Interactions",
    "LeaveOneOutSplit",
    "LocalUpdate",
    "PopularityModel",
    "RandomSplit",
    "TrainingDivergedError",
    "concat",
    "confidence",
    "draw_sampled_negatives",
    "evaluate_loo",
    "evaluate_sampled",
    "evaluate_split",
    "from_arrays",
    "init_item_tensors",
    "item_gradient",
    "k_core",
    "leave_one_out",
    "leave_one_out_keys",
    "load_csv",
    "load_movielens_100k",
    "load_movielens_ratings_csv",
    "loo_ranks",
    "map_to_catalog",
    "rank_metrics",
    "recency_weights",
    "recommend",
    "score_items",
    "seen_matrix",
    "solve_users",
    "split_80_20",
    "top_k",
    "train_with_backoff",
    "update_problem",
]
