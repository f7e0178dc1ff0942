r"""Learned polynomial code at equal resources (issue #17): Fashion-MNIST, K = 12, R = 11.

Run (from the repository root):
  python train/train.py --config=configs/coder_fmnist_k12_equal.py \
      --workdir=/tmp/coder_k12_equal --config.base_workdir=/tmp/fmnist_lenet
  python bench/eval_equal_resources.py --workdir=/tmp/coder_k12_equal   # N = 13, 14, 15

de = 5, dh = 2, R = 11, G = 2 query groups of 6; the grouped worker of
configs/coder_fmnist_k8_equal.py; head of 224 hidden units (256 would put
the master at 10.2%, over the 10% budget).

Measured (/work/runs/k12_equal, base LeNet-5 at 0.9098; 10,000 steps of 16
groups, 1654 s wall on the shared 2-core CPU with other jobs running): test
accuracy 0.9000 at S = 1, 2, 3 (N = 13, 14, 15; the same for all 20 masks per
S), 1.0 point below the base; each worker 0.977x LeNet-5's FLOPs, master
(design A) 9.2% / 9.4% / 9.7%, compute per query 1.15 / 1.23 / 1.32.
"""

from configs import coder_fmnist_k8_equal


def get_config():
  config = coder_fmnist_k8_equal.get_config()
  config.num_queries = 12
  config.encoder_degree = 5
  config.recovery_threshold = 11
  config.head_hidden = 224
  return config
