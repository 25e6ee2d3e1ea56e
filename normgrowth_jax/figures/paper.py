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
    "train_steps": 2**19,
    "t_over_w": 2**19 / 10_000,
    "num_checkpoints": 104,
}

# Fig. 2: per-layer cosine of f(x; theta) and f(x; 1000 theta), layers 1..12, 100 Brown sentences.
FIG2 = {
    "BERT-base-cased": {
        "pretrained": [
            0.474,
            0.193,
            0.286,
            0.060,
            0.215,
            0.089,
            0.200,
            0.175,
            0.125,
            0.274,
            0.056,
            0.113,
        ],
        "random_init": [
            0.079,
            0.041,
            0.099,
            0.053,
            0.098,
            0.060,
            0.093,
            0.089,
            0.067,
            0.079,
            0.048,
            0.034,
        ],
    },
    "RoBERTa-base": {
        "pretrained": [
            0.655,
            0.717,
            0.725,
            0.799,
            0.773,
            0.709,
            0.823,
            0.771,
            0.663,
            0.885,
            0.940,
            0.652,
        ],
        "random_init": [
            0.100,
            0.093,
            0.051,
            0.012,
            0.082,
            0.006,
            0.048,
            0.018,
            0.019,
            0.056,
            0.047,
            0.046,
        ],
    },
    "T5-base": {  # measured by the original on the decoder (decoder_input_ids = input_ids)
        "pretrained": [
            0.715,
            0.420,
            0.293,
            0.381,
            0.304,
            0.378,
            0.458,
            0.540,
            0.690,
            0.763,
            0.827,
            0.915,
        ],
        "random_init": [
            0.442,
            0.419,
            0.436,
            0.426,
            0.396,
            0.387,
            0.378,
            0.379,
            0.406,
            0.406,
            0.409,
            0.362,
        ],
    },
    "XLNet-base-cased": {  # the pretrained curve has 11 points in the paper's figure
        "pretrained": [
            -0.061,
            0.109,
            0.127,
            0.104,
            0.154,
            0.394,
            0.403,
            0.779,
            0.490,
            0.780,
            0.914,
        ],
        "random_init": [
            0.111,
            0.063,
            0.013,
            0.080,
            0.080,
            0.070,
            0.091,
            0.091,
            0.026,
            0.102,
            0.062,
            0.041,
        ],
    },
}

# Fig. 3: 144 heads of saturated PTB LMs, 200 dev sentences, padded length 83, weight > 1e-5.
# The original computed the statistics over every query and key of the padded batch, on models
# trained with its leaky mask (future scores multiplied by 0, padding visible).
FIG3 = {
    "prenorm": {
        "heads": 144,
        "argmax_heads": 68,
        "argmax_max_positions": 5.0,
        "mean_heads": 61,
        "mean_range": (40.6, 41.0),
        "middle_heads": 15,
        "split_below_0.01": 47,
        "split_near_0.97": 60,
        # (low, high, heads) of the histogram of "# positions attended", read from the
        # figure: 41 heads in [1, 1.4), 27 more up to 5, 15 between 8.6 and 40.6.
        "bins": ((1.0, 1.4, 41), (1.4, 5.0, 27), (8.6, 40.6, 15), (40.6, 41.0, 61)),
        "split_bins": ((0.0, 0.01, 47), (0.96, 0.99, 60)),
    },
    "postnorm": {
        "heads": 144,
        "argmax_heads": 73,
        "argmax_max_positions": 5.8,
        "mean_heads": 70,
        "mean_range": (40.7, 41.1),
        "middle_heads": 1,
        "split_below_0.01": 25,
        "split_near_0.97": 70,
        "bins": ((1.0, 1.4, 37), (1.4, 5.8, 36), (31.5, 32.5, 1), (40.7, 41.1, 70)),
        "split_bins": ((0.0, 0.01, 25), (0.96, 0.99, 70)),
    },
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
    "prenorm": [
        0.727,
        0.822,
        0.862,
        0.899,
        0.916,
        0.929,
        0.937,
        0.944,
        0.950,
        0.953,
        0.957,
        0.957,
        0.958,
        0.960,
        0.961,
        0.962,
        0.963,
        0.963,
        0.964,
        0.964,
    ],
    "prenorm_bias": [
        0.706,
        0.795,
        0.842,
        0.879,
        0.904,
        0.931,
        0.946,
        0.953,
        0.955,
        0.957,
        0.961,
        0.961,
        0.962,
        0.962,
        0.963,
        0.963,
        0.964,
        0.964,
        0.964,
        0.964,
    ],
    "postnorm": [
        0.081,
        0.182,
        0.260,
        0.495,
        0.608,
        0.663,
        0.724,
        0.784,
        0.834,
        0.877,
        0.897,
        0.919,
        0.933,
        0.946,
        0.953,
        0.960,
        0.961,
        0.965,
        0.968,
        0.971,
    ],
    "postnorm_bias": [
        0.095,
        0.170,
        0.262,
        0.436,
        0.561,
        0.659,
        0.756,
        0.824,
        0.865,
        0.893,
        0.919,
        0.935,
        0.946,
        0.953,
        0.960,
        0.963,
        0.965,
        0.971,
        0.973,
        0.975,
    ],
}

# Fig. 5: T5-base between checkpoints.
FIG5 = {"alignment_peak": 0.15, "step_size_growth_below": 20.0}

# Fig. 6: AdamW for one epoch of WikiText-2 over lr x wd = logspace(-1, -5, 20) each.
FIG6 = {
    "wd_threshold": (1e-3, 1e-2),
    "pytorch_default": {"lr": 1e-3, "wd": 1e-2},
    "default_grows": True,
    "grid": 20,
}
