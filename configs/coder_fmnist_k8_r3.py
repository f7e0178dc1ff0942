r"""Learned polynomial code at equal resources, Fashion-MNIST, K = 8, R = 3 (issue #25's R sweep).

Run (from the repository root; the base LeNet-5 workdir is shared by the sweep):
  python train/train.py --config=configs/coder_fmnist_k8_r3.py \
      --workdir=/work/runs/coder_k8_r3 --config.base_workdir=/work/runs/base

configs/coder_fmnist_k8_equal.py (R = 7) with encoder degree de = 1 instead of 3,
so R = de * dh + 1 = 1 * 2 + 1 = 3: any 3 workers answer all 8 queries. The
encoder codes G = ceil(8 / 2) = 4 query groups of 2; the grouped worker keeps
them apart (48 convolution channels = 12 per group, a 64-wide block readout =
16 per group; both already multiples of G). Trained at the same N = 11 (masked
straggler dropout between R and N returns) and deployed at N = K + S or
N = R + S (configs/eval_fmnist_frontier.py).

Budgets (equal resources: worker <= 1.1x f's FLOPs, master <= 10% of f per
query, design A), counted with the QR, back-substitution and Chebyshev loops
unrolled (XLA's cost analysis counts a loop body once): worker 0.875x LeNet-5;
master 7.1 / 7.4 / 7.6 / 7.8% of f at N = 3 / 4 / 5 / 6 (R + S) and 8.3 / 8.5 /
8.8 / 9.0% at N = 8 / 9 / 10 / 11 (K + S); compute per query 0.40 / 0.51 / 0.62
/ 0.73 and 0.96 / 1.07 / 1.18 / 1.29 f evaluations.
"""

from configs import coder_fmnist_k8_equal


def get_config():
  config = coder_fmnist_k8_equal.get_config()
  config.encoder_degree = 1  # R = 1 * 2**1 + 1 = 3
  return config
