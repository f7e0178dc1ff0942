"""Learned Lagrange code around the frozen LeNet-5, Fashion-MNIST, K = 8, N = 11, R = 7.

The master fits a polynomial of degree R - 1 = 6 to the available outputs.

Approximate threshold: decoded answers depend on which workers returned.

Run:
  python train/train.py --config=configs/coder_fmnist_k8_lagrange.py \
      --workdir=/tmp/coder_lagrange_k8 --config.base_workdir=/tmp/fmnist_lenet
"""

from configs import coder_fmnist_k8


def get_config():
  config = coder_fmnist_k8.get_config()
  config.scheme = "lagrange"
  config.encoder_features = 1
  config.recovery_threshold = 7
  config.num_steps = 600
  config.learning_rate = 5e-4
  return config
