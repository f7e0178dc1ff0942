"""Learned polynomial code on Fashion-MNIST, K = 4, S = 2 (N = 6): de = 1, dh = 2, R = 3.

Run (from the repository root):
  python train/train.py --config=configs/coder_fmnist_k4.py \
      --workdir=/tmp/coder_fmnist_k4
"""

from configs import coder_fmnist_k8


def get_config():
  config = coder_fmnist_k8.get_config()
  config.num_queries = 4
  config.num_stragglers = 2
  config.encoder_degree = 1
  config.recovery_threshold = 3
  return config
