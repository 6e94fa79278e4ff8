"""``cupy.cuda.graph``: graphs made by stream capture, replaying the kernel launches they recorded."""

from __future__ import annotations

from tests.cuda_emulation import host_module


class Graph:
    """A captured CUDA graph: ``launch(stream=None)`` runs its recorded launches in order, each with
    the arguments (pointers and scalar values) it had when it was captured, as a GPU replays them."""

    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "currently this class cannot be initiated by the user and must be created via stream capture")

    @classmethod
    def _from_launches(cls, launches):
        graph = object.__new__(cls)
        graph._launches = tuple(launches)
        graph.launched = 0
        return graph

    def launch(self, stream=None):
        def replay():
            for _, run in self._launches:
                run()

        self.launched += 1
        host_module.runtime.enqueue(f"a graph of {len(self._launches)} launches", replay)

    def upload(self, stream=None):
        return None

    @property
    def descriptions(self):
        """What the graph launches, in order (the stand-in's own, for tests)."""
        return [description for description, _ in self._launches]
