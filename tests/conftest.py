# Make the flat top-level modules (model.py, data.py, ...) importable from tests/.
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('HF_HUB_OFFLINE', '1')
