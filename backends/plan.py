"""What a whole-epoch program is given: a network lowered to dense layers and a loss.

fastprop lowers a model once, above the backends (``fastprop.lowering``), into these plain
records, so that no backend needs to know fastprop's layer or cost classes. The named codes are
the ones the kernels use (the CUDA sources get them as ``#define``\\ s made from these enums).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Activation(enum.IntEnum):
    """The activation that follows a dense layer."""

    NONE = 0
    SIGMOID = 1
    RELU = 2


class Loss(enum.IntEnum):
    """The summed cost a plan trains on."""

    SQUARED_ERROR = 1  # sum of 1/2 (t - p)**2, gradient p - t
    SOFTMAX_CROSS_ENTROPY = 2  # sum of -t log softmax(z), gradient softmax(z) sum(t) - t


@dataclass(frozen=True)
class DenseLayer:
    """``x_out = activation(x_in @ weight.value.T + bias.value)``.

    ``weight`` and ``bias`` are parameter objects with ``value`` and ``gradient`` arrays
    (``(n_out, n_in)`` and ``(1, n_out)``) and a ``version`` that changes whenever either array is
    replaced. The arrays are read afresh on every call: a layer whose arrays were replaced is seen
    as it is now (a program that captured them rebuilds when a version changed).
    """

    weight: object
    bias: object
    activation: Activation = Activation.NONE

    @property
    def n_out(self) -> int:
        return int(self.weight.value.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.weight.value.shape[1])


@dataclass(frozen=True)
class EpochPlan:
    """Dense layers in order, then ``loss`` on the last layer's output; trained with plain SGD."""

    layers: tuple
    loss: Loss

    def parameters(self):
        """The weight and bias of every layer, in order."""
        return [parameter for layer in self.layers for parameter in (layer.weight, layer.bias)]


def cuda_defines() -> str:
    """The codes above as C preprocessor definitions, for the CUDA sources."""
    lines = [f"#define ACTIVATION_{member.name} {member.value}" for member in Activation]
    lines += [f"#define LOSS_{member.name} {member.value}" for member in Loss]
    return "\n".join(lines) + "\n"
