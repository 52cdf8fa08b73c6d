"""Task data: the tiny world's generators (math, bios) and real-data loaders, in one record schema."""

from rlrf_nb.tasks.schema import Example

__all__ = ["Example"]
