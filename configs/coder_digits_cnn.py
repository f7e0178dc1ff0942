r"""Learned polynomial code for the quickstart: digits, K = 4, R = 3, around the digits CNN.

Run (from the repository root; the base CNN workdir is reused or trained):
  python train/train.py --config=configs/coder_digits_cnn.py --workdir=/tmp/coder_digits_cnn

de = 1, dh = 2, so R = 3: trained at N = 6 and deployed at N = K + S for
S = 1, 2, 3 by the quickstart (``deploy_at = "k_plus_s"``; any R = 3 of the
N workers decode exactly, so the accuracy does not depend on S). The base is
configs/digits_cnn.py (0.59 MFLOPs). The worker is a grouped polynomial CNN
(one group per query group of the encoder), as in configs/coder_fmnist_k8_equal.py,
sized to stay within 1.1x the base's FLOPs; the master (design A) stays
within 10% of the base per query. Measured numbers: docs/learned_codes.md.
"""

import ml_collections

from configs import coder_digits, digits_cnn


def get_config() -> ml_collections.ConfigDict:
  config = coder_digits.get_config()
  config.base = digits_cnn.get_config()
  config.base.progress_bar = False
  config.encoder_degree = 1
  config.worker_features = (64, 64)
  config.worker_out = 64
  config.worker_kernel = 3
  config.worker_groups = 0  # the encoder's query groups
  config.worker_space_to_depth = 1
  config.worker_pools = (1, 2)
  config.worker_activation_at = ()
  config.head_hidden = 64
  config.master_budget = 0.10
  config.worker_budget = 1.1
  config.distill_weight = 0.5
  config.num_steps = 2000
  config.checkpoint_every = 1000
  return config
