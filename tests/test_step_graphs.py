"""Whole-step CUDA graphs (training/graphs.py): when they apply, and — on a GPU — that they
train exactly like the eager loop. The GPU tests are skipped on CPU-only machines; the device
run in BENCHMARKS.md ("Training throughput") runs them on an H200."""

import pytest
import torch

from conftest import one_process_ddp
from rekit.config import RunConfig
from rekit.data.labels import LabelMap
from rekit.data.synthetic import make_splits
from rekit.encoding.tokenize import REEncoder
from rekit.modeling.backbone import build_model, load_tokenizer
from rekit.runtime import compile_blocks, seed_everything
from rekit.training import graphs
from rekit.training.cv import tokenizer_corpus
from rekit.training.loop import fit, host_lr
from rekit.training.step import pad_multiple, resolve_compile

CPU = torch.device("cpu")
CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


def test_auto_is_graphs_on_cuda_and_eager_on_cpu():
    assert resolve_compile("auto", CUDA) == "graphs"
    assert resolve_compile("auto", CPU) == "off"
    assert resolve_compile("auto", CPU, epochs=10) == "off"
    assert resolve_compile("graphs", CUDA, epochs=10) == "graphs"  # an explicit mode is kept


def test_auto_picks_inductor_for_folds_long_enough_to_pay_back_its_compiling(monkeypatch):
    from rekit.training import step

    monkeypatch.setattr(step, "_has_triton", lambda: True)
    assert [resolve_compile("auto", CUDA, epochs=e) for e in (1, 2, 3, 8)] == \
        ["graphs", "graphs", "graphs-inductor", "graphs-inductor"]
    monkeypatch.setattr(step, "_has_triton", lambda: False)  # no triton: inductor cannot compile for the GPU
    assert resolve_compile("auto", CUDA, epochs=8) == "graphs"
    assert resolve_compile("reduce-overhead", CPU) == "reduce-overhead"
    assert pad_multiple(0, "graphs", CUDA) == 8
    assert pad_multiple(0, "reduce-overhead", CUDA) == 32
    assert pad_multiple(0, "off", CPU) == 1
    assert pad_multiple(16, "graphs", CUDA) == 16


def test_graphs_are_refused_where_they_cannot_run():
    assert "CUDA" in graphs.usable(CPU, 1, None)
    assert "--grad-accum" in graphs.usable(CUDA, 2, torch.bfloat16)
    assert "fp16" in graphs.usable(CUDA, 1, torch.float16)
    assert graphs.usable(CUDA, 1, torch.bfloat16) is None
    assert graphs.usable(CUDA, 1, None) is None


def test_saved_learning_rates_are_plain_floats():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    opt.param_groups[0]["lr"] = torch.tensor(5e-4)
    state = host_lr(opt.state_dict())
    assert state["param_groups"][0]["lr"] == pytest.approx(5e-4) and isinstance(state["param_groups"][0]["lr"], float)
    sched = {"base_lrs": [1e-3], "_last_lr": [torch.tensor(2e-4)]}
    assert host_lr(sched)["_last_lr"] == [pytest.approx(2e-4)]
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)  # the live optimizer is untouched


def test_cpu_run_with_graphs_requested_trains_eagerly(tmp_path):
    train, _ = make_splits(seed=1, n_train=96, n_test=8)
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 800,
                                   "max_length": 64, "batch_size": 16, "epochs": 1, "progress": False,
                                   "compile": "graphs"})
    lm = LabelMap.infer([r.label for r in train])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(train, cfg), ["PER", "ORG", "LOC", "DAT"])
    feats = REEncoder(tok, cfg.model.marker, cfg.model.max_length).encode(train, lm)
    said = []
    result = fit(build_model(cfg.model, tok, lm), tok, lm, feats, feats, cfg.train, tmp_path / "f", seed=0,
                 device=CPU, echo=said.append)
    assert any("need a CUDA device" in s for s in said)
    assert result.timing == {} and len(result.history) == 1


@pytest.fixture(scope="module")
def data():
    """Tokenizer and features built once: the scratch WordPiece trainer is not deterministic between
    runs, so runs to be compared must share them."""
    train, _ = make_splits(seed=2, n_train=400, n_test=8)
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500,
                                   "max_length": 96})
    lm = LabelMap.infer([r.label for r in train])
    tok = load_tokenizer(cfg.model, tokenizer_corpus(train, cfg), ["PER", "ORG", "LOC", "DAT"])
    return lm, tok, REEncoder(tok, cfg.model.marker, cfg.model.max_length).encode(train, lm)


def _train(data, tmp_path, name, dist=None, **kw):
    lm, tok, feats = data
    base = {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500, "max_length": 96,
            "lr": 1e-3, "batch_size": 16, "epochs": 3, "progress": False, "dropout": 0.0, "precision": "fp32"}
    cfg = RunConfig.from_dict({}, {**base, **kw})
    seed_everything(0)
    model = build_model(cfg.model, tok, lm, train=cfg.train)  # the train options' loss, masking, R-Drop
    result = fit(model, tok, lm, feats, feats.subset(range(64)), cfg.train, tmp_path / name, seed=0, device=CUDA,
                 dist=dist)
    return model, result


def test_regional_compilation_compiles_each_encoder_layer_in_place(data):
    """graphs-inductor compiles the encoder's layers (one shared graph), not the whole network:
    same outputs, same state-dict keys, every layer compiled and nothing else."""
    lm, tok, feats = data
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500,
                                   "max_length": 96})
    seed_everything(0)
    model = build_model(cfg.model, tok, lm).eval()
    batch = _pad(feats, tok.pad_token_id, range(4))
    with torch.no_grad():
        ref, _ = model(**batch)
    keys = list(model.state_dict())
    layers = [m for m in model.modules() if type(m).__name__.endswith("Layer")]
    assert compile_blocks(model, backend="eager", dynamic=True) == len(layers) > 1
    assert all(m._compiled_call_impl is not None for m in layers)
    assert sum(m._compiled_call_impl is not None for m in model.modules()) == len(layers)
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        out, _ = model(**batch)
    torch.testing.assert_close(out, ref)


def test_regionally_compiled_code_is_shared_by_later_models(data):
    """A K-fold run builds a new model per fold: its layers reuse the code compiled for the first
    (one compilation per process, not per fold or per layer)."""
    lm, tok, feats = data
    cfg = RunConfig.from_dict({}, {"model": "scratch", "scratch_size": "tiny", "scratch_vocab_size": 1500,
                                   "max_length": 96})
    compiled = []

    def counting_backend(gm, example_inputs):
        compiled.append(gm)
        return gm.forward

    torch._dynamo.reset()
    for rows in (range(4), range(4, 10)):  # a new model per "fold", another batch shape
        model = build_model(cfg.model, tok, lm).train()
        compile_blocks(model, backend=counting_backend, dynamic=True)
        _, loss = model(**_pad(feats, tok.pad_token_id, rows))
        loss.backward()
    torch._dynamo.reset()
    assert len(compiled) == 1


def _pad(feats, pad_id, idx):
    from rekit.encoding.collate import Collator

    return Collator(feats, pad_id, multiple_of=1)(list(idx))


@needs_cuda
def test_one_replayed_step_equals_one_eager_step():
    """The mechanism alone: same weights, same batch; a replay updates the weights as an eager step does."""
    from rekit.training.optim import apply_update

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Flatten(), torch.nn.Linear(16 * 6, 4)).cuda()
    twin = torch.nn.Sequential(torch.nn.Embedding(50, 16), torch.nn.Flatten(), torch.nn.Linear(16 * 6, 4)).cuda()
    twin.load_state_dict(net.state_dict())

    def forward_of(m):
        return lambda x, y: (None, torch.nn.functional.cross_entropy(m(x), y))

    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, fused=True, capturable=True)
    ref = torch.optim.AdamW(twin.parameters(), lr=1e-2, fused=True)
    g = graphs.StepGraphs(forward_of(net), net, opt, None, 1.0)
    gen = torch.Generator().manual_seed(1)
    for _i in range(6):
        batch = {"x": torch.randint(0, 50, (8, 6), generator=gen).cuda(), "y": torch.randint(0, 4, (8,), generator=gen).cuda()}
        loss = g.step(batch)
        if loss is None:  # eager, as the loop does it
            opt.zero_grad(set_to_none=True)
            forward_of(net)(**batch)[1].backward()
            apply_update(net, opt, None, 1.0)
        ref_loss = forward_of(twin)(**batch)[1]
        ref_loss.backward()
        apply_update(twin, ref, None, 1.0)
        if loss is not None:
            assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
        for a, b in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Step 1 is eager (no optimizer state yet); step 2 captures this one shape; steps 2-6 are replays.
    assert g.stats()["graphs"] == 1 and g.stats()["replays"] == 5 and g.stats()["eager_steps"] == 1


@needs_cuda
def test_graphs_train_like_the_eager_loop(data, tmp_path):
    torch.backends.cuda.matmul.allow_tf32 = False
    eager, r_eager = _train(data, tmp_path, "eager", compile="off")
    graphed, r_graphs = _train(data, tmp_path, "graphs", compile="graphs")
    stats = r_graphs.timing
    assert stats["graphs"] >= 2 and stats["replays"] > stats["eager_steps"]  # most steps were replays
    # Same batches, no dropout, fp32: the replayed steps compute what the eager ones do.
    for a, b in zip(r_eager.history, r_graphs.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3, abs=1e-4)
        assert b["lr"] == pytest.approx(a["lr"])
    for (k, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-3, msg=k)


@needs_cuda
def test_graphs_with_bf16_dropout_focal_loss_token_masking_rdrop_and_layer_decay(data, tmp_path):
    _, r = _train(data, tmp_path, "bf16", compile="graphs", precision="bf16", dropout=0.1, loss="focal", augment="mask",
                  rdrop=1.0, layer_decay=0.8)
    assert r.timing["replays"] > 0
    losses = [row["train_loss"] for row in r.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


@needs_cuda
def test_graphs_inductor_trains(data, tmp_path):
    _, r = _train(data, tmp_path, "inductor", compile="graphs-inductor", precision="bf16", dropout=0.1, epochs=2)
    assert r.timing["replays"] > 0
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]


@needs_cuda
def test_graphs_hold_the_ddp_all_reduce(data, tmp_path, monkeypatch):
    """DDP inside the step graphs (the all-reduce is captured with the step). This host may have one
    GPU, so it runs a one-process NCCL group, made to count as DDP: DDP's hooks, buckets and
    all-reduce all run, captured and replayed. Same batches, no dropout, fp32: it trains like one
    process without DDP. (Two GPUs: test_distributed.py, test_ddp_with_graphs_on_two_gpus.)"""
    import warnings

    torch.backends.cuda.matmul.allow_tf32 = False
    with one_process_ddp(monkeypatch, "nccl", device_id=torch.device("cuda", 0)) as ddp, \
            warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model, r_ddp = _train(data, tmp_path, "ddp", dist=ddp, compile="graphs")
    # DDP is built on the stream the steps run on: no gradient crosses streams.
    assert not [w for w in said if "AccumulateGrad node's stream" in str(w.message)]
    one, r_one = _train(data, tmp_path, "one", compile="graphs")
    stats = r_ddp.timing
    assert stats["eager_steps"] >= graphs.DDP_MIN_EAGER and stats["graphs"] >= 2 and stats["replays"] > 20
    for a, b in zip(r_one.history, r_ddp.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3, abs=1e-4)
    for (k, a), b in zip(one.state_dict().items(), model.state_dict().values()):
        torch.testing.assert_close(b, a, atol=2e-4, rtol=2e-3, msg=k)


def test_padded_targets_give_the_loss_of_the_exact_ones():
    from rekit.modeling.mlm_data import IGNORE, MLMCollator, encode_corpus
    from rekit.modeling.scratch import train_tokenizer
    from rekit.training.pretrain import masked_loss, scratch_mlm_model

    texts = [r.sentence for r in make_splits(seed=3, n_train=64, n_test=2)[0]]
    tok = train_tokenizer(texts, 600)
    torch.manual_seed(0)
    model = scratch_mlm_model(tok, "tiny", 128, 0.0).eval()
    corpus = encode_corpus(tok, texts, 64)
    exact = MLMCollator(corpus, tok)(list(range(32)), torch.Generator().manual_seed(0))
    padded = MLMCollator(corpus, tok, target_slack=2.0)(list(range(32)), torch.Generator().manual_seed(0))
    n, size = len(exact["target_index"]), len(padded["target_index"])
    assert size % 64 == 0 and size >= n and size == -(-int(exact["labels"].numel() * 0.15 * 2.0) // 64) * 64
    assert torch.equal(padded["target_index"][:n], exact["target_index"])
    assert (padded["target_labels"][n:] == IGNORE).all()
    torch.testing.assert_close(masked_loss(model, padded), masked_loss(model, exact), atol=1e-6, rtol=1e-6)
    # more targets than the room for them: the exact size (a step of its own shape)
    tight = MLMCollator(corpus, tok, target_slack=0.01)(list(range(32)), torch.Generator().manual_seed(0))
    assert torch.equal(tight["target_index"], exact["target_index"])


@needs_cuda
def test_pretraining_with_graphs_matches_eager(tmp_path):
    from rekit.modeling.scratch import train_tokenizer
    from rekit.training.pretrain import PretrainSettings, pretrain, scratch_mlm_model

    torch.backends.cuda.matmul.allow_tf32 = False
    texts = [r.sentence for r in make_splits(seed=4, n_train=600, n_test=2)[0]]
    tok = train_tokenizer(texts, 800)
    runs = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        model = scratch_mlm_model(tok, "tiny", 128, 0.0)
        s = PretrainSettings(epochs=4, lr=1e-3, batch_size=32, max_length=64, precision="fp32", progress=False,
                             graphs=graphed)
        runs[graphed] = pretrain(model, tok, texts, s, tmp_path / str(graphed), echo=lambda *_: None)
    assert runs[True]["step_graphs"]["replays"] > runs[True]["step_graphs"]["eager_steps"]
    assert runs[False]["step_graphs"] is None
    a, b = runs[False]["final"], runs[True]["final"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-3)
    assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=2e-3)
