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


def test_a_family_budget_for_its_size_applies_after_the_size_modifier():
    budget = {"stage2.num_steps": 1234, "eval.num_seeds": 7}
    cpu = configs.finalize(configs.base_config(), "cpu", cpu=budget, quicktest={"stage2.num_steps": 1})
    assert cpu.stage2.num_steps == 1234 and cpu.eval.num_seeds == 7
    assert cpu.stage1.num_steps == configs.apply_size(configs.base_config(), "cpu").stage1.num_steps
    default = configs.finalize(configs.base_config(), "", cpu=budget)
    assert default.stage2.num_steps == configs.base_config().stage2.num_steps
    with pytest.raises(KeyError, match="stage2.num_stepz"):
        configs.finalize(configs.base_config(), "cpu", cpu={"stage2.num_stepz": 1})
