"""Learned polynomial code on the 8x8 digits: a seconds-long smoke run.

Run (from the repository root):
  python train/train.py --config=configs/coder_digits.py \
      --workdir=/tmp/coder_digits

K = 4 queries, de = 1, dh = 2, so R = 3 and N = K + S = 6 (S = 2 stragglers,
evaluated up to S = 3). Expected: coded accuracy well above chance (0.1) at
S = 3 (tests/test_coder_training.py checks > 0.5).
"""

import ml_collections

from configs import common, digits


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "coder"  # train/train.py trains a learned code
  config.scheme = "polynomial"  # or "lagrange"
  config.dataset = "digits"
  config.base = digits.get_config()
  config.base.num_steps = 200
  config.base.progress_bar = False
  config.base_workdir = ""  # "": <workdir>/base
  config.num_queries = 4
  config.num_stragglers = 2
  # Polynomial code: R = encoder_degree * power**num_activations + 1.
  config.encoder_degree = 1
  config.encoder_features = 0
  config.worker_features = (8, 16)
  config.worker_out = 32
  config.power = 2
  config.num_activations = 1
  config.head_hidden = 32
  # Learned Lagrange code only.
  config.recovery_threshold = 3
  # Master FLOPs per query, as a fraction of the base classifier's (design A).
  config.master_budget = 1.0
  config.groups_per_batch = 16
  config.num_steps = 400
  config.learning_rate = 3e-3
  config.distill_weight = 0.0
  config.temperature = 2.0
  config.eval_num_masks = 8
  # training.fit
  config.mesh_devices = 0  # > 1: shard_map the N workers over that many devices
  common.loop(config, log_every=100, eval_every=0, checkpoint_every=200, progress_bar=False)
  return config
