"""Exact curated retraining on a 10-state model: the theory in one screen.

Prints the expected reward over generations for several K and real-data fractions, and the
numerical checks of the theorems. Runs in seconds on a CPU:

    python experiments/quickstart.py
"""

import math

import jax.numpy as jnp
import numpy as np

import selfconsume as sc

rewards = jnp.linspace(0.0, 1.0, 10)  # state x has reward x / 9
p0 = jnp.asarray(np.random.default_rng(0).dirichlet(np.ones(10)), jnp.float32)
p_data = p0  # the initial model is trained on the real data
generations = (0, 1, 2, 5, 10, 20)

print("expected reward E_t[r] (beta = 5)")
print(f"{'K':>5} {'real':>5} " + " ".join(f"{f't={t}':>7}" for t in generations))
for k in (2, 4, 16, math.inf):
    for real_fraction in (0.0, 0.2, 0.5):
        ps = sc.theory.trajectory(p0, rewards, num_generations=max(generations), k=k, beta=5.0,
                                  p_data=p_data, real_fraction=real_fraction)
        means = ps @ rewards
        print(f"{k:>5} {real_fraction:>5} " + " ".join(f"{float(means[t]):7.4f}"
                                                       for t in generations))

print("\ntheorem checks (K = 4, beta = 5, real_fraction = 0.2)")
checks = sc.theory.check_theorems(p0, rewards, k=4, beta=5.0, p_data=p_data, real_fraction=0.2)
for name, c in checks.items():
    print(f"  {name:<18} holds={c['holds']!s:<5}  slack={c['slack']:+.2e}")
