"""``alexkit weights ...``: the CLI over the store, including a torchvision import end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from alexkit import weights as W
from alexkit.cli import app
from alexkit.errors import WeightsError

runner = CliRunner()


def _one_error_line(result, code: int = 2) -> str:
    """The ``error: ...`` message of a failed command, with rich's 80-column wrapping undone.

    (``_common.fail`` lets rich wrap long messages when stderr is not a terminal; the library
    message itself is one line, which tests/weights/test_weights.py checks.)
    """
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_list_empty_store_says_how_to_get_weights():
    result = runner.invoke(app, ["weights", "list"])
    assert result.exit_code == 0
    assert "alexkit weights download torchvision" in result.stdout

    result = runner.invoke(app, ["weights", "list", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_import_errors_are_one_line_exit_2(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "bvlc_alexnet.npy"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    np.save(evil, {"conv1": [Evil(), np.zeros(96, np.float32)]}, allow_pickle=True)
    line = _one_error_line(runner.invoke(app, ["weights", "import", str(evil), "-f", "bvlc-npy"]))
    assert str(evil) in line and "refused" in line
    assert not marker.exists()

    plain = tmp_path / "plain.npy"
    np.save(plain, np.zeros((2, 2), np.float32))
    line = _one_error_line(
        runner.invoke(app, ["weights", "import", str(plain), "--format", "torchvision"])
    )
    assert str(plain) in line and "--format bvlc-npy" in line

    line = _one_error_line(
        runner.invoke(app, ["weights", "import", str(tmp_path / "nope.pth"), "-f", "torchvision"])
    )
    assert "no such file" in line

    result = runner.invoke(app, ["weights", "import", str(plain), "--format", "caffe"])
    assert result.exit_code == 2  # rejected by the option's choices
    assert not W.weights_dir().exists() or list(W.weights_dir().iterdir()) == []


def test_download_offline_is_one_line_exit_2(monkeypatch, tmp_path):
    monkeypatch.setenv(W.URL_ENV, "http://127.0.0.1:9/alexnet-owt-7be5be79.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    line = _one_error_line(runner.invoke(app, ["weights", "download", "torchvision"]))
    assert "cannot download http://127.0.0.1:9/" in line and "offline" in line


def test_download_bad_checksum_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "alexnet-owt-7be5be79.pth"
    fake.write_bytes(b"\x00" * 4096)
    monkeypatch.setenv(W.URL_ENV, fake.as_uri())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    line = _one_error_line(runner.invoke(app, ["weights", "download", "torchvision"]))
    assert "7be5be79" in line and "corrupt" in line
    assert W.list_weights() == []


def torchvision_alexnet(num_classes: int = 1000):
    """torchvision's ``models/alexnet.py`` AlexNet, written out with torch.nn."""
    from torch import nn

    class AlexNet(nn.Module):
        def __init__(self, num_classes: int = 1000, dropout: float = 0.5) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(64, 192, kernel_size=5, padding=2),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
                nn.Conv2d(192, 384, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(kernel_size=3, stride=2),
            )
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(p=dropout),
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(inplace=True),
                nn.Dropout(p=dropout),
                nn.Linear(4096, 4096),
                nn.ReLU(inplace=True),
                nn.Linear(4096, num_classes),
            )

        def forward(self, x):
            x = self.features(x)
            x = self.avgpool(x)
            x = self.classifier(x.flatten(1))
            return x

    return AlexNet(num_classes)


@pytest.mark.slow
def test_torchvision_import_matches_torch_logits(tmp_path):
    torch = pytest.importorskip("torch")
    from test_weights import keras_logits

    from alexkit.variants import VARIANTS

    torch.manual_seed(0)
    net = torchvision_alexnet().eval()
    # PyTorch's default init gives logits ~0.01, too small for a 1e-4 tolerance to mean much;
    # He-scaled weights and a smaller last layer give logits O(1..10).
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                gain = 0.3 if module is net.classifier[6] else 1.5
                module.weight.normal_(0.0, gain / fan_in**0.5)
                module.bias.normal_(0.0, 0.1)
    pth = tmp_path / "alexnet-owt-test.pth"
    torch.save(net.state_dict(), pth)

    result = runner.invoke(
        app, ["weights", "import", str(pth), "--format", "torchvision", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    entry = json.loads(result.stdout)
    assert entry["name"] == "torchvision-imagenet" and entry["variant"] == "torchvision"
    assert entry["sha256"] == W.file_sha256(pth) and entry["kind"] == "imagenet"

    listed = json.loads(runner.invoke(app, ["weights", "list", "--json"]).stdout)
    assert [e["name"] for e in listed] == ["torchvision-imagenet"]
    again = runner.invoke(app, ["weights", "import", str(pth), "--format", "torchvision"])
    assert "--force" in _one_error_line(again)

    model = W.load_weights_model("imagenet", "torchvision")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 224, 224, 3)).astype(np.float32)
    spec = VARIANTS["torchvision"]
    normalised = (images / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array(
        [0.229, 0.224, 0.225]
    )
    np.testing.assert_allclose(spec["mean"], np.array([0.485, 0.456, 0.406]) * 255)
    with torch.no_grad():
        expected = net(torch.from_numpy(normalised.transpose(0, 3, 1, 2).astype(np.float32)))
    expected = expected.numpy()

    got = keras_logits(model, images)
    assert expected.std() > 1.0  # logits big enough for the tolerance to mean something
    assert np.abs(got - expected).max() <= 1e-4

    with pytest.raises(WeightsError, match="takes 224x224"):
        W.load_weights_model(entry["model"], "original")

    table = runner.invoke(app, ["weights", "list"])
    assert table.exit_code == 0 and "torchvision-imagenet" in table.stdout
    removed = runner.invoke(app, ["weights", "remove", "torchvision-imagenet"])
    assert removed.exit_code == 0 and W.list_weights() == []
