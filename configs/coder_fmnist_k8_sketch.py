r"""Learned systematic code whose decoder also reads a sketch of the queries: Fashion-MNIST, K = 8.

The model-agnostic learned code of configs/coder_fmnist_k8_systematic.py (the
deployed LeNet-5 unchanged and frozen on every worker, 8 systematic workers
and up to 3 on learned parity images), with side information at the master:
a learned 32-number sketch of each query (2 x 2 mean-pooling and one linear
map, ``coders.QuerySketch``, 12.5 kFLOPs per query) that the decoder reads
with the returned outputs. The master holds the queries in both designs, so
this costs no communication; its FLOPs count in the master's budget (10% of
LeNet-5 per query), and the sketch alone, without the parities, is reported
beside it (docs/learned_codes.md).

Run (from the repository root; the base LeNet-5 workdir is reused or trained):
  python train/train.py --config=configs/coder_fmnist_k8_sketch.py \
      --workdir=/tmp/coder_k8_sketch --config.base_workdir=/tmp/fmnist_lenet
"""

from configs import coder_fmnist_k8_systematic


def get_config():
  config = coder_fmnist_k8_systematic.get_config()
  config.sketch_features = 32
  config.sketch_pool = 2
  return config
