import pytest

from mage_jax import configs


def test_size_modifiers_shrink_the_model():
    default = configs.base_config()
    quick = configs.apply_size(configs.base_config(), "quicktest")
    cpu = configs.apply_size(configs.base_config(), "cpu")
    assert quick.model.tf_width < cpu.model.tf_width < default.model.tf_width
    assert quick.stage1.batch_size < cpu.stage1.batch_size < default.stage1.batch_size
    # The last scale is the latent length H / downsample in every size.
    for c in (default, quick, cpu):
        assert c.model.scales[-1] * c.model.downsample == c.data.horizon


def test_unknown_size_modifier_is_an_error():
    with pytest.raises(ValueError, match="unknown size modifier 'gpu'"):
        configs.apply_size(configs.base_config(), "gpu")
