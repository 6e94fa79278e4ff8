"""``LinearSigmoid``: a ``Linear`` followed by a ``Sigmoid``, computed by the backend's fused kernels."""

from __future__ import annotations


class LinearSigmoid:
    """One step of a :class:`~fastprop.Network` that runs a ``Linear`` and the ``Sigmoid`` after it
    through the backend's fused kernels.

    It keeps what its backward pass needs (the input and the sigmoid's output) itself. After each
    ``forward`` the two layers also show the notebook's attributes as an unfused pair would:
    ``linear.x_in`` the input, ``sigmoid.x_in`` the pre-activation and ``sigmoid.x_out`` the output.
    The parameters and their gradients stay the ``Linear``'s.
    """

    def __init__(self, linear, sigmoid):
        self.linear, self.sigmoid = linear, sigmoid
        self.saved = None  # (input, output) of the last forward

    def forward(self, x_in):
        linear, sigmoid = self.linear, self.sigmoid
        x = linear.checked_input(x_in)
        z, p = linear.backend.linear_sigmoid_forward(x, linear.w, linear.b)
        self.saved = (x, p)
        linear.x_in, sigmoid.x_in, sigmoid.x_out = x, z, p
        return p

    def backward(self, d_out, input_gradient=True):
        if self.saved is None:
            raise RuntimeError(
                f"{self.linear!r} + {self.sigmoid!r}: backward was called before forward; call forward "
                "on the batch first."
            )
        linear, (x, p) = self.linear, self.saved
        d_out = linear.checked_gradient(d_out, x.shape[0])
        d_in = linear.backend.linear_sigmoid_backward(
            x, linear.w, p, d_out, linear.dw, linear.db,
            accumulate=not linear.gradients_fresh(), need_dx=input_gradient,
        )
        linear.gradients_written()
        return d_in
