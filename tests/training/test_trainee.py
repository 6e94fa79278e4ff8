"""The training loop's one view of a network (:class:`fastprop.training.trainee.Trainee`); the student's
layers are the notebook-fidelity tests' reference classes."""

from __future__ import annotations

import numpy
import pytest

import fastprop
from fastprop import Dropout, Linear, Network, ReLU, Sigmoid
from fastprop.training.trainee import Trainee
from tests.notebook.test_notebook_fidelity import RefNetwork as StudentNetwork
from tests.notebook.test_notebook_fidelity import RefSigmoid as StudentSigmoid


def test_a_fastprop_network_shows_its_backend_parameters_and_no_foreign_layers():
    with fastprop.use_backend("numpy", "float64"):
        net = Network([Linear(4, 3, rng=0), Sigmoid()])
    trainee = Trainee(net)
    assert (trainee.backend.name, trainee.dtype) == ("numpy", numpy.dtype("float64"))
    assert trainee.parameters() == net.parameters() and trainee.foreign == []
    assert Trainee.of(trainee) is trainee and Trainee.of(net).net is net
    trainee.refuse_foreign()  # nothing to refuse


def test_a_foreign_model_computes_on_the_current_backend_and_is_refused_where_it_must_be():
    student = StudentSigmoid()
    with fastprop.use_backend("numpy", "float32"):
        trainee = Trainee(StudentNetwork([student]))
        assert trainee.dtype == numpy.dtype("float32") and trainee.parameters() == []
    assert trainee.foreign == [student]
    with pytest.raises(ValueError, match=r"RefSigmoid object .*which is not a fastprop Layer"):
        trainee.refuse_foreign()
    with pytest.raises(ValueError, match=r"train cannot use .*Adam.* on .*RefSigmoid"):
        trainee.check_optimizer(fastprop.Adam())
    trainee.check_optimizer(None)  # plain SGD calls the student's update_parameters


def test_foreign_arrays_are_copied_and_a_mixed_network_keeps_both_kinds():
    student = StudentSigmoid()
    with fastprop.use_backend("numpy", "float64"):
        net = Network([Linear(3, 2, rng=1), student])
    student.forward(numpy.zeros((2, 2)))
    trainee = Trainee(net)
    assert len(trainee.parameters()) == 2 and trainee.foreign == [student]
    [(layer, arrays)] = trainee.foreign_arrays()
    assert layer is student and set(arrays) == {"x_in"}
    student.x_in[...] = 7
    assert numpy.all(arrays["x_in"] == 0)  # a copy, not a view


def test_evaluating_sets_evaluation_mode_and_restores_the_previous_one():
    with fastprop.use_backend("numpy", "float64"):
        net = Network([Linear(3, 3, rng=1), ReLU(), Dropout(0.5, rng=2)])
    trainee = Trainee(net)
    for before in (True, False):
        net.train(before)
        with trainee.evaluating() as inside:
            assert inside is net and net.training is False
        assert net.training is before
    with pytest.raises(RuntimeError), trainee.evaluating():
        raise RuntimeError("restored on errors too")
    assert net.training is False


def test_generator_states_round_trip_and_a_count_mismatch_is_refused():
    with fastprop.use_backend("numpy", "float64"):
        net = Network([Linear(3, 3, rng=1), Dropout(0.5, rng=2), Dropout(0.5, rng=3)])
    trainee = Trainee(net)
    states = trainee.generator_states()
    assert len(states) == 2
    first = [generator.random() for generator in trainee.generators()]
    trainee.set_generator_states(states)
    assert [generator.random() for generator in trainee.generators()] == first
    with pytest.raises(ValueError, match="holds 1 random generator states but the network draws from 2"):
        trainee.set_generator_states(states[:1])


def test_flattened_gradients_are_views_of_one_buffer_with_the_same_values():
    with fastprop.use_backend("numpy", "float64"):
        net = Network([Linear(3, 2, rng=1), Sigmoid(), Linear(2, 4, rng=2)])
    for parameter in net.parameters():
        parameter.gradient[...] = numpy.random.default_rng(0).normal(size=parameter.gradient.shape)
    before = [(p.gradient.copy(), p.version) for p in net.parameters()]
    flat = Trainee(net).flatten_gradients()
    assert flat.size == sum(gradient.size for gradient, _ in before)
    for parameter, (gradient, version) in zip(net.parameters(), before):
        assert numpy.array_equal(parameter.gradient, gradient) and parameter.version == version + 1
        assert numpy.shares_memory(parameter.gradient, flat)
    flat[...] = 0
    assert all(not parameter.gradient.any() for parameter in net.parameters())


def test_a_whole_epoch_program_leaves_the_gradients_marked_as_written():
    """The program sums the last batch's gradients into the buffers, as a step would: a backward after
    it adds to them until zero_gradients (the caller marks them, the backend knows no layers)."""
    pytest.importorskip("numba")
    from fastprop.training import EpochRunner

    rng = numpy.random.default_rng(3)
    with fastprop.use_backend("numba", "float32"):
        net = Network([Linear(784, 10, rng=0), Sigmoid()])
    images, targets = (net.backend.asarray(a, dtype=numpy.float32)
                       for a in (rng.random((1200, 784)), numpy.eye(10)[rng.integers(0, 10, 1200)]))
    runner = EpochRunner(net, fastprop.MeanSquareError(), images, targets, 600, None)
    assert runner.fast is not None
    net.zero_gradients()
    assert all(parameter.fresh for parameter in net.parameters())
    runner.run(None, 1e-4)
    assert not any(parameter.fresh for parameter in net.parameters())
