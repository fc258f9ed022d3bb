# Make the flat top-level modules (model.py, data.py, ...) importable from tests/.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
# kernels.py decorates its Triton kernels when first imported, and triton then fixes interpreter
# mode or not: set it here, before any test module imports kernels (train_chrpo.py does), so
# test_kernels.py's CPU runs of the Triton kernels work whatever the collection order.
os.environ.setdefault('TRITON_INTERPRET', '1')  # TRITON_INTERPRET=0: compiled kernels (tests/test_gpu.py on a GPU)
