"""The one reverse loop, plain and YODA-masked, over any ``process.Process`` (eqs. 11-14, docs/method.md §7).

Per visited step t -> t-1 with mask M(t):

    z_tilde = M(t) * z_t               (eq. 11, the process's ``network_input``; z_t if mask_input is off)
    z_sr    = posterior step of z_t with the network's output on z_tilde            (eq. 12)
    z_lr    = the known region's forward marginal at t-1, fresh noise               (eq. 13)
    z_{t-1} = M(t) * z_sr + (1 - M(t)) * z_lr                                        (eq. 14)

Steps at which every pixel is active draw no z_lr noise and blend nothing, so with A = 1 masked
sampling is plain sampling, bit for bit. A step at which no pixel is active makes no network call: its
output would be discarded. Where some pixels are active a ``masked_predict`` (``sparse.Evaluator``'s
``masked``) is told M(t) and may evaluate only there (docs/method.md §11). Per step, noise is drawn in
one order: the posterior's, then the known region's (``streaming.PositionalNoise`` keys draws by it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from .masking import time_mask
from .process import NoiseSampler, Process

Predict = Callable[[Tensor, Tensor, Tensor], Tensor]
"""(network input, t as int64 N, noise level as float N) -> the network's output (eps or x0), float32."""
MaskedPredict = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
"""``Predict`` told M(t) (bool N x 1 x H x W) as well; its output is read only where M(t) is true."""
Generators = torch.Generator | Sequence[torch.Generator] | None


def make_noise_sampler(generator: Generators = None) -> NoiseSampler:
    """Noise from one generator, or from one generator per batch item.

    Noise is drawn on the generator's device and moved to the state's, so a CPU generator gives the
    same noise whatever device samples. With one generator per item an image's noise does not
    depend on what else is in its batch.
    """
    if generator is None:

        def draw_here(like: Tensor) -> Tensor:
            return torch.randn(like.shape, device=like.device, dtype=like.dtype)

        return draw_here

    if isinstance(generator, torch.Generator):
        single = generator

        def draw(like: Tensor) -> Tensor:
            noise = torch.randn(like.shape, generator=single, device=single.device, dtype=like.dtype)
            return noise.to(like.device)

        return draw

    generators = list(generator)

    def draw_per_item(like: Tensor) -> Tensor:
        if len(generators) != like.shape[0]:
            raise ValueError(f"{len(generators)} generators for a batch of {like.shape[0]}")
        items = [torch.randn(like.shape[1:], generator=g, device=g.device, dtype=like.dtype) for g in generators]
        return torch.stack(items).to(like.device)

    return draw_per_item


def reverse(
    process: Process[Any],
    predict: Predict,
    known: Tensor,
    *,
    activation: Tensor | None = None,
    mask_input: bool = True,
    noise: NoiseSampler | None = None,
    callback: Callable[[dict], None] | None = None,
    masked_predict: MaskedPredict | None = None,
) -> Tensor:
    """Run ``process`` backwards and return z_0 (diffusion space, float32).

    ``known`` is x0 of the region YODA leaves undiffused (x_up for SR3, zeros in SRDiff's residual
    space); it also fixes the output's shape and device. ``activation`` (int64, N x 1 x H x W, from
    ``masking.activation_steps``) switches YODA masking on; ``None`` is plain sampling. ``callback``
    gets a dict per step: index, t, z (the new state), x0, output and active (M(t) or None).
    """
    noise = noise or make_noise_sampler()
    known = known.float()
    device, batch = known.device, known.shape[0]
    schedule = process.schedule
    plan = process.plan()
    steps_on_device = schedule.steps.to(device)
    levels_on_device = process.levels().to(device=device, dtype=torch.float32)
    # Up to always_active every pixel is active (no known region); above most_active none is (no
    # network call). Two syncs, before the loop.
    always_active = schedule.train_steps if activation is None else int(activation.min())
    most_active = schedule.train_steps if activation is None else int(activation.max())

    z = process.prior(known, noise)
    for step in plan:
        active = time_mask(activation, step.t) if activation is not None and step.t > always_active else None
        z_in = process.network_input(step, z, known, active if mask_input else None)
        t = steps_on_device[step.index].expand(batch)
        level = levels_on_device[step.index].expand(batch)
        if active is None:
            output = predict(z_in, t, level)
        elif step.t > most_active:  # no pixel is active: every output would be discarded
            output = torch.zeros_like(z)
        elif masked_predict is not None:
            output = masked_predict(z_in, t, level, active)
        else:
            output = predict(z_in, t, level)
        x0 = process.x0(step, z, output)
        z_next = process.posterior(step, z, x0, noise)
        if active is not None:
            z_next = torch.where(active, z_next, process.marginal(step, known, noise))
        z = z_next
        if callback is not None:
            callback({"index": step.index, "t": step.t, "z": z, "x0": x0, "output": output, "active": active})
    return z
