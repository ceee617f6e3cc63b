# attention_memory.py's fast-path worker with the in-place MLP path switched off (the "before").
import json, sys
sys.path.insert(0, "benchmarks")
import attention_memory
from litvit.models import lit
lit.inplace_mlp_applies = lambda *a: False
spec = dict(model="lit_s", height=800, width=1344, batch=1, device="cpu", precision="bfloat16",
            threads=0, repeats=1, tune_malloc=False, path="fast")
print(json.dumps(attention_memory.worker(spec)))
