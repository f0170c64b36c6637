"""Rollback recovery for vnfkit VNFs: checkpoint, checkpoint + buffering, checkpoint + replay.

The study's components, one module each:

* :mod:`.input_log` -- input handler: numbers packets, logs input batches to stable storage;
* :mod:`.checkpoint` -- consistent cuts of tables, shared state and each VNF's own state;
* :mod:`.storage` -- stable storage behind one interface (memory, file, Redis);
* :mod:`.output` -- output handler: the three strategies plus none (output commit for replay);
* :mod:`.detector` -- failure detector: shared-memory heartbeats + pidfd;
* :mod:`.backup` -- restore the last checkpoint, replay with determinants forced, go live;
* :mod:`.oracle` -- is what the outside saw consistent with the recovered state?
* :mod:`.harness` -- a master, a crash, a failover and the oracle's verdict.
"""

from .backup import Backup, RecoveryReport
from .checkpoint import Checkpoint, restore_checkpoint, take_checkpoint
from .detector import FailureDetector, HeartbeatBoard
from .harness import PHASES, Harness, TrialResult
from .input_log import InputHandler
from .oracle import Released, Verdict, judge
from .output import STRATEGIES, OutputHandler
from .storage import FileStorage, MemoryStorage, StableStorage, SyncResult, open_storage

__all__ = ["PHASES", "STRATEGIES", "Backup", "Checkpoint", "FailureDetector", "FileStorage", "Harness",
           "HeartbeatBoard", "InputHandler", "MemoryStorage", "OutputHandler", "RecoveryReport", "Released",
           "StableStorage", "SyncResult", "TrialResult", "Verdict", "judge", "open_storage",
           "restore_checkpoint", "take_checkpoint"]
