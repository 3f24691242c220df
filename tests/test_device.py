"""``--device`` / ``device=``: the autograd reference on a torch device (issue 14).

What runs everywhere: the option's validation (names, a GPU torch does not see: a usage error before any
case, exit 2 on the command line) and the CPU path. What needs a GPU runs only where
``torch.cuda.is_available()``; elsewhere it is skipped, saying so.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bptt_check as bc
from bptt_check.builtin import truncated
from bptt_check.cli import main
from bptt_check.oracles import AutogradOracle
from bptt_check.oracles.autograd import device_problem

CUDA = torch.cuda.is_available()
NO_GPU = "torch.cuda.is_available() is False: no GPU here (the CUDA path is checked on a machine with one)"


@pytest.mark.parametrize("name", ["gpu", "cuda:", "cuda:x", "CUDA", "cpu:0", "", "cuda 0"])
def test_a_device_name_torch_would_not_take_is_refused(name):
    assert device_problem(name) == f"device must be cpu, cuda or cuda:N, got {name!r}"
    with pytest.raises(bc.UsageError, match="cpu, cuda or cuda:N"):
        bc.check(truncated, cases=1, device=name)
    with pytest.raises(bc.UsageError, match="cpu, cuda or cuda:N"):
        bc.check_case(truncated, bc.draw_case(bc.Spec(), 0, 0), device=name)


def test_the_command_line_refuses_a_bad_device_with_exit_2(tmp_path, capsys):
    code = main(["--device", "gpu", "--cases", "1", "--report-dir", str(tmp_path / "r")])
    assert code == 2
    assert "--device: device must be cpu, cuda or cuda:N, got 'gpu'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_the_cpu_device_is_the_default_reference(tmp_path):
    case = bc.draw_case(bc.Spec(truncation="window:3"), 1, 0)
    default, cpu = AutogradOracle().gradients(case), AutogradOracle(device="cpu").gradients(case)
    assert all(np.array_equal(default.grads[k], cpu.grads[k]) for k in default.grads)
    assert bc.check(truncated, truncation="window:3", cases=2, device="cpu").passed
    assert main(["--device", "cpu", "--cases", "2", "--mode", "many-to-one", "--report-dir", str(tmp_path)]) == 0


@pytest.mark.skipif(CUDA, reason="a GPU is present: the no-GPU message is not shown")
def test_without_a_gpu_cuda_is_a_usage_error_that_says_why(tmp_path, capsys):
    assert "torch.cuda.is_available() is False" in device_problem("cuda")
    with pytest.raises(bc.UsageError, match="torch.cuda.is_available"):
        bc.check(truncated, cases=1, device="cuda")
    assert main(["--device", "cuda:0", "--cases", "1", "--report-dir", str(tmp_path / "r")]) == 2
    assert "torch.cuda.is_available() is False" in capsys.readouterr().err


@pytest.mark.skipif(not CUDA, reason=NO_GPU)
@pytest.mark.parametrize("spec", [bc.Spec(), bc.Spec(truncation="window:3", activation="relu"),
                                  bc.Spec(activation="sigmoid", mode="many-to-one", truncation="tbptt:2,4")])
def test_the_reference_on_the_gpu_is_the_cpu_one(spec):
    """Fused (tanh, relu) and step-by-step (sigmoid) references on the GPU, against the CPU."""
    for i in range(3):
        case = bc.draw_case(spec, 2, i)
        cpu, gpu = AutogradOracle().gradients(case), AutogradOracle(device="cuda").gradients(case)
        for k in cpu.grads:
            scale = float(np.max(np.abs(cpu.grads[k]), initial=0.0)) or 1.0
            assert float(np.max(np.abs(gpu.grads[k] - cpu.grads[k]), initial=0.0)) <= 1e-12 * scale, k
    result = bc.check_case(truncated, bc.draw_case(spec, 2, 0), device="cuda")
    assert result.status == "passed", result.summary()


@pytest.mark.skipif(not CUDA, reason=NO_GPU)
def test_a_large_case_checks_on_the_gpu():
    spec = bc.Spec(sizes=bc.Sizes(T=(300, 300), B=(32, 32), I=(32, 32), H=(256, 256), O=(8, 8)))
    assert bc.check(truncated, spec, cases=1, device="cuda").passed
