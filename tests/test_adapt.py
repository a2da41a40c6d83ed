"""Label-shift adaptation (EM priors, BCTS calibration) and OOF-fit run weights; `rekit predict` flags."""

import json

import numpy as np
import pytest

from rekit import adapt
from rekit.adapt import training_prior
from rekit.cli import main
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.ensemble import Ensemble, fit_run_weights
from rekit.errors import ConfigError
from rekit.rundir import read_oof

MEANS = np.array([-2.0, 0.0, 2.0])


def posterior(x, prior):
    """Exact p(y|x) for 1-D unit Gaussians at MEANS under class prior `prior`."""
    lik = np.exp(-0.5 * (x[:, None] - MEANS[None, :]) ** 2)
    p = lik * prior
    return p / p.sum(axis=1, keepdims=True)


def sample(prior, n, seed):
    rng = np.random.default_rng(seed)
    y = rng.choice(len(prior), size=n, p=prior)
    return rng.normal(MEANS[y], 1.0), y


def test_em_recovers_a_shifted_prior_and_improves_accuracy():
    train_prior, test_prior = np.array([0.3, 0.4, 0.3]), np.array([0.7, 0.2, 0.1])
    x, y = sample(test_prior, 20000, seed=0)
    p = posterior(x, train_prior)  # what a calibrated model trained on the train mix outputs
    adapted, est, iters = adapt.em_priors(p, train_prior)
    assert np.abs(est - test_prior).max() < 0.02 and iters > 1
    assert np.allclose(adapted, posterior(x, est), atol=1e-6)  # EM's output is the re-weighted posterior
    assert (adapted.argmax(1) == y).mean() > (p.argmax(1) == y).mean() + 0.03
    # No shift: EM stays (close to) where it started and changes little.
    x2, _ = sample(train_prior, 20000, seed=1)
    _, est2, _ = adapt.em_priors(posterior(x2, train_prior), train_prior)
    assert np.abs(est2 - train_prior).max() < 0.02


def test_reweight_is_identity_for_equal_priors_and_handles_empty_input():
    p = posterior(np.linspace(-3, 3, 7), np.array([0.2, 0.5, 0.3]))
    assert np.allclose(adapt.reweight(p, [0.2, 0.5, 0.3], [0.2, 0.5, 0.3]), p)
    out, prior, iters = adapt.em_priors(np.zeros((0, 3)), np.array([1.0, 1.0, 2.0]))
    assert out.shape == (0, 3) and iters == 0 and np.allclose(prior, [0.25, 0.25, 0.5])
    assert np.allclose(adapt.label_prior(np.array([0, 0, 2]), 3, smoothing=0.0), [2 / 3, 0, 1 / 3])


def test_bcts_and_temperature_undo_overconfidence():
    prior = np.array([0.3, 0.4, 0.3])
    x, y = sample(prior, 5000, seed=2)
    true = posterior(x, prior)
    over = adapt.apply_bcts(true, 0.5, np.array([0.0, 0.8, -0.8]))  # sharper and biased
    nll = lambda q: -np.mean(np.log(q[np.arange(len(y)), y]))  # noqa: E731
    t, b = adapt.fit_bcts(over, y)
    assert t == pytest.approx(2.0, rel=0.1)
    assert nll(adapt.apply_bcts(over, t, b)) < nll(over) - 0.05
    assert nll(adapt.apply_bcts(over, t, b)) == pytest.approx(nll(true), abs=0.01)
    t2 = adapt.fit_temperature(adapt.apply_temperature(true, 0.5), y)
    assert t2 == pytest.approx(2.0, rel=0.1)


def test_run_weights_favour_the_better_run():
    prior = np.array([0.3, 0.4, 0.3])
    x, y = sample(prior, 3000, seed=3)
    good, useless = posterior(x, prior), np.full((len(y), 3), 1 / 3)
    w = fit_run_weights([good, useless], y)
    assert w.sum() == pytest.approx(1.0) and w[0] > 0.9
    w2 = fit_run_weights([good, good], y)
    assert np.allclose(w2, [0.5, 0.5])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("adapt")
    train, test = make_splits(seed=4, n_train=240, n_test=80)
    write_csv(train, d / "train.csv")
    write_csv(test, d / "test.csv")
    args = ["train", "--train", str(d / "train.csv"), "--output", str(d / "run"), "--folds", "2", "--model", "scratch",
            "--scratch-size", "tiny", "--scratch-vocab-size", "1200", "--max-length", "64", "--epochs", "2",
            "--lr", "1e-3", "--no-progress"]
    assert main(args) == 0
    return d


def test_evaluate_with_calibration_and_prior_adaptation(run, capsys):
    d = run
    assert main(["evaluate", str(d / "run"), "--input", str(d / "test.csv"), "--adapt-priors", "em",
                 "--calibrate", "bcts", "--report", str(d / "report.json"), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "label mix re-estimated" in err and "bcts calibration fit on" in err
    report = json.loads((d / "report.json").read_text())
    assert 0 <= report["micro_f1"] <= 100 and 0 <= report["auprc"] <= 100
    labels = Ensemble.load(d / "run").label_map_
    ids, y, oof = read_oof(d / "run", labels)
    assert len(ids) == 240 and oof.shape == (240, len(labels))
    prior = training_prior([d / "run" / "fold-0"], labels)  # a fold dir finds its run's oof.csv
    assert prior.argmax() == np.bincount(y).argmax() and prior.sum() == pytest.approx(1.0)


def test_adapt_probs_is_what_evaluate_applies_and_needs_no_torch_model(run):
    """The library function behind --calibrate/--adapt-priors: the run's files only, the CLI's messages."""
    d = run
    labels = Ensemble.load(d / "run").label_map_
    _, _, oof = read_oof(d / "run", labels)
    held = ~np.isnan(oof).any(axis=1)
    probs = oof[held][:50]
    said = []
    out = adapt.adapt_probs(probs, [d / "run"], labels, "bcts", "em", echo=said.append)
    assert out.dtype == np.float32 and out.shape == probs.shape
    assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5) and not np.allclose(out, probs)
    assert said[0].startswith(f"bcts calibration fit on {held.sum()} out-of-fold predictions: temperature ")
    assert said[1].startswith("label mix re-estimated on the inputs (EM, ")
    assert adapt.adapt_probs(probs, [d / "run"], labels) is probs  # nothing asked: unchanged
    with pytest.raises(ConfigError, match="calibrate: expected none, temperature or bcts, got 'platt'"):
        adapt.adapt_probs(probs, [d / "run"], labels, calibrate="platt")


def test_predict_ensembles_several_runs_with_oof_weights(run, capsys):
    d = run
    out1, out2 = d / "one.csv", d / "two.csv"
    assert main(["predict", str(d / "run"), "--input", str(d / "test.csv"), "--output", str(out1), "--device", "cpu"]) == 0
    assert main(["predict", str(d / "run"), str(d / "run"), "--fit-weights", "--input", str(d / "test.csv"),
                 "--output", str(out2), "--device", "cpu"]) == 0
    assert "run weights fit on out-of-fold predictions" in capsys.readouterr().err
    # the same run twice, weighted 0.5 / 0.5, predicts exactly what the run alone predicts
    assert out1.read_text() == out2.read_text()
