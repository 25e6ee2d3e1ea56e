"""The paper's reference numbers: the "paper" column of every figure's table in the report.

Values are transcribed from the paper (Merrill et al., "Effects of Parameter Norm Growth During
Transformer Training", EMNLP 2021, arXiv:2010.09697): its text and its figures (a number
read off a plotted curve to +-0.002).

Example:
  >>> from normgrowth_jax.figures import paper
  >>> len(paper.FIG4["prenorm"]), paper.FIG4["prenorm"][0], paper.FIG2["T5-base"]["pretrained"][-1]
  (20, 0.727, 0.915)
"""

from __future__ import annotations

# Fig. 1: T5-base, Adafactor, rsqrt 1/sqrt(max(t, 1e4)), 2^19 steps, 104 checkpoints.
FIG1 = {
    "sqrt_fit_r2": 1.00,
    "warmup_steps": 10_000,
    "train_steps": 2 ** 19,
    "t_over_w": 2 ** 19 / 10_000,
    "num_checkpoints": 104,
}

# Fig. 2: per-layer cosine of f(x; theta) and f(x; 1000 theta), layers 1..12, 100 Brown sentences.
FIG2 = {
    "BERT-base-cased": {
        "pretrained": [.474, .193, .286, .060, .215, .089, .200, .175, .125, .274, .056, .113],
        "random_init": [.079, .041, .099, .053, .098, .060, .093, .089, .067, .079, .048, .034],
    },
    "RoBERTa-base": {
        "pretrained": [.655, .717, .725, .799, .773, .709, .823, .771, .663, .885, .940, .652],
        "random_init": [.100, .093, .051, .012, .082, .006, .048, .018, .019, .056, .047, .046],
    },
    "T5-base": {  # measured by the original on the decoder (decoder_input_ids = input_ids)
        "pretrained": [.715, .420, .293, .381, .304, .378, .458, .540, .690, .763, .827, .915],
        "random_init": [.442, .419, .436, .426, .396, .387, .378, .379, .406, .406, .409, .362],
    },
    "XLNet-base-cased": {  # the pretrained curve has 11 points in the paper's figure
        "pretrained": [-.061, .109, .127, .104, .154, .394, .403, .779, .490, .780, .914],
        "random_init": [.111, .063, .013, .080, .080, .070, .091, .091, .026, .102, .062, .041],
    },
}

# Fig. 3: 144 heads of saturated PTB LMs, 200 dev sentences, padded length 83, weight > 1e-5.
# The original computed the statistics over every query and key of the padded batch, on models
# trained with its leaky mask (future scores multiplied by 0, padding visible).
FIG3 = {
    "prenorm": {"heads": 144, "argmax_heads": 68, "argmax_max_positions": 5.0,
                "mean_heads": 61, "mean_range": (40.6, 41.0), "middle_heads": 15,
                "split_below_0.01": 47, "split_near_0.97": 60,
                # (low, high, heads) of the histogram of "# positions attended", read from the
                # figure: 41 heads in [1, 1.4), 27 more up to 5, 15 between 8.6 and 40.6.
                "bins": ((1.0, 1.4, 41), (1.4, 5.0, 27), (8.6, 40.6, 15), (40.6, 41.0, 61)),
                "split_bins": ((0.0, 0.01, 47), (0.96, 0.99, 60))},
    "postnorm": {"heads": 144, "argmax_heads": 73, "argmax_max_positions": 5.8,
                 "mean_heads": 70, "mean_range": (40.7, 41.1), "middle_heads": 1,
                 "split_below_0.01": 25, "split_near_0.97": 70,
                 "bins": ((1.0, 1.4, 37), (1.4, 5.8, 36), (31.5, 32.5, 1), (40.7, 41.1, 70)),
                 "split_bins": ((0.0, 0.01, 25), (0.96, 0.99, 70))},
    "padded_length": 83,
    "sentences": 200,
}

# Small LMs (Sec. 3/4): saturation at rho = 1000 on dev tokens (every model, after each of 5
# epochs: 0.986-0.9997; at initialisation by norm). The post-norm runs plateaued at unigram loss.
SMALL_LM = {
    "saturation_trained": (0.986, 0.9997),
    "saturation_init_postnorm": (0.06, 0.08),
    "saturation_init_prenorm": (0.47, 0.52),
    "postnorm_unigram_dev_loss": 6.50,
    "postnorm_unigram_dev_accuracy": 0.048,
    "epochs": 5,
}

# Fig. 4: cos(f(x; c theta), sf(x; theta)), c = linspace(1, 10, 20), random init. The
# original's "bias" switch toggled only the output classifier's bias: its two curves per norm
# differ by seed only, not by a real bias ablation.
FIG4_C = tuple(1.0 + 9.0 * i / 19 for i in range(20))
FIG4 = {
    "prenorm": [.727, .822, .862, .899, .916, .929, .937, .944, .950, .953, .957, .957, .958, .960,
                .961, .962, .963, .963, .964, .964],
    "prenorm_bias": [.706, .795, .842, .879, .904, .931, .946, .953, .955, .957, .961, .961, .962,
                     .962, .963, .963, .964, .964, .964, .964],
    "postnorm": [.081, .182, .260, .495, .608, .663, .724, .784, .834, .877, .897, .919, .933, .946,
                 .953, .960, .961, .965, .968, .971],
    "postnorm_bias": [.095, .170, .262, .436, .561, .659, .756, .824, .865, .893, .919, .935, .946,
                      .953, .960, .963, .965, .971, .973, .975],
}

# Fig. 5: T5-base between checkpoints.
FIG5 = {"alignment_peak": 0.15, "step_size_growth_below": 20.0}

# Fig. 6: AdamW for one epoch of WikiText-2 over lr x wd = logspace(-1, -5, 20) each.
FIG6 = {"wd_threshold": (1e-3, 1e-2), "pytorch_default": {"lr": 1e-3, "wd": 1e-2},
        "default_grows": True, "grid": 20}
