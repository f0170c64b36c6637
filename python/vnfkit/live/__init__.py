"""Fault-tolerant live middleboxes: a master and a passive backup on the same two interfaces.

``vnfkit live mazunat --strategy replay --storage redis|file`` runs three kinds of processes, on the
host that owns the two interfaces or (``--topology``) on hosts of their own:

* the **supervisor** (:mod:`.supervisor`, the CLI process): starts the stable storage (a private
  Redis primary + replica, or a file-storage directory), the heartbeat board, then the master and
  the backup, each as a process group of its own; relays their events; stops everything on exit;
* the **master** (:mod:`.master`): receives from both interfaces; per received batch the input
  handler numbers and logs it, MazuNAT processes it with every shared-state access logged, the
  determinant record is queued, one storage sync (``WAIT 1`` on Redis, fdatasync on file) makes
  both stable, and only then does the output handler send the batch's packets (output commit).
  Every ``checkpoint_ms`` it checkpoints its tables, shared state and VNF state at a batch boundary;
* the **backup** (:mod:`.backup_node`): already set up and connected to storage; its own sockets on
  the same interfaces stay open, and it keeps the last second or so of received frames in memory
  (:class:`.frames.FrameRing`), so frames that arrive while it recovers are delayed, not lost. The
  failure detector (the master's pidfd, plus its heartbeat) starts the failover: restore the last
  checkpoint, replay the logged inputs with determinants forced and outputs suppressed, process the
  buffered frames the master never logged, then forward live.

On one host, the steering between master and backup is the kernel's: every AF_PACKET socket on an
interface gets every frame; the one node that processes them is the master until the detector
fires, the backup after. With a topology (``--topology``: master, backup and storage on hosts of
their own, :func:`vnfkit.testbed.failover_testbed`) the input handler's switch (:mod:`.steering`,
kernel ``tc``) sends the peers' frames to the master and a mirror to the backup, and drops what the
backup sends; the backup's failure detector reprograms it (the master's ports fenced, the backup's
opened). A heartbeat timeout (a hung master) first kills the master's process group, so the two are
never both live.
"""

from __future__ import annotations

__all__: list[str] = []  # the modules are used by the CLI; nothing to re-export
