"""How long OpenBLAS's idle threads keep spinning after a product, set before NumPy loads it.

OpenBLAS keeps the threads of a matrix product spinning for ``2**OPENBLAS_THREAD_TIMEOUT`` cycles
(``2**28``, about 0.1 s, by default) so that the next product starts without waking them, and reads
that setting once, when NumPy loads it. Parallel Numba kernels that run in that time fight the
spinning threads for the cores: on 2 cores they ran slower than on one thread. So when fastprop is
imported before NumPy (as ``fastprop train`` and ``fastprop bench`` are) and the variable is not
set, fastprop sets it to ``SHORT_SPIN`` (OpenBLAS's minimum: idle threads sleep at once and a
product wakes them, a few microseconds); the Numba backend then runs its kernels on every thread
right after BLAS products. Otherwise it runs them on one thread for a while after each product.
Set ``OPENBLAS_THREAD_TIMEOUT`` yourself (4 to 30) to choose; it affects OpenBLAS only.
"""

from __future__ import annotations

import os
import sys

#: ``OPENBLAS_THREAD_TIMEOUT`` fastprop sets when nothing else did (2**4 cycles).
SHORT_SPIN = 4
#: Spins up to ``2**SHORT_ENOUGH`` cycles (about 25 microseconds) count as short.
SHORT_ENOUGH = 16
VARIABLE = "OPENBLAS_THREAD_TIMEOUT"

if "numpy" not in sys.modules and VARIABLE not in os.environ:
    os.environ[VARIABLE] = str(SHORT_SPIN)


def spin_is_short() -> bool:
    """True when OpenBLAS's idle threads are known to stop spinning within ``2**SHORT_ENOUGH`` cycles:
    the variable was set (by the user at start-up, or by fastprop before NumPy loaded) to at most that."""
    try:
        return int(os.environ.get(VARIABLE, "")) <= SHORT_ENOUGH
    except ValueError:
        return False


#: Read once: OpenBLAS reads the variable once too.
SHORT = spin_is_short()
