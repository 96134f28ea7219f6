"""Implicit ALS: the closed-form user solve, the item gradient, the item step, the trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedrec.synthetic import make_synthetic
from participant_sdk.recsys import (
    IALSConfig,
    IALSTrainer,
    Interactions,
    PopularityModel,
    confidence,
    evaluate_loo,
    from_arrays,
    init_item_tensors,
    item_gradient,
    leave_one_out,
    load_csv,
    solve_users,
)

CFG = IALSConfig(dim=4, reg=0.05, alpha=3.0)


def _random_problem(seed: int = 0) -> tuple[Interactions, np.ndarray, np.ndarray]:
    """6 users, 9 items, random observed cells with random strengths, random factors."""
    rng = np.random.default_rng(seed)
    cells = np.argwhere(rng.random((6, 9)) < 0.35)
    data = Interactions(
        users=cells[:, 0].astype(np.int64),
        items=cells[:, 1].astype(np.int64),
        timestamps=np.full(len(cells), np.nan),
        ratings=rng.integers(1, 20, size=len(cells)).astype(np.float64),
        user_ids=[str(u) for u in range(6)],
        item_ids=[str(i) for i in range(9)],
    )
    return data, rng.standard_normal((6, CFG.dim)), rng.standard_normal((9, CFG.dim))


def _dense(data: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Dense preference P and confidence C matrices of the problem."""
    p = np.zeros((data.num_users, data.num_items))
    c = np.ones((data.num_users, data.num_items))
    p[data.users, data.items] = 1.0
    c[data.users, data.items] = confidence(data.strengths, CFG.alpha)
    return p, c


def _loss(x: np.ndarray, y: np.ndarray, p: np.ndarray, c: np.ndarray) -> float:
    """L/2 of the module docstring, written out over every cell."""
    fit = float(np.sum(c * (p - x @ y.T) ** 2))
    reg = float(c.sum(axis=1) @ (x**2).sum(axis=1) + c.sum(axis=0) @ (y**2).sum(axis=1))
    return 0.5 * (fit + CFG.reg * reg)


def test_confidence_transform() -> None:
    s = np.array([0.0, 1.0, 4.0, -3.0, np.nan, np.e - 1.0])
    expected = 1.0 + 2.0 * np.log1p(np.array([0.0, 1.0, 4.0, 0.0, 0.0, np.e - 1.0]))
    np.testing.assert_allclose(confidence(s, 2.0), expected)
    assert confidence(np.array([np.e - 1.0]), 2.0)[0] == pytest.approx(3.0)
    np.testing.assert_array_equal(confidence(np.array([7.0, 1e9]), 0.0), [1.0, 1.0])


def test_strengths_default_to_one() -> None:
    data = from_arrays(["a", "a", "b"], ["x", "y", "x"], ratings=[5.0, np.nan, 2.0])
    np.testing.assert_array_equal(data.strengths, [5.0, 1.0, 2.0])
    assert (from_arrays(["a"], ["x"]).strengths == 1.0).all()


def test_user_solve_matches_dense_closed_form() -> None:
    data, _, y = _random_problem()
    p, c = _dense(data)
    x = solve_users(y, data, data.num_users, CFG)
    for u in range(data.num_users):
        cu = np.diag(c[u])
        lhs = y.T @ cu @ y + CFG.reg * c[u].sum() * np.eye(CFG.dim)
        np.testing.assert_allclose(x[u], np.linalg.solve(lhs, y.T @ cu @ p[u]), rtol=1e-10)


def test_user_solve_minimises_the_loss() -> None:
    data, x0, y = _random_problem(1)
    p, c = _dense(data)
    x = solve_users(y, data, data.num_users, CFG)
    # the gradient of L/2 in x vanishes at the solve, and any move makes the loss worse
    grad_x = -(c * (p - x @ y.T)) @ y + CFG.reg * c.sum(axis=1)[:, None] * x
    np.testing.assert_allclose(grad_x, 0.0, atol=1e-10)
    assert _loss(x, y, p, c) < _loss(x0, y, p, c)
    assert _loss(x, y, p, c) < _loss(x + 1e-3, y, p, c)


def test_item_gradient_matches_dense_and_numerical() -> None:
    data, x, y = _random_problem(2)
    p, c = _dense(data)
    grad = item_gradient(x, y, data, CFG)
    dense = -(c * (p - x @ y.T)).T @ x + CFG.reg * c.sum(axis=0)[:, None] * y
    np.testing.assert_allclose(grad, dense, rtol=1e-10, atol=1e-10)
    eps = 1e-6
    numerical = np.zeros_like(y)
    for i in range(y.shape[0]):
        for d in range(y.shape[1]):
            up, down = y.copy(), y.copy()
            up[i, d] += eps
            down[i, d] -= eps
            numerical[i, d] = (_loss(x, up, p, c) - _loss(x, down, p, c)) / (2 * eps)
    np.testing.assert_allclose(grad, numerical, rtol=1e-5, atol=1e-6)


def test_single_participant_round_is_exact_als() -> None:
    data, _, y = _random_problem(3)
    p, c = _dense(data)
    trainer = IALSTrainer(num_users=data.num_users, num_items=data.num_items, config=CFG)
    base = {"item_factors": y.astype(np.float32), "item_bias": np.zeros(9, np.float32)}
    update = trainer.train_round(base, data)
    x = solve_users(base["item_factors"].astype(np.float64), data, data.num_users, CFG)
    np.testing.assert_allclose(trainer.user_factors, x, rtol=1e-5)
    for i in range(data.num_items):
        ci = np.diag(c[:, i])
        lhs = x.T @ ci @ x + CFG.reg * c[:, i].sum() * np.eye(CFG.dim)
        expected = np.linalg.solve(lhs, x.T @ ci @ p[:, i])
        np.testing.assert_allclose(update.item_factors[i], expected, rtol=1e-4, atol=1e-6)
    # dense delta, biases untouched, loss reported
    np.testing.assert_allclose(update.delta["item_factors"], update.item_factors - y, atol=1e-6)
    assert not update.delta["item_bias"].any()
    np.testing.assert_array_equal(update.rows, np.arange(9))
    assert update.num_examples == len(data)
    assert update.loss > 0


def test_two_participants_halves_average_toward_central() -> None:
    """IID halves: the mean of the local item steps lowers the central loss."""
    data, _, y = _random_problem(4)
    p, c = _dense(data)
    x = solve_users(y, data, data.num_users, CFG)
    deltas = []
    for users in (np.arange(0, 3), np.arange(3, 6)):
        mask = np.isin(data.users, users)
        local = data.subset(mask)
        local.users = local.users - users[0]
        trainer = IALSTrainer(num_users=3, num_items=9, config=CFG)
        base = {"item_factors": y.astype(np.float32), "item_bias": np.zeros(9, np.float32)}
        deltas.append(trainer.train_round(base, local).delta["item_factors"])
    averaged = y + np.mean(deltas, axis=0)
    assert _loss(x, averaged, p, c) < _loss(x, y, p, c)


def test_trainer_learns_and_stays_finite(tmp_path: Path) -> None:
    data = make_synthetic(seed=0)
    split = leave_one_out(data)
    cfg = IALSConfig(dim=16, reg=0.01, alpha=5.0)
    trainer = IALSTrainer(num_users=data.num_users, num_items=data.num_items, config=cfg)
    tensors = init_item_tensors(data.num_items, cfg.dim, seed=0, scale=0.01)
    for _ in range(4):
        update = trainer.train_round(tensors, split.train)
        tensors = {"item_factors": update.item_factors, "item_bias": update.item_bias}
    assert np.isfinite(tensors["item_factors"]).all()
    trainer.fit_users(tensors, split.train)
    ndcg = evaluate_loo(lambda u: trainer.score(u, tensors), split.train, split.valid)["ndcg@10"]
    popular = evaluate_loo(PopularityModel(split.train).score, split.train, split.valid)
    assert ndcg > popular["ndcg@10"]
    trainer.save(tmp_path / "state.safetensors")
    other = IALSTrainer(num_users=data.num_users, num_items=data.num_items, config=cfg)
    other.load(tmp_path / "state.safetensors")
    np.testing.assert_array_equal(other.user_factors, trainer.user_factors)


def test_config_refuses_ill_posed_values() -> None:
    with pytest.raises(ValueError, match="reg"):
        IALSConfig(reg=0.0)
    with pytest.raises(ValueError, match="alpha"):
        IALSConfig(alpha=-1.0)
    with pytest.raises(ValueError, match="item_step"):
        IALSConfig(item_step=0.0)


def test_base_with_nan_is_refused() -> None:
    data, _, y = _random_problem()
    y[0, 0] = np.nan
    trainer = IALSTrainer(num_users=6, num_items=9, config=CFG)
    with pytest.raises(ValueError, match="NaN"):
        trainer.train_round({"item_factors": y, "item_bias": np.zeros(9)}, data)


@pytest.mark.parametrize("column", ["plays", "count", "quantity", "rating"])
def test_strength_column_is_auto_detected(tmp_path: Path, column: str) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text(f"user_id,item_id,{column}\n1,10,3\n1,11,250\n2,10,1\n")
    data, report = load_csv(path)
    assert report.malformed == 0
    np.testing.assert_array_equal(data.strengths, [3.0, 250.0, 1.0])


def test_named_strength_column_and_none(tmp_path: Path) -> None:
    path = tmp_path / "interactions.csv"
    path.write_text("user,item,n_bought,other\n1,10,4,9\n2,10,2,9\n")
    data, _ = load_csv(path, rating_col="n_bought")
    np.testing.assert_array_equal(data.strengths, [4.0, 2.0])
    data, _ = load_csv(path)  # no strength-like column: every interaction weighs 1
    np.testing.assert_array_equal(data.strengths, [1.0, 1.0])
