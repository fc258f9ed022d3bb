# Make the flat top-level modules (model.py, data.py, ...) importable from tests/.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# test_kernels runs the Triton kernels on CPU through the interpreter, which must be chosen before
# anything imports triton: model.py imports kernels (and so triton) at collection time
os.environ['TRITON_INTERPRET'] = '1'
