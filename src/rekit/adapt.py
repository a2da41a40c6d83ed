"""Adapting predicted probabilities to the label mix of an unlabeled test set.

A classifier trained where 29 % of the rows are no_relation, applied where 60 % are, predicts
relations too often. Under label shift (p(x|y) fixed, p(y) changed) the Bayes-optimal posterior
on the test set is the training posterior re-weighted by the prior ratio. The test prior is
unknown, but EM finds it from the unlabeled inputs alone (Saerens, Latinne & Decaestecker,
2002, "Adjusting the outputs of a classifier to new a priori probabilities"):

    E: q_i(y) ∝ p_i(y) * pi(y) / pi_train(y)      M: pi(y) = mean_i q_i(y)

No test label is used. EM assumes calibrated probabilities. Fine-tuned networks are
over-confident, and EM then over-shifts; calibrating first on out-of-fold predictions
(training data only) fixes that: `fit_temperature` (one temperature) or `fit_bcts` (a
temperature plus one bias per class: "bias-corrected temperature scaling", which Alexandari,
Kundaje & Shrikumar, 2020, found makes EM hard to beat).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from rekit.data.labels import LabelMap
from rekit.errors import ConfigError
from rekit.rundir import read_oof, run_root

EPS = 1e-12


def reweight(probs: np.ndarray, train_prior: np.ndarray, target_prior: np.ndarray) -> np.ndarray:
    """p(y|x) * target(y) / train(y), renormalised per row. probs: (N, C); priors: (C,)."""
    ratio = np.asarray(target_prior, dtype=np.float64) / np.maximum(np.asarray(train_prior, dtype=np.float64), EPS)
    q = np.asarray(probs, dtype=np.float64) * ratio
    return q / np.maximum(q.sum(axis=1, keepdims=True), EPS)


def em_priors(probs: np.ndarray, train_prior: np.ndarray, max_iter: int = 1000, tol: float = 1e-8
              ) -> tuple[np.ndarray, np.ndarray, int]:
    """EM estimate of the test label prior -> (adapted probs (N, C), test prior (C,), iterations)."""
    probs = np.asarray(probs, dtype=np.float64)
    train_prior = np.asarray(train_prior, dtype=np.float64)
    train_prior = train_prior / train_prior.sum()
    if len(probs) == 0:
        return probs.copy(), train_prior.copy(), 0
    prior = train_prior.copy()
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is returned after the loop)
        q = reweight(probs, train_prior, prior)
        new = q.mean(axis=0)
        done = np.abs(new - prior).max() < tol
        prior = new
        if done:
            break
    return reweight(probs, train_prior, prior), prior, it


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """Temperature T minimising the NLL of softmax(log p / T) on labelled (out-of-fold) rows."""
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None))
    y = np.asarray(y)

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def label_prior(label_ids: np.ndarray, n_labels: int, smoothing: float = 0.5) -> np.ndarray:
    """Class frequencies of the training labels (add-`smoothing` so no class has prior 0)."""
    counts = np.bincount(np.asarray(label_ids, dtype=np.int64), minlength=n_labels).astype(np.float64) + smoothing
    return counts / counts.sum()


def fit_bcts(probs: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> tuple[float, np.ndarray]:
    """Bias-corrected temperature scaling: softmax(log p / T + b), fit by NLL on labelled
    (out-of-fold) rows. Returns (T, b). A small L2 penalty keeps b finite for classes the rows lack."""
    from scipy.optimize import minimize

    logp = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None))
    y = np.asarray(y)
    n, c = logp.shape
    onehot = np.zeros((n, c))
    onehot[np.arange(n), y] = 1.0

    def nll(params: np.ndarray) -> tuple[float, np.ndarray]:
        inv_t, b = np.exp(params[0]), params[1:]
        z = logp * inv_t + b
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        soft = e / e.sum(axis=1, keepdims=True)
        loss = float(np.mean(np.log(e.sum(axis=1)) - z[np.arange(n), y])) + l2 * float(b @ b)
        diff = (soft - onehot) / n  # d loss / d z
        grad = np.concatenate([[float((diff * logp).sum() * inv_t)], diff.sum(axis=0) + 2 * l2 * b])
        return loss, grad

    res = minimize(nll, np.zeros(c + 1), jac=True, method="L-BFGS-B")
    return float(np.exp(-res.x[0])), res.x[1:]


def apply_bcts(probs: np.ndarray, temperature: float, bias: np.ndarray) -> np.ndarray:
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, None)) / temperature + bias
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def training_prior(run_dirs: Sequence[str | Path], label_map: LabelMap) -> np.ndarray:
    """The label mix the models were trained on (every training row of the runs' oof.csv)."""
    ys = [read_oof(r, label_map)[1] for r in dict.fromkeys(run_root(r) for r in run_dirs)]
    return label_prior(np.concatenate(ys), len(label_map))


def adapt_probs(probs: np.ndarray, run_dirs: Sequence[str | Path], label_map: LabelMap, calibrate: str = "none",
                adapt_priors: str = "none", echo: Callable[[str], object] | None = None) -> np.ndarray:
    """Calibration, then prior adaptation, of an ensemble's (N, C) probabilities, as `rekit predict`
    does with --calibrate (none / temperature / bcts, fit on the first run's out-of-fold rows) and
    --adapt-priors (none / em: the label mix re-estimated on these rows, no labels used). `echo`
    is told what was fit. The result is float32."""
    if calibrate not in ("none", "temperature", "bcts"):
        raise ConfigError(f"calibrate: expected none, temperature or bcts, got {calibrate!r}")
    if adapt_priors not in ("none", "em"):
        raise ConfigError(f"adapt_priors: expected none or em, got {adapt_priors!r}")
    if calibrate == "none" and adapt_priors == "none":
        return probs
    say = echo or (lambda _: None)
    if calibrate != "none":
        _, y, oof = read_oof(run_dirs[0], label_map)
        held = ~np.isnan(oof).any(axis=1)
        if calibrate == "temperature":
            t = fit_temperature(oof[held], y[held])
            probs = apply_temperature(probs, t)
        else:
            t, bias = fit_bcts(oof[held], y[held])
            probs = apply_bcts(probs, t, bias)
        say(f"{calibrate} calibration fit on {int(held.sum()):,} out-of-fold predictions: temperature {t:.3f}")
    if adapt_priors == "em":
        prior = training_prior(run_dirs, label_map)
        probs, new_prior, iters = em_priors(probs, prior)
        nr = label_map.no_relation
        if nr is not None:
            k = label_map.label2id[nr]
            say(f"label mix re-estimated on the inputs (EM, {iters} iterations): {nr} "
                f"{prior[k]:.1%} in training -> {new_prior[k]:.1%} here")
    return np.asarray(probs, dtype=np.float32)
