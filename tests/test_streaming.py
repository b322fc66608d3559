"""The streaming pipeline gives the same answers whatever the parallelism and batching."""

import numpy as np
import pytest

from conftest import DEMO_CONFIG, SAMPLES, read_csv


def run(cli, out, *args):
    r = cli("explain", SAMPLES, "--config", DEMO_CONFIG, "--out", out, "--quiet", "--save-heatmap", "npy",
            "--method", "gradcam,cam", *args)
    assert r.exit_code == 0, r.stderr
    return read_csv(out / "predictions.csv")


def test_worker_count_changes_nothing(cli, tmp_path):
    a = run(cli, tmp_path / "w0", "--workers", "0", "--batch-size", "16")
    b = run(cli, tmp_path / "w3", "--workers", "3", "--batch-size", "16")
    assert a == b  # same rows, same order, same bytes
    for row in a:
        for col in ("output", "heatmap"):
            assert (tmp_path / "w0" / row[col]).read_bytes() == (tmp_path / "w3" / row[col]).read_bytes()


@pytest.mark.slow
def test_batch_size_changes_nothing_beyond_float_rounding(cli, tmp_path):
    """oneDNN picks convolution kernels by batch size, so float results may differ in the last
    bits (we saw <= 3e-7); every discrete answer is identical and every value within 1e-5."""
    a = run(cli, tmp_path / "b1", "--workers", "0", "--batch-size", "1")
    b = run(cli, tmp_path / "b16", "--workers", "2", "--batch-size", "16")
    assert [(r["path"], r["method"]) for r in a] == [(r["path"], r["method"]) for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if "score" not in k} == {k: v for k, v in y.items() if "score" not in k}
        for k in x:
            if "score" in k and x[k]:
                assert abs(float(x[k]) - float(y[k])) <= 1e-5
        np.testing.assert_allclose(np.load(tmp_path / "b1" / x["heatmap"]), np.load(tmp_path / "b16" / y["heatmap"]),
                                   atol=1e-5)


def test_precision_is_gpu_only_on_a_cpu(cli, tmp_path):
    r = cli("explain", SAMPLES / "single", "--config", DEMO_CONFIG, "--out", tmp_path / "o", "--device", "cpu",
            "--precision", "bf16")
    assert r.exit_code == 2 and "GPU-only" in r.stderr
    r = cli("explain", SAMPLES / "single", "--config", DEMO_CONFIG, "--out", tmp_path / "o2", "--precision", "fp8")
    assert r.exit_code == 2 and "fp32, bf16 or fp16" in r.stderr
