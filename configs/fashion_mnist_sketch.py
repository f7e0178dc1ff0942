r"""The master's query sketch alone as a Fashion-MNIST classifier: the control of the sketch code.

``models.SketchMLP``: the ``coders.QuerySketch`` of configs/coder_fmnist_k8_sketch.py
(2 x 2 mean-pooling, 32 features) and a head of its decoder's size (64 GELU
units), trained as a classifier on its own with LeNet-5's schedule. Its test
accuracy is what the master's side information reaches with no worker at
all, the figure that the sketch code's "degraded" accuracy (queries whose
own worker straggled) is compared with in docs/learned_codes.md.

Run (from the repository root):
  python train/train.py --config configs/fashion_mnist_sketch.py --workdir /tmp/fmnist_sketch
"""

from __future__ import annotations

import ml_collections

from configs import fashion_mnist_lenet


def get_config() -> ml_collections.ConfigDict:
  config = fashion_mnist_lenet.get_config()
  config.model = "sketch_mlp"
  config.model_kwargs = ml_collections.ConfigDict(
      {"input_shape": (28, 28, 1), "features": 32, "pool": 2, "hidden": 64})
  return config
