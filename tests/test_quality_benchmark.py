"""benchmarks/klue_re_quality.py --smoke runs every row end to end on a CPU, and its job scheduler."""

import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import klue_re_quality  # noqa: E402
from jobs import Job, run_jobs  # noqa: E402


def test_smoke_writes_every_row_and_the_table(tmp_path):
    # about 45 s on 2 CPU cores: community recipe, pretraining, 2 folds, 2 ablations, the distilled student, dev scoring
    out = tmp_path / "q"
    assert klue_re_quality.main(["--out", str(out), "--smoke", "--distill", "--self-train", "--save-probs",
                                 "--variant", "pretrain_seed=43,rdrop=2.0", "--pretrain-set", "batch_size=16"]) == 0
    result = json.loads((out / "quality.json").read_text())
    assert all(j["status"] == "ok" for j in result["jobs"].values()), result["jobs"]
    rows = result["rows"]
    for key in ("a", "b", "c", "d", "c+em", "d+em", "c+bcts+em", "d+bcts+em", "d+typepair"):
        assert 0 <= rows[key]["micro_f1"] <= 100 and 0 <= rows[key]["auprc"] <= 100 and 0 <= rows[key]["accuracy"] <= 1
    assert rows["b"]["parameters"] == 0 and rows["a"]["parameters"] > 0
    assert rows["d"]["parameters"] == 2 * rows["c"]["parameters"]  # two fold models
    # the recipe's type-pair constraints: a post-hoc ablation of the same models, and the OOF choice
    assert {a["ablation"] for a in result["ablations"]} == {"no_pretraining", "focal", "no_type_constraints"}
    no_tc = next(a for a in result["ablations"] if a["ablation"] == "no_type_constraints")
    assert (no_tc["micro_f1"], no_tc["auprc"]) == (rows["c-tc"]["micro_f1"], rows["c-tc"]["auprc"])
    assert no_tc["gain_of_recipe_micro_f1"] == round(rows["c"]["micro_f1"] - rows["c-tc"]["micro_f1"], 2)
    oof = result["type_constraints_oof"]
    assert set(oof) == {"raw", "constrained"} and 0 <= oof["constrained"]["auprc"] <= 100
    for model in ("rekit-5fold/fold-0", "distilled/fold-0"):  # the folds and their student keep the pairs
        assert json.loads((out / "work" / model / "rekit.json").read_text())["type_pairs"]
    assert result["pretrain"]["steps"] > 0
    # the merged fold runs form one rekit run directory (oof.csv for OOF-fit calibration and weights)
    assert (out / "work" / "rekit-5fold" / "oof.csv").is_file()
    # (e): the ensemble distilled into one model, scored and timed beside (d)
    assert rows["e"]["parameters"] == rows["c"]["parameters"] and 0 <= rows["e"]["micro_f1"] <= 100
    assert rows["e"]["infer_samples_per_s"] > 0 and rows["d"]["infer_samples_per_s"] > 0
    assert rows["e"]["forward_samples_per_s"] > 0 and rows["d"]["forward_samples_per_s"] > 0
    # (f): self-training, K students on (d)'s folds (rekit distill --folds K), their ensemble
    assert rows["f"]["parameters"] == rows["d"]["parameters"] and 0 <= rows["f"]["micro_f1"] <= 100
    assert (out / "work" / "students" / "oof.csv").is_file()
    # --save-probs: the raw dev and OOF probabilities, loadable without pickle
    import numpy as np

    saved = np.load(out / "probs.npz", allow_pickle=False)
    n_dev = len(saved["dev_y"])
    assert {"dev_fold0", "dev_fold1", "dev_abl_focal", "dev_student", "oof_probs", "oof_y"} <= set(saved.files)
    assert saved["dev_fold0"].shape == (n_dev, saved["oof_probs"].shape[1]) and saved["dev_fold0"].dtype == np.float32
    assert len(saved["oof_y"]) == len(saved["oof_index"]) == len(saved["oof_fold"]) == len(saved["oof_probs"])
    assert sorted(set(saved["oof_fold"].tolist())) == [0, 1]
    # --pretrain-set changes the recipe file's pretraining for the run (both encoders) and is recorded
    assert all("--batch-size 16" in result["jobs"][j]["cmd"] for j in ("pretrain", "pretrain_var"))
    assert result["recipe"]["pretrain"]["batch_size"] == "16"
    # --variant: every fold again from a second encoder (another pretraining seed) with R-Drop 2.0
    assert "--seed 43" in result["jobs"]["pretrain_var"]["cmd"] and "--rdrop 2.0" in result["jobs"]["var1"]["cmd"]
    assert rows["dv"]["parameters"] == rows["d"]["parameters"] and rows["d+dv"]["parameters"] == 2 * rows["d"]["parameters"]
    assert {"dev_var_fold0", "dev_var_fold1", "var_oof_probs"} <= set(saved.files)
    n_train = len(saved["oof_y"])  # every training row is out-of-fold once per run; the mix averages the two
    assert rows["d"]["oof"]["rows"] == rows["dv"]["oof"]["rows"] == rows["d+dv"]["oof"]["rows"] == n_train
    # the post-hoc checks read that file on a CPU: each ensemble scored on OOF and dev, sweeps chosen on OOF
    import posthoc_probs

    assert posthoc_probs.main([str(out / "probs.npz"), "--train", str(out / "work" / "train.csv"),
                               "--json", str(out / "posthoc.json")]) == 0
    post = json.loads((out / "posthoc.json").read_text())
    assert post["ensembles"]["recipe"]["dev"] == [rows["d-tc"]["micro_f1"], rows["d-tc"]["auprc"]]
    assert post["ensembles"]["both"]["oof"] == [rows["d+dv"]["oof"]["micro_f1"], rows["d+dv"]["oof"]["auprc"]]
    assert post["no_relation_weight"]["rows"]["1.0"]["oof"] == [rows["d"]["oof"]["micro_f1"], rows["d"]["oof"]["auprc"]]
    assert post["temperature"]["chosen_on_oof"] in post["temperature"]["rows"] and len(post["ensembles"]["folds_dev"]) == 2
    shifted = post["label_shift_weighted_oof_micro_f1"]
    assert set(shifted) == {"estimated_no_relation_share", "recipe", "variant"} and 0 <= shifted["recipe"] <= 100
    alone = post["unique_sentence_oof"]
    assert 0 < alone["rows"] <= n_train and set(alone["variant"]) == {"unique", "shared"}
    z = np.load(out / "probs.npz")  # weights of 1: the weighted micro-F1 is the run's own OOF micro-F1
    op, oy = posthoc_probs.oof(z, "oof_")
    assert posthoc_probs.weighted_micro_f1(oy, op, np.ones(len(oy)), 0) == rows["d"]["oof"]["micro_f1"]
    table = (out / "quality.md").read_text()
    assert "| (d+dv) | (d) and (dv) averaged (4 models)" in table and "Out-of-fold rows (training data" in table
    assert "| (a) | community HF-Trainer recipe" in table and "| (d) | rekit 2-fold ensemble" in table
    assert "pretraining: none" in table and "| (e) | (d) distilled into one model" in table
    assert "| (f) | self-trained: 2 students" in table and "| self-training: (f) instead of (d) |" in table
    # benchmarks/inference_cost.py times the ensemble and its student side by side on the same rows
    import inference_cost

    work = out / "work"
    assert inference_cost.main(["--run", str(work / "rekit-5fold"), "--student", str(work / "distilled"), "--input",
                                str(work / "dev.csv"), "--out", str(tmp_path / "ic"), "--repeats", "2"]) == 0
    cost = json.loads((tmp_path / "ic" / "inference_cost.json").read_text())
    assert cost["members"] == 2 and cost["rows"] == n_dev and cost["one_model"].startswith(str(work / "distilled"))
    for side in ("ensemble", "one model"):
        assert cost[side]["infer_samples_per_s"] > 0 and cost[side]["forward_samples_per_s"] > 0
    ratio = cost["one model"]["forward_samples_per_s"] / cost["ensemble"]["forward_samples_per_s"]
    assert cost["speedup_forward_samples_per_s"] == round(ratio, 2)
    assert "| 2-fold ensemble |" in (tmp_path / "ic" / "inference_cost.md").read_text()


def test_scheduler_order_dependencies_failures_and_deadline(tmp_path):
    py = sys.executable
    ok = [py, "-c", "pass"]
    jobs = [
        Job("a", ok, required=True),
        Job("bad", [py, "-c", "raise SystemExit(3)"], estimate=1),
        Job("after_a", ok, after=["a"], estimate=1),
        Job("after_bad", ok, after=["bad"], estimate=1),
        Job("too_long", ok, estimate=3600),  # optional and does not fit the deadline: never started
        Job("lazy", lambda: ok, after=["a"], estimate=1),  # its command is built when it starts
        Job("sleeper", [py, "-c", "import time; time.sleep(60)"], required=True),
    ]
    t0 = time.time()
    done = run_jobs(jobs, max_parallel=3, deadline=t0 + 4, log_dir=tmp_path, echo=lambda *_: None, poll=0.05)
    status = {n: j.status for n, j in done.items()}
    assert status == {"a": "ok", "bad": "failed", "after_a": "ok", "after_bad": "skipped", "too_long": "skipped",
                      "lazy": "ok", "sleeper": "stopped"}
    assert done["lazy"].summary()["cmd"] == " ".join(ok)
    assert done["bad"].returncode == 3 and (tmp_path / "a.log").is_file()
    assert time.time() - t0 < 15  # the sleeper stopped at SIGINT, not killed after the 20 s grace


def test_optional_jobs_wait_until_every_required_job_has_started(tmp_path):
    py = sys.executable
    order = tmp_path / "order.txt"
    mark = lambda name: [py, "-c", f"open({str(order)!r}, 'a').write('{name}\\n')"]  # noqa: E731
    jobs = [Job("pre", mark("pre"), required=True), Job("opt", mark("opt"), estimate=1),
            Job("early", mark("early"), estimate=1, early=True), Job("fold", mark("fold"), after=["pre"], required=True)]
    done = run_jobs(jobs, max_parallel=1, deadline=time.time() + 60, log_dir=tmp_path, echo=lambda *_: None, poll=0.05)
    assert all(j.status == "ok" for j in done.values())
    # one slot: the required chain first; 'early' may use a free slot before 'fold' starts, 'opt' may not
    assert order.read_text().split() == ["pre", "early", "fold", "opt"]
