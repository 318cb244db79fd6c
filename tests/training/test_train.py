"""Training: the loss against hand computations, the recipe (schedule, groups, data order),
and end-to-end runs of a tiny model on tiny synthetic data (learning, exact resume,
NaN stop, two gloo processes under torchrun, the CLI)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tfcseg.errors import TfcsegError
from tfcseg.training.losses import (
    IGNORE_INDEX,
    class_weights,
    consistency_loss,
    distillation_loss,
    focal_bce,
    segmentation_loss,
    similarity_loss,
    similarity_target,
    tfc_loss,
)
from tfcseg.training import TrainConfig, Trainer, train
from tfcseg.training.checkpoints import STATE_NAME
from tfcseg.training.distributed import ResumableShardSampler
from tfcseg.training.optim import PolyWarmup, param_groups, poly_warmup_factor

from conftest import tiny_config

TINY = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4],
        "decoder_dim": 32, "tfc": {"msda_heads": 2, "msda_points": 2}}


# ---- the loss --------------------------------------------------------------------------


def test_segmentation_loss_is_the_mean_of_per_frame_cross_entropies():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 2, 3, 2, 2, generator=g)  # at label size: no resizing involved
    labels = torch.tensor([[[[0, 1], [2, 255]], [[255, 255], [255, 1]]]])
    # By hand: frame 0 averages 3 pixels, frame 1 one pixel; frames weigh the same.
    lp = torch.log_softmax(logits, dim=2)
    f0 = -(lp[0, 0, 0, 0, 0] + lp[0, 0, 1, 0, 1] + lp[0, 0, 2, 1, 0]) / 3
    f1 = -lp[0, 1, 1, 1, 1]
    assert torch.allclose(segmentation_loss(logits, labels), (f0 + f1) / 2, atol=1e-6)


def test_ohem_and_balanced_losses_by_hand():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, 3, 2, 4, generator=g)
    labels = torch.tensor([[[[0, 1, 2, 0], [1, 255, 0, 0]]]])
    per = -torch.log_softmax(logits, dim=2)[0, 0].gather(0, labels.clamp(max=2)[0, 0][None])[0].flatten()
    valid = labels.flatten() != 255
    # ohem: the hardest quarter of the frame's 8 pixels (2), among the valid ones
    hardest = per[valid].topk(2).values
    assert torch.allclose(segmentation_loss(logits, labels, "ohem"), hardest.mean(), atol=1e-6)
    # balanced: per-pixel weights of the pixel's class, averaged over the valid pixels
    w = torch.tensor([0.5, 2.0, 4.0])
    expected = (per * w[labels.clamp(max=2).flatten()])[valid].mean()
    assert torch.allclose(segmentation_loss(logits, labels, "balanced", w), expected, atol=1e-6)
    # class weights: rarer classes weigh more; the pixel-weighted mean is 1
    cw = class_weights(torch.tensor([900, 90, 10]))
    assert cw[0] < cw[1] < cw[2]
    assert torch.allclose((cw * torch.tensor([0.9, 0.09, 0.01])).sum(), torch.tensor(1.0))
    with pytest.raises(ValueError):
        segmentation_loss(logits, labels, "focal")


def test_segmentation_loss_upsamples_logits_to_the_labels():
    # A constant logit map stays constant under bilinear upsampling: the loss is the CE of
    # that one logit vector at every labelled pixel.
    logits = torch.tensor([2.0, 0.0, -1.0])[None, None, :, None, None].expand(1, 1, 3, 2, 2)
    labels = torch.full((1, 1, 8, 8), 1)
    labels[0, 0, :4] = 255
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0, -1.0]), 0)[1]
    assert torch.allclose(segmentation_loss(logits, labels), expected, atol=1e-6)


def test_focal_bce_against_hand_values_and_plain_bce():
    p = torch.tensor([0.8, 0.3, 0.6, 0.1])
    y = torch.tensor([1, 0, 0, 1])
    # gamma = 1: -[y (1-p) log p + (1-y) p log(1-p)]
    hand = [-(0.2 * math.log(0.8)), -(0.3 * math.log(0.7)), -(0.6 * math.log(0.4)), -(0.9 * math.log(0.1))]
    assert torch.allclose(focal_bce(p, y), torch.tensor(sum(hand) / 4), atol=1e-6)
    # gamma = 0 is plain binary cross-entropy
    assert torch.allclose(focal_bce(p, y, gamma=0.0), F.binary_cross_entropy(p, y.float()), atol=1e-6)
    valid = torch.tensor([True, False, True, False])
    assert torch.allclose(focal_bce(p, y, valid), torch.tensor((hand[0] + hand[2]) / 2), atol=1e-6)


def test_similarity_target_nearest_and_ignore():
    labels = torch.zeros(1, 3, 8, 8, dtype=torch.long)
    labels[0, 1, 4:, 4:] = 1   # frame 1 differs in the bottom-right quarter
    labels[0, 2, :4, :4] = 255  # frame 2 ignores the top-left quarter
    labels[0, 0, 0, 4] = 255    # keyframe ignores the top-right quarter's sampled pixel
    target, valid = similarity_target(labels, (2, 2))  # nearest picks pixels (0|4, 0|4)
    assert (target & valid).tolist() == [[[[True, False], [True, False]], [[False, False], [True, True]]]]
    assert (~target & valid).tolist() == [[[[False, False], [False, True]], [[False, False], [False, False]]]]
    assert valid.tolist() == [[[[True, False], [True, True]], [[False, False], [True, True]]]]


def test_similarity_loss_clamps_like_the_paper():
    sim = torch.tensor([[[[1.5, -0.5], [0.7, 0.2]]]], requires_grad=True)
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    labels[0, 1, 1, 1] = 1  # only the last point changed label
    loss = similarity_loss(sim, labels)
    w = torch.tensor([1.0, 0.0, 0.7, 0.2])
    y = torch.tensor([1, 1, 1, 0])
    assert torch.allclose(loss, focal_bce(w, y), atol=1e-6)
    loss.backward()
    # ŵ = clamp(w, 0, 1): no gradient where w is outside [0, 1]
    assert sim.grad[0, 0, 0, 0] == 0 and sim.grad[0, 0, 0, 1] == 0
    assert sim.grad[0, 0, 1, 0] < 0 and sim.grad[0, 0, 1, 1] > 0


def test_tfc_loss_counts_similarity_accuracy():
    logits = torch.zeros(1, 2, 3, 2, 2)
    sim = torch.tensor([[[[0.9, 0.4], [0.6, 0.1]]]])
    labels = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    labels[0, 1, 1] = 1           # bottom row changes label
    labels[0, 1, 0, 1] = 255      # one ignored point
    parts = tfc_loss(logits, sim, labels)
    # valid: (0,0) same/pred same ok; (1,0) changed/pred same wrong; (1,1) changed/pred diff ok
    assert (parts.sim_correct.item(), parts.sim_valid.item(), parts.sim_same.item()) == (2, 3, 1)
    assert torch.allclose(parts.total, parts.seg + parts.bce)


# ---- the recipe ------------------------------------------------------------------------


def test_consistency_loss_by_hand():
    # B=1, T=3, K=2, one row of 2 points; labels at the same (1/4-map) size
    logits = torch.zeros(1, 3, 2, 1, 2)
    logits[0, 1, 0, 0, 0] = math.log(3.0)  # frame 1, point 0: p = (3/4, 1/4)
    logits[0, 2, 1, 0, 1] = math.log(4.0)  # frame 2, point 1: p = (1/5, 4/5)
    labels = torch.tensor([[[[0, 1]], [[0, 1]], [[0, 0]]]])  # point 1 changes label at frame 2
    # pairs (0,1): both points agree -> TV 1/4 and 0; (1,2): point 0 agrees -> TV 1/4
    # (frame 1 point 0 (3/4,1/4) vs frame 2 point 0 (1/2,1/2)); point 1 excluded
    assert consistency_loss(logits, labels).item() == pytest.approx((0.25 + 0.0 + 0.25) / 3)
    labels[0, 1, 0, 0] = IGNORE_INDEX  # an ignored point pairs with nothing
    assert consistency_loss(logits, labels).item() == pytest.approx(0.0)
    assert consistency_loss(logits[:, :1], labels[:, :1]).item() == 0.0  # one frame: no pairs
    # the term enters the total with its weight, and weight 0 is the paper's loss
    sim = torch.full((1, 2, 1, 2), 0.5)
    labels = torch.tensor([[[[0, 1]], [[0, 1]], [[0, 0]]]])
    plain = tfc_loss(logits, sim, labels)
    weighted = tfc_loss(logits, sim, labels, consistency_weight=2.0)
    assert plain.consistency.item() == pytest.approx(0.5 / 3)
    assert weighted.total.item() == pytest.approx(plain.total.item() + 2.0 * 0.5 / 3)


def test_distillation_loss_by_hand():
    # N=1, K=2, one row of 3 points: KL(q || p) = sum_k q_k (log q_k - log p_k)
    logits = torch.zeros(1, 2, 1, 3)
    logits[0, 0, 0, 1] = math.log(3.0)  # point 1: p = (3/4, 1/4)
    teacher = torch.zeros(1, 2, 1, 3)
    teacher[0, 1, 0, 1] = math.log(4.0)  # point 1: q = (1/5, 4/5)
    teacher[0, 1, 0, 2] = 5.0  # point 2: far from p = (1/2, 1/2), but not selected
    select = torch.tensor([[[True, True, False]]])
    kl1 = 0.2 * math.log(0.2 / 0.75) + 0.8 * math.log(0.8 / 0.25)
    assert distillation_loss(logits, teacher, select).item() == pytest.approx((0.0 + kl1) / 2)
    assert distillation_loss(logits, logits, select).item() == pytest.approx(0.0, abs=1e-7)
    empty = distillation_loss(logits.requires_grad_(), teacher, select & False)
    assert empty.item() == 0.0 and empty.requires_grad  # nothing selected: a zero in the graph
    # in the total with its weight, over the non-keyframes' points below the MSDA threshold
    clip = torch.zeros(1, 2, 2, 1, 3)
    clip[:, 1] = logits.detach()
    sim = torch.tensor([[[[0.2, 0.5, 0.1]]]])  # point 2 lies below 0.4 too: give it the same teacher
    teacher = teacher.clone()
    teacher[0, 1, 0, 2] = 0.0
    labels = torch.zeros(1, 2, 1, 3, dtype=torch.long)
    plain = tfc_loss(clip, sim, labels)
    assert plain.distill is None
    parts = tfc_loss(clip, sim, labels, teacher=teacher[None], distill_weight=3.0, msda_threshold=0.4)
    assert parts.distill.item() == pytest.approx(0.0)  # points 0 and 2 are selected; 1 (0.5) is not
    parts = tfc_loss(clip, sim, labels, teacher=teacher[None], distill_weight=3.0, msda_threshold=0.6)
    assert parts.distill.item() == pytest.approx(kl1 / 3)
    assert parts.total.item() == pytest.approx(plain.total.item() + 3.0 * kl1 / 3)


def test_poly_warmup_matches_mmcv_formula():
    # mmcv PolyLrUpdaterHook(power=1, min_lr=0, warmup='linear', warmup_iters=1500, ratio=1e-6)
    def mmcv(i, n=160_000, w=1500, r=1e-6):
        regular = (1 - i / n) ** 1.0
        return regular * (1 - (1 - i / w) * (1 - r)) if i < w else regular

    for i in (0, 1, 750, 1499, 1500, 80_000, 159_999, 160_000):
        assert math.isclose(poly_warmup_factor(i, 160_000), mmcv(i), rel_tol=1e-12, abs_tol=1e-15)
    assert poly_warmup_factor(0, 100) == pytest.approx(1e-6)


def test_param_groups_head_lr_and_no_decay_on_norms_and_biases():
    model = __import__("tfcseg").TFCSegFormer(tiny_config())
    groups = {g["name"]: g for g in param_groups(model, 1e-4, 0.01)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    named = dict(model.named_parameters())
    assert id(named["encoder.stages.0.blocks.0.attn.q.weight"]) in ids["encoder"]
    assert id(named["encoder.stages.0.blocks.0.norm1.weight"]) in ids["encoder_no_decay"]
    assert id(named["encoder.stages.0.blocks.0.attn.q.bias"]) in ids["encoder_no_decay"]
    assert id(named["decoder.classifier.weight"]) in ids["head"]
    assert id(named["decoder.batch_norm.weight"]) in ids["head_no_decay"]
    msda = [n for n in named if n.startswith("temporal.msda.")]
    for n in msda:  # TFC's own modules train at the head's lr
        assert id(named[n]) in ids["head"] | ids["head_no_decay"]
    assert groups["encoder"]["lr"] == 1e-4 and groups["head"]["lr"] == pytest.approx(1e-3)
    assert groups["encoder_no_decay"]["weight_decay"] == 0 and groups["head"]["weight_decay"] == 0.01
    assert sum(len(g["params"]) for g in groups.values()) == len(named)
    # LambdaLR with PolyWarmup gives each group its base lr x the factor
    opt = torch.optim.AdamW(list(groups.values()))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, PolyWarmup(100, 1.0, 0.0, 10, 1e-6))
    for _ in range(20):
        opt.step()
        sched.step()
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}  # at step 20 of 100: factor 0.8
    assert lrs["encoder"] == pytest.approx(1e-4 * 0.8) and lrs["encoder_no_decay"] == pytest.approx(1e-4 * 0.8)
    assert lrs["head"] == pytest.approx(1e-3 * 0.8) and lrs["head_no_decay"] == pytest.approx(1e-3 * 0.8)


def test_shard_sampler_partitions_and_resumes_mid_epoch():
    shards = [list(ResumableShardSampler(11, 2, rank=r, world=2, seed=3)) for r in range(2)]
    assert all(len(s) == 4 for s in shards)  # 11 // 2 = 5 each, whole batches of 2: 4
    assert not set(shards[0]) & set(shards[1])
    s = ResumableShardSampler(11, 2, rank=1, world=2, seed=3)
    s.set_epoch(0, start_batch=1)
    assert list(s) == shards[1][2:] and len(s) == 2
    s.set_epoch(1)
    assert list(s) != shards[1]  # a new order each epoch


# ---- end to end --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from tfcseg.data import make_synthetic_vspw

    return make_synthetic_vspw(tmp_path_factory.mktemp("synthetic"), videos=2, frames=8,
                               num_classes=4, size=(64, 96), seed=0)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread, and two threads per process stall badly when
    other processes share the two cores."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_train(data_root: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data_root=str(data_root), out=str(out), model_overrides=dict(TINY), variant="custom",
                iters=6, crop=32, base_size=(48, 64), ratio_range=(1.0, 1.0), keyframe_interval=2,
                photometric=False, lr=1e-3, warmup_iters=2, save_every=3, log_every=1, workers=0,
                progress=False, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_loss_falls_and_similarity_beats_majority(data_root, tmp_path):
    cfg = tiny_train(data_root, tmp_path / "run", iters=60, crop=64, base_size=(64, 96),
                     keyframe_interval=4, lr=2e-3, warmup_iters=3, save_every=100, log_every=20)
    Trainer(cfg).run()
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs] == [20, 40, 60]
    first, last = recs[0], recs[-1]
    assert last["loss"] < 0.5 * first["loss"], [r["loss"] for r in recs]
    assert last["seg"] < first["seg"] and last["bce"] < first["bce"]
    # Over iterations 41-60 (same points for both): thresholding ŵ at 0.5 beats always
    # guessing the majority ("same label").
    assert last["sim_acc"] > last["sim_majority"], (last["sim_acc"], last["sim_majority"])
    # the checkpoint is a trained TFC model
    from tfcseg import load_model

    model = load_model(tmp_path / "run" / "last")
    assert model.config.tfc_trained and model.config.num_classes == 4
    assert model.config.class_names[0] == "background"


def test_resume_equals_an_uninterrupted_run(data_root, tmp_path):
    full = train(tiny_train(data_root, tmp_path / "full"))
    part = tiny_train(data_root, tmp_path / "part", stop_at=3)
    train(part)
    state = torch.load(tmp_path / "part" / "last" / STATE_NAME, weights_only=True)
    assert state["iteration"] == 3
    # an interrupted run refuses to start over by accident
    with pytest.raises(TfcsegError, match="resume=True"):
        Trainer(tiny_train(data_root, tmp_path / "part"))
    resumed = train(tiny_train(data_root, tmp_path / "part", resume=True))
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    iters = [json.loads(line)["iter"] for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5, 6]


def test_resuming_a_run_from_before_a_new_setting_does_not_warn(data_root, tmp_path, capsys):
    """A run saved by an older tfcseg lacks settings added since (distill_weight): they had their
    defaults then, so resuming says nothing; a setting really changed is still warned about."""
    for name, kw in (("old", {}), ("changed", {"weight_decay": 0.02})):
        train(tiny_train(data_root, tmp_path / name, stop_at=3))
        path = tmp_path / name / "last" / STATE_NAME
        state = torch.load(path, weights_only=True)
        cfg = json.loads(state["train_config"])
        del cfg["distill_weight"]
        state["train_config"] = json.dumps(cfg)
        torch.save(state, path)
        capsys.readouterr()
        train(tiny_train(data_root, tmp_path / name, resume=True, **kw))
        captured = capsys.readouterr()
        said = " ".join((captured.err + captured.out).split())
        if kw:
            assert "resuming with changed settings: weight_decay" in said, said
        else:
            assert "changed settings" not in said, said


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from tfcseg import load_model
    from tfcseg.training import NonFiniteLoss

    import tfcseg.training.loop as loop

    real_loss, calls = loop.tfc_loss, []

    def nan_at_fifth(*args, **kwargs):  # the loss of iteration 5 becomes NaN
        parts = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            parts.total = parts.total * float("nan")
        return parts

    monkeypatch.setattr(loop, "tfc_loss", nan_at_fifth)
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss at iteration 5.*iteration 3\)"):
        train(tiny_train(data_root, tmp_path / "run", save_every=3))
    last = tmp_path / "run" / "last"
    state = torch.load(last / STATE_NAME, weights_only=True)
    assert state["iteration"] == 3
    model = load_model(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not list((tmp_path / "run").glob(".last*"))  # no leftovers of a half-written save


def test_init_from_a_checkpoint_with_other_classes(data_root, tmp_path, capsys):
    from rich.console import Console

    from tfcseg import TFCSegFormer, save_checkpoint

    torch.manual_seed(1)
    src = TFCSegFormer(tiny_config(num_classes=7, **{k: v for k, v in TINY.items() if k != "tfc"}))
    save_checkpoint(src, tmp_path / "src")
    cfg = tiny_train(data_root, tmp_path / "run", init=str(tmp_path / "src"), variant=None,
                     model_overrides={})
    console = Console(file=open(tmp_path / "log.txt", "w"), width=200)
    trainer = Trainer(cfg, console=console)
    console.file.flush()
    assert "re-initialised for the 4 classes" in (tmp_path / "log.txt").read_text()
    got, want = trainer.model.state_dict(), src.state_dict()
    assert trainer.model.config.num_classes == 4 and trainer.model.config.tfc_trained
    for k, v in got.items():
        if k.startswith(("encoder.", "decoder.linear")):
            assert torch.equal(v, want[k]), k
    assert got["decoder.classifier.weight"].shape[0] == 4


def test_leaving_the_process_group_waits_for_every_process_only_after_a_clean_end(data_root, tmp_path,
                                                                                 monkeypatch):
    from tfcseg.training import distributed

    calls: list[str] = []
    is_initialized = distributed.dist.is_initialized
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(distributed.dist, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: calls.append("destroy"))
    procs = distributed.Processes("cpu")
    for sync, want in ((True, ["barrier", "destroy"]), (False, ["destroy"])):
        calls.clear()
        procs._owns_group = True  # as if this run had created the group
        procs.close(sync=sync)
        assert calls == want and not procs._owns_group
    # the trainer asks for the wait only after run() ended normally (every process alike)
    monkeypatch.setattr(distributed.dist, "is_initialized", is_initialized)
    seen: list[bool] = []
    monkeypatch.setattr(distributed.Processes, "close", lambda self, sync=False: seen.append(sync))
    t = Trainer(tiny_train(data_root, tmp_path / "run", iters=1))
    t.run()
    t.close()
    failed = Trainer(tiny_train(data_root, tmp_path / "other", iters=1))
    failed.close()  # e.g. after an exception in run()
    assert seen == [True, False]


@pytest.mark.slow
def test_two_gloo_processes_end_with_identical_weights(data_root, tmp_path):
    cfg = tiny_train(data_root, tmp_path / "run", iters=4, save_every=2)
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import json
        from safetensors.torch import save_file
        from tfcseg.training import TrainConfig, Trainer
        t = Trainer(TrainConfig(**json.loads({json.dumps(json.dumps(cfg.to_dict()))})))
        t.run()
        sd = {{k: v.contiguous() for k, v in t.model.state_dict().items()}}
        save_file(sd, {str(tmp_path)!r} + f"/rank{{t.rank}}.safetensors")
        t.close()
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
         "--rdzv_backend", "c10d", "--rdzv_endpoint", "localhost:0", str(script)],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    saved = _weights(tmp_path / "run" / "last")
    assert all(torch.equal(saved[k], r0[k]) for k in saved)
    # both ranks trained on their own shard: the samples seen differ, the result moved
    state = torch.load(tmp_path / "run" / "last" / STATE_NAME, weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["iteration"] == 4
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])


def test_cli_train_end_to_end_and_errors(data_root, tmp_path):
    from tfcseg.cli import main

    out = tmp_path / "run"
    args = ["train", "--data-root", str(data_root), "--out", str(out), "--iters", "3", "--crop", "32",
            "--base-size", "48x64", "--clip-len", "2", "--warmup", "1", "--save-every", "2",
            "--model-config", json.dumps(TINY), "--workers", "0", "--no-progress",
            "--json", str(tmp_path / "summary.json")]
    assert main(args) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["checkpoint"] == str(out / "last")
    assert summary["config"]["keyframe_interval"] == 2 and summary["config"]["lr"] == 6e-5
    assert (out / "last" / "config.json").is_file() and (out / "train_config.json").is_file()
    assert main(args) == 2  # a run exists: needs --resume or --overwrite
    assert main(args[:-2] + ["--resume", "--iters", "4"]) == 0
    assert torch.load(out / "last" / STATE_NAME, weights_only=True)["iteration"] == 4
    assert main(["train", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert main(args[:2] + ["--out", str(tmp_path / "y"), "--amp", "fp8"]) == 2


def test_periodic_evaluation_keeps_the_best_and_time_budget_stops(data_root, tmp_path):
    out = tmp_path / "run"
    trainer = Trainer(tiny_train(data_root, out, iters=5, eval_every=2, eval_short_side=32))
    trainer.run()
    evals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
             if r.get("event") == "eval"]
    assert [r["iter"] for r in evals] == [2, 4, 5]  # every 2 and at the end
    assert all(0.0 <= r["miou"] <= 1.0 for r in evals)
    best = json.loads((out / "best" / "best.json").read_text())
    assert best["miou"] == max(r["miou"] for r in evals) == trainer.summary["best_miou"]
    assert trainer.summary["final_miou"] == evals[-1]["miou"]
    from tfcseg import load_model

    assert load_model(out / "best").config.tfc_trained
    # a time budget already spent: stop cleanly after one iteration, checkpoint saved
    t = Trainer(tiny_train(data_root, tmp_path / "budget", max_minutes=1e-9))
    t.run()
    assert t.summary["stopped"] == "time budget reached" and t.summary["iterations"] == 1
    assert torch.load(tmp_path / "budget" / "last" / STATE_NAME, weights_only=True)["iteration"] == 1


def test_video_rate_clips_and_other_losses_train(data_root, tmp_path):
    for loss in ("ohem", "balanced"):
        t = Trainer(tiny_train(data_root, tmp_path / loss, iters=2, seg_loss=loss, video_rate_share=0.5))
        t.run()
        assert t.summary["iterations"] == 2 and math.isfinite(t.summary["loss"])
    assert t.class_weights is not None and t.class_weights.shape == (t.dataset.num_classes,)
    with pytest.raises(TfcsegError, match="seg_loss"):
        Trainer(tiny_train(data_root, tmp_path / "bad", seg_loss="focal"))


def test_train_only_tfc_keeps_segformer_frozen(data_root, tmp_path):
    train(tiny_train(data_root, tmp_path / "base", iters=3))
    base = _weights(tmp_path / "base" / "last")
    t = Trainer(tiny_train(data_root, tmp_path / "tfc", iters=4, keyframe_interval=3, train_only="tfc",
                           init=str(tmp_path / "base" / "last"), consistency_weight=1.0, video_rate_share=1.0,
                           eval_every=2, eval_short_side=0))
    # MSDA continues from the tfcseg checkpoint's (it does not start fresh)
    assert all(torch.equal(p.detach(), base[f"temporal.{n}"]) for n, p in t.model.temporal.named_parameters())
    t.run()
    t.close()
    assert {g["name"] for g in t.optimizer.param_groups} <= {"head", "head_no_decay"}
    tuned = _weights(tmp_path / "tfc" / "last")
    assert tuned.keys() == base.keys()
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    # only sparse MSDA learnt: weights, biases and BatchNorm's running statistics of the
    # encoder and decoder are bit for bit those of the SegFormer it started from
    assert changed and all(k.startswith("temporal.msda.") for k in changed), sorted(changed)
    recs = [json.loads(line) for line in (tmp_path / "tfc" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in recs if r.get("event") == "eval"] == [2, 4]
    recs = [r for r in recs if r.get("event") != "eval"]
    assert all(r["cons"] > 0 for r in recs) and all(math.isfinite(r["loss"]) for r in recs)
    assert not t.model.encoder.training and not t.model.decoder.training and t.model.temporal.training
    with pytest.raises(TfcsegError, match="--init"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="tfc"))
    init = str(tmp_path / "base" / "last")
    with pytest.raises(TfcsegError, match="a keyframe interval of 2 or more"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="tfc", init=init, keyframe_interval=1))
    with pytest.raises(TfcsegError, match="nothing would learn"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="tfc", init=init,
                           model_overrides={"tfc": {"msda": False}}))
    # a frozen SegFormer must already segment this dataset's classes
    from tfcseg.data import make_synthetic_vspw

    seven = make_synthetic_vspw(tmp_path / "seven", videos=1, frames=3, num_classes=7, size=(48, 64), seed=1)
    other = tmp_path / "other"
    train(tiny_train(seven, other, iters=1))
    with pytest.raises(TfcsegError, match="classifies 7 classes, not the 4"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="tfc", init=str(other / "last")))
    # a run cannot switch what learns when resumed (another optimizer)
    part = tiny_train(data_root, tmp_path / "part", iters=4, stop_at=2, init=init)
    train(part)
    with pytest.raises(TfcsegError, match="train_only all -> tfc"):
        Trainer(tiny_train(data_root, tmp_path / "part", iters=4, init=init, train_only="tfc", resume=True))
    with pytest.raises(TfcsegError, match="train_only"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="decoder"))
    with pytest.raises(TfcsegError, match="consistency_weight"):
        Trainer(tiny_train(data_root, tmp_path / "bad", consistency_weight=float("nan")))


def test_distillation_teacher_is_per_frame_segformer_and_trains_msda_only(data_root, tmp_path):
    from tfcseg.models import TFCSegFormer

    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(num_classes=4, tfc_trained=True)).eval()
    clip = torch.randn(2, 3, 3, 64, 96)
    out = model.clip_forward(clip, teacher=True)
    assert out.teacher.shape == (2, 2, 4, 16, 24) and not out.teacher.requires_grad
    with torch.no_grad():
        for i in (1, 2):  # the teacher of frame i is SegFormer run on frame i alone
            torch.testing.assert_close(out.teacher[:, i - 1], model.image_logits(clip[:, i]).contiguous(),
                                       rtol=1e-4, atol=1e-5)
    assert model.clip_forward(clip).teacher is None
    model.train()
    with pytest.raises(RuntimeError, match="eval mode"):  # BatchNorm would learn from the teacher's pass
        model.clip_forward(clip, teacher=True)

    train(tiny_train(data_root, tmp_path / "base", iters=3))
    base = _weights(tmp_path / "base" / "last")
    init = str(tmp_path / "base" / "last")
    t = Trainer(tiny_train(data_root, tmp_path / "d", iters=4, keyframe_interval=3, train_only="tfc", init=init,
                           video_rate_share=1.0, distill_weight=2.0,
                           model_overrides={**TINY, "tfc": {**TINY["tfc"], "msda_threshold": 1.01}}))
    t.run()
    t.close()
    tuned = _weights(tmp_path / "d" / "last")
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(k.startswith("temporal.msda.") for k in changed), sorted(changed)
    recs = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["distill"] > 0 and math.isfinite(r["distill"]) for r in recs)
    assert json.loads((tmp_path / "d" / "train_config.json").read_text())["distill_weight"] == 2.0
    # one small step on L_distill alone lowers it: the gradient reaches MSDA and points downhill
    model = t.model
    cfg = model.config.tfc
    batch = next(iter(t._batches()))
    frames = batch["frames"]
    msda = list(model.temporal.msda.parameters())

    def distill() -> torch.Tensor:
        o = model.clip_forward(frames, teacher=True)
        return distillation_loss(o.logits[:, 1:].flatten(0, 1), o.teacher.flatten(0, 1),
                                 (o.similarity < cfg.msda_threshold).flatten(0, 1))

    before = distill()
    grads = torch.autograd.grad(before, msda)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    with torch.no_grad():
        for p, g in zip(msda, grads):
            p -= 1e-3 * g / max(float(torch.cat([x.flatten() for x in grads]).norm()), 1e-12)
        assert distill().item() < before.item()
    with pytest.raises(TfcsegError, match="distill_weight needs train_only tfc"):
        Trainer(tiny_train(data_root, tmp_path / "bad", distill_weight=1.0))
    with pytest.raises(TfcsegError, match="distill_weight must be"):
        Trainer(tiny_train(data_root, tmp_path / "bad", train_only="tfc", init=init, distill_weight=-1.0))


def test_bf16_autocast_on_cpu(data_root, tmp_path):
    t = Trainer(tiny_train(data_root, tmp_path / "run", iters=2, amp="bf16"))
    t.run()
    assert t.summary["iterations"] == 2 and math.isfinite(t.summary["loss"])
    from tfcseg import load_model

    model = load_model(tmp_path / "run" / "last")  # weights stay float32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_init_from_an_encoder_only_transformers_folder(data_root, tmp_path):
    transformers = pytest.importorskip("transformers")
    from safetensors.torch import load_file

    hf_cfg = transformers.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=32,
                                          num_labels=3)
    torch.manual_seed(2)
    transformers.SegformerForImageClassification(hf_cfg).save_pretrained(tmp_path / "mit")
    hf = load_file(str(tmp_path / "mit" / "model.safetensors"))
    cfg = tiny_train(data_root, tmp_path / "run", init=str(tmp_path / "mit"), variant=None,
                     model_overrides={"tfc": {"msda_heads": 2}})
    t = Trainer(cfg)
    sd = t.model.state_dict()
    assert torch.equal(sd["encoder.stages.0.patch_embed.proj.weight"],
                       hf["segformer.encoder.patch_embeddings.0.proj.weight"])
    assert torch.equal(sd["encoder.stages.3.blocks.0.attn.q.weight"],
                       hf["segformer.encoder.block.3.0.attention.self.query.weight"])
    assert t.model.config.num_classes == 4 and t.model.config.tfc.msda_heads == 2
    t.run()  # and it trains
    assert t.summary["iterations"] == 6


def test_checkpoint_swap_survives_a_crash_between_renames(tmp_path):
    from tfcseg.training.checkpoints import recover as _recover, swap_in as _swap_in

    last = tmp_path / "last"
    for name, text in (("last", "old"), (".last.tmp", "new")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_text(text)
    _swap_in(tmp_path / ".last.tmp", last)
    assert (last / "model.safetensors").read_text() == "new" and not (tmp_path / ".last.tmp").exists()
    # a crash after `last -> .last.old` and before `.last.tmp -> last`: the old one comes back
    (tmp_path / ".last.tmp").mkdir()
    (tmp_path / ".last.tmp" / "model.safetensors").write_text("half")
    last.rename(tmp_path / ".last.old")
    _recover(last)
    assert (last / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_resume_refuses_another_model(data_root, tmp_path):
    train(tiny_train(data_root, tmp_path / "run", stop_at=2))
    other = dict(TINY, decoder_dim=16)
    with pytest.raises(TfcsegError, match=r"resuming cannot change the model \(decoder_dim 32 -> 16\).*"
                                          r"overwrite=True"):
        Trainer(tiny_train(data_root, tmp_path / "run", resume=True, model_overrides=other))
    with pytest.raises(TfcsegError, match=r"variant \"custom\" -> \"b1\""):
        Trainer(tiny_train(data_root, tmp_path / "run", resume=True, variant="b1"))
    # the refusals left the run as it was: it resumes with its own settings
    t = train(tiny_train(data_root, tmp_path / "run", resume=True, stop_at=3))
    assert torch.load(t / STATE_NAME, weights_only=True)["iteration"] == 3


def test_a_full_disk_while_saving_keeps_the_last_checkpoint(data_root, tmp_path, monkeypatch):
    import errno

    from tfcseg.errors import WriteError

    import tfcseg.training.checkpoints as checkpoints

    real_save, saves = torch.save, []

    def disk_full_at_second_save(obj, f, *args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            f.write(b"half a state")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", disk_full_at_second_save)
    out = tmp_path / "run"
    with pytest.raises(WriteError, match=r"run/last: could not save the checkpoint: the disk is full \(no "
                                         r"space left on device\); training stopped at iteration 6, the "
                                         r"checkpoint of iteration 3 .* is intact; free some space and "
                                         r"continue with resume=True"):
        train(tiny_train(data_root, out, save_every=3))
    assert torch.load(out / "last" / STATE_NAME, weights_only=True)["iteration"] == 3
    assert sorted(p.name for p in out.iterdir()) == ["last", "metrics.jsonl", "train_config.json"]
    assert sorted(p.name for p in (out / "last").iterdir()) == ["config.json", "model.safetensors", STATE_NAME]
    monkeypatch.setattr(checkpoints.torch, "save", real_save)  # space freed
    resumed = train(tiny_train(data_root, out, save_every=3, resume=True))
    assert torch.load(resumed / STATE_NAME, weights_only=True)["iteration"] == 6
    iters = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5, 6]


@pytest.mark.parametrize("sig, status", [("SIGTERM", 143), ("SIGINT", 130)])
def test_cli_train_stopped_by_a_signal_saves_and_exits_non_zero(data_root, tmp_path, monkeypatch, capsys,
                                                                   sig, status):
    import signal

    from tfcseg.cli import main

    import tfcseg.training.loop as loop

    real_step = loop.Trainer.step

    def signalled_at_second(self, batch):
        stats = real_step(self, batch)
        if self.iteration == 2:
            os.kill(os.getpid(), getattr(signal, sig))
        return stats

    monkeypatch.setattr(loop.Trainer, "step", signalled_at_second)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "run"
    args = ["train", "--data-root", str(data_root), "--out", str(out), "--iters", "5", "--crop", "32",
            "--base-size", "48x64", "--clip-len", "2", "--save-every", "10", "--model-config", json.dumps(TINY),
            "--workers", "0", "--no-progress", "--json", str(tmp_path / "s.json")]
    assert main(args) == status
    err = capsys.readouterr().err
    assert "interrupted at iteration 2; continue with --resume" in err
    assert torch.load(out / "last" / STATE_NAME, weights_only=True)["iteration"] == 2
    assert json.loads((tmp_path / "s.json").read_text())["signal"] == sig
    assert signal.getsignal(signal.SIGTERM) is handler  # the CLI's handler is gone again


def test_cli_train_config_mistakes_name_the_flag(data_root, tmp_path, capsys):
    from tfcseg.cli import main

    for args, flag in ((["--seg-loss", "focal"], "--seg-loss must be one of"),
                       (["--video-rate-share", "2"], "--video-rate-share must be in [0, 1]"),
                       (["--train-only", "tfc"], "--train-only tfc trains TFC's modules"),
                       (["--consistency-weight", "-1"], "--consistency-weight must be a number >= 0"),
                       (["--distill-weight", "1"], "--distill-weight needs train_only tfc"),
                       (["--head-lr-mult", "-1"], "--head-lr-mult must be a positive number")):
        assert main(["train", "--data-root", str(data_root), "--out", str(tmp_path / "r")] + args) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert flag in err, err
