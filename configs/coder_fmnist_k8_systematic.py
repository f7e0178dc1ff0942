r"""Learned systematic code around the frozen LeNet-5 (issue #14): Fashion-MNIST, K = 8, P = 3.

The model-agnostic learned code (jaxcoded/schemes/systematic.py): workers run
the deployed LeNet-5 unchanged, 8 systematic and up to 3 on learned parity
images; a decoder at the master estimates the queries whose own worker
straggled. Trained once with P = 3 parities and deployed at N = K + S for
S = 1, 2, 3 (its first S parities).

Run (from the repository root; the base LeNet-5 workdir is reused or trained):
  python train/train.py --config=configs/coder_fmnist_k8_systematic.py \
      --workdir=/tmp/coder_k8_systematic --config.base_workdir=/tmp/fmnist_lenet

Measured (/work/runs/k8_systematic, base 0.9098; 788 s of training on the
shared 2-core CPU): 0.848 / 0.783 / 0.744 at S = 1 / 2 / 3, master 4.2% of
LeNet-5 per query (design A); Berrut 0.753 / 0.746 / 0.706 on the harness's
masks (docs/learned_codes.md).
"""

from configs import coder_fmnist_k8


def get_config():
  config = coder_fmnist_k8.get_config()
  config.scheme = "systematic"
  config.num_stragglers = 3  # P_max parities: deployable at S = 1, 2, 3
  config.encoder_features = 0  # 0: per-pixel weighted sums of the queries
  config.decoder_hidden = (256, 256)
  config.distill_weight = 0.5
  config.num_steps = 6000
  config.learning_rate = 2e-3
  config.groups_per_batch = 32
  return config
