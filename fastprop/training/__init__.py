"""The notebook's training loop, made honest and fast: ``train``, ``train_epoch``, ``validate_epoch``,
``validate`` and ``predict``.

One module per job: :mod:`.api` (``train``, ``train_epoch``), :mod:`.epochs` (one epoch: the step
loop or the backend's whole-epoch program, and the divergence replay), :mod:`.data` (training data
converted and checked once; what ``train_epoch`` keeps per array), :mod:`.evaluation`
(``validate``, ``validate_epoch``, ``predict``), :mod:`.state` (early stopping, the shuffle seed,
resuming), :mod:`.trainee` (the loop's one view of a network, foreign or not) and :mod:`.progress`
(the bars).
"""

from .api import train, train_epoch
from .data import PREPARED, PreparedEpochs, class_ids, prepare_training_data
from .epochs import EpochRunner, TrainingDiverged, epoch_generator
from .evaluation import forward_batches, predict, validate, validate_epoch
from .progress import progress_bar

__all__ = [
    "PREPARED", "EpochRunner", "PreparedEpochs", "TrainingDiverged", "class_ids",
    "epoch_generator", "forward_batches", "predict", "prepare_training_data", "progress_bar", "train",
    "train_epoch", "validate", "validate_epoch",
]
