r"""The comparison on the embedded 8x8 digits: every scheme, K = 4, S = 0..3.

Run (from the repository root; about two minutes on a 2-core CPU, training
included):
  python eval/evaluate.py --config configs/eval_digits.py --workdir /tmp/eval_digits

Trains the base CNN (configs/digits_cnn.py; 0.59 MFLOPs, so that the
master's share and the compute per query measure the codes, not a toy f),
ParM's parity model (configs/parm_digits.py, a CNN of the same family) and the
learned polynomial code (R = 3, configs/coder_digits_cnn.py) into the workdir
unless they are there, then evaluates all schemes on the 360 test digits in
90 groups of K = 4. Every coded scheme runs at N = K + S (the learned code is
trained once and redeployed at each N, ``deploy_at = "k_plus_s"``) with the
worker at most 1.1x f and the master at most 10% of f per query; replication
and Byzantine Berrut run at their own, higher, cost ("compute / query").
``get_config("smoke")`` shrinks every training run and the mask counts, for
tests.

Fields:
  dataset, data_dir, data_source: the test data (``jaxcoded.data.load``).
  base: the base classifier's training config; base_workdir: where it is
    (or goes; "" means <workdir>/base).
  num_queries: K, shared by every scheme.
  stragglers: the S values evaluated. Sized schemes (replication, LCC,
    Berrut, Byzantine Berrut) are built to tolerate each S; the others keep
    their N and see S of their workers straggle.
  masks.num_random / masks.exhaustive_limit: all C(N, S) masks when at most
    exhaustive_limit, else num_random random ones (shared by schemes with the
    same N).
  masks.deadline: latency-driven masks (shifted exponential, fixed deadline);
    num_masks = 0 turns them off.
  schemes: name -> entry with ``kind`` (``comparison.builders.kinds()``) and
    its options: uncoded (fallback), uncoded_model_fallback (config of the
    master's fallback classifier, workdir), replication (copies: fixed, else
    S + 1), lcc (degree), berrut, spline (encoder_smoothing and
    decoder_smoothing, or smoothing = "fit" with fit_masks), byzantine_berrut
    (num_adversaries, search), parm (config, workdir), learned and
    learned_systematic (config, workdir, deploy_at: trained | k_plus_s |
    r_plus_s); budgeted entries set worker_budget and master_budget; any entry
    may set ``adversary`` (random | sign_flip | plausible) with num_adversaries.
  held_out_images: how many of the last training images the fitted settings
    (the spline's smoothings) see; default min(4000, a quarter of the split).
  mesh_devices: > 1 runs the worker pass with shard_map over that many devices.
  seed: masks, adversaries.
"""

from __future__ import annotations

import ml_collections

from configs import coder_digits_cnn, digits_cnn, parm_digits
from jaxcoded.comparison import add_scheme as _add

WORKER_BUDGET = 1.1
MASTER_BUDGET = 0.10


def get_config(variant: str | None = None) -> ml_collections.ConfigDict:
  """The digits comparison; ``variant="smoke"`` for tests (seconds)."""
  config = ml_collections.ConfigDict()
  config.dataset = "digits"
  config.data_dir = None
  config.data_source = "auto"
  config.base = digits_cnn.get_config()
  config.base.progress_bar = False
  config.base_workdir = ""
  config.num_queries = 4
  config.stragglers = (0, 1, 2, 3)
  config.masks = ml_collections.ConfigDict(dict(
      num_random=64, exhaustive_limit=128,
      deadline=dict(num_masks=128, shift=1.0, rate=2.0, deadline=1.8, design_stragglers=1),
  ))
  config.mesh_devices = 0
  config.max_groups = 0  # 0: every group of the test set
  config.seed = 0

  parity = parm_digits.get_config()
  parity.model = "digits_cnn"  # the parity model: the base's family, a wider dense layer
  parity.model_kwargs = ml_collections.ConfigDict({"features": (16, 32), "hidden": 96})
  code = coder_digits_cnn.get_config()  # de = 1, dh = 2: R = 3, deployed at N = K + S
  budgets = dict(worker_budget=WORKER_BUDGET, master_budget=MASTER_BUDGET)
  config.schemes = ml_collections.ConfigDict()
  _add(config, "uncoded", "uncoded")
  _add(config, "uncoded + fallback", "uncoded", fallback=True)
  _add(config, "replication", "replication")
  _add(config, "LCC (d=1)", "lcc", degree=1, **budgets)
  _add(config, "Berrut", "berrut", **budgets)
  # LeTCC's smoothing splines, both smoothings fitted per (K, N, S) on held-out train images.
  _add(config, "spline (LeTCC)", "spline", smoothing="fit", **budgets)
  _add(config, "Berrut, 1 Byzantine", "byzantine_berrut", num_adversaries=1, adversary="random")
  _add(config, "ParM", "parm", config=parity, workdir="", **budgets)
  _add(config, "learned (R=3)", "learned", config=code, workdir="", deploy_at="k_plus_s",
       **budgets)

  if variant == "smoke":
    config.base.num_steps = 60
    config.base.warmup_steps = 5
    config.masks.num_random = 6
    config.masks.exhaustive_limit = 6
    config.masks.deadline.num_masks = 8
    config.max_groups = 20
    config.held_out_images = 64
    config.schemes["spline (LeTCC)"].fit_masks = 2
    for name in ("ParM",):
      config.schemes[name].config.num_steps = 40
      config.schemes[name].config.warmup_steps = 2
      config.schemes[name].config.eval_every = 0
    for name in ("learned (R=3)",):
      config.schemes[name].config.num_steps = 60
      config.schemes[name].config.checkpoint_every = 60
      config.schemes[name].config.eval_num_masks = 2
  elif variant is not None:
    raise ValueError(f"Unknown variant {variant!r} of configs/eval_digits.py; use 'smoke' or none.")
  return config
