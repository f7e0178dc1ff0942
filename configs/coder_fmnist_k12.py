"""Learned polynomial code on Fashion-MNIST, K = 12, S = 3 (N = 15): de = 5, dh = 2, R = 11.

Run (from the repository root):
  python train/train.py --config=configs/coder_fmnist_k12.py \
      --workdir=/tmp/coder_fmnist_k12
"""

from configs import coder_fmnist_k8


def get_config():
  config = coder_fmnist_k8.get_config()
  config.num_queries = 12
  config.encoder_degree = 5
  config.recovery_threshold = 11
  return config
