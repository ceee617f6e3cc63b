"""Internal entry point of the fresh process that measures a model's peak memory
(:func:`litvit.benchmark.memory.measure_peak_memory` starts it)."""
import json
import sys

from .memory import _memory_worker

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--memory-worker":
        print(json.dumps(_memory_worker(json.loads(sys.argv[2]))))
        sys.exit(0)
    sys.exit("usage: litvit benchmark ... (this module's own entry point is internal)")
