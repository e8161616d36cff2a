import json

import pytest

torch = pytest.importorskip("torch")

from edgediff.runtime import InputError  # noqa: E402
from edgediff.train.layers import SelfAttention  # noqa: E402
from edgediff.train.models import (  # noqa: E402
    MLPConfig,
    UNet1DConfig,
    build_model,
    config_from_dict,
    config_to_dict,
    fit_to_data,
)

pytestmark = pytest.mark.torch


@pytest.mark.parametrize(
    "config",
    [
        UNet1DConfig(base_width=8, mults=(1, 2), length=32, heads=2, norm_groups=4, emb_dim=16),
        UNet1DConfig(base_width=8, mults=(1, 2, 2), length=64, blocks_per_level=2, attention=False, norm_groups=2,
                     emb_dim=16, channels=3),
        UNet1DConfig(),
        MLPConfig(width=32, depth=2, emb_dim=16),
    ],
)
def test_eps_has_the_shape_of_x_t_and_depends_on_t(config):
    torch.manual_seed(0)
    model = build_model(config)
    for p in model.parameters():  # the U-Net zero-initialises its output layer; perturb it
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(3, *config.sample_shape)
    a = model(x, torch.tensor([0.0, 10.0, 999.0]))
    b = model(x, torch.tensor([500.0, 10.0, 999.0]))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert not torch.allclose(a[0], b[0]) and torch.allclose(a[1:], b[1:])


def test_attention_only_at_lowest_resolution_and_groups_above_one():
    model = build_model(UNet1DConfig())
    attn = [m for m in model.modules() if isinstance(m, SelfAttention)]
    assert len(attn) == 1 and attn[0] is model.mid_attn
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(n.num_groups > 1 for n in norms)


def test_length_not_divisible_is_a_clear_error():
    with pytest.raises(InputError, match=r"L=100 is not divisible by 2\^3=8"):
        build_model(UNet1DConfig(length=100))


def test_config_json_round_trip_and_unknowns():
    for config in (UNet1DConfig(mults=(1, 2), attention=False), MLPConfig(width=64)):
        assert config_from_dict(json.loads(json.dumps(config_to_dict(config)))) == config
    with pytest.raises(InputError, match="unknown"):
        config_from_dict({"kind": "transformer"})
    with pytest.raises(InputError, match="unknown fields"):
        config_from_dict({"kind": "mlp", "layers": 3})


def test_model_shape_follows_the_data():
    assert fit_to_data(UNet1DConfig(), (2, 128)).length == 128
    assert fit_to_data(MLPConfig(), (5,)).dim == 5
    with pytest.raises(InputError, match="use --model mlp"):
        fit_to_data(UNet1DConfig(), (2,))
