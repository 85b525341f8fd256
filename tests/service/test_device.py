"""Device selection. No GPU exists on this machine or in CI, so the GPU side is exercised with a fake NVML
(said so below); `make gpu-check` runs the real GPU path wherever an NVIDIA GPU is available."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from service import device


@pytest.fixture
def fake_nvml(monkeypatch):
    """A stand-in for pynvml reporting four GPUs: the real library needs an NVIDIA driver."""
    fake = types.SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 4)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def test_gpus_are_counted_through_nvml(fake_nvml):
    assert device.count_gpus() == 4


def test_cuda_visible_devices_limits_the_count(fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    assert device.count_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.count_gpus() == 0


def test_no_driver_means_cpu(monkeypatch):
    def broken_init():
        raise OSError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=broken_init))
    assert device.count_gpus() == 0


def test_worker_count_is_one_per_gpu(fake_nvml):
    assert device.worker_count(None) == 4
    assert device.worker_count(2) == 2  # DIGITSERVE_WORKERS wins


def test_worker_count_on_the_cpu_is_one_per_core_up_to_four(monkeypatch):
    monkeypatch.setattr(device, "count_gpus", lambda: 0)
    monkeypatch.setattr(device, "usable_cpus", lambda: 2)
    assert device.worker_count(None) == 2
    monkeypatch.setattr(device, "usable_cpus", lambda: 64)
    assert device.worker_count(None) == device.MAX_CPU_WORKERS == 4


@pytest.mark.slow
def test_gpu_check_reports_the_cpu_and_fails_without_a_gpu(trained):
    result = subprocess.run([sys.executable, "-m", "service.gpu_check", "--seconds", "0.5", "--batch-size", "64"],
                            capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout)
    assert result.returncode == 1  # this machine has no GPU
    assert report["device"] == "CPU" and "CPU" in report["output_placed_on"]
    assert report["images_per_s"] > 0
    assert "No GPU found" in result.stderr
