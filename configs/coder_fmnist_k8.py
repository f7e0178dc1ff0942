"""Learned polynomial code on Fashion-MNIST, K = 8, S = 3 (N = 11), at a 10% master budget.

Run (from the repository root):
  python train/train.py --config=configs/coder_fmnist_k8.py \
      --workdir=/tmp/coder_fmnist_k8 --config.base_workdir=/tmp/fmnist_lenet

de = 3, dh = 2, so R = 7: any 7 of the 11 workers decode exactly, and the
code is evaluated at S = 0 .. 4. The base classifier is configs/fashion_mnist_lenet.py
(LeNet-5, about 0.90), trained first into base_workdir, or reloaded from it.
The master (design A: encoder, code evaluation, interpolation, decoder head)
must stay within ``master_budget`` of LeNet-5's FLOPs per query; the run
stops with an error otherwise. Results, the load table and the training time
go to <workdir>/results.json (measured numbers: docs/learned_codes.md).
"""

import ml_collections

from configs import common, fashion_mnist_lenet


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.task = "coder"  # train/train.py trains a learned code
  config.scheme = "polynomial"  # or "lagrange"
  config.dataset = "fashion_mnist"
  config.base = fashion_mnist_lenet.get_config()
  config.base.progress_bar = False
  config.base_workdir = ""  # "": <workdir>/base
  config.num_queries = 8
  config.num_stragglers = 3
  # Polynomial code: R = encoder_degree * power**num_activations + 1.
  config.encoder_degree = 3
  config.encoder_features = 0  # 0: purely linear encoder (space-to-depth + mixing)
  config.worker_features = (16, 32)
  config.worker_out = 64
  config.power = 2
  config.num_activations = 1
  # Worker options of coders.poly_cnn (these defaults give the plain network):
  config.worker_kernel = 3
  config.worker_groups = 1  # G > 1 (0: the encoder's query groups): grouped convs, block readout
  config.worker_space_to_depth = 1  # b > 1: worker rearranges (H, W, C) -> (H/b, W/b, b*b*C)
  config.worker_pools = ()  # per-conv avg-pool windows; (): 2 while the map is >= 2x2
  config.worker_activation_at = ()  # convs followed by the power; (): the first num_activations
  config.head_hidden = 64
  # Learned Lagrange code only: the degree of the master's fit is R - 1.
  config.recovery_threshold = 7
  config.master_budget = 0.10
  config.groups_per_batch = 16
  config.augment_flip = False  # random left-right flips of the training images
  config.num_steps = 3000
  config.learning_rate = 2e-3
  config.distill_weight = 0.0
  config.temperature = 2.0
  config.eval_num_masks = 20
  # training.fit
  config.mesh_devices = 0  # > 1: shard_map the N workers over that many devices
  common.loop(config, log_every=100, eval_every=0, checkpoint_every=500)
  return config
