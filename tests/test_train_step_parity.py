"""Training-step parity: one iteration of the published trainer, phase by phase.

Every `train_step_*` fixture in $CREPS_FIXTURES holds, from given weights, a given real
batch and given random draws, what each phase of the published training loop computed:
the gradients after nan_to_num, the trained network's state after the Adam step, G's
buffers after a D phase, the per-sample loss terms, then G_ema. Our trainer runs each phase
from the stored state before it (weights, G's buffers, and the optimizer's moments as the
stored gradients of the earlier phases left them), with the fixture's latents, labels and
path-length direction, and must land within the fixture's `tolerance_rule` (never loosened
here). It runs with every fast path on and off: the compiled main phases (Inductor's C++
backend on the CPU) and the fused ops.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shlex
from collections import defaultdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import fixtures_dir
from creps.cli.train import build_parser, options_from_args
from creps.config import DatasetInfo, LossConfig, resolve
from creps.nets.registry import UnknownFamily, build, published_family, set_training_switches
from creps.train.step import Networks, Trainer

FIXTURES = sorted(fixtures_dir().glob("train_step_*.json")) if fixtures_dir().is_dir() else []
FAST_PATHS = [  # (compile the main phases, fused ops)
    pytest.param(False, False, id="plain"),
    pytest.param(False, True, id="fused"),
    pytest.param(True, False, id="compiled"),
    pytest.param(True, True, id="compiled-fused"),
]


class RecordingStats:
    """Keeps every value the loss reports, per name (the published per-sample loss terms)."""

    def __init__(self) -> None:
        self.values: dict[str, list[torch.Tensor]] = defaultdict(list)

    def report(self, name: str, value: torch.Tensor) -> None:
        self.values[name].append(value.detach().float().flatten().clone())

    def report_scalar(self, name: str, value: float) -> None:
        pass

    def take(self) -> dict[str, torch.Tensor]:
        out = {name: torch.cat(parts) for name, parts in self.values.items()}
        self.values.clear()
        return out


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def fixture_config(spec: dict, compile: bool):
    """Our TrainConfig for the fixture's train.py flags, with the fixture's own loss settings."""
    argv = shlex.split(spec["train_cli_equivalent"])[1:] + ["--outdir=-", "--data=-"]
    options = dataclasses.replace(options_from_args(build_parser().parse_args(argv)), compile=compile)
    g, d = spec["generator"]["init"], spec["discriminator"]["init"]
    info = DatasetInfo(path="-", name="fixture", resolution=d["img_resolution"], channels=d["img_channels"], size=1,
                       has_labels=d["c_dim"] > 0, label_dim=d["c_dim"])
    cfg = resolve(dataclasses.replace(options, cond=d["c_dim"] > 0), info)
    G = published_family(spec["generator"]["class"]).from_published(g)
    D = published_family(spec["discriminator"]["class"]).from_published(d)
    return dataclasses.replace(cfg, loss=LossConfig(**spec["loss"]), G=G, D=D)


def build_trainer(spec: dict, tensors: dict[str, torch.Tensor], compile: bool, fused: bool):
    try:
        cfg = fixture_config(spec, compile)
    except UnknownFamily as err:
        pytest.skip(f"{spec['_stem']}: {err}")
    G, D = build(cfg.G), build(cfg.D)
    G.load_state_dict(with_prefix(tensors, "param.G."), strict=True)
    D.load_state_dict(with_prefix(tensors, "param.D."), strict=True)
    G, D = G.train().requires_grad_(False), D.train().requires_grad_(False)
    set_training_switches(G, recompute=cfg.recompute, fused_ops=fused)
    nets = Networks(G=G, D=D, G_ema=copy.deepcopy(G).eval())
    stats = RecordingStats()
    trainer = Trainer(cfg, nets, torch.device("cpu"), lambda n: torch.zeros(n, cfg.G.c_dim), stats=stats,
                      log=lambda line: pytest.fail(f"unexpected fallback: {line}"))
    return trainer, nets, stats


def load_spec(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    spec = json.loads(path.read_text())
    spec["_stem"] = path.stem
    return spec, load_file(str(path.with_suffix(".safetensors")))


def replay_adam(opt: torch.optim.Optimizer, module: torch.nn.Module, grads_per_step: list[dict[str, torch.Tensor]]):
    """Rebuild the optimizer's moments: fresh, stepped once per earlier phase with its stored
    gradients (a parameter without a stored gradient had none, so Adam skipped it)."""
    opt.state.clear()
    named = dict(module.named_parameters())
    for grads in grads_per_step:
        for name, p in named.items():
            p.grad = grads[name].clone() if name in grads else None
        opt.step()
    for p in named.values():
        p.grad = None


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max|ours - ref| / max|ref| (0 when both vanish)."""
    scale = ref.abs().max().item()
    err = (ours.float() - ref).abs().max().item()
    return err / scale if scale > 0 else err


class PhaseCheck:
    """The tolerance rule of one phase, and the largest errors seen (for the report)."""

    def __init__(self, tol: dict, phase: str):
        self.tol, self.phase = tol, phase
        self.failures: list[str] = []
        self.worst = {"grad_rel": 0.0, "param_abs": 0.0, "param_mismatch_frac": 0.0, "buffer_rel": 0.0,
                      "loss_rel": 0.0}
        self.beyond, self.counted = 0, 0

    def fail(self, text: str) -> None:
        self.failures.append(f"{self.phase}: {text}")

    def grads(self, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
        if set(ours) != set(ref):
            self.fail(f"gradients of {sorted(set(ours) ^ set(ref))[:4]} only on one side")
        for name in set(ours) & set(ref):
            err = relative_error(ours[name], ref[name])
            self.worst["grad_rel"] = max(self.worst["grad_rel"], err)
            if err > self.tol["grad_atol"]:
                self.fail(f"grad {name}: max|diff| / max|ref| = {err:.3g} > {self.tol['grad_atol']}")

    def params(self, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]):
        """Elements beyond param_atol are allowed where the stored gradient is within
        grad_atol x max|gradient| of zero; of the others at most param_mismatch_frac."""
        for name, value in ref.items():
            diff = (ours[name].float() - value).abs()
            self.worst["param_abs"] = max(self.worst["param_abs"], diff.max().item())
            beyond = diff > self.tol["param_atol"]
            grad = grads.get(name)
            if grad is not None:
                near_zero = grad.abs() <= self.tol["grad_atol"] * grad.abs().max()
                beyond, counted = beyond & ~near_zero, int((~near_zero).sum())
            else:
                counted = value.numel()
            self.beyond += int(beyond.sum())
            self.counted += counted

    def finish_params(self) -> None:
        frac = self.beyond / max(self.counted, 1)
        self.worst["param_mismatch_frac"] = frac
        if frac > self.tol["param_mismatch_frac"]:
            self.fail(f"{self.beyond} of {self.counted} state elements beyond param_atol "
                      f"(fraction {frac:.3g} > {self.tol['param_mismatch_frac']})")

    def buffers(self, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
        for name, value in ref.items():
            scale = max(1.0, value.abs().max().item()) if value.numel() else 1.0
            err = (ours[name].float() - value.float()).abs().max().item() / scale if value.numel() else 0.0
            self.worst["buffer_rel"] = max(self.worst["buffer_rel"], err)
            if err > 1e-4:
                self.fail(f"buffer {name}: max|diff| / max(1, max|ref|) = {err:.3g} > 1e-4")

    def losses(self, ours: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> None:
        if set(ours) != set(ref):
            self.fail(f"loss terms differ: ours {sorted(ours)}, published {sorted(ref)}")
        for name in set(ours) & set(ref):
            if ours[name].shape != ref[name].shape:
                self.fail(f"{name}: shape {tuple(ours[name].shape)} vs {tuple(ref[name].shape)}")
                continue
            if "/signs/" in name:  # a sign may only differ where its score is within tolerance of 0
                scores = ref[name.replace("/signs/", "/scores/")]
                sure = scores.abs() > self.tol["grad_atol"] * scores.abs().max()
                if not torch.equal(ours[name][sure], ref[name][sure]):
                    self.fail(f"{name}: signs differ")
                continue
            err = relative_error(ours[name], ref[name])
            self.worst["loss_rel"] = max(self.worst["loss_rel"], err)
            if err > self.tol["grad_atol"]:
                self.fail(f"{name}: max|diff| / max|ref| = {err:.3g} > {self.tol['grad_atol']}")


def split_state(module: torch.nn.Module, stored: dict[str, torch.Tensor]):
    buffer_names = {name for name, _ in module.named_buffers()}
    params = {k: v for k, v in stored.items() if k not in buffer_names}
    buffers = {k: v for k, v in stored.items() if k in buffer_names}
    return params, buffers


def check_optimizer_settings(trainer: Trainer, spec: dict) -> None:
    """Our lazy-regularisation Adam settings for the fixture's flags are the published ones."""
    for name, opt in trainer.optimizers().items():
        want, group = spec["optimizers"][name], opt.param_groups[0]
        assert group["lr"] == pytest.approx(want["lr"], rel=1e-12), name
        assert list(group["betas"]) == pytest.approx(want["betas"], rel=1e-12), name
        assert group["eps"] == want["eps"], name


@pytest.mark.skipif(not FIXTURES, reason="no train_step_* fixtures found (set CREPS_FIXTURES)")
@pytest.mark.parametrize("compile,fused", FAST_PATHS)
@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_train_step_parity(path, compile, fused, capsys):
    spec, tensors = load_spec(path)
    tol = spec["tolerance"]
    if compile:
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
    trainer, nets, stats = build_trainer(spec, tensors, compile, fused)
    phases = {phase.name: phase for phase in trainer.phases}
    assert [phase.name for phase in trainer.phases] == spec["phases"]
    check_optimizer_settings(trainer, spec)

    real_img, real_c = trainer.prepare_reals(tensors["in.real_img"], tensors["in.real_c"])
    state = {"G": with_prefix(tensors, "param.G."), "D": with_prefix(tensors, "param.D.")}
    past_grads: dict[str, list[dict[str, torch.Tensor]]] = {"G": [], "D": []}
    checks = []
    for name in spec["phases"]:
        phase, net = phases[name], name[0]
        module = getattr(nets, net)
        replay_adam(phase.opt, module, past_grads[net])
        nets.G.load_state_dict(state["G"], strict=True)
        nets.D.load_state_dict(state["D"], strict=True)
        trainer.loss.pl_mean = torch.zeros([])
        direction = tensors.get(f"in.{name}.pl_noise")
        trainer.draws.path_length_direction = lambda img, d=direction: d.clone()
        trainer.run_phase(phase, real_img, real_c, tensors[f"in.{name}.gen_z"], tensors[f"in.{name}.gen_c"],
                          spec["cur_nimg"])

        check = PhaseCheck(tol, name)
        ref_grads = with_prefix(tensors, f"out.{name}.grad.")
        ours_grads = {k: p.grad for k, p in module.named_parameters() if p.grad is not None}
        check.grads(ours_grads, ref_grads)
        after = with_prefix(tensors, f"out.{name}.after.{net}.")
        ref_params, ref_buffers = split_state(module, after)
        ours_state = module.state_dict()
        check.params(ours_state, ref_params, ref_grads)
        check.finish_params()
        check.buffers(ours_state, ref_buffers)
        g_buffers = with_prefix(tensors, f"out.{name}.after.G_buffers.")
        if g_buffers:
            check.buffers(nets.G.state_dict(), g_buffers)
        check.losses(stats.take(), with_prefix(tensors, f"out.{name}.loss."))
        checks.append(check)

        state[net] = {**state[net], **after}
        state["G"] = {**state["G"], **g_buffers}
        past_grads[net].append(ref_grads)

    # G_ema: from the initial G, one EMA step towards the stored G at the end of the iteration.
    nets.G_ema.load_state_dict(with_prefix(tensors, "param.G."), strict=True)
    nets.G.load_state_dict(state["G"], strict=True)
    trainer.update_ema(spec["cur_nimg"])
    check = PhaseCheck(tol, "G_ema")
    ref_params, ref_buffers = split_state(nets.G_ema, with_prefix(tensors, "out.G_ema."))
    check.params(nets.G_ema.state_dict(), ref_params, {})
    check.finish_params()
    check.buffers(nets.G_ema.state_dict(), ref_buffers)
    checks.append(check)

    with capsys.disabled():
        mode = f"compile={int(compile)} fused={int(fused)}"
        for c in checks:
            print(f"\n{path.stem} {mode} {c.phase}: " + ", ".join(f"{k} {v:.3g}" for k, v in c.worst.items()), end="")
    failures = [f for c in checks for f in c.failures]
    assert not failures, "\n".join(failures)
    if compile:  # the main phases really ran compiled
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0
