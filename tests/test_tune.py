"""`rekit tune`: search space, pruning, dead-worker recovery, and whole studies on SQLite and PostgreSQL.

Fast unit tests first; then two studies on a tiny scratch model (200 synthetic rows, 1 epoch, fold 0
of 2): one with 2 workers on SQLite in which a worker is SIGKILLed mid-trial and the exported best
config is trained, one with 2 workers on a real PostgreSQL server started on loopback.
Runtime on 2 shared CPU cores: about 60-80 s in all (most of it the two studies).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import yaml

from conftest import free_port
from rekit.cli import main
from rekit.config import RunConfig
from rekit.data.readers import write_csv
from rekit.data.synthetic import make_splits
from rekit.errors import ConfigError
from rekit.tuning.objective import STEP_STRIDE, PruneOnEval, objective_value
from rekit.tuning.settings import TuneSettings, split_config
from rekit.tuning.space import parse_space, sample
from rekit.tuning.storage import with_driver
from rekit.tuning.study import trial_config

SRC = str(Path(__file__).resolve().parents[1] / "src")
TINY = {"model": {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 64},
        "train": {"folds": 2, "epochs": 1, "progress": False}}
SPACE = {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}, "batch_size": {"type": "categorical", "choices": [16, 32]}}


def quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- search space and settings -------------------------------------------------------------------

def test_space_parses_every_kind_and_samples_valid_configs():
    params = parse_space({**SPACE, "epochs": {"type": "int", "low": 1, "high": 3},
                          "warmup_ratio": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
                          "optimizer": ["adam", "adamw"]}, {})
    kinds = {p.name: (p.type, p.log) for p in params}
    assert kinds == {"lr": ("float", True), "batch_size": ("categorical", False), "epochs": ("int", False),
                     "warmup_ratio": ("float", False), "optimizer": ("categorical", False)}
    trial = optuna.trial.FixedTrial({"lr": 2e-4, "batch_size": 16, "epochs": 2, "warmup_ratio": 0.1, "optimizer": "adam"})
    values = sample(trial, params)
    assert values == {"lr": 2e-4, "batch_size": 16, "epochs": 2, "warmup_ratio": 0.1, "optimizer": "adam"}
    cfg = trial_config({"train": {"folds": 5}}, values, "runs/x/trial-0001", only_folds=[0, 1])
    assert (cfg.train.lr, cfg.train.batch_size, cfg.train.optimizer, cfg.train.only_folds) == (2e-4, 16, "adam", [0, 1])
    assert cfg.train.output == "runs/x/trial-0001" and cfg.train.folds == 5


@pytest.mark.parametrize("space, message", [
    ({"lrr": {"type": "float", "low": 0.1, "high": 1}}, "unknown config option 'lrr'"),
    ({"output": ["a", "b"]}, "'output' is not a hyper-parameter"),
    ({"lr": {"type": "loguniform", "low": 0.0, "high": 1e-3}}, "log scale needs low > 0"),
    ({"lr": {"type": "float", "low": 1e-3, "high": 1e-4}}, "must be below high"),
    ({"lr": {"type": "gauss", "low": 0, "high": 1}}, "type must be one of"),
    ({"marker": ["entity_marker", "nope"]}, "tune.space.marker: value 'nope' is not valid"),
    ({"warmup_ratio": {"type": "float", "low": 0.0, "high": 1.0}}, "tune.space.warmup_ratio: value 1.0"),
    ({}, "the search space is empty"),
])
def test_space_errors_name_the_option(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(space, {})


def test_tune_section_is_split_off_and_train_still_rejects_it(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**TINY, "tune": {"trials": 3, "space": SPACE}}), encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown config key 'tune'"):
        RunConfig.from_yaml(path)  # `rekit train --config` must not silently ignore a search space
    base, tune = split_config(yaml.safe_load(path.read_text()))
    assert "tune" not in base and RunConfig.from_dict(base).model.model == "scratch"
    settings = TuneSettings.from_dict(tune, {"trials": 5})  # flags win over the file
    assert settings.trials == 5 and settings.space == SPACE
    with pytest.raises(ConfigError, match="unknown tune setting 'trails'"):
        TuneSettings.from_dict({"trails": 3})
    with pytest.raises(ConfigError, match="--workers must be"):
        TuneSettings.from_dict({"workers": "many"})


# -- pruning and the objective -------------------------------------------------------------------

def test_prune_on_eval_reports_per_fold_steps_and_prunes_below_median():
    quiet_optuna()
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    good = study.ask()
    cb = PruneOnEval(good, "micro_f1", warmup_evals=1)
    for fold in (0, 1):
        for f1 in (50.0, 60.0):
            cb(fold, {"epoch": 1, "micro_f1": f1})
    study.tell(good, 60.0)
    assert good.storage.get_trial(good._trial_id).intermediate_values == {
        1: 50.0, 2: 60.0, STEP_STRIDE + 1: 50.0, STEP_STRIDE + 2: 60.0}

    bad = study.ask()
    cb = PruneOnEval(bad, "micro_f1", warmup_evals=1)
    cb(0, {"epoch": 1, "micro_f1": 10.0})  # the warm-up evaluation is never pruned
    with pytest.raises(optuna.TrialPruned, match="fold 0 epoch 2"):
        cb(0, {"epoch": 2, "micro_f1": 11.0})


def test_objective_is_oof_when_finished_else_mean_of_the_folds_that_ran(tmp_path):
    for k, f1 in ((0, 40.0), (2, 50.0)):
        d = tmp_path / f"fold-{k}"
        d.mkdir()
        (d / "result.json").write_text(json.dumps({"fold": k, "best": {"micro_f1": f1, "auprc": 1.0}}))
        (d / "oof.safetensors").write_bytes(b"x")
    assert objective_value({"status": "partial"}, tmp_path, "micro_f1") == (45.0, "mean of folds [0, 2]")
    assert objective_value({"status": "finished", "cv": {"micro_f1": 47.5}}, tmp_path, "micro_f1") == (
        47.5, "out-of-fold CV")


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # ask() stands in for a worker's optimize()
def test_recover_dead_fails_and_requeues_a_trial_whose_worker_is_gone(tmp_path):
    from rekit.tuning.pool import recover_dead
    from rekit.tuning.study import Study

    quiet_optuna()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = Study(tmp_path, "s", url, RunConfig().to_dict(), TuneSettings(space=SPACE, retries=1), parse_space(SPACE))
    ost = optuna.create_study(study_name="s", storage=study.storage(), direction="maximize")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = ost.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True)})
    alive.set_user_attr("worker", {"host": socket.gethostname(), "pid": os.getpid()})
    orphan = ost.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-3, log=True)})
    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": dead.pid})

    assert recover_dead(study, ost) == [orphan.number]
    states = {t.number: t.state.name for t in ost.get_trials()}
    assert states[alive.number] == "RUNNING" and states[orphan.number] == "FAIL"
    retry = [t for t in ost.get_trials() if t.state.name == "WAITING"]
    assert len(retry) == 1 and retry[0].system_attrs["failed_trial"] == orphan.number
    assert retry[0].params == ost.get_trials()[orphan.number].params
    assert recover_dead(study, ost) == []  # already failed: nothing twice


# -- whole studies ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    train, _ = make_splits(seed=0, n_train=200, n_test=50)
    write_csv(train, d / "train.csv")
    (d / "tune.yaml").write_text(yaml.safe_dump({
        "data": {"train": str(d / "train.csv")}, **TINY,
        "tune": {"trials": 4, "folds": [0], "space": SPACE, "seed": 3}}), encoding="utf-8")
    return d


def test_a_mistyped_training_file_leaves_no_study_and_keeps_an_old_one(data_dir, tmp_path, capsys):
    """Checked before the study directory is created, and before --overwrite removes one."""
    for flags in ([], ["--overwrite"]):
        out = tmp_path / "study"
        assert main(["tune", "--config", str(data_dir / "tune.yaml"), "--train", str(tmp_path / "typo.csv"),
                     "--output", str(out), *flags]) == 2
        assert "typo.csv: no such file" in capsys.readouterr().err
        if not flags:
            assert not out.exists()
            out.mkdir()
            (out / "study.json").write_text("{}", encoding="utf-8")  # an earlier study, to be kept
    assert (out / "study.json").read_text(encoding="utf-8") == "{}"


def tune_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "rekit.cli", "tune", *args]


def child_env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def wait_for_running_trial(db_url: str, name: str, proc: subprocess.Popen, timeout: float = 180.0):
    """The first RUNNING trial that has recorded its worker's pid (i.e. is inside the objective)."""
    end = time.time() + timeout
    while time.time() < end:
        assert proc.poll() is None, "rekit tune ended before any trial ran"
        try:
            for t in optuna.load_study(study_name=name, storage=db_url).get_trials(deepcopy=False):
                # every param too: killed before sampling one, the retry would rightly draw it anew
                if t.state.name == "RUNNING" and "worker" in t.user_attrs and set(t.params) == set(SPACE):
                    return t
        except (KeyError, Exception):  # noqa: BLE001 - the study may not exist yet
            pass
        time.sleep(0.1)
    raise AssertionError("no trial started in time")


@pytest.fixture(scope="module")
def killed_study(data_dir):
    """A 2-worker SQLite study of 4 trials in which one worker is SIGKILLed in the middle of a trial."""
    quiet_optuna()
    study_dir = data_dir / "study"
    proc = subprocess.Popen(tune_cmd("--config", str(data_dir / "tune.yaml"), "--output", str(study_dir),
                                     "--workers", "2"), env=child_env(), cwd=data_dir,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"sqlite:///{study_dir / 'study.db'}"
        victim = wait_for_running_trial(url, "study", proc)
        os.kill(victim.user_attrs["worker"]["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            proc.kill()
    return study_dir, url, victim, proc.returncode, out


def test_worker_hears_sigint_even_when_started_with_it_ignored():
    """`rekit tune &` hands its workers an ignored SIGINT; the worker takes it back, so the pool's
    stop signal interrupts it at once instead of a kill after the pool's wait."""
    code = ("import os, signal, time\n"
            "from rekit.tuning.worker import listen_for_stop\n"
            "listen_for_stop()\n"
            "os.kill(os.getpid(), signal.SIGINT)\n"
            "time.sleep(30)\n")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert p.returncode != 0 and "KeyboardInterrupt" in p.stderr
    assert time.time() - t0 < 25


def test_study_with_two_workers_survives_a_killed_worker(killed_study):
    study_dir, url, victim, rc, out = killed_study
    assert rc == 0, out
    assert f"(pid {victim.user_attrs['worker']['pid']}) died (signal SIGKILL)" in out, out
    assert f"trial(s) {victim.number} failed and re-queued" in out, out
    trials = optuna.load_study(study_name="study", storage=url).get_trials()
    by_state = {}
    for t in trials:
        by_state.setdefault(t.state.name, []).append(t)
    assert [t.number for t in by_state["FAIL"]] == [victim.number]
    assert "died" in by_state["FAIL"][0].user_attrs["error"]
    finished = by_state.get("COMPLETE", []) + by_state.get("PRUNED", [])
    assert len(finished) >= 4 and not by_state.get("RUNNING") and not by_state.get("WAITING")
    retried = [t for t in finished if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].params == victim.params  # the killed trial ran again, same values
    assert retried[0].user_attrs.get("error") is None  # not the original's failure note
    # every trial is a normal run directory; the killed one says why it stopped
    for t in finished:
        state = json.loads((study_dir / f"trial-{t.number:04d}" / "state.json").read_text())
        assert state["status"] in ("partial", "pruned")  # fold 0 of 2 only
    victim_state = json.loads((study_dir / f"trial-{victim.number:04d}" / "state.json").read_text())
    assert victim_state["status"] == "failed" and "re-queued" in victim_state["reason"]


def test_resume_runs_nothing_more_and_export_trains(killed_study, data_dir, capsys):
    study_dir, url, _, _, _ = killed_study
    assert main(["tune", "--output", str(study_dir)]) == 0  # resume: the study already has its 4 trials
    assert "nothing to run" in capsys.readouterr().out
    best_yaml = data_dir / "best.yaml"
    assert main(["tune", "--output", str(study_dir), "--export", str(best_yaml)]) == 0
    best = optuna.load_study(study_name="study", storage=url).best_trial
    exported = yaml.safe_load(best_yaml.read_text())
    assert "tune" not in exported
    assert exported["train"]["lr"] == best.params["lr"] and exported["train"]["batch_size"] == best.params["batch_size"]
    assert exported["train"]["only_folds"] == [] and exported["train"]["output"] == str(study_dir / "best")

    assert main(["train", "--config", str(best_yaml)]) == 0
    summary = json.loads((study_dir / "best" / "summary.json").read_text())
    assert summary["status"] == "finished" and len(summary["folds"]) == 2


def test_study_report_has_history_and_importances(killed_study, tmp_path):
    study_dir, _, _, _, _ = killed_study
    out = tmp_path / "study.html"
    assert main(["report", str(study_dir), "--output", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') >= 3  # history, importances, intermediate scores
    assert "optimisation history" in page and "parameter importances" in page.lower()
    assert "its worker (pid" in page and "re-run of trial" in page  # the killed trial and its re-run


def test_a_study_refuses_a_different_search_under_the_same_name(killed_study, data_dir):
    study_dir, _, _, _, _ = killed_study
    other = data_dir / "other.yaml"
    cfg = yaml.safe_load((data_dir / "tune.yaml").read_text())
    cfg["tune"]["space"] = {"lr": [1e-4, 1e-3]}
    other.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match="searches something else"):
        from rekit.tuning.study import prepare

        prepare(str(other), {"output": str(study_dir)}, {})


# -- PostgreSQL ------------------------------------------------------------------------------------

def pg_bin() -> Path | None:
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1 (postgres refuses to run as root: as the postgres user)."""
    pytest.importorskip("psycopg2", reason="psycopg2 (the PostgreSQL driver, test extra) is not installed")
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="rekit-pg-"))  # not under pytest's 0700 tmp: the server user must enter
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")  # created by Debian's postgresql package
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = root / "data"
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
                        "-t", "60", "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=90)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def test_study_on_postgresql_with_two_workers(postgres_url, data_dir, tmp_path):
    quiet_optuna()
    study_dir = tmp_path / "pg-study"
    proc = subprocess.run(tune_cmd("--config", str(data_dir / "tune.yaml"), "--output", str(study_dir),
                                   "--storage", postgres_url, "--study-name", "pg", "--workers", "2", "--trials", "3"),
                          env=child_env(), cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "postgresql://postgres@127.0.0.1" in proc.stdout
    db = with_driver(postgres_url)  # for optuna itself; rekit was given the plain postgresql:// URL
    trials = optuna.load_study(study_name="pg", storage=db).get_trials()
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) >= 3
    assert len({t.user_attrs["worker"]["pid"] for t in trials}) == 2 and not (study_dir / "study.db").exists()
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["storage"].startswith("postgresql://") and meta["study_name"] == "pg"
    # the trials' run directories are here, the study itself in the server
    assert sorted(p.name for p in study_dir.glob("trial-*")) == [f"trial-{t.number:04d}" for t in trials]
    assert main(["tune", "--output", str(study_dir), "--export", str(tmp_path / "best.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "best.yaml").read_text())["train"]["lr"] == optuna.load_study(
        study_name="pg", storage=db).best_params["lr"]


def test_example_tune_config_is_valid():
    from rekit.tuning.settings import read_config_file

    base, tune = read_config_file(Path(__file__).resolve().parents[1] / "configs" / "tune-scratch.yaml")
    settings = TuneSettings.from_dict(tune)
    params = parse_space(settings.space, RunConfig.from_dict(base).to_dict())
    assert {"lr", "batch_size", "optimizer", "marker", "head", "dropout"} <= {p.name for p in params}
    assert settings.folds == [0] and RunConfig.from_dict(base).model.model == "scratch"
