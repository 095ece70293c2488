"""eps vs v: the user's setting wins, then the files, then the webui's SD2 test forward."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from trainer.errors import CheckpointError
from trainer.models import prediction
from trainer.models.components import load_components
from trainer.models.demo import make_demo_model
from trainer.models.family import SD1, SD2

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sd2_v(tmp_path_factory):
    return make_demo_model("sd2", tmp_path_factory.mktemp("v") / "sd2-768-v.safetensors", v_prediction=True)


def test_sidecar_parameterization_v_is_detected(sd2_v):
    c = load_components(sd2_v)
    assert c.is_v_prediction and "yaml" in c.v_prediction_source
    assert c.noise_scheduler.config.prediction_type == "v_prediction"
    assert c.resolution == 768


def test_user_setting_always_wins(sd2_v, demo_models):
    assert load_components(sd2_v, v_prediction=False).is_v_prediction is False
    forced = load_components(demo_models["sd1"], v_prediction=True)
    assert forced.is_v_prediction and forced.v_prediction_source == "the model_v_pred setting"
    assert forced.noise_scheduler.config.prediction_type == "v_prediction"


def test_eps_by_default(demo_models):
    for family in ("sd1", "sd2", "sdxl"):
        assert load_components(demo_models[family]).is_v_prediction is False


def test_sdxl_v_scaling_in_sidecar(tmp_path):
    path = make_demo_model("sdxl", tmp_path / "xl-v.safetensors", v_prediction=True)
    assert load_components(path).is_v_prediction


@pytest.mark.parametrize("metadata,keys,expected", [
    ({"modelspec.prediction_type": "v"}, [], True),
    ({"ss_v_parameterization": "True"}, [], True),
    ({}, ["v_pred", "model.diffusion_model.x"], True),
    ({"modelspec.prediction_type": "epsilon"}, [], False),
    ({}, [], None),
])
def test_metadata_and_marker_keys(metadata, keys, expected):
    said, why = prediction.declared_v_prediction({"model": {"params": {}}}, False, metadata, keys)
    assert said is expected
    assert bool(why) == (expected is not None)


class _FakeUNet(torch.nn.Module):
    """Returns `scale·x`: an eps model at t=999 returns ≈ x, a v model something far below it."""

    def __init__(self, scale, width=1024):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale)))
        self.config = SimpleNamespace(cross_attention_dim=width)

    def forward(self, x, t, encoder_hidden_states):
        assert encoder_hidden_states.shape == (1, 77, self.config.cross_attention_dim)
        assert int(t[0]) == 999
        return SimpleNamespace(sample=x * self.scale - 3.0 * (self.scale < 0))


@pytest.mark.parametrize("scale,expected", [(1.0, False), (-1.0, True)])
def test_sd2_test_forward_decides_when_nothing_else_does(scale, expected):
    config = {"model": {"params": {}}}
    is_v, why = prediction.resolve_v_prediction(None, SD2, config, False, {}, [], _FakeUNet(scale))
    assert is_v is expected and "test forward" in why


def test_test_forward_only_for_full_size_sd2():
    config = {"model": {"params": {}}}
    assert prediction.resolve_v_prediction(None, SD1, config, False, {}, [], _FakeUNet(-1.0))[0] is False
    assert prediction.resolve_v_prediction(None, SD2, config, False, {}, [], _FakeUNet(-1.0, width=128))[0] is False


def test_sidecar_overrides_shipped_config(demo_models, tmp_path):
    """Without its .yaml a tiny file does not fit the shipped full-size config: one clear line, no crash."""
    bare = tmp_path / "tiny-without-yaml.safetensors"
    shutil.copy(demo_models["sd1"], bare)
    with pytest.raises(CheckpointError) as err:
        load_components(bare)
    assert "does not match its SD1.x config" in str(err.value) and str(bare) in str(err.value)
    shutil.copy(demo_models["sd1"].with_suffix(".yaml"), bare.with_suffix(".yaml"))
    assert load_components(bare).config_source.endswith("tiny-without-yaml.yaml")
