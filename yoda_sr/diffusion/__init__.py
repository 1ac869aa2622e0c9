"""The diffusion core: schedules, the YODA mask M(t), the processes (DDPM/DDIM, ResShift) and the one
reverse loop over them. Pure maths on tensors and functions: nothing here knows a network, a file or
a device policy (docs/method.md §5-§10)."""
