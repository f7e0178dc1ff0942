r"""ResNet-18 on CIFAR-10: the GPU base classifier.

Run (from the repository root, on a GPU; CIFAR-10 comes from TFDS, so install
``jaxcoded[tfds]`` on a connected machine first, see jaxcoded/data.py):

  python train/train.py --config configs/cifar10_resnet18.py --workdir /tmp/cifar10_resnet18

Expected result: test accuracy about 0.93-0.94 after 30 epochs (11700 steps of
128) with random crops and flips, SGD with Nesterov momentum and a cosine
schedule: the usual figure for this recipe. Not yet measured in this project
(no GPU was available when it was written); a step takes about 17 s on a
2-core CPU, so do not run it there.
"""

from __future__ import annotations

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  """The CIFAR-10 ResNet-18 config."""
  config = ml_collections.ConfigDict()

  config.dataset = "cifar10"
  config.num_classes = 10
  config.data_dir = None
  config.data_source = "auto"
  config.model = "resnet18"
  config.model_kwargs = ml_collections.ConfigDict({"widths": (64, 128, 256, 512)})

  # 50000 train images: 390 steps of 128 per epoch.
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.num_steps = 30 * 390
  config.augment = True
  config.crop_padding = 4  # pixels, when augment

  common.optimizer(config, kind="sgd", learning_rate=0.1, weight_decay=5e-4, warmup_steps=390)
  common.loop(config, log_every=100, eval_every=390 * 5, checkpoint_every=390,
              keep_checkpoints=3)
  return config
