"""The encoder's init (`--pretrained imagenet | none | PATH`): torchvision's ImageNet weights from torch's
hub cache, a clear error offline, and the init as part of a trial's identity.

No test downloads anything: TORCH_HOME points at an empty folder and every proxy at a port nobody listens on,
so a download fails at once whether or not the machine has internet. The "ImageNet" file a test needs is a
seeded random resnet18 saved under the name torchvision's URL ends with.
"""

import hashlib
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from segclass.config import ModelConfig
from segclass.errors import PretrainedWeightsError
from segclass.grid import GridPoint, get_preset
from segclass.model import build_model, resolve_pretrained
from segclass.model.encoder import IMAGENET_WEIGHTS
from segclass.schema import IMAGENET_INIT, RANDOM_INIT, TrialIdentity

ROOT = Path(__file__).resolve().parents[1]
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, a connection is refused at once


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache on a machine that cannot download (for this process and its subprocesses)."""
    home = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(home))
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, DEAD_PROXY)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # urlopen reads the proxies when it builds its opener
    return home


def _cache_file(home: Path) -> Path:
    return home / "hub" / "checkpoints" / Path(IMAGENET_WEIGHTS.url).name


def _fake_imagenet(home: Path) -> torch.nn.Module:
    """A seeded random resnet18 where torchvision keeps the ImageNet file."""
    torch.manual_seed(7)
    reference = resnet18()
    path = _cache_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(reference.state_dict(), path)
    return reference


def test_imagenet_offline_says_where_to_put_the_file(torch_home):
    with pytest.raises(PretrainedWeightsError) as raised:
        resolve_pretrained("imagenet", progress=False)
    message = str(raised.value)
    assert str(_cache_file(torch_home)) in message and IMAGENET_WEIGHTS.url in message
    assert "--pretrained none" in message and "\n" not in message
    assert not _cache_file(torch_home).exists()


def test_imagenet_loads_the_file_in_torchs_cache_without_network(torch_home, caplog):
    reference = _fake_imagenet(torch_home)
    with caplog.at_level("WARNING"):
        weights = resolve_pretrained("imagenet", progress=False)
    assert weights.name == IMAGENET_INIT and IMAGENET_WEIGHTS.name in IMAGENET_INIT
    assert weights.sha256 == hashlib.sha256(_cache_file(torch_home).read_bytes()).hexdigest()
    assert "not the file torchvision publishes" in caplog.text  # a hand-placed file is used, but said
    expected = reference.state_dict()
    for model in (build_model(ModelConfig(num_classes=4), weights.state),
                  build_model(ModelConfig(num_classes=4), "imagenet")):  # the flag value, through the same resolver
        encoder = model.encoder.state_dict()
        assert set(encoder) == {k for k in expected if not k.startswith(("layer4.", "fc."))}
        for key, value in encoder.items():
            assert torch.equal(value, expected[key]), key


def test_none_and_a_local_file(tmp_path):
    assert resolve_pretrained("none") == resolve_pretrained(None) == (None, RANDOM_INIT, "")
    path = tmp_path / "mine.pth"
    torch.save(resnet18().state_dict(), path)
    weights = resolve_pretrained(str(path))
    assert weights.name == "mine.pth" and weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(PretrainedWeightsError, match="nope.pth.*--pretrained imagenet.*--pretrained none"):
        resolve_pretrained(str(tmp_path / "nope.pth"))


def test_the_init_is_part_of_a_trials_identity(torch_home):
    _fake_imagenet(torch_home)
    point = GridPoint("segmentation", "synthetic", "S+C", 0.05, 1)
    settings = point.train_config(epochs=100).to_dict()
    imagenet, random = resolve_pretrained("imagenet", progress=False), resolve_pretrained("none")
    with_imagenet = TrialIdentity.of(point, settings, imagenet.sha256, "fingerprint")
    with_random = TrialIdentity.of(point, settings, random.sha256, "fingerprint")
    assert with_imagenet.digest != with_random.digest and with_imagenet.settings_hash != with_random.settings_hash
    assert with_imagenet.params(imagenet.name)["pretrained"] == IMAGENET_INIT
    assert with_random.params(random.name)["pretrained"] == RANDOM_INIT


def test_presets_name_their_init():
    paper = get_preset("paper")
    assert paper.pretrained == "imagenet" and "ImageNet" in paper.description
    assert get_preset("quick").pretrained == get_preset("smoke").pretrained == "none"  # they must run offline


def _run(tmp_path, *command):
    return subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_offline_paper_sweep_fails_before_ray_and_writes_nothing(torch_home, tmp_path):
    result = _run(tmp_path, str(ROOT / "sweeps" / "full_grid.py"), "--preset", "paper", "--results",
                  str(tmp_path / "results"), "--storage", str(tmp_path / "tune"))
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot download torchvision's ImageNet ResNet-18 weights")
    assert str(_cache_file(torch_home)) in last and "--pretrained none" in last
    assert "Traceback" not in result.stderr and "Ray" not in result.stderr + result.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "tune").exists()


def test_offline_one_trial_cli_fails_in_one_line(torch_home, tmp_path):
    result = _run(tmp_path, "-m", "segclass.train", "--pretrained", "imagenet", "--quiet")
    assert result.returncode == 2 and result.stdout == ""  # stdout is for the JSON result only
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot download")
    assert "--pretrained none" in result.stderr
