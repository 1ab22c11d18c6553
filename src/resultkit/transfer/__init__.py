"""The transfer engine: read ahead, write, verify, checkpoint, report progress.

A command that carries results from one store into another (``migrate``,
``cleanup --archive``, later ``export``) validates its input, opens its
stores and hands them to :class:`Transfer`; it never loops over batches
itself.  Layers: ``tally`` (what is counted) ← ``writing`` (one batch into
the target) ← ``reading`` (the source, read ahead) ← ``verifying`` ←
``engine`` (the loop and the checkpoint).
"""

from .engine import Transfer, TransferOptions, stop_on_ctrl_c
from .reading import MAX_RESCANS, SourceFailed
from .tally import MAX_LISTED, Progress, Tally
from .writing import RETRY_PAUSES_S, WHOLE_TARGET, first_line, retrying, write_batch

__all__ = [
    "MAX_LISTED",
    "MAX_RESCANS",
    "RETRY_PAUSES_S",
    "WHOLE_TARGET",
    "Progress",
    "SourceFailed",
    "Tally",
    "Transfer",
    "TransferOptions",
    "first_line",
    "retrying",
    "stop_on_ctrl_c",
    "write_batch",
]
