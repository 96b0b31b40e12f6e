"""The GPU paths (marked ``gpu``: left out of the default run, skipped without a CUDA device):
cuDNN autotuning, bf16 autocast training with B-cos norms kept in float32, channels_last, and
the fused B-cos nodes on CUDA against the composed ops.  Run with ``pytest -m gpu``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_configure_backends_turns_on_cudnn_autotuning_unless_deterministic():
    from interpcli.device import configure_backends

    configure_backends(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    configure_backends(torch.device("cuda"), deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    configure_backends(torch.device("cuda"))


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("m", [1, 2])
def test_fused_bcos_conv_on_cuda_equals_the_composed_ops(fmt, m):
    from interpcli.models.bcos_layers import BcosConv2d, composed_ops

    torch.manual_seed(0)
    conv = BcosConv2d(6, 8, 3, stride=1, padding=1, max_out=m).cuda().double().to(memory_format=fmt)
    x = torch.randn(4, 6, 16, 16, device="cuda", dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_(True)
    y = conv(x)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    with composed_ops():
        y_ref = conv(x)
        (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=1e-9, atol=1e-12)


def test_bf16_autocast_keeps_bcos_norms_in_float32_and_trains():
    from interpcli.models import Classifier
    from interpcli.models.bcos_layers import patch_norm

    with torch.autocast("cuda", dtype=torch.bfloat16):
        n = patch_norm(torch.rand(2, 4, 8, 8, device="cuda", dtype=torch.bfloat16), 3, 1, 1)
    assert n.dtype == torch.float32
    torch.manual_seed(0)
    model = Classifier("bcos-resnet20", 10, (3, 32, 32), {"kind": "bcos6"}, arch_kwargs={"norm": "bnu"})
    model = model.cuda().to(memory_format=torch.channels_last)
    x = torch.rand(32, 3, 32, 32, device="cuda").contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (32,), device="cuda")
    model.eval()  # the same BatchNorm statistics for both precisions
    with torch.no_grad():
        full = F.cross_entropy(model(x), y).item()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = F.cross_entropy(model(x).float(), y).item()
    assert abs(half - full) < 2e-2 * max(1.0, abs(full))
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.8 * losses[0]  # it learns the fixed batch


def test_training_on_cuda_uses_channels_last_and_bf16(tmp_path):
    from interpcli import TrainConfig, load_model, train
    from interpcli.device import prefers_channels_last

    assert prefers_channels_last(torch.device("cuda"), "bcos")
    res = train(TrainConfig(arch="bcos-lenet", dataset="digits", epochs=2, seed=0), out=tmp_path / "m.safetensors",
                device="cuda")
    assert res.metrics["test_acc"] > 0.5
    model = load_model(tmp_path / "m.safetensors", device="cuda")
    x = torch.rand(2, *model.input_shape, device="cuda")
    cpu = load_model(tmp_path / "m.safetensors", device="cpu")
    torch.testing.assert_close(model(x).cpu(), cpu(x.cpu()), rtol=1e-3, atol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_explain_under_torchrun_on_nccl_equals_one_gpu_process(tmp_path):
    """Two ranks on two GPUs (nccl): the merged result equals one process's on one GPU."""
    import os
    import subprocess
    import sys

    from interpcli import TrainConfig, train
    from interpcli.attributions import Attributions

    from .conftest import ROOT

    ckpt = tmp_path / "m.safetensors"
    train(TrainConfig(arch="lenet", dataset="digits", epochs=1, seed=0), out=ckpt, device="cpu")
    common = ["explain", str(ckpt), "--dataset", "digits", "--indices", "0:40", "-m", "grad", "--chunk", "8",
              "--device", "cuda", "-q", "--no-png"]
    env = dict(os.environ, PYTHONPATH=str(ROOT), INTERP_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "interpcli", *common, "-o", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                          "interpcli", *common, "-o", str(tmp_path / "ddp")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a, b = Attributions.load(tmp_path / "one"), Attributions.load(tmp_path / "ddp")
    torch.testing.assert_close(a.maps["grad"], b.maps["grad"], rtol=1e-5, atol=1e-6)
