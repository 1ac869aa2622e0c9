"""Running a denoiser on real images: devices and CPU settings, the sampler wired to a model, tiles,
block-sparse evaluation, the memory plan, streamed tiles and ``--compile``."""
