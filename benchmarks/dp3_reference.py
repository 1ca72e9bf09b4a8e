"""DP3's published numbers for its image Diffusion Policy baseline on MetaWorld, the reference of bench_metaworld.

Ze et al., "3D Diffusion Policy" (RSS 2024, arXiv:2403.03954), Table XVIII: success of the 2D image Diffusion
Policy trained on 10 expert demonstrations per task, mean of the best 5 of the evaluations during training
(20 episodes each, every 200 epochs), mean and standard deviation over 3 seeds; difficulty groups of Seo et
al. 2023 ("Masked World Models") as DP3 uses them (Table I gives the group means, which these values
reproduce: easy 0.836, medium 0.311, hard 0.090, very hard 0.266).
"""

from __future__ import annotations

# MetaWorld v3 task name -> (difficulty group, mean success, sd over seeds)
DP3_DIFFUSION_POLICY: dict[str, tuple[str, float, float]] = {
    "button-press-v3": ("easy", 0.99, 0.01),
    "button-press-topdown-v3": ("easy", 0.98, 0.01),
    "button-press-topdown-wall-v3": ("easy", 0.96, 0.03),
    "button-press-wall-v3": ("easy", 0.97, 0.03),
    "coffee-button-v3": ("easy", 0.99, 0.01),
    "dial-turn-v3": ("easy", 0.63, 0.10),
    "door-close-v3": ("easy", 1.00, 0.00),
    "door-lock-v3": ("easy", 0.86, 0.08),
    "door-open-v3": ("easy", 0.98, 0.03),
    "door-unlock-v3": ("easy", 0.98, 0.03),
    "drawer-close-v3": ("easy", 1.00, 0.00),
    "drawer-open-v3": ("easy", 0.93, 0.03),
    "faucet-close-v3": ("easy", 1.00, 0.00),
    "faucet-open-v3": ("easy", 1.00, 0.00),
    "handle-press-v3": ("easy", 0.81, 0.04),
    "handle-pull-v3": ("easy", 0.27, 0.22),
    "handle-press-side-v3": ("easy", 1.00, 0.00),
    "handle-pull-side-v3": ("easy", 0.23, 0.17),
    "lever-pull-v3": ("easy", 0.49, 0.05),
    "plate-slide-v3": ("easy", 0.83, 0.04),
    "plate-slide-back-v3": ("easy", 0.99, 0.00),
    "plate-slide-back-side-v3": ("easy", 1.00, 0.00),
    "plate-slide-side-v3": ("easy", 1.00, 0.00),
    "reach-v3": ("easy", 0.18, 0.02),
    "reach-wall-v3": ("easy", 0.59, 0.07),
    "window-close-v3": ("easy", 1.00, 0.00),
    "window-open-v3": ("easy", 1.00, 0.00),
    "peg-unplug-side-v3": ("easy", 0.74, 0.03),
    "basketball-v3": ("medium", 0.85, 0.06),
    "bin-picking-v3": ("medium", 0.15, 0.04),
    "box-close-v3": ("medium", 0.30, 0.05),
    "coffee-pull-v3": ("medium", 0.34, 0.07),
    "coffee-push-v3": ("medium", 0.67, 0.04),
    "hammer-v3": ("medium", 0.15, 0.06),
    "peg-insert-side-v3": ("medium", 0.34, 0.07),
    "push-wall-v3": ("medium", 0.20, 0.03),
    "soccer-v3": ("medium", 0.14, 0.04),
    "sweep-v3": ("medium", 0.18, 0.08),
    "sweep-into-v3": ("medium", 0.10, 0.04),
    "assembly-v3": ("hard", 0.15, 0.01),
    "hand-insert-v3": ("hard", 0.09, 0.02),
    "pick-out-of-hole-v3": ("hard", 0.00, 0.00),
    "pick-place-v3": ("hard", 0.00, 0.00),
    "push-v3": ("hard", 0.30, 0.03),
    "push-back-v3": ("hard", 0.00, 0.00),
    "shelf-place-v3": ("very hard", 0.11, 0.03),
    "disassemble-v3": ("very hard", 0.43, 0.07),
    "stick-pull-v3": ("very hard", 0.11, 0.02),
    "stick-push-v3": ("very hard", 0.63, 0.03),
    "pick-place-wall-v3": ("very hard", 0.05, 0.01),
}

DIFFICULTY_GROUPS = ("easy", "medium", "hard", "very hard")


def group_means() -> dict[str, float]:
    """DP3's mean image-Diffusion-Policy success per difficulty group (its Table I)."""
    return {
        group: sum(m for g, m, _ in DP3_DIFFUSION_POLICY.values() if g == group)
        / sum(1 for g, _, _ in DP3_DIFFUSION_POLICY.values() if g == group)
        for group in DIFFICULTY_GROUPS
    }
