"""The held-out validation split: whole episodes, fixed by (N, fraction, seed), never empty sides."""

import numpy as np
import pytest

from mage_jax.data.episodes import episodes_from_lists
from mage_jax.data.split import split_episodes, validation_episode_indices


def test_split_is_deterministic_disjoint_and_sized():
    held = validation_episode_indices(200, 0.05, seed=0)
    assert len(held) == 10 and len(np.unique(held)) == 10
    np.testing.assert_array_equal(held, validation_episode_indices(200, 0.05, seed=0))
    assert not np.array_equal(held, validation_episode_indices(200, 0.05, seed=1))


@pytest.mark.parametrize("num, fraction, expected", [(1, 0.5, 0), (2, 0.01, 1), (10, 0.95, 9),
                                                     (10, 0.0, 0)])
def test_split_keeps_a_training_episode_and_holds_one_out_when_asked(num, fraction, expected):
    assert len(validation_episode_indices(num, fraction, seed=0)) == expected


def test_bad_fraction_is_a_clear_error():
    with pytest.raises(ValueError, match="val_fraction"):
        validation_episode_indices(10, 1.0, seed=0)


def test_split_episodes_moves_whole_episodes():
    lengths = [3, 7, 2, 5, 4, 6]
    # Every value of episode i is i, so each side's episodes can be identified.
    episodes = episodes_from_lists([np.full((n, 2), float(i)) for i, n in enumerate(lengths)],
                                   [np.full((n, 1), float(i)) for i, n in enumerate(lengths)],
                                   [np.full(n, float(i)) for i, n in enumerate(lengths)])
    train, held_out = split_episodes(episodes, 0.34, seed=3)
    assert train.num_episodes + held_out.num_episodes == len(lengths)
    assert train.num_steps + held_out.num_steps == sum(lengths)
    ids = lambda part: {int(part.observations[i, 0, 0]) for i in range(part.num_episodes)}
    assert ids(train).isdisjoint(ids(held_out)) and ids(train) | ids(held_out) == set(range(6))
    for part in (train, held_out):
        for i, n in enumerate(part.lengths):
            assert n == lengths[int(part.observations[i, 0, 0])]
            assert np.all(part.actions[i, :n] == part.observations[i, 0, 0])
        assert part.observations.shape[1] == part.lengths.max()
    assert split_episodes(episodes, 0.0, seed=0) == (episodes, None)
